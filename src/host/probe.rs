//! Active recovery probes: on every tick, for each open upstream with a `probe`
//! configured, the worker that wins the upstream's lease (see [`crate::probe`])
//! sends the health request to its cluster with `dispatch_http_call`; an expected
//! status moves the upstream's open breakers to half-open at once.

use super::abi::{self, Level, Map};
use super::{EnvoyStore, Shared};
use crate::{probe, store};
use std::collections::HashMap;
use std::time::Duration;

/// Probes in flight from this VM: call token → upstream index.
#[derive(Debug, Default)]
pub struct InFlight {
    calls: HashMap<u32, usize>,
}

/// Whether any of the upstream's breakers is open now.
fn any_open(shared: &Shared, upstream: usize, now_ms: u64) -> bool {
    let cfg = &shared.config;
    let Some(up) = cfg.upstreams.get(upstream) else {
        return false;
    };
    cfg.cells_of(upstream)
        .any(|cell| store::is_open(&EnvoyStore, shared.key(cell), &up.breaker, now_ms))
}

/// Sends the probes that are due and that this worker wins.
pub fn tick(shared: &Shared, inflight: &mut InFlight, now_ms: u64) {
    for (u, up) in shared.config.upstreams.iter().enumerate() {
        let Some(p) = &up.probe else {
            continue;
        };
        if inflight.calls.values().any(|&x| x == u) || !any_open(shared, u, now_ms) {
            continue;
        }
        let key = probe::key(&up.name);
        if !probe::claim(&EnvoyStore, &key, now_ms, p.interval_ms) {
            continue;
        }
        let headers: Vec<(&str, &str)> = p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!p.body.is_empty()).then_some(&p.body[..]);
        let m = shared.metrics.upstream(u);
        match proxy_wasm::hostcalls::dispatch_http_call(
            &up.name,
            headers,
            body,
            vec![],
            Duration::from_millis(p.timeout_ms),
        ) {
            Ok(token) => {
                inflight.calls.insert(token, u);
                abi::increment(m.and_then(|m| m.active_probes), 1);
            }
            Err(s) => {
                abi::increment(m.and_then(|m| m.active_probe_failures), 1);
                abi::log(
                    Level::Warn,
                    &format!(
                        "llm-breaker: cannot send the active probe to {} ({s:?})",
                        up.name
                    ),
                );
            }
        }
    }
}

/// Handles a probe's answer: an expected status half-opens the upstream's open
/// breakers; anything else (or a timeout, which has no headers) leaves them open.
pub fn answered(shared: &Shared, inflight: &mut InFlight, token: u32) {
    let Some(u) = inflight.calls.remove(&token) else {
        return;
    };
    let (Some(up), m) = (shared.config.upstreams.get(u), shared.metrics.upstream(u)) else {
        return;
    };
    let Some(p) = &up.probe else {
        return;
    };
    let status: Option<u16> = abi::header(Map::HttpCallResponse, ":status")
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok());
    if !status.is_some_and(|s| p.expect_status.contains(&s)) {
        abi::increment(m.and_then(|m| m.active_probe_failures), 1);
        return;
    }
    let now = abi::now_ms();
    for cell in shared.config.cells_of(u) {
        let r = store::update(&EnvoyStore, shared.key(cell), &up.breaker, now, |b| {
            b.probe_succeeded(now)
        });
        shared.report_update(cell, &r);
    }
}
