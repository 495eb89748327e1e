//! One attempt of the upstream role (`within_request`), callback by callback, as
//! plain Rust: the host hands in what it read and carries out the returned step.
//! [`Worker::attempt`] (in [`super::within`]) decides the upstream and model; this
//! holds the model until the body is complete. The upstream role shapes attempts
//! only: the upstream log and the downstream role record them.

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

/// One attempt, from its request headers to the end of its body.
#[derive(Debug, Default)]
pub struct Attempt {
    rewrite: Option<String>,
    hold: bool,
    route: Option<RouteId>,
}

impl Attempt {
    /// Request headers of an attempt to the upstream `name` with the downstream
    /// role's `tickets`; `eos`: no body. `true`: hold the headers until the body is
    /// complete.
    pub fn start<S: SharedStore, M: Metrics>(
        &mut self,
        worker: &Worker<S, M>,
        name: &[u8],
        tickets: Option<&[u8]>,
        eos: bool,
        now_ms: u64,
    ) -> bool {
        let Some(a) = worker.attempt(name, tickets, now_ms, None) else {
            return false;
        };
        self.rewrite = a.rewrite.map(str::to_string);
        self.hold = a.hold && !eos;
        self.route = a.route;
        self.hold
    }

    /// The route the attempt's tickets named (after [`Attempt::start`]).
    pub fn route(&self) -> Option<RouteId> {
        self.route
    }

    /// A request-body callback (`eos`: the body is complete).
    pub fn request_body(&mut self, eos: bool) -> BodyStep {
        if !eos {
            return if self.hold {
                BodyStep::Hold
            } else {
                BodyStep::Continue
            };
        }
        if !std::mem::take(&mut self.hold) {
            return BodyStep::Continue;
        }
        match self.rewrite.take() {
            Some(model) => BodyStep::Rewrite(model),
            None => BodyStep::FixLength,
        }
    }
}
