//! Requests whose headers are held for the body, watched from the root context's
//! tick while this worker does not know yet whether Envoy runs body callbacks
//! meanwhile ([`crate::worker::hold`]). A held request whose body Envoy received
//! (its `request.total_size` grew) but that got no body callback is routed without
//! the model and resumed, through `proxy_set_effective_context`. An attempt of the
//! upstream role (held only to rewrite its body) is resumed after the deadline
//! alone: its body was mostly received before the attempt began, and going on
//! without the hold costs it nothing but a chunked body.

use super::abi;
use super::Core;
use crate::worker::hold::HeldVerdict;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// Envoy's count of bytes received for a stream, headers included.
const RECEIVED: [&str; 2] = ["request", "total_size"];

/// A stream or attempt the tick may have to resume, told how the tick finds it.
pub trait Watched: Resumable + HttpContext + 'static {
    /// Keep `watch`, to register when the headers are held.
    fn set_watch(&mut self, watch: Watch);
}

/// A stream or attempt the root context's tick may resume: `T` behind an `Rc`, the
/// HTTP context Envoy calls, forwarding every callback. (Callbacks never nest, so the
/// borrow always succeeds; if it ever did not, the callback passes.)
pub struct Shared<T>(Rc<RefCell<T>>);

impl<T: Watched> Shared<T> {
    /// `inner` as context `id`, watched through `holds`.
    pub fn new(inner: T, id: u32, holds: Rc<Holds>) -> Shared<T> {
        Shared(Rc::new_cyclic(|me: &Weak<RefCell<T>>| {
            let mut inner = inner;
            let me: Weak<RefCell<dyn Resumable>> = me.clone();
            inner.set_watch(Watch { id, me, holds });
            RefCell::new(inner)
        }))
    }

    fn with<R>(&self, otherwise: R, f: impl FnOnce(&mut T) -> R) -> R {
        match self.0.try_borrow_mut() {
            Ok(mut inner) => f(&mut inner),
            Err(_) => {
                log::warn!("llm-breaker: a callback found its stream busy; passing it");
                otherwise
            }
        }
    }
}

impl<T: Watched> Context for Shared<T> {
    fn on_done(&mut self) -> bool {
        self.with(true, |t| t.on_done())
    }
}

impl<T: Watched> HttpContext for Shared<T> {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        self.with(Action::Continue, |t| t.on_http_request_headers(n, eos))
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        self.with(Action::Continue, |t| t.on_http_request_body(size, eos))
    }

    fn on_http_request_trailers(&mut self, n: usize) -> Action {
        self.with(Action::Continue, |t| t.on_http_request_trailers(n))
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        self.with(Action::Continue, |t| t.on_http_response_headers(n, eos))
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        self.with(Action::Continue, |t| t.on_http_response_body(size, eos))
    }

    fn on_http_response_trailers(&mut self, n: usize) -> Action {
        self.with(Action::Continue, |t| t.on_http_response_trailers(n))
    }

    fn on_log(&mut self) {
        self.with((), |t| t.on_log());
    }
}

/// A stream or attempt whose headers may be held.
pub trait Resumable {
    /// Whether its headers are held for the body.
    fn awaits_body(&self) -> bool;
    /// The body callbacks are not coming: go on without them, and resume. Runs
    /// with this context as the effective one.
    fn resume_without_body(&mut self, core: &Core);
}

/// One held request.
struct Held {
    /// Its context id.
    id: u32,
    since_ms: u64,
    /// `request.total_size` when it was held (`None`: not watched, or unknown).
    received: Option<u64>,
    stream: Weak<RefCell<dyn Resumable>>,
}

/// How the tick finds a stream or attempt while its headers are held.
pub struct Watch {
    /// Its context id.
    pub id: u32,
    /// Itself.
    pub me: Weak<RefCell<dyn Resumable>>,
    /// Its root context's held requests.
    pub holds: Rc<Holds>,
}

impl Watch {
    /// Its headers are held from now; see [`Holds::add`].
    pub fn hold(&self, bytes: bool) {
        self.holds
            .add(self.id, abi::now_ms(), self.me.clone(), bytes);
    }
}

/// The held requests of one root context.
#[derive(Default)]
pub struct Holds(RefCell<Vec<Held>>);

impl Holds {
    /// Watches the request of context `id`, held now, from the tick; `bytes`:
    /// resume it only once Envoy received some of its body (else after the
    /// deadline alone).
    pub fn add(&self, id: u32, now_ms: u64, stream: Weak<RefCell<dyn Resumable>>, bytes: bool) {
        let received = bytes.then(|| abi::property_u64(&RECEIVED)).flatten();
        self.0.borrow_mut().push(Held {
            id,
            since_ms: now_ms,
            received,
            stream,
        });
    }

    /// The tick: resumes the held requests that must not wait longer. `root` is the
    /// root context's id (made effective again at the end).
    pub fn tick(&self, core: &Core, now_ms: u64, root: u32) {
        let mut due = Vec::new();
        self.0.borrow_mut().retain(|h| {
            let Some(stream) = h.stream.upgrade() else {
                return false;
            };
            if !stream.borrow().awaits_body() {
                return false;
            }
            if abi::set_effective_context(h.id).is_err() {
                return false;
            }
            let received = match (h.received, abi::property_u64(&RECEIVED)) {
                (Some(then), Some(now)) => Some(now > then),
                _ => None,
            };
            let held_ms = now_ms.saturating_sub(h.since_ms);
            match core.held(held_ms, received) {
                HeldVerdict::Wait => true,
                HeldVerdict::Resume => {
                    due.push((h.id, stream));
                    false
                }
            }
        });
        for (id, stream) in due {
            if abi::set_effective_context(id).is_ok() {
                stream.borrow_mut().resume_without_body(core);
            }
        }
        let _ = abi::set_effective_context(root);
    }
}
