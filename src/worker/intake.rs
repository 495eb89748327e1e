//! What routing needs from a request before it can choose: the route its path (and
//! model) match, where the model comes from (a header, or the JSON body, which
//! then must be waited for), and how much of the body may be rewritten. The host
//! reads headers and the body only through the closures it passes, when needed.

use super::hold::BodyCallbacks;
use super::{Metrics, Worker};
use crate::config::ModelSource;
use crate::ids::RouteId;
use crate::model::{self, ModelSpan};
use crate::store::SharedStore;

/// What to do with a request that is not an admin request.
#[derive(Debug, PartialEq, Eq)]
pub enum Intake {
    /// It matches no route: let it through (without a route header).
    PassThrough,
    /// Routing waits for the body (Envoy holds the headers meanwhile).
    AwaitBody,
    /// Route it on `route`, for `model` if known.
    Route {
        /// The matched route.
        route: RouteId,
        /// The request's model.
        model: Option<String>,
        /// The body as far as a model rewrite can use it.
        body: RequestBody,
    },
}

/// The whole request body, as far as routing can use it to rewrite the model.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Not available (not buffered, or over `model.max_body_bytes`).
    None,
    /// Read, with the model field found in it (if any).
    Scanned(Option<ModelSpan>, Vec<u8>),
    /// Buffered in Envoy, `size` bytes, not read yet: read only for a rewrite.
    Unread(usize),
    /// Still to come, after the headers go on (Envoy runs no body callback while
    /// they are held, see [`super::hold`]): a rewrite drops `content-length` now
    /// and rewrites the body in its callbacks, sent chunked.
    Late,
}

impl RequestBody {
    /// The body naming `new_model` instead of the one it names, as (bytes it
    /// replaces, new bytes); `None` if there is nothing to rewrite. `read(size)`
    /// reads a body not read yet.
    pub fn rewrite(
        self,
        new_model: &str,
        read: impl FnOnce(usize) -> Vec<u8>,
    ) -> Option<(usize, Vec<u8>)> {
        let (span, bytes) = match self {
            RequestBody::None | RequestBody::Late => return None,
            RequestBody::Scanned(span, bytes) => (span, bytes),
            RequestBody::Unread(size) => {
                let bytes = read(size);
                (model::find_model(&bytes).ok().flatten(), bytes)
            }
        };
        let span = span.filter(|s| s.value != new_model)?;
        Some((bytes.len(), model::rewrite_model(&bytes, &span, new_model)))
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Request headers of `path` arrived (`eos`: no body follows); `header_model`
    /// reads the model header's raw value.
    pub fn intake_headers(
        &self,
        path: &str,
        eos: bool,
        header_model: impl FnOnce(&str) -> Option<Vec<u8>>,
    ) -> Intake {
        if !self.uses_models {
            return self.matched(path, None, RequestBody::None);
        }
        if eos || !self.config.needs_body(path) {
            let model = self.header_model(header_model);
            return self.matched(path, model, RequestBody::None);
        }
        if self.body_callbacks() != BodyCallbacks::Absent {
            return Intake::AwaitBody;
        }
        self.intake_late(path, header_model)
    }

    /// Routes a request whose body can't be read before the headers go on (Envoy
    /// runs no body callback while they are held): without the body's model, as
    /// for an unknown model; a rewrite is done in the body callbacks.
    pub fn intake_late(
        &self,
        path: &str,
        header_model: impl FnOnce(&str) -> Option<Vec<u8>>,
    ) -> Intake {
        if self.config.body_model_decides(path) {
            self.count_model_unread(path);
        }
        let model = self.header_model(header_model);
        self.matched(path, model, RequestBody::Late)
    }

    /// Whether a body of `size` bytes so far is all routing waits for: complete,
    /// or over the limit.
    pub fn body_is_enough(&self, size: usize, eos: bool) -> bool {
        eos || size > self.config.max_body_bytes
    }

    /// The awaited body arrived, `size` bytes (`eos`: complete). Only a complete
    /// body within the limit can be rewritten; `read(size)` reads it.
    pub fn intake_body(
        &self,
        path: &str,
        size: usize,
        eos: bool,
        header_model: impl FnOnce(&str) -> Option<Vec<u8>>,
        read: impl FnOnce(usize) -> Vec<u8>,
    ) -> Intake {
        let within = size <= self.config.max_body_bytes;
        let whole = eos && within;
        match self.config.model_source {
            ModelSource::Header => {
                let body = if whole {
                    RequestBody::Unread(size)
                } else {
                    RequestBody::None
                };
                self.matched(path, self.header_model(header_model), body)
            }
            ModelSource::Body => {
                let bytes = if within { read(size) } else { Vec::new() };
                let span = model::find_model(&bytes).ok().flatten();
                let model = span.as_ref().map(|s| s.value.clone());
                let body = if whole {
                    RequestBody::Scanned(span, bytes)
                } else {
                    RequestBody::None
                };
                self.matched(path, model, body)
            }
        }
    }

    /// The model a request names in the configured header, when that is the source.
    fn header_model(&self, read: impl FnOnce(&str) -> Option<Vec<u8>>) -> Option<String> {
        match self.config.model_source {
            ModelSource::Header => {
                read(&self.config.model_header).and_then(|v| model::model_from_header(&v))
            }
            ModelSource::Body => None,
        }
    }

    fn matched(&self, path: &str, model: Option<String>, body: RequestBody) -> Intake {
        match self.config.route_for_request(path, model.as_deref()) {
            Some((route, _)) => Intake::Route { route, model, body },
            None => Intake::PassThrough,
        }
    }
}
