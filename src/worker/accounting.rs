//! Which counters a routing decision, an outcome and a phase change bump. Kept
//! apart from the paths that cause them so the whole table reads in one place.

use super::metrics::{Edge, Metric, Metrics, RouteMetric, UpstreamMetric};
use crate::breaker::{PhaseKind, Transition};
use crate::classify::Verdict;
use crate::ids::{RouteId, UpstreamId};
use crate::routing::{Decision, Why};

fn up<M: Metrics + ?Sized>(m: &M, u: UpstreamId, metric: UpstreamMetric) {
    m.increment(Metric::Upstream(u, metric));
}

/// Counts a routing decision of `route`: the admitted upstream (and whether as a
/// probe), the upstreams skipped on the way, fail-open sends and local rejections.
pub fn decision<M: Metrics + ?Sized>(m: &M, route: RouteId, d: &Decision) {
    match d {
        Decision::Send {
            upstream,
            why,
            skipped,
            ..
        } => {
            up(m, *upstream, UpstreamMetric::Admitted);
            if *why == Why::Probe {
                up(m, *upstream, UpstreamMetric::Probes);
            }
            if matches!(why, Why::Failover | Why::Probe) {
                for &s in skipped {
                    up(m, s, UpstreamMetric::FailedOver);
                }
            }
            if *why == Why::FailOpen {
                m.increment(Metric::Route(route, RouteMetric::FailOpen));
            }
        }
        Decision::Reject { skipped, .. } => {
            m.increment(Metric::Route(route, RouteMetric::Rejected));
            for &s in skipped {
                up(m, s, UpstreamMetric::Rejected);
            }
        }
    }
}

/// A request routed without the body's model that `route` needed.
pub fn model_unread<M: Metrics + ?Sized>(m: &M, route: RouteId) {
    m.increment(Metric::Route(route, RouteMetric::ModelUnread));
}

/// Counts a classified outcome of `upstream`.
pub fn outcome<M: Metrics + ?Sized>(m: &M, upstream: UpstreamId, verdict: &Verdict) {
    match verdict {
        Verdict::Counted(outcome) => {
            let counter = match outcome.failure {
                Some(f) => UpstreamMetric::Failures(f),
                None => UpstreamMetric::Successes,
            };
            up(m, upstream, counter);
            if outcome.slow {
                up(m, upstream, UpstreamMetric::SlowCalls);
            }
        }
        Verdict::ClientError(status) => {
            up(m, upstream, UpstreamMetric::ClientErrors);
            up(m, upstream, UpstreamMetric::client_status(*status));
        }
        Verdict::Ignored => up(m, upstream, UpstreamMetric::Ignored),
        Verdict::ProxyLimit => {
            up(m, upstream, UpstreamMetric::Ignored);
            up(m, upstream, UpstreamMetric::IgnoredProxyLimit);
        }
        Verdict::CredentialRejected(_) => {
            up(m, upstream, UpstreamMetric::Ignored);
            up(m, upstream, UpstreamMetric::IgnoredCredentialRejected);
        }
    }
}

/// Records the latency of a request (or attempt) to `upstream`: its time to first
/// byte, if its response headers came, and its duration, in ms, each if known.
pub fn latency<M: Metrics + ?Sized>(
    m: &M,
    upstream: UpstreamId,
    ttfb_ms: Option<u64>,
    duration_ms: Option<u64>,
) {
    if let Some(t) = ttfb_ms {
        m.record(Metric::Upstream(upstream, UpstreamMetric::TtfbMs), t);
    }
    if let Some(d) = duration_ms {
        m.record(Metric::Upstream(upstream, UpstreamMetric::DurationMs), d);
    }
}

/// Counts a phase change and sets the state (and isolated) gauges.
pub fn transition<M: Metrics + ?Sized>(m: &M, upstream: UpstreamId, t: &Transition) {
    if let Some(e) = Edge::of(t.from, t.to) {
        up(m, upstream, UpstreamMetric::Transitions(e));
    }
    state(m, upstream, t.to);
    if t.from == PhaseKind::Isolated && t.to != PhaseKind::Isolated {
        m.record(Metric::Upstream(upstream, UpstreamMetric::Isolated), 0);
    }
}

/// Sets the state gauge (and the isolated gauge when isolated).
pub fn state<M: Metrics + ?Sized>(m: &M, upstream: UpstreamId, kind: PhaseKind) {
    m.record(
        Metric::Upstream(upstream, UpstreamMetric::State),
        kind.gauge(),
    );
    if kind == PhaseKind::Isolated {
        m.record(Metric::Upstream(upstream, UpstreamMetric::Isolated), 1);
    }
}
