//! The upstream role's HTTP context: one per attempt of a `within_request` request
//! (an upstream HTTP filter of the aggregate clusters that shape attempts). It reads
//! what the core's [`crate::worker::attempt::Attempt`] needs and carries out its
//! steps: the attempt's credential, path, headers and model. It records nothing (the
//! upstream log and the downstream role do) and leaves the response alone.
//!
//! An attempt whose chain rewrites models holds its headers until its body is
//! complete. Where Envoy runs no body callback meanwhile (no
//! `allow_on_headers_stop_iteration`, see [`crate::worker::hold`]), the root
//! context's tick resumes it ([`Shared`]) and later attempts are not held: they
//! drop `content-length` and rewrite the body in its callbacks, sent chunked.

use super::abi::{self, Map};
use super::held::{Resumable, Watch, Watched};
use super::http::rewrite_body;
use super::Core;
use crate::worker::attempt::{Attempt as State, BodyStep};
use crate::worker::hold::BodyCallbacks;
use crate::worker::intake::RequestBody;
use crate::worker::shape::Edit;
use crate::worker::within::{METADATA_NS, METADATA_UPSTREAM, TICKETS_HEADER};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Endpoint metadata naming the real upstream (the generator writes it).
pub(super) const UPSTREAM_NAME: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    METADATA_NS,
    METADATA_UPSTREAM,
];

/// One attempt.
pub struct Attempt {
    core: Rc<Core>,
    state: State,
    /// Its headers are held and no body callback came yet.
    held: bool,
    /// How the tick finds it while its headers are held.
    watch: Option<Watch>,
}

impl Attempt {
    /// An attempt under `core`'s configuration.
    pub fn new(core: Rc<Core>) -> Attempt {
        let state = State::default();
        Attempt {
            core,
            state,
            held: false,
            watch: None,
        }
    }
}

impl Resumable for Attempt {
    fn awaits_body(&self) -> bool {
        self.held
    }

    fn resume_without_body(&mut self, _core: &Core) {
        if std::mem::take(&mut self.held) {
            let _ = abi::remove_header(Map::Request, "content-length");
            if let Err(s) = abi::resume_request() {
                log::warn!("llm-breaker: cannot resume a held attempt (status {})", s.0);
            }
        }
    }
}

impl Watched for Attempt {
    fn set_watch(&mut self, watch: Watch) {
        self.watch = Some(watch);
    }
}

/// Applies request-header edits; a refused edit is logged by header name only (a
/// value may be a key).
pub(super) fn apply(edits: &[Edit]) {
    for e in edits {
        let (name, r) = match e {
            Edit::Set(n, v) => (n, abi::set_header(Map::Request, n, v)),
            Edit::Remove(n) => (n, abi::remove_header(Map::Request, n)),
        };
        if let Err(s) = r {
            log::warn!(
                "llm-breaker: cannot edit request header {name} (status {})",
                s.0
            );
        }
    }
}

impl Context for Attempt {}

impl HttpContext for Attempt {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> Action {
        // One read of the request headers for the attempt's upstream (when a
        // `header_mutation` ahead of this filter copies the endpoint metadata into
        // one), the tickets and every header shaping looks at.
        let headers = abi::pairs(Map::Request);
        let Some(name) = self
            .core
            .attempt_upstream(|h| headers.get(h))
            .map(<[u8]>::to_vec)
            .or_else(|| abi::property(&UPSTREAM_NAME))
        else {
            log::warn!("llm-breaker: attempt without `llm_breaker.upstream` endpoint metadata");
            return Action::Continue;
        };
        let tickets = headers.get(TICKETS_HEADER);
        let now = abi::now_ms();
        let hold = self.state.start(&self.core, &name, tickets, eos, now);
        let read = |h: &str| headers.value(h);
        if let Some(shaped) = self
            .core
            .shape_attempt(&name, self.state.route(), now, read)
        {
            apply(&shaped.edits);
        }
        if hold {
            match self.core.body_callbacks() {
                BodyCallbacks::Absent => {
                    // The body comes after the headers: it goes chunked.
                    let _ = abi::remove_header(Map::Request, "content-length");
                }
                mode => {
                    // Held until the body is complete (`allow_on_headers_stop_iteration`).
                    self.held = true;
                    if let (BodyCallbacks::Unknown, Some(w)) = (mode, &self.watch) {
                        w.hold(false);
                    }
                    return Action::Pause;
                }
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if std::mem::take(&mut self.held) {
            self.core.body_came_while_held();
        }
        let fix_length = match self.state.request_body(eos) {
            BodyStep::Hold => return Action::Pause,
            BodyStep::Continue => false,
            BodyStep::Rewrite(model) => !rewrite_body(RequestBody::Unread(size), &model),
            BodyStep::FixLength => true,
        };
        if fix_length && abi::header(Map::Request, "content-length").is_some() {
            let _ = abi::set_header(Map::Request, "content-length", &size.to_string());
        }
        Action::Continue
    }
}
