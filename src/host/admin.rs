//! Serves the operator endpoints (see [`crate::admin`]) as local replies: reads every
//! breaker cell and the history from shared data, applies reset / isolate / release
//! through the same CAS updates as traffic, and checks the bearer token, which comes
//! from the VM's environment and never appears in a reply or a log.

use super::abi::{self, Map};
use super::{EnvoyStore, Shared};
use crate::admin::{self, Action, Endpoint, Refusal};
use crate::breaker::Breaker;
use crate::history;
use crate::store;
use serde_json::json;

/// The dashboard page (self-contained: no external scripts, fonts or styles).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Answers an admin request with a local reply.
pub fn serve(shared: &Shared, request: Result<Endpoint, Refusal>) {
    let cfg = &shared.config;
    let endpoint = match request {
        Ok(e) => e,
        Err(Refusal::NotFound) => return reply(404, &error("not_found", "no such endpoint")),
        Err(Refusal::MethodNotAllowed(allow)) => {
            return send(
                405,
                &error("method_not_allowed", &format!("use {allow}")),
                &[("allow", allow)],
            )
        }
    };
    let protect = cfg.admin.as_ref().is_some_and(|a| a.protect_reads);
    // The page itself is never protected: a browser sends no token when it loads
    // it; the page then asks for the token and sends it with its reads.
    let needs_token = endpoint.mutates() || (protect && endpoint != Endpoint::Dashboard);
    if needs_token && !authorized(shared) {
        return send(
            401,
            &error("unauthorized", "a valid bearer token is required"),
            &[("www-authenticate", "Bearer")],
        );
    }
    let now = abi::now_ms();
    match endpoint {
        Endpoint::Dashboard => {
            let _ = abi::send_local_response(
                200,
                "llm_breaker_admin",
                DASHBOARD.as_bytes(),
                &[
                    ("content-type", "text/html; charset=utf-8"),
                    ("cache-control", "no-store"),
                    (
                        "content-security-policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                ],
            );
        }
        Endpoint::Status => {
            let states = states(shared, now);
            let hist = history::read(&EnvoyStore);
            reply(200, &admin::status_json(cfg, &states, &hist, now));
        }
        Endpoint::Health => {
            let (ok, body) = admin::health_json(cfg, &states(shared, now), now);
            reply(if ok { 200 } else { 503 }, &body);
        }
        Endpoint::Act { upstream, action } => {
            let Some((u, up)) = cfg
                .upstreams
                .iter()
                .enumerate()
                .find(|(_, x)| x.name == upstream)
            else {
                return reply(404, &error("unknown_upstream", "no such upstream"));
            };
            let mut breakers = Vec::new();
            for cell in cfg.cells_of(u) {
                let model = cfg.cells.get(cell).and_then(|c| c.model.as_deref());
                let act = |b: &mut Breaker| match action {
                    Action::Reset => b.operator_reset(&up.breaker, now),
                    Action::Isolate => b.operator_isolate(now),
                    Action::Release => b.operator_release(now),
                };
                let r = store::update(&EnvoyStore, shared.key(cell), &up.breaker, now, act);
                shared.report_update(cell, &r);
                // Held successes were counted in the old state: drop them.
                let _ = shared.take_pending(cell);
                match r {
                    Ok(r) => {
                        shared.saw(cell, r.state.epoch, r.state.is_quiet(), now);
                        breakers.push(json!({"model": model, "state": r.state.kind().as_str()}));
                    }
                    Err(e) => {
                        return reply(
                            503,
                            &error("update_failed", &format!("could not update: {e}")),
                        )
                    }
                }
            }
            reply(
                200,
                &json!({"upstream": up.name, "action": action.as_str(), "breakers": breakers})
                    .to_string(),
            );
        }
    }
}

/// Whether the request carries the configured token.
fn authorized(shared: &Shared) -> bool {
    let auth = abi::header(Map::Request, "authorization");
    admin::token_matches(shared.admin_token.as_deref(), auth.as_deref())
}

/// Every cell's state, as read now, indexed like the config's cells (undecodable
/// bytes read as closed; config validation gives every cell an upstream).
fn states(shared: &Shared, now: u64) -> Vec<Breaker> {
    let cfg = &shared.config;
    cfg.upstreams
        .iter()
        .enumerate()
        .flat_map(|(u, up)| cfg.cells_of(u).map(move |cell| (cell, &up.breaker)))
        .map(|(cell, bc)| {
            store::peek(&EnvoyStore, shared.key(cell), bc, now)
                .unwrap_or_else(|_| Breaker::new(bc, now))
        })
        .collect()
}

fn error(kind: &str, message: &str) -> String {
    json!({"error": {"type": kind, "message": message}}).to_string()
}

fn reply(code: u32, body: &str) {
    send(code, body, &[]);
}

fn send(code: u32, body: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    headers.extend_from_slice(extra);
    let _ = abi::send_local_response(code, "llm_breaker_admin", body.as_bytes(), &headers);
}
