//! Fleet sync on the host: the root context's timer starts a round when the core
//! says so ([`Core::fleet_start`]), each etcd call goes out through
//! `dispatch_http_call` to `fleet.etcd_cluster`, and its answer (status and body)
//! goes back to the core, which names the next call. The two fleet metrics live
//! here: `llm_breaker.fleet.errors` and `llm_breaker.fleet.connected`.

use super::abi::{self, Body, Map, MetricKind};
use super::Core;
use crate::fleet::etcd::Call;
use crate::worker::fleet::{Report, Round};

/// Largest etcd answer read (a range of every record fits well within it).
const MAX_ANSWER: usize = 1 << 20;

/// This VM's fleet state: the round and the two metric ids.
#[derive(Debug, Default)]
pub struct Fleet {
    round: Round,
    errors: Option<u32>,
    connected: Option<u32>,
}

impl Fleet {
    /// Defines the metrics and seeds shared data (the lease, the instance id).
    pub fn configure(core: &Core) -> Fleet {
        let Some(f) = core.config().fleet.as_ref() else {
            return Fleet::default();
        };
        let node = abi::property(&["node", "id"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|s| !s.is_empty());
        let explicit = f.instance.clone().or(node);
        core.fleet_seed(explicit.as_deref(), random());
        let errors = abi::define_metric(MetricKind::Counter, "llm_breaker.fleet.errors");
        let connected = abi::define_metric(MetricKind::Gauge, "llm_breaker.fleet.connected");
        log::info!(
            "llm-breaker: fleet: instance {} syncing every {} ms through cluster {}",
            core.fleet_instance(),
            f.sync_ms,
            f.etcd_cluster
        );
        Fleet {
            round: Round::default(),
            errors,
            connected,
        }
    }

    /// Whether `token` is a fleet call.
    pub fn owns(&self, token: u32) -> bool {
        self.round.owns(token)
    }

    /// The timer fired.
    pub fn tick(&mut self, core: &Core, now_ms: u64) {
        if let Some(call) = core.fleet_start(&mut self.round, now_ms) {
            self.send(core, &call, now_ms);
        }
    }

    /// A fleet call answered.
    pub fn answered(&mut self, core: &Core, token: u32, body_size: usize) {
        let status = abi::status_code(Map::HttpCallResponse);
        let body = abi::body(Body::HttpCallResponse, 0, body_size.min(MAX_ANSWER));
        let now = abi::now_ms();
        let (next, report) = core.fleet_answered(&mut self.round, token, status, &body, now);
        self.report(report);
        if let Some(call) = next {
            self.send(core, &call, now);
        }
    }

    fn send(&mut self, core: &Core, call: &Call, now_ms: u64) {
        let Some(f) = core.config().fleet.as_ref() else {
            return;
        };
        let headers = vec![
            (":method", "POST"),
            (":path", call.path),
            (":authority", f.etcd_cluster.as_str()),
            ("content-type", "application/json"),
        ];
        let sent = abi::dispatch_http_call(
            &f.etcd_cluster,
            headers,
            Some(call.body.as_bytes()),
            f.timeout_ms.get(),
        );
        if let Err(s) = &sent {
            log::debug!(
                "llm-breaker: fleet: cannot send to {} ({s:?})",
                f.etcd_cluster
            );
        }
        let report = core.fleet_sent(&mut self.round, sent.ok(), now_ms);
        self.report(report);
    }

    fn report(&self, r: Report) {
        if r.error {
            abi::increment(self.errors, 1);
        }
        if let Some(c) = r.connected {
            abi::record(self.connected, u64::from(c));
        }
    }
}

/// A random number for a default instance id (WASI's random source, through the
/// standard library's hasher seeds).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(abi::now_ms());
    h.finish()
}
