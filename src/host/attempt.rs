//! The upstream role: one context per attempt of a `within_request` request (an
//! upstream HTTP filter of the aggregate clusters). It names the attempt's upstream
//! from endpoint metadata, rewrites the body's model for that upstream's chain entry,
//! feeds the response to the core and records the attempt in `on_done` (`on_log`
//! does not run for upstream filters; an attempt with no response headers ends
//! with `on_done` alone). Envoy's `response.*` properties are the downstream
//! stream's here: the status comes from `:status`.

use super::abi::{self, Body, Map};
use super::http::rewrite_body;
use super::Core;
use crate::worker::intake::RequestBody;
use crate::worker::request::Routed;
use crate::worker::response::Response;
use crate::worker::within::{attempt_flags, SERVED_HEADER, TICKETS_HEADER};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Endpoint metadata naming the real upstream (the generator's `METADATA_NS` /
/// `METADATA_KEY`).
const UPSTREAM_NAME: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "llm_breaker",
    "upstream",
];

/// One attempt.
pub struct Attempt {
    core: Rc<Core>,
    routed: Option<Routed>,
    /// The model this attempt's body must name, until the body is complete.
    rewrite: Option<String>,
    /// Hold the request until its body is complete ([`crate::worker::within::AttemptPlan::hold`]).
    hold: bool,
    /// The upstream's name, for the downstream role's summary.
    name: String,
    response: Response,
    status: Option<u16>,
    /// The per-try timeout Envoy announced (`x-envoy-expected-rq-timeout-ms`).
    per_try_ms: Option<u64>,
}

impl Attempt {
    /// An attempt under `core`'s configuration.
    pub fn new(core: Rc<Core>) -> Attempt {
        Attempt {
            core,
            routed: None,
            rewrite: None,
            hold: false,
            name: String::new(),
            response: Response::default(),
            status: None,
            per_try_ms: None,
        }
    }
}

impl Context for Attempt {
    fn on_done(&mut self) -> bool {
        let Some(routed) = self.routed.take() else {
            return true;
        };
        let (status, per_try) = (self.status, self.per_try_ms);
        let elapsed = abi::now_ms().saturating_sub(routed.start_ms);
        let facts = self.response.end(|| {
            attempt_flags(status, elapsed, per_try, || {
                abi::property(&["upstream", "transport_failure_reason"])
                    .is_some_and(|r| !r.is_empty())
            })
        });
        self.core.finish(&routed, facts, abi::now_ms());
        true
    }
}

impl HttpContext for Attempt {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> Action {
        let tickets = abi::header(Map::Request, TICKETS_HEADER);
        self.per_try_ms = abi::header(Map::Request, "x-envoy-expected-rq-timeout-ms")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok());
        let Some(name) = abi::property(&UPSTREAM_NAME) else {
            log::warn!("llm-breaker: attempt without `llm_breaker.upstream` endpoint metadata");
            return Action::Continue;
        };
        let Some(a) = self.core.attempt(&name, tickets.as_deref(), abi::now_ms()) else {
            return Action::Continue;
        };
        self.name = a.name.to_string();
        self.rewrite = a.rewrite.map(str::to_string);
        self.hold = a.hold && !eos;
        self.routed = Some(a.routed);
        if self.hold {
            // Held until the body is complete (`allow_on_headers_stop_iteration`).
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if !eos {
            return if self.hold {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        if std::mem::take(&mut self.hold) {
            let rewritten = self
                .rewrite
                .take()
                .is_some_and(|m| rewrite_body(RequestBody::Unread(size), &m));
            // An earlier attempt's rewrite set the shared content-length.
            if !rewritten && abi::header(Map::Request, "content-length").is_some() {
                let _ = abi::set_header(Map::Request, "content-length", &size.to_string());
            }
        }
        if let Some(r) = &mut self.routed {
            r.start_ms = abi::now_ms();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> Action {
        let Some(routed) = &self.routed else {
            return Action::Continue;
        };
        self.status = abi::status_code(Map::Response);
        let header = |name: &str| abi::header(Map::Response, name);
        let now = abi::now_ms();
        self.response
            .headers(&self.core, routed, self.status, eos, now, header);
        let _ = abi::set_header(Map::Response, SERVED_HEADER, &self.name);
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if let Some(routed) = &self.routed {
            let read = |offset, len| abi::body(Body::Response, offset, len);
            self.response.body(routed, size, eos, abi::now_ms, read);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        self.response.trailers();
        Action::Continue
    }
}
