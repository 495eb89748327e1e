//! One HTTP stream: route on request headers (or on the body, when the model is
//! in it), note the time to first byte and status on response headers, watch the
//! body, and hand the outcome to the worker core when Envoy logs the stream (the
//! one callback that runs however the stream ended).

use super::abi::{self, Body, Map};
use super::Shared;
use crate::config::{Config, ModelSource};
use crate::ids::RouteId;
use crate::model;
use crate::worker::request::{self, Routed, Routing};
use crate::worker::response::Response;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Per-stream state.
pub struct Stream {
    shared: Option<Rc<Shared>>,
    routed: Option<Routed>,
    response: Response,
    /// Routing waits for the request body (to read or rewrite the model); holds
    /// the request path meanwhile.
    awaiting_body: Option<String>,
}

/// The whole request body, as far as routing can use it to rewrite the model.
enum RequestBody<'a> {
    /// Not available (not buffered, or over `model.max_body_bytes`).
    None,
    /// Read, with the model field found in it (if any).
    Scanned(Option<model::ModelSpan>, &'a [u8]),
    /// Buffered in Envoy, `size` bytes, not read yet: read only for a rewrite.
    Unread(usize),
}

impl Stream {
    pub fn new(shared: Option<Rc<Shared>>) -> Stream {
        Stream {
            shared,
            routed: None,
            response: Response::default(),
            awaiting_body: None,
        }
    }

    /// The request is complete (end of body or trailers): the provider's time to
    /// first byte counts from now.
    fn request_complete(&mut self) {
        if let Some(r) = &mut self.routed {
            r.start_ms = abi::now_ms();
        }
    }

    /// Routes a request that matched `route`: writes the route header (and the
    /// body's model, when the chosen entry names one), or answers locally when
    /// every upstream is open.
    fn route(
        &mut self,
        shared: &Shared,
        route: RouteId,
        model: Option<&str>,
        body: RequestBody,
    ) -> Action {
        let cfg = shared.core.config();
        match shared.core.route(route, model, abi::now_ms()) {
            None => Action::Continue,
            Some(Routing::Send {
                routed,
                cluster,
                rewrite,
            }) => {
                if let Err(s) = abi::set_header(Map::Request, &cfg.route_header, cluster) {
                    log::warn!(
                        "llm-breaker: cannot set {} (status {})",
                        cfg.route_header,
                        s.0
                    );
                }
                // Envoy clears the route cache on this write, so the router sees the
                // new value: it does for every module that exports ABI 0.2.1 (as the
                // Rust SDK 0.2 does); only newer ABIs need the `clear_route_cache`
                // foreign call, which would cost a host call on every request here.
                // The failover tests fail if a request ever goes to the old route.
                if let Some(new_model) = rewrite {
                    rewrite_body(body, new_model);
                }
                self.routed = Some(routed);
                Action::Continue
            }
            Some(Routing::Reject(r)) => {
                let headers = r.headers();
                let sent = abi::send_local_response(
                    503,
                    "llm_breaker_all_open",
                    r.body.as_bytes(),
                    &headers,
                );
                if sent.is_err() {
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }

    /// Routes on what the request body says (the model source, or a rewrite).
    fn route_with_body(&mut self, shared: &Shared, path: &str, size: usize, eos: bool) -> Action {
        let cfg = shared.core.config();
        // The whole body, or more than the limit: decide on what is known. Only a
        // complete body within the limit can be rewritten. (Routing reads the clock
        // for the time to first byte; a body still coming past the limit resets it
        // at its end.)
        let whole = eos && size <= cfg.max_body_bytes;
        let read;
        let (model, body) = match cfg.model_source {
            ModelSource::Header => {
                let body = if whole {
                    RequestBody::Unread(size)
                } else {
                    RequestBody::None
                };
                (header_model(cfg), body)
            }
            ModelSource::Body => {
                read = if size <= cfg.max_body_bytes {
                    abi::body(Body::Request, 0, size)
                } else {
                    Vec::new()
                };
                let span = model::find_model(&read).ok().flatten();
                let model = span.as_ref().map(|s| s.value.clone());
                let body = if whole {
                    RequestBody::Scanned(span, &read[..])
                } else {
                    RequestBody::None
                };
                (model, body)
            }
        };
        match cfg.route_for_request(path, model.as_deref()) {
            Some((route, _)) => self.route(shared, route, model.as_deref(), body),
            None => pass_through(cfg),
        }
    }
}

impl Context for Stream {}

/// The model a request names in the configured header, when that is the source.
fn header_model(cfg: &Config) -> Option<String> {
    match cfg.model_source {
        ModelSource::Header => {
            abi::header(Map::Request, &cfg.model_header).and_then(|v| model::model_from_header(&v))
        }
        ModelSource::Body => None,
    }
}

/// Lets a request that matches no route through; clients never choose a cluster.
fn pass_through(cfg: &Config) -> Action {
    let _ = abi::remove_header(Map::Request, &cfg.route_header);
    Action::Continue
}

/// Replaces the buffered request body with one naming `new_model` (read and
/// scanned only now, if it was not), and fixes its `content-length` (a chunked
/// body has none to fix).
fn rewrite_body(body: RequestBody, new_model: &str) {
    let read;
    let (span, bytes) = match body {
        RequestBody::None => (None, &[][..]),
        RequestBody::Scanned(span, bytes) => (span, bytes),
        RequestBody::Unread(size) => {
            read = abi::body(Body::Request, 0, size);
            (model::find_model(&read).ok().flatten(), &read[..])
        }
    };
    let Some(new) = request::rewritten(bytes, span.as_ref(), new_model) else {
        return;
    };
    if abi::set_body(Body::Request, 0, bytes.len(), &new).is_err() {
        log::warn!("llm-breaker: cannot rewrite the request body's model");
        return;
    }
    if abi::header(Map::Request, "content-length").is_some() {
        let _ = abi::set_header(Map::Request, "content-length", &new.len().to_string());
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let cfg = shared.core.config();
        let path = abi::header(Map::Request, ":path").unwrap_or_default();
        let path = String::from_utf8_lossy(&path);
        // Only requests under the admin prefix pay for reading the method.
        if let Some(a) = cfg
            .admin
            .as_ref()
            .filter(|a| path.starts_with(&a.path_prefix))
        {
            let method = abi::header(Map::Request, ":method").unwrap_or_default();
            let method = String::from_utf8_lossy(&method);
            if let Some(request) = crate::admin::parse(&a.path_prefix, &method, &path) {
                super::admin::serve(&shared, request);
                return Action::Pause;
            }
        }
        if !shared.core.uses_models() {
            return match cfg.route_for(&path) {
                Some((route, _)) => self.route(&shared, route, None, RequestBody::None),
                None => pass_through(cfg),
            };
        }
        if !eos && cfg.needs_body(&path) {
            // Decided when the body is in (Envoy holds the headers meanwhile, with
            // `allow_on_headers_stop_iteration`).
            self.awaiting_body = Some(path.into_owned());
            return Action::Pause;
        }
        let model = header_model(cfg);
        match cfg.route_for_request(&path, model.as_deref()) {
            Some((route, _)) => self.route(&shared, route, model.as_deref(), RequestBody::None),
            None => pass_through(cfg),
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if let Some(path) = self.awaiting_body.take() {
            let Some(shared) = self.shared.clone() else {
                return Action::Continue;
            };
            if !eos && size <= shared.core.config().max_body_bytes {
                // Let Envoy buffer the rest.
                self.awaiting_body = Some(path);
                return Action::Pause;
            }
            return self.route_with_body(&shared, &path, size, eos);
        }
        if eos {
            self.request_complete();
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        self.request_complete();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> Action {
        let (Some(shared), Some(routed)) = (&self.shared, &self.routed) else {
            return Action::Continue;
        };
        let now = abi::now_ms();
        let status = abi::header(Map::Response, ":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok());
        let header = |name: &str| abi::header(Map::Response, name);
        self.response
            .headers(&shared.core, routed, status, eos, now, header);
        if let Some((h, value)) = shared.core.served_header(routed) {
            let _ = abi::set_header(Map::Response, h, &value);
        }
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

    fn on_log(&mut self) {
        let (Some(shared), Some(routed)) = (self.shared.take(), self.routed.take()) else {
            return;
        };
        let facts = self.response.end(|| {
            abi::property(&["response", "flags"])
                .and_then(|b| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)))
                .unwrap_or(0)
        });
        shared.core.finish(&routed, facts, abi::now_ms());
    }
}
