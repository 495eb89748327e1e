//! Active recovery probes on the host: on every tick, each upstream the worker
//! core says is due ([`Core::probe_due`]: open, probe configured, lease won) gets
//! its health request through `dispatch_http_call`; the answer's status goes back
//! to the core.

use super::abi::{self, Map};
use super::Core;
use crate::worker::operator::Probes;

/// Sends the probes that are due and that this worker wins.
pub fn tick(core: &Core, probes: &mut Probes, now_ms: u64) {
    for (u, up) in core.config().upstream_ids() {
        let Some(p) = &up.probe else {
            continue;
        };
        if !core.probe_due(probes, u, now_ms) {
            continue;
        }
        let headers = p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!p.body.is_empty()).then_some(&p.body[..]);
        let sent = abi::dispatch_http_call(&up.name, headers, body, p.timeout_ms.get());
        if let Err(s) = &sent {
            log::warn!(
                "llm-breaker: cannot send the active probe to {} ({s:?})",
                up.name
            );
        }
        core.probe_sent(probes, u, sent.ok());
    }
}

/// Hands a probe's answer to the core.
pub fn answered(core: &Core, probes: &mut Probes, token: u32) {
    let status = || abi::status_code(Map::HttpCallResponse);
    core.probe_answered(probes, token, status, abi::now_ms());
}
