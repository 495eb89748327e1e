//! The metrics seam: what the worker counts, named by typed ids, and the
//! [`Metrics`] trait the host implements over Envoy stats (a recording fake in
//! tests). The names and the order of every upstream's metrics live here, so the
//! host only defines them and maps an id to its stat.
//!
//! Names are `llm_breaker.upstream.<upstream>.<metric>` and
//! `llm_breaker.route.<route>.<metric>`; Envoy prefixes them with `wasmcustom.`.

use crate::breaker::PhaseKind;
use crate::classify::FailureClass;
use crate::config::Config;
use crate::ids::{RouteId, UpstreamId};

/// Where the worker's counters and gauges go.
pub trait Metrics {
    /// Adds one to a counter.
    fn increment(&self, metric: Metric);
    /// Sets a gauge, or records a value in a histogram.
    fn record(&self, metric: Metric, value: u64);
    /// Reads a metric, where the host can (the `status` document's counters).
    fn get(&self, _metric: Metric) -> Option<u64> {
        None
    }
}

/// One metric of one upstream or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A metric of an upstream.
    Upstream(UpstreamId, UpstreamMetric),
    /// A metric of a route.
    Route(RouteId, RouteMetric),
}

/// Client statuses with a counter of their own; other 4xx share `client_errors.other`.
pub const CLIENT_ERROR_STATUSES: [u16; 7] = [400, 401, 403, 404, 408, 413, 422];

/// A phase change with a counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// closed → open.
    ClosedToOpen,
    /// open → half-open.
    OpenToHalfOpen,
    /// half-open → closed.
    HalfOpenToClosed,
    /// half-open → open.
    HalfOpenToOpen,
}

impl Edge {
    /// Every edge, in metric order.
    pub const ALL: [Edge; 4] = [
        Edge::ClosedToOpen,
        Edge::OpenToHalfOpen,
        Edge::HalfOpenToClosed,
        Edge::HalfOpenToOpen,
    ];

    /// The counted edge from `from` to `to`, if that change is counted.
    pub fn of(from: PhaseKind, to: PhaseKind) -> Option<Edge> {
        match (from, to) {
            (PhaseKind::Closed, PhaseKind::Open) => Some(Edge::ClosedToOpen),
            (PhaseKind::Open, PhaseKind::HalfOpen) => Some(Edge::OpenToHalfOpen),
            (PhaseKind::HalfOpen, PhaseKind::Closed) => Some(Edge::HalfOpenToClosed),
            (PhaseKind::HalfOpen, PhaseKind::Open) => Some(Edge::HalfOpenToOpen),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Edge::ClosedToOpen => "closed_to_open",
            Edge::OpenToHalfOpen => "open_to_half_open",
            Edge::HalfOpenToClosed => "half_open_to_closed",
            Edge::HalfOpenToOpen => "half_open_to_open",
        }
    }
}

/// The metrics of one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMetric {
    /// Gauge: 0 closed, 1 open, 2 half-open (see [`PhaseKind::gauge`]).
    State,
    /// Gauge: 1 while an operator isolates the upstream.
    Isolated,
    /// Phase changes of one kind.
    Transitions(Edge),
    /// Active recovery probes sent.
    ActiveProbes,
    /// Active recovery probes that failed (status, timeout, or not sent).
    ActiveProbeFailures,
    /// Requests routed to this upstream.
    Admitted,
    /// Of which half-open probes.
    Probes,
    /// Requests that skipped this upstream (breaker refused) and went to a later one.
    FailedOver,
    /// Requests that skipped this upstream and got the local 503 (all open).
    Rejected,
    /// Outcomes counted as successes.
    Successes,
    /// Failures of one class.
    Failures(FailureClass),
    /// Outcomes with a slow first byte.
    SlowCalls,
    /// Client 4xx answers (not counted as failures).
    ClientErrors,
    /// Client 4xx answers of one status of [`CLIENT_ERROR_STATUSES`], or (`None`)
    /// of any other.
    ClientErrorsByStatus(Option<u16>),
    /// Outcomes that say nothing about the provider (client left, Envoy's own refusal).
    Ignored,
    /// Of which healthy streams cut by the operator's total-duration limit.
    IgnoredProxyLimit,
    /// Shared-data bytes that did not decode and were reset.
    StateResets,
    /// Updates dropped after too many CAS conflicts or a host error.
    UpdateErrors,
    /// Within-request failover: attempts sent to this upstream (counted by the
    /// downstream role from the answer and Envoy's attempt count).
    Attempts,
    /// Within-request failover: attempts to this upstream that failed and were
    /// retried on the next upstream (downstream role).
    AttemptsFailedRetried,
    /// Within-request failover: requests whose failed attempt on this upstream was
    /// not retried because the request was over Envoy's buffer limit
    /// (`retry_buffer_limit_bytes`; downstream role).
    NotRetriedOverBufferLimit,
    /// Shadow mode: requests that went to the primary although enforcement would
    /// have skipped this upstream and sent them to a later one.
    WouldFailOver,
    /// Shadow mode: requests that went to the primary although enforcement would
    /// have skipped this upstream and answered the all-open 503.
    WouldReject,
    /// Histogram, ms: time to first byte of a recorded request or attempt (the
    /// first body chunk of an event stream, else the response headers), from the
    /// end of the request.
    TtfbMs,
    /// Histogram, ms: from the end of the request to the end of its response (or
    /// of the attempt, however it ended).
    DurationMs,
    /// Of the ignored outcomes: a 401 or 403 to the gateway's own key (its upstream
    /// role's shaping put it in).
    IgnoredCredentialRejected,
}

/// What kind of stat a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (Envoy's default buckets, which suit milliseconds).
    Histogram,
}

const EDGES: usize = Edge::ALL.len();
const FAILURES: usize = FailureClass::ALL.len();
const STATUSES: usize = CLIENT_ERROR_STATUSES.len() + 1;

impl UpstreamMetric {
    /// How many metrics each upstream has.
    pub const COUNT: usize = 23 + EDGES + FAILURES + STATUSES;

    /// The counter of a client status (`client_errors.other` if it has none).
    pub fn client_status(status: u16) -> UpstreamMetric {
        let listed = CLIENT_ERROR_STATUSES.contains(&status);
        UpstreamMetric::ClientErrorsByStatus(listed.then_some(status))
    }

    /// Its position among an upstream's metrics: `all().nth(slot)` is itself.
    pub fn slot(self) -> usize {
        use UpstreamMetric::*;
        let after_failures = 11 + EDGES + FAILURES;
        match self {
            State => 0,
            Isolated => 1,
            Transitions(e) => 2 + e as usize,
            ActiveProbes => 2 + EDGES,
            ActiveProbeFailures => 3 + EDGES,
            Admitted => 4 + EDGES,
            Probes => 5 + EDGES,
            FailedOver => 6 + EDGES,
            Rejected => 7 + EDGES,
            Successes => 8 + EDGES,
            Failures(f) => 9 + EDGES + f as usize,
            SlowCalls => 9 + EDGES + FAILURES,
            ClientErrors => 10 + EDGES + FAILURES,
            ClientErrorsByStatus(s) => {
                let i = s.and_then(|s| CLIENT_ERROR_STATUSES.iter().position(|&x| x == s));
                after_failures + i.unwrap_or(CLIENT_ERROR_STATUSES.len())
            }
            Ignored => after_failures + STATUSES,
            IgnoredProxyLimit => after_failures + STATUSES + 1,
            StateResets => after_failures + STATUSES + 2,
            UpdateErrors => after_failures + STATUSES + 3,
            Attempts => after_failures + STATUSES + 4,
            AttemptsFailedRetried => after_failures + STATUSES + 5,
            WouldFailOver => after_failures + STATUSES + 6,
            WouldReject => after_failures + STATUSES + 7,
            TtfbMs => after_failures + STATUSES + 8,
            DurationMs => after_failures + STATUSES + 9,
            IgnoredCredentialRejected => after_failures + STATUSES + 10,
            NotRetriedOverBufferLimit => after_failures + STATUSES + 11,
        }
    }

    /// Every metric of an upstream, in slot order.
    pub fn all() -> impl Iterator<Item = UpstreamMetric> {
        use UpstreamMetric::*;
        let statuses = CLIENT_ERROR_STATUSES.map(Some).into_iter().chain([None]);
        [State, Isolated]
            .into_iter()
            .chain(Edge::ALL.map(Transitions))
            .chain([
                ActiveProbes,
                ActiveProbeFailures,
                Admitted,
                Probes,
                FailedOver,
                Rejected,
                Successes,
            ])
            .chain(FailureClass::ALL.map(Failures))
            .chain([SlowCalls, ClientErrors])
            .chain(statuses.map(ClientErrorsByStatus))
            .chain([
                Ignored,
                IgnoredProxyLimit,
                StateResets,
                UpdateErrors,
                Attempts,
                AttemptsFailedRetried,
                WouldFailOver,
                WouldReject,
                TtfbMs,
                DurationMs,
                IgnoredCredentialRejected,
                NotRetriedOverBufferLimit,
            ])
    }

    /// Its kind of stat.
    pub fn kind(self) -> Kind {
        use UpstreamMetric::*;
        match self {
            State | Isolated => Kind::Gauge,
            TtfbMs | DurationMs => Kind::Histogram,
            _ => Kind::Counter,
        }
    }

    /// The name after `llm_breaker.upstream.<upstream>.`.
    pub fn name(self) -> String {
        use UpstreamMetric::*;
        let name = match self {
            State => "state",
            Isolated => "isolated",
            Transitions(e) => return format!("transitions.{}", e.as_str()),
            ActiveProbes => "active_probes",
            ActiveProbeFailures => "active_probe_failures",
            Admitted => "requests_admitted",
            Probes => "requests_probe",
            FailedOver => "requests_failed_over",
            Rejected => "requests_rejected",
            Successes => "successes",
            Failures(f) => return format!("failures.{}", f.as_str()),
            SlowCalls => "slow_calls",
            ClientErrors => "client_errors",
            ClientErrorsByStatus(Some(s)) => return format!("client_errors.{s}"),
            ClientErrorsByStatus(None) => "client_errors.other",
            Ignored => "outcomes_ignored",
            IgnoredProxyLimit => "outcomes_ignored.proxy_limit",
            StateResets => "state_resets",
            UpdateErrors => "update_errors",
            Attempts => "attempts",
            AttemptsFailedRetried => "attempts_failed_retried",
            WouldFailOver => "requests_would_fail_over",
            WouldReject => "requests_would_reject",
            TtfbMs => "ttfb_ms",
            DurationMs => "duration_ms",
            IgnoredCredentialRejected => "outcomes_ignored.credential_rejected",
            NotRetriedOverBufferLimit => "requests_not_retried_over_buffer_limit",
        };
        name.to_string()
    }
}

/// The metrics of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMetric {
    /// Requests answered with the local 503 because every upstream was open.
    Rejected,
    /// Requests sent to the primary although every upstream was open.
    FailOpen,
    /// Shadow mode: requests sent to the primary that enforcement would have
    /// answered with the all-open 503.
    WouldReject,
    /// Requests routed without the body's model that a route on their path needed:
    /// Envoy ran no body callback while their headers were held
    /// (`allow_on_headers_stop_iteration` off). Counted on the first route the path
    /// matches.
    ModelUnread,
}

impl RouteMetric {
    /// Every metric of a route, in slot order.
    pub const ALL: [RouteMetric; 4] = [
        RouteMetric::Rejected,
        RouteMetric::FailOpen,
        RouteMetric::WouldReject,
        RouteMetric::ModelUnread,
    ];

    /// Its position among a route's metrics.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The name after `llm_breaker.route.<route>.`.
    pub fn name(self) -> &'static str {
        match self {
            RouteMetric::Rejected => "requests_rejected",
            RouteMetric::FailOpen => "requests_fail_open",
            RouteMetric::WouldReject => "requests_would_reject",
            RouteMetric::ModelUnread => "requests_model_unread",
        }
    }
}

/// Every metric of `config` as (stat name, kind): each upstream's in slot order,
/// then each route's. [`position`] says where a metric stands in it.
pub fn definitions(config: &Config) -> Vec<(String, Kind)> {
    let mut out = Vec::with_capacity(
        config.upstreams.len() * UpstreamMetric::COUNT
            + config.routes.len() * RouteMetric::ALL.len(),
    );
    for u in &config.upstreams {
        let p = format!("llm_breaker.upstream.{}.", stat_segment(&u.name));
        out.extend(UpstreamMetric::all().map(|m| (format!("{p}{}", m.name()), m.kind())));
    }
    for r in &config.routes {
        let p = format!("llm_breaker.route.{}.", stat_segment(&r.name));
        out.extend(RouteMetric::ALL.map(|m| (format!("{p}{}", m.name()), Kind::Counter)));
    }
    out
}

/// Where `metric` stands in [`definitions`] of a config with `upstreams` upstreams.
pub fn position(metric: Metric, upstreams: usize) -> usize {
    match metric {
        Metric::Upstream(u, m) => u.index() * UpstreamMetric::COUNT + m.slot(),
        Metric::Route(r, m) => {
            upstreams * UpstreamMetric::COUNT + r.index() * RouteMetric::ALL.len() + m.slot()
        }
    }
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
