//! Envoy stats defined through proxy-wasm: per-upstream state, transitions, traffic
//! and outcome counters, and per-route rejections. Defined once per VM at configure
//! time (definition takes a global lock); the request path only increments.
//!
//! Names are `llm_breaker.upstream.<upstream>.<metric>` and
//! `llm_breaker.route.<route>.<metric>`; Envoy prefixes them with `wasmcustom.`.

use super::abi::{self, MetricKind};
use crate::breaker::{PhaseKind, Transition};
use crate::classify::{FailureClass, Verdict};
use crate::config::Config;

/// Metric ids of one upstream (`None` where the host refused the definition).
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// Gauge: 0 closed, 1 open, 2 half-open.
    pub state: Option<u32>,
    /// Gauge: 1 while an operator isolates the upstream.
    pub isolated: Option<u32>,
    /// closed→open, open→half_open, half_open→closed, half_open→open.
    pub transitions: [Option<u32>; 4],
    /// Active recovery probes sent.
    pub active_probes: Option<u32>,
    /// Active recovery probes that failed (status, timeout, or not sent).
    pub active_probe_failures: Option<u32>,
    /// Requests routed to this upstream.
    pub admitted: Option<u32>,
    /// Of which half-open probes.
    pub probes: Option<u32>,
    /// Requests that skipped this upstream (breaker refused) and went to a later one.
    pub failed_over: Option<u32>,
    /// Requests that skipped this upstream and got the local 503 (all open).
    pub rejected: Option<u32>,
    /// Outcomes counted as successes.
    pub successes: Option<u32>,
    /// Failures by class, in [`FailureClass::ALL`] order.
    pub failures: [Option<u32>; FailureClass::ALL.len()],
    /// Outcomes with a slow first byte.
    pub slow_calls: Option<u32>,
    /// Client 4xx answers (not counted as failures).
    pub client_errors: Option<u32>,
    /// The same by status, in [`CLIENT_ERROR_STATUSES`] order, then every other 4xx.
    pub client_errors_by_status: [Option<u32>; CLIENT_ERROR_STATUSES.len() + 1],
    /// Outcomes that say nothing about the provider (client left, Envoy's own refusal).
    pub ignored: Option<u32>,
    /// Of which healthy streams cut by the operator's total-duration limit.
    pub ignored_proxy_limit: Option<u32>,
    /// Shared-data bytes that did not decode and were reset.
    pub state_resets: Option<u32>,
    /// Updates dropped after too many CAS conflicts or a host error.
    pub update_errors: Option<u32>,
}

/// Client statuses with a counter of their own; other 4xx share `client_errors.other`.
pub const CLIENT_ERROR_STATUSES: [u16; 7] = [400, 401, 403, 404, 408, 413, 422];

/// Metric ids of one route.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Requests answered with the local 503 because every upstream was open.
    pub rejected: Option<u32>,
    /// Requests sent to the primary although every upstream was open.
    pub fail_open: Option<u32>,
}

/// All metric ids, indexed like the config's upstreams and routes.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per upstream.
    pub upstreams: Vec<UpstreamMetrics>,
    /// Per route.
    pub routes: Vec<RouteMetrics>,
}

/// Makes a name safe inside a dotted stat name.
pub fn stat_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Metrics {
    /// Defines every metric for `config`.
    pub fn define(config: &Config) -> Metrics {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let p = format!("llm_breaker.upstream.{}.", stat_segment(&u.name));
                let c = |n: &str| abi::define_metric(MetricKind::Counter, &format!("{p}{n}"));
                UpstreamMetrics {
                    state: abi::define_metric(MetricKind::Gauge, &format!("{p}state")),
                    isolated: abi::define_metric(MetricKind::Gauge, &format!("{p}isolated")),
                    transitions: [
                        c("transitions.closed_to_open"),
                        c("transitions.open_to_half_open"),
                        c("transitions.half_open_to_closed"),
                        c("transitions.half_open_to_open"),
                    ],
                    admitted: c("requests_admitted"),
                    active_probes: c("active_probes"),
                    active_probe_failures: c("active_probe_failures"),
                    probes: c("requests_probe"),
                    failed_over: c("requests_failed_over"),
                    rejected: c("requests_rejected"),
                    successes: c("successes"),
                    failures: FailureClass::ALL.map(|f| c(&format!("failures.{}", f.as_str()))),
                    slow_calls: c("slow_calls"),
                    client_errors: c("client_errors"),
                    client_errors_by_status: std::array::from_fn(|i| {
                        match CLIENT_ERROR_STATUSES.get(i) {
                            Some(s) => c(&format!("client_errors.{s}")),
                            None => c("client_errors.other"),
                        }
                    }),
                    ignored: c("outcomes_ignored"),
                    ignored_proxy_limit: c("outcomes_ignored.proxy_limit"),
                    state_resets: c("state_resets"),
                    update_errors: c("update_errors"),
                }
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let p = format!("llm_breaker.route.{}.", stat_segment(&r.name));
                let c = |n: &str| abi::define_metric(MetricKind::Counter, &format!("{p}{n}"));
                RouteMetrics {
                    rejected: c("requests_rejected"),
                    fail_open: c("requests_fail_open"),
                }
            })
            .collect();
        Metrics { upstreams, routes }
    }

    /// Counts a transition and sets the state gauge.
    pub fn transition(&self, upstream: usize, t: &Transition) {
        let Some(m) = self.upstreams.get(upstream) else {
            return;
        };
        let slot = match (t.from, t.to) {
            (PhaseKind::Closed, PhaseKind::Open) => Some(0),
            (PhaseKind::Open, PhaseKind::HalfOpen) => Some(1),
            (PhaseKind::HalfOpen, PhaseKind::Closed) => Some(2),
            (PhaseKind::HalfOpen, PhaseKind::Open) => Some(3),
            _ => None,
        };
        if let Some(i) = slot {
            abi::increment(m.transitions[i], 1);
        }
        abi::record(m.state, t.to.gauge());
        if t.to == PhaseKind::Isolated {
            abi::record(m.isolated, 1);
        } else if t.from == PhaseKind::Isolated {
            abi::record(m.isolated, 0);
        }
    }

    /// Counts a classified outcome of one upstream.
    pub fn outcome(&self, upstream: usize, verdict: &Verdict) {
        let Some(m) = self.upstreams.get(upstream) else {
            return;
        };
        match verdict {
            Verdict::Counted(outcome) => {
                let counter = match outcome.failure {
                    Some(f) => m.failures[f as usize],
                    None => m.successes,
                };
                abi::increment(counter, 1);
                if outcome.slow {
                    abi::increment(m.slow_calls, 1);
                }
            }
            Verdict::ClientError(status) => {
                abi::increment(m.client_errors, 1);
                let i = CLIENT_ERROR_STATUSES
                    .iter()
                    .position(|s| s == status)
                    .unwrap_or(CLIENT_ERROR_STATUSES.len());
                abi::increment(m.client_errors_by_status.get(i).copied().flatten(), 1);
            }
            Verdict::Ignored => abi::increment(m.ignored, 1),
            Verdict::ProxyLimit => {
                abi::increment(m.ignored, 1);
                abi::increment(m.ignored_proxy_limit, 1);
            }
        }
    }

    /// The counters of one upstream.
    pub fn upstream(&self, i: usize) -> Option<&UpstreamMetrics> {
        self.upstreams.get(i)
    }

    /// The counters of one route.
    pub fn route(&self, i: usize) -> Option<&RouteMetrics> {
        self.routes.get(i)
    }
}
