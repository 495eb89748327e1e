//! Holding a request's headers while its body is read, and what to do when the
//! body never comes. Reading the model from the body (or rewriting it before the
//! headers go on) holds the headers; Envoy runs the body callbacks meanwhile only
//! when the wasm filter's config sets `allow_on_headers_stop_iteration: true`
//! (Envoy ≥ 1.35, and Istio's `WasmPlugin` can't set it). Without it, Envoy
//! buffers the body behind the held headers and the request would wait until the
//! client gave up.
//!
//! Each worker learns which case it is in from its own requests: a body callback
//! while headers are held proves the knob is on; a held request whose body Envoy
//! has received (its byte count grew) without a body callback proves it is off.
//! The host checks held requests from the root context's tick ([`Worker::held`]);
//! once the knob is known to be off, the request is resumed without the model (as
//! for an unknown model) and later requests are not held at all: a model rewrite
//! is then done in the body callbacks, on a body sent chunked.

use super::{accounting, Metrics, Worker};
use crate::config::Role;
use crate::ids::RouteId;
use std::cell::Cell;

/// A held request whose body Envoy has received is resumed after this long
/// without a body callback (the knob is off).
pub const HOLD_DEADLINE_MS: u64 = 1000;

/// A held request is resumed after this long whatever Envoy received: nothing
/// may hang on a hold (a client that sends no body for this long is routed
/// without its model).
pub const HOLD_LIMIT_MS: u64 = 10_000;

/// The tick period while some route may hold headers.
pub const HOLD_TICK_MS: u64 = 250;

/// Whether Envoy runs the body callbacks while the headers are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyCallbacks {
    /// Not known yet: hold, and watch the held requests from the tick.
    #[default]
    Unknown,
    /// They run (`allow_on_headers_stop_iteration: true`): hold without a deadline.
    Run,
    /// They don't: hold nothing; route without the body's model.
    Absent,
}

/// What the tick does with a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldVerdict {
    /// Keep holding.
    Wait,
    /// Route it without the model now and resume it.
    Resume,
}

/// This worker's knowledge of the body callbacks.
#[derive(Debug, Default)]
pub struct Hold(Cell<BodyCallbacks>);

impl<S, M: Metrics> Worker<S, M> {
    /// What this worker knows about body callbacks while headers are held.
    pub fn body_callbacks(&self) -> BodyCallbacks {
        self.hold.0.get()
    }

    /// A body callback came while the request headers were held: the knob is on.
    pub fn body_came_while_held(&self) {
        if self.hold.0.get() == BodyCallbacks::Unknown {
            self.hold.0.set(BodyCallbacks::Run);
        }
    }

    /// The tick looks at a request held for `held_ms`; `received`: whether Envoy
    /// has received some of its body (`None`: it can't tell).
    pub fn held(&self, held_ms: u64, received: Option<bool>) -> HeldVerdict {
        if held_ms >= HOLD_LIMIT_MS {
            return HeldVerdict::Resume;
        }
        let mode = self.hold.0.get();
        if mode == BodyCallbacks::Run || held_ms < HOLD_DEADLINE_MS || received == Some(false) {
            return HeldVerdict::Wait;
        }
        if mode == BodyCallbacks::Unknown {
            self.hold.0.set(BodyCallbacks::Absent);
            self.log_no_body_callbacks();
        }
        HeldVerdict::Resume
    }

    /// The one error line of a worker that found the knob off.
    fn log_no_body_callbacks(&self) {
        let until_then = match self.config.role {
            Role::Downstream => {
                "routes by the model in the body; until then this worker routes such requests \
                 without the model (counted in `requests_model_unread`)"
            }
            Role::Upstream | Role::UpstreamLog => {
                "rewrites each attempt's body before its headers go on; until then this \
                 worker's attempts send rewritten bodies chunked"
            }
        };
        log::error!(
            "llm-breaker: Envoy runs no body callback while request headers are held: set \
             `allow_on_headers_stop_iteration: true` in the wasm filter's config (Envoy >= \
             1.35) so that it {until_then}"
        );
    }

    /// Counts a request routed without the body's model that a route on `path`
    /// needed (on the first route the path matches); off mode moves no metric.
    pub(super) fn count_model_unread(&self, path: &str) {
        if self.config.mode == crate::config::Mode::Off {
            return;
        }
        let first = self.config.routes.iter().position(|r| r.matches(path));
        if let Some(i) = first {
            accounting::model_unread(&self.metrics, RouteId::new(i));
        }
    }
}
