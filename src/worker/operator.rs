//! What operators see and do: the admin endpoints' answers (status, health, reset /
//! isolate / release through the same CAS updates as traffic), and active recovery
//! probes (which upstream is due, what an answer does). The host only reads the
//! request, checks the token and sends the reply or the probe.

use super::metrics::{Metric, UpstreamMetric};
use super::{Metrics, Worker};
use crate::admin::{self, Action, Endpoint, Refusal};
use crate::breaker::Breaker;
use crate::config::Failover;
use crate::history;
use crate::ids::UpstreamId;
use crate::store::{self, SharedStore};
use serde_json::json;
use std::collections::HashMap;

/// An admin endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The dashboard page (the host has it).
    Dashboard,
    /// A JSON reply.
    Json {
        /// HTTP status.
        status: u32,
        /// The JSON body.
        body: String,
        /// Headers beside `content-type` and `cache-control`.
        headers: Vec<(&'static str, &'static str)>,
    },
}

fn json_reply(status: u32, body: String) -> Reply {
    let headers = Vec::new();
    Reply::Json {
        status,
        body,
        headers,
    }
}

fn error(kind: &str, message: &str) -> String {
    json!({"error": {"type": kind, "message": message}}).to_string()
}

/// Probes in flight from this worker: call token → upstream.
#[derive(Debug, Default)]
pub struct Probes {
    calls: HashMap<u32, UpstreamId>,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Answers an admin request; `authorization` reads its `authorization` header
    /// (only when the endpoint needs the token).
    pub fn answer(
        &self,
        request: Result<Endpoint, Refusal>,
        authorization: impl FnOnce() -> Option<Vec<u8>>,
        now_ms: u64,
    ) -> Reply {
        let endpoint = match request {
            Ok(e) => e,
            Err(Refusal::NotFound) => {
                return json_reply(404, error("not_found", "no such endpoint"))
            }
            Err(Refusal::MethodNotAllowed(allow)) => {
                let body = error("method_not_allowed", &format!("use {allow}"));
                let headers = vec![("allow", allow)];
                return Reply::Json {
                    status: 405,
                    body,
                    headers,
                };
            }
        };
        let protect = self.config.admin.as_ref().is_some_and(|a| a.protect_reads);
        // The page itself is never protected: a browser sends no token when it loads
        // it; the page then asks for the token and sends it with its reads.
        let needs_token = endpoint.mutates() || (protect && endpoint != Endpoint::Dashboard);
        let authorized =
            || admin::token_matches(self.admin_token.as_deref(), authorization().as_deref());
        if needs_token && !authorized() {
            let body = error("unauthorized", "a valid bearer token is required");
            let headers = vec![("www-authenticate", "Bearer")];
            return Reply::Json {
                status: 401,
                body,
                headers,
            };
        }
        match endpoint {
            Endpoint::Dashboard => Reply::Dashboard,
            Endpoint::Status => {
                let states = self.states(now_ms);
                let hist = history::read(&self.store);
                let failover = (self.config.failover == Failover::WithinRequest).then(|| {
                    admin::failover_json(&self.config, |u, m| {
                        self.metrics.get(Metric::Upstream(u, m)).unwrap_or(0)
                    })
                });
                let doc = admin::status_json(&self.config, &states, &hist, now_ms, failover);
                json_reply(200, self.fleet_status(doc))
            }
            Endpoint::Health => {
                let (ok, body) = admin::health_json(&self.config, &self.states(now_ms), now_ms);
                json_reply(if ok { 200 } else { 503 }, body)
            }
            Endpoint::Act { upstream, action } => self.act(&upstream, action, now_ms),
        }
    }

    /// Loads the admin bearer token, when admin endpoints are on: the value of the
    /// configured variable in the VM's environment (`env` reads it; never logged).
    pub fn load_admin_token(&mut self, env: impl FnOnce(&str) -> Option<String>) {
        let Some(a) = self.config.admin.as_ref() else {
            return;
        };
        self.admin_token = env(&a.token_env).filter(|t| !t.is_empty());
        if self.admin_token.is_none() {
            log::warn!(
                "llm-breaker: admin endpoints enabled but the VM environment has no {} (vm_config.environment_variables): reset/isolate/release will answer 401",
                a.token_env
            );
        }
    }

    /// Applies an operator action to every cell of the named upstream.
    fn act(&self, upstream: &str, action: Action, now_ms: u64) -> Reply {
        let Some((u, up)) = self.config.upstream_ids().find(|(_, x)| x.name == upstream) else {
            return json_reply(404, error("unknown_upstream", "no such upstream"));
        };
        let mut breakers = Vec::new();
        for cell in self.config.cells_of(u) {
            let Some(rec) = self.cell(cell) else {
                continue;
            };
            let model = self
                .config
                .cells
                .get(cell.index())
                .and_then(|c| c.model.as_deref());
            let r = store::update(
                &self.store,
                &rec.key,
                &up.breaker,
                now_ms,
                |b| match action {
                    Action::Reset => b.operator_reset(&up.breaker, now_ms),
                    Action::Isolate => b.operator_isolate(now_ms),
                    Action::Release => b.operator_release(now_ms),
                },
            );
            self.report_update(cell, &r, now_ms);
            // Held successes were counted in the old state: drop them.
            let _ = rec.take();
            match r {
                Ok(r) => {
                    rec.saw(r.state.epoch, r.state.is_quiet(), now_ms);
                    breakers.push(json!({"model": model, "state": r.state.kind().as_str()}));
                }
                Err(e) => {
                    let body = error("update_failed", &format!("could not update: {e}"));
                    return json_reply(503, body);
                }
            }
        }
        let body = json!({"upstream": up.name, "action": action.as_str(), "breakers": breakers});
        json_reply(200, body.to_string())
    }

    /// Every cell's state, as read now, indexed like the config's cells
    /// (undecodable bytes read as closed).
    pub fn states(&self, now_ms: u64) -> Vec<Breaker> {
        self.config
            .upstream_ids()
            .flat_map(|(u, up)| self.config.cells_of(u).map(move |cell| (cell, &up.breaker)))
            .map(|(cell, bc)| {
                let rec = self.cell(cell);
                let read = rec.and_then(|r| store::peek(&self.store, &r.key, bc, now_ms).ok());
                read.unwrap_or_else(|| Breaker::new(bc, now_ms))
            })
            .collect()
    }

    /// Whether this worker should send `upstream`'s active probe now: it has one, none
    /// is in flight from here, one of its breakers is open, and this worker won
    /// the probe lease.
    pub fn probe_due(&self, probes: &Probes, upstream: UpstreamId, now_ms: u64) -> bool {
        let Some(up) = self.config.upstream(upstream) else {
            return false;
        };
        let Some(p) = &up.probe else {
            return false;
        };
        if probes.calls.values().any(|&x| x == upstream) {
            return false;
        }
        let any_open = self.config.cells_of(upstream).any(|cell| {
            self.cell(cell)
                .is_some_and(|r| store::is_open(&self.store, &r.key, &up.breaker, now_ms))
        });
        any_open
            && crate::probe::claim(
                &self.store,
                &crate::probe::key(&up.name),
                now_ms,
                p.interval_ms.get(),
            )
    }

    /// Notes a probe sent (`Ok(token)`) or not sent.
    pub fn probe_sent(&self, probes: &mut Probes, upstream: UpstreamId, sent: Option<u32>) {
        let m = match sent {
            Some(token) => {
                probes.calls.insert(token, upstream);
                UpstreamMetric::ActiveProbes
            }
            None => UpstreamMetric::ActiveProbeFailures,
        };
        self.metrics.increment(Metric::Upstream(upstream, m));
    }

    /// Handles the answer to probe call `token`; `status` reads its status (only
    /// for a call this worker sent). An expected status half-opens the upstream's
    /// open breakers; anything else (or a timeout, which has no status) leaves them.
    pub fn probe_answered(
        &self,
        probes: &mut Probes,
        token: u32,
        status: impl FnOnce() -> Option<u16>,
        now_ms: u64,
    ) {
        let Some(u) = probes.calls.remove(&token) else {
            return;
        };
        let Some((up, p)) = self
            .config
            .upstream(u)
            .and_then(|x| Some((x, x.probe.as_ref()?)))
        else {
            return;
        };
        if !status().is_some_and(|s| p.expect_status.contains(&s)) {
            self.metrics
                .increment(Metric::Upstream(u, UpstreamMetric::ActiveProbeFailures));
            return;
        }
        for cell in self.config.cells_of(u) {
            let Some(rec) = self.cell(cell) else {
                continue;
            };
            let r = store::update(&self.store, &rec.key, &up.breaker, now_ms, |b| {
                b.probe_succeeded(now_ms)
            });
            self.report_update(cell, &r, now_ms);
        }
    }
}
