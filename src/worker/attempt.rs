//! One attempt of the upstream role (`within_request`), callback by callback, as
//! plain Rust: the host hands in what it read and carries out the returned step.
//! [`Worker::attempt`] (in [`super::within`]) decides the upstream, ticket and model;
//! this holds them until `on_done`, when the attempt is recorded once.

use super::relay::Token;
use super::request::Routed;
use super::response::Response;
use super::within::attempt_flags;
use super::{Metrics, Worker};
use crate::ids::RouteId;
use crate::store::SharedStore;

/// What the host does with a request-body callback.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyStep {
    /// Let it through.
    Continue,
    /// Hold it: the body is not complete and must be rewritten or measured.
    Hold,
    /// Rewrite the complete body's model to this (fixing `content-length`); if
    /// nothing changed, do as [`BodyStep::FixLength`].
    Rewrite(String),
    /// Set `content-length` (if the request has one) to the body's size: an earlier
    /// attempt's rewrite changed the header map all attempts share.
    FixLength,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Upstream role: the attempt's upstream as `attempt_upstream_header` names it
    /// (`header` reads a request header). `None`: no such header configured, or the
    /// header is missing or says nothing (Envoy's formatter writes "" or "-" for an
    /// endpoint without the metadata); the host then reads the endpoint metadata. A
    /// configured header that says nothing is logged once per worker.
    pub fn attempt_upstream<'a>(
        &self,
        header: impl FnOnce(&str) -> Option<&'a [u8]>,
    ) -> Option<&'a [u8]> {
        let name = self.config.attempt_upstream_header.as_deref()?;
        let named = header(name).filter(|v| !v.is_empty() && *v != b"-");
        if named.is_none() && !self.attempt_header_missed.replace(true) {
            log::warn!(
                "llm-breaker: an attempt came without `{name}`: is the generator's header_mutation \
                 `llm-breaker-attempt-upstream` ahead of the upstream role? (reading the endpoint \
                 metadata instead, one more host call per attempt)"
            );
        }
        named
    }
}

/// One attempt, from its request headers to `on_done`.
#[derive(Debug, Default)]
pub struct Attempt {
    routed: Option<Routed>,
    rewrite: Option<String>,
    hold: bool,
    name: String,
    response: Response,
    status: Option<u16>,
    per_try_ms: Option<u64>,
    gateway_key: bool,
    token: Option<Token>,
    route: Option<RouteId>,
}

impl Attempt {
    /// Request headers of an attempt to the upstream `name` (endpoint metadata) with
    /// the downstream role's `tickets` and Envoy's `x-envoy-expected-rq-timeout-ms`;
    /// `eos`: no body. `true`: hold the headers until the body is complete.
    pub fn start<S: SharedStore, M: Metrics>(
        &mut self,
        worker: &Worker<S, M>,
        name: &[u8],
        tickets: Option<&[u8]>,
        per_try: Option<&[u8]>,
        eos: bool,
        now_ms: u64,
    ) -> bool {
        let Some(a) = worker.attempt(name, tickets, now_ms) else {
            return false;
        };
        self.per_try_ms = per_try.and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
        self.name = a.name.to_string();
        self.rewrite = a.rewrite.map(str::to_string);
        self.hold = a.hold && !eos;
        self.token = a.token;
        self.route = a.route;
        self.routed = Some(a.routed);
        self.hold
    }

    /// The route the attempt's tickets named (after [`Attempt::start`]).
    pub fn route(&self) -> Option<RouteId> {
        self.route
    }

    /// The attempt carries the gateway's key for its upstream (request shaping):
    /// its 401 or 403 is then the operator's wrong key, not the client's error.
    pub fn carries_gateway_key(&mut self, yes: bool) {
        self.gateway_key = yes;
    }

    /// A request-body callback (`eos`: the body is complete; `now` reads the clock,
    /// only then).
    pub fn request_body(&mut self, eos: bool, now: impl FnOnce() -> u64) -> BodyStep {
        if !eos {
            return if self.hold {
                BodyStep::Hold
            } else {
                BodyStep::Continue
            };
        }
        // The provider's time to first byte counts from the end of the request.
        if let Some(r) = &mut self.routed {
            r.start_ms = now();
        }
        if !std::mem::take(&mut self.hold) {
            return BodyStep::Continue;
        }
        match self.rewrite.take() {
            Some(model) => BodyStep::Rewrite(model),
            None => BodyStep::FixLength,
        }
    }

    /// Response headers: the value of [`super::within::SERVED_HEADER`] to set, if
    /// this attempt is tracked and the VM's relay did not take it.
    pub fn response_headers<S: SharedStore, M: Metrics>(
        &mut self,
        worker: &Worker<S, M>,
        status: Option<u16>,
        eos: bool,
        now_ms: u64,
        header: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Option<&str> {
        let routed = self.routed.as_ref()?;
        self.status = status;
        self.response
            .headers(worker, routed, status, eos, now_ms, header);
        if let Some(t) = self.token {
            if worker.relay().served(t, routed.upstream, status) {
                return None;
            }
        }
        Some(&self.name)
    }

    /// A response body chunk; see [`Response::body`].
    pub fn response_body(
        &mut self,
        size: usize,
        eos: bool,
        now: impl FnOnce() -> u64,
        read: impl FnOnce(usize, usize) -> Vec<u8>,
    ) {
        if let Some(routed) = &self.routed {
            self.response.body(routed, size, eos, now, read);
        }
    }

    /// Response trailers.
    pub fn trailers(&mut self) {
        self.response.trailers();
    }

    /// The attempt is over (`on_done`): records it, once. `connect_failed` reads
    /// `upstream.transport_failure_reason`, only when it matters.
    pub fn done<S: SharedStore, M: Metrics>(
        &mut self,
        worker: &Worker<S, M>,
        now_ms: u64,
        connect_failed: impl FnOnce() -> bool,
    ) {
        let Some(routed) = self.routed.take() else {
            return;
        };
        let (status, per_try) = (self.status, self.per_try_ms);
        let elapsed = now_ms.saturating_sub(routed.start_ms);
        // `response.code_details` is stale per attempt (it describes the downstream
        // stream), so a total-duration cut can't be told from a reset here.
        let facts = self.response.end(
            || attempt_flags(status, elapsed, per_try, connect_failed),
            || None,
        );
        worker.finish_with(&routed, facts, now_ms, self.gateway_key);
    }
}
