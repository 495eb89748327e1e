//! The operator endpoints' logic: which endpoint a request asks for, whether its
//! token is right (compared in constant time), and the JSON documents of `status`
//! and `health`. Pure: the host adapter reads the states and sends the replies.

use crate::breaker::{Admission, Breaker, Phase};
use crate::config::{BreakerConfig, Cell, Config, Route, WindowSpec};
use crate::history::Entry;
use crate::ids::UpstreamId;
use crate::worker::metrics::UpstreamMetric;
use serde_json::{json, Value};

/// An operator action on an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back to closed, counts cleared.
    Reset,
    /// Forced open until released.
    Isolate,
    /// End an isolation.
    Release,
}

impl Action {
    /// Name in paths and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reset => "reset",
            Action::Isolate => "isolate",
            Action::Release => "release",
        }
    }
}

/// What a request under the admin prefix asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET {prefix}/`: the dashboard page.
    Dashboard,
    /// `GET {prefix}/status`.
    Status,
    /// `GET {prefix}/health`.
    Health,
    /// `POST {prefix}/upstreams/{name}/{action}`.
    Act {
        /// Upstream name as given (checked by the caller).
        upstream: String,
        /// The action.
        action: Action,
    },
}

impl Endpoint {
    /// Whether the endpoint changes state (and always needs the token).
    pub fn mutates(&self) -> bool {
        matches!(self, Endpoint::Act { .. })
    }
}

/// Why a request under the prefix can't be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such endpoint.
    NotFound,
    /// Wrong method; the allowed one.
    MethodNotAllowed(&'static str),
}

/// Parses a request. `None`: the path is not under `prefix` (normal traffic).
pub fn parse(prefix: &str, method: &str, path: &str) -> Option<Result<Endpoint, Refusal>> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let rest = path.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    let method_is = |want: &'static str, ep: Endpoint| {
        if method == want || (want == "GET" && method == "HEAD") {
            Ok(ep)
        } else {
            Err(Refusal::MethodNotAllowed(want))
        }
    };
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match parts.as_slice() {
        [""] => method_is("GET", Endpoint::Dashboard),
        ["status"] => method_is("GET", Endpoint::Status),
        ["health"] => method_is("GET", Endpoint::Health),
        ["upstreams", name, action] if !name.is_empty() => {
            let action = match *action {
                "reset" => Action::Reset,
                "isolate" => Action::Isolate,
                "release" => Action::Release,
                _ => return Some(Err(Refusal::NotFound)),
            };
            method_is(
                "POST",
                Endpoint::Act {
                    upstream: (*name).to_string(),
                    action,
                },
            )
        }
        _ => Err(Refusal::NotFound),
    })
}

/// Whether `authorization` is `Bearer <expected>`. Takes the same time whatever
/// the bytes, for a given header length; no token configured never matches.
pub fn token_matches(expected: Option<&str>, authorization: Option<&[u8]>) -> bool {
    let (Some(expected), Some(auth)) = (expected, authorization) else {
        return false;
    };
    if expected.is_empty() {
        return false;
    }
    let want = format!("Bearer {expected}");
    let (a, b) = (want.as_bytes(), auth);
    let mut diff = u8::from(a.len() != b.len());
    for (i, &y) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ y;
    }
    diff == 0
}

/// Whether a breaker would admit a request now: what [`Breaker::admit`] answers, on
/// a copy (the state is not changed).
fn admits(b: &Breaker, cfg: &BreakerConfig, now_ms: u64) -> bool {
    matches!(b.clone().admit(cfg, now_ms).value, Admission::Admitted(_))
}

/// Names of the routes none of whose upstreams admits traffic now. `states` is
/// indexed like the config's cells.
pub fn routes_down(cfg: &Config, states: &[Breaker], now_ms: u64) -> Vec<String> {
    cfg.routes
        .iter()
        .filter(|r| {
            !r.chain.iter().any(|&u| {
                cfg.upstream(u).is_some_and(|up| {
                    cfg.cells_of(u)
                        .filter_map(|cell| states.get(cell.index()))
                        .any(|s| admits(s, &up.breaker, now_ms))
                })
            })
        })
        .map(|r| r.name.clone())
        .collect()
}

/// The `health` document and whether it is healthy.
pub fn health_json(cfg: &Config, states: &[Breaker], now_ms: u64) -> (bool, String) {
    let down = routes_down(cfg, states, now_ms);
    let ok = down.is_empty();
    let doc = json!({"status": if ok { "ok" } else { "down" }, "routes_down": down});
    (ok, doc.to_string())
}

/// The `status` document: every breaker cell, the routes, and the history (newest
/// first). Nothing secret is in it.
/// `failover`: [`failover_json`] under `within_request`.
pub fn status_json(
    cfg: &Config,
    states: &[Breaker],
    history: &[Entry],
    now_ms: u64,
    failover: Option<Value>,
) -> String {
    let down = routes_down(cfg, states, now_ms);
    let upstreams: Vec<Value> = cfg
        .cells
        .iter()
        .zip(states)
        .filter_map(|(c, b)| cell_json(cfg, c, b, now_ms))
        .collect();
    let routes: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| route_json(cfg, r, &down))
        .collect();
    let transitions: Vec<Value> = history
        .iter()
        .filter_map(|e| transition_json(cfg, e))
        .collect();
    let mut doc = json!({
        "mode": cfg.mode.as_str(),
        "now_ms": now_ms,
        "upstreams": upstreams,
        "routes": routes,
        "transitions": transitions,
    });
    if let (Some(f), Some(obj)) = (failover, doc.as_object_mut()) {
        obj.insert("failover".into(), f);
    }
    doc.to_string()
}

/// The `status` document's `failover` part under `within_request`: each upstream's
/// attempt counters (process-wide Envoy stats, read through `counter`).
pub fn failover_json(cfg: &Config, counter: impl Fn(UpstreamId, UpstreamMetric) -> u64) -> Value {
    let upstreams: Vec<Value> = cfg
        .upstream_ids()
        .map(|(id, u)| {
            json!({
                "upstream": u.name,
                "attempts": counter(id, UpstreamMetric::Attempts),
                "attempts_failed_retried": counter(id, UpstreamMetric::AttemptsFailedRetried),
                "requests_not_retried_over_buffer_limit":
                    counter(id, UpstreamMetric::NotRetriedOverBufferLimit),
            })
        })
        .collect();
    json!({"mode": "within_request", "upstreams": upstreams})
}

/// One breaker cell in the `status` document: its state, window and thresholds.
fn cell_json(cfg: &Config, c: &Cell, b: &Breaker, now_ms: u64) -> Option<Value> {
    let up = cfg.upstream(c.upstream)?;
    let bc = &up.breaker;
    let t = b.window.totals(now_ms);
    let rate = |n: u32| {
        if t.calls == 0 {
            0.0
        } else {
            f64::from(n) / f64::from(t.calls)
        }
    };
    let (open_until, permits, successes) = match &b.phase {
        Phase::Open { until_ms } => (Some(*until_ms), 0, 0),
        Phase::HalfOpen { permits, successes } => (
            None,
            permits.iter().filter(|&&p| p > now_ms).count(),
            *successes,
        ),
        Phase::Closed | Phase::Isolated => (None, 0, 0),
    };
    Some(json!({
        "upstream": up.name,
        "model": c.model,
        "state": b.kind().as_str(),
        "since_ms": b.since_ms,
        "open_until_ms": open_until,
        "consecutive_failures": b.consecutive_failures,
        "window": {
            "calls": t.calls,
            "failures": t.failures,
            "slow": t.slow,
            "failure_rate": rate(t.failures),
            "slow_call_rate": rate(t.slow),
        },
        "half_open": {
            "permits_in_use": permits,
            "permitted_calls": bc.half_open.permitted_calls,
            "successes": successes,
        },
        "times_opened": b.times_opened,
        "last_failure": b.last_failure.map(|(class, at)| json!({"class": class.as_str(), "at_ms": at})),
        "thresholds": thresholds_json(bc),
    }))
}

/// A breaker's configured trip rules, as the `status` document shows them.
fn thresholds_json(bc: &BreakerConfig) -> Value {
    let window = match bc.window {
        WindowSpec::Seconds(s) => json!({"seconds": s}),
        WindowSpec::Calls(n) => json!({"calls": n}),
    };
    json!({
        "consecutive_failures": bc.consecutive_failures,
        "failure_rate": bc.failure_rate_threshold,
        "minimum_calls": bc.minimum_calls,
        "slow_call_rate": bc.slow_rate_threshold,
        "slow_call_ttfb_ms": bc.slow_ttfb_ms,
        "window": window,
    })
}

/// A route, its chain by name, and whether any of it admits traffic.
fn route_json(cfg: &Config, r: &Route, down: &[String]) -> Value {
    let names: Vec<&str> = r
        .chain
        .iter()
        .filter_map(|&u| cfg.upstream(u).map(|x| x.name.as_str()))
        .collect();
    json!({"route": r.name, "upstreams": names, "available": !down.contains(&r.name)})
}

/// One history entry, naming its cell's upstream and model.
fn transition_json(cfg: &Config, e: &Entry) -> Option<Value> {
    let c = cfg.cells.get(usize::from(e.cell))?;
    let up = cfg.upstream(c.upstream)?;
    Some(json!({
        "at_ms": e.at_ms,
        "upstream": up.name,
        "model": c.model,
        "from": e.from.as_str(),
        "to": e.to.as_str(),
        "reason": e.reason.as_str(),
    }))
}

#[cfg(test)]
mod tests;
