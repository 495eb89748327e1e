//! One HTTP stream: hands the request to the worker core on request headers (or
//! on the body, when routing needs it) and carries out its answer (route header,
//! body rewrite, or the all-open reply), feeds it the response as it comes, and
//! has it record the outcome when Envoy logs the stream (the one callback that
//! runs however the stream ended). A stream that may hold its headers for the body
//! lives in an `Rc` ([`Shared`]) so that the root context's tick can resume it
//! ([`super::held`]).

use super::abi::{self, Body, Map};
use super::held::{Resumable, Watch, Watched};
use super::Core;
use crate::config::{Failover, Mode};
use crate::ids::RouteId;
use crate::worker::hold::BodyCallbacks;
use crate::worker::intake::{Intake, RequestBody};
use crate::worker::request::START_UNKNOWN;
use crate::worker::request::{Rejection, Routed, Routing};
use crate::worker::response::Response;
use crate::worker::shape::ORIGINAL_PATH_HEADER;
use crate::worker::within::{served_header, Plan, WithinRouting, SERVED_HEADER, TICKETS_HEADER};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Per-stream state.
pub struct Stream {
    core: Option<Rc<Core>>,
    routed: Option<Routed>,
    response: Response,
    /// Routing waits for the request body (to read or rewrite the model); holds
    /// the request path meanwhile.
    awaiting_body: Option<String>,
    /// `within_request`: the attempt order, and how many attempts it took.
    plan: Option<(Plan, Option<usize>)>,
    /// `within_request`: the answer's attempt carried the gateway's key.
    gateway_key: bool,
    /// The model to rewrite the body to in its callbacks, the headers having gone
    /// on without `content-length` ([`RequestBody::Late`]).
    late_rewrite: Option<String>,
    /// How the tick finds this stream while its headers are held.
    watch: Option<Watch>,
}

impl Watched for Stream {
    fn set_watch(&mut self, watch: Watch) {
        self.watch = Some(watch);
    }
}

impl Stream {
    /// A stream of `core`'s configuration (none: pass everything through).
    pub fn new(core: Option<Rc<Core>>) -> Stream {
        Stream {
            core,
            routed: None,
            response: Response::default(),
            awaiting_body: None,
            plan: None,
            gateway_key: false,
            late_rewrite: None,
            watch: None,
        }
    }
}

impl Resumable for Stream {
    fn awaits_body(&self) -> bool {
        self.awaiting_body.is_some()
    }

    /// The tick gave up waiting for the body (Envoy runs no body callback while
    /// the headers are held): routes without the model and resumes the request.
    fn resume_without_body(&mut self, core: &Core) {
        let Some(path) = self.awaiting_body.take() else {
            return;
        };
        let intake = core.intake_late(&path, request_header);
        if self.intake(core, intake, &path) == Action::Continue {
            if let Err(s) = abi::resume_request() {
                log::warn!("llm-breaker: cannot resume a held request (status {})", s.0);
            }
        }
    }
}

impl Stream {
    /// Rewrites the body's model now, or in the body callbacks for a body still to
    /// come (its `content-length` dropped: it goes chunked).
    fn rewrite(&mut self, body: RequestBody, new_model: &str) {
        if matches!(body, RequestBody::Late) {
            let _ = abi::remove_header(Map::Request, "content-length");
            self.late_rewrite = Some(new_model.to_string());
        } else {
            let _ = rewrite_body(body, new_model);
        }
    }

    /// A body callback of a request routed before its body ([`RequestBody::Late`])
    /// whose chain entry rewrites the model: holds the body until it is complete,
    /// then rewrites it (up to `model.max_body_bytes`; a bigger one goes as it is).
    fn late_body(&mut self, core: &Core, size: usize, eos: bool) -> Action {
        let within = size <= core.config().max_body_bytes;
        if !eos && within {
            return Action::Pause;
        }
        if let Some(model) = self.late_rewrite.take() {
            if within {
                rewrite_body(RequestBody::Unread(size), &model);
            }
        }
        if eos {
            self.request_complete();
        }
        Action::Continue
    }

    /// The request is complete (end of body or trailers): the provider's time to
    /// first byte counts from now.
    fn request_complete(&mut self) {
        // (A later member's answer, recorded already, keeps its unknown start.)
        if let Some(r) = self.routed.as_mut().filter(|r| r.start_ms != START_UNKNOWN) {
            r.start_ms = abi::now_ms();
        }
        if let Some((plan, _)) = &mut self.plan {
            plan.start_ms = abi::now_ms();
        }
    }

    /// Carries out what the core made of the request so far.
    /// `within_request`: names the aggregate of the admitting upstreams and hands the
    /// upstream log and the upstream role its tickets (the upstream role rewrites the
    /// model per attempt).
    fn route_within(&mut self, core: &Core, route: RouteId, model: Option<&str>) -> Action {
        match core.route_within(route, model, abi::now_ms()) {
            None => Action::Continue,
            Some(WithinRouting::Send {
                plan,
                cluster,
                tickets,
            }) => {
                set_request_header(&core.config().route_header, &cluster);
                match tickets {
                    Some(t) => set_request_header(TICKETS_HEADER, &t),
                    // Clients never hand the upstream log tickets.
                    None => {
                        let _ = abi::remove_header(Map::Request, TICKETS_HEADER);
                    }
                }
                if core.config().shapes_requests() {
                    // One read for the client's credential and staging headers.
                    let headers = abi::pairs(Map::Request);
                    let read = |h: &str| headers.value(h);
                    super::attempt::apply(&core.stage_client_credentials(route, read));
                }
                self.plan = Some((plan, None));
                Action::Continue
            }
            Some(WithinRouting::Reject(r)) => reject(r),
        }
    }

    fn intake(&mut self, core: &Core, intake: Intake, path: &str) -> Action {
        match intake {
            Intake::Route { route, .. } if core.config().mode == Mode::Off => {
                // Off: the primary, nothing else read or written.
                if let Some(cluster) = core.route_off(route) {
                    set_request_header(&core.config().route_header, &cluster);
                }
                Action::Continue
            }
            Intake::PassThrough => {
                // Clients never choose a cluster, nor tickets.
                let _ = abi::remove_header(Map::Request, &core.config().route_header);
                if core.config().failover == Failover::WithinRequest {
                    let _ = abi::remove_header(Map::Request, TICKETS_HEADER);
                    let _ = abi::remove_header(Map::Request, ORIGINAL_PATH_HEADER);
                }
                Action::Continue
            }
            Intake::Route { route, model, .. }
                if core.config().failover == Failover::WithinRequest =>
            {
                self.route_within(core, route, model.as_deref())
            }
            Intake::AwaitBody => {
                // Decided when the body is in (Envoy holds the headers meanwhile, with
                // `allow_on_headers_stop_iteration`); until this worker has seen that
                // happen, the tick watches the request.
                self.awaiting_body = Some(path.to_string());
                if let Some(w) = self.watch.as_ref() {
                    if core.body_callbacks() == BodyCallbacks::Unknown {
                        w.hold(true);
                    }
                }
                Action::Pause
            }
            Intake::Route { route, model, body } => {
                match core.route(route, model.as_deref(), abi::now_ms()) {
                    None => Action::Continue,
                    Some(Routing::Send {
                        routed,
                        cluster,
                        rewrite,
                    }) => {
                        set_request_header(&core.config().route_header, cluster);
                        // Envoy clears the route cache on this write, so the router sees
                        // the new value: it does for every module that exports ABI 0.2.1
                        // (as the Rust SDK 0.2 does); only newer ABIs need the
                        // `clear_route_cache` foreign call, which would cost a host call
                        // on every request here. The failover tests fail if a request
                        // ever goes to the old route.
                        if let Some(new_model) = rewrite {
                            self.rewrite(body, new_model);
                        }
                        self.routed = Some(routed);
                        Action::Continue
                    }
                    Some(Routing::Reject(r)) => reject(r),
                }
            }
        }
    }
}

/// Sets a request header; a refusal is logged (header name and status only).
fn set_request_header(name: &str, value: &str) {
    if let Err(s) = abi::set_header(Map::Request, name, value) {
        log::warn!("llm-breaker: cannot set {name} (status {})", s.0);
    }
}

/// Answers with the all-open 503.
fn reject(r: Rejection<'_>) -> Action {
    let sent =
        abi::send_local_response(503, "llm_breaker_all_open", r.body.as_bytes(), &r.headers());
    if sent.is_ok() {
        Action::Pause
    } else {
        Action::Continue
    }
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    abi::header(Map::Request, name)
}

/// Replaces the buffered request body with one naming `new_model`, and fixes its
/// `content-length` (a chunked body has none to fix).
pub(super) fn rewrite_body(body: RequestBody, new_model: &str) -> bool {
    let read = |size| abi::body(Body::Request, 0, size);
    let Some((old_len, new)) = body.rewrite(new_model, read) else {
        return false;
    };
    if abi::set_body(Body::Request, 0, old_len, &new).is_err() {
        log::warn!("llm-breaker: cannot rewrite the request body's model");
        return false;
    }
    if request_header("content-length").is_some() {
        let _ = abi::set_header(Map::Request, "content-length", &new.len().to_string());
    }
    true
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> Action {
        let Some(core) = self.core.clone() else {
            return Action::Continue;
        };
        let path = request_header(":path").unwrap_or_default();
        let path = String::from_utf8_lossy(&path);
        // Only requests under the admin prefix pay for reading the method.
        let admin = core.config().admin.as_ref();
        if let Some(a) = admin.filter(|a| path.starts_with(&a.path_prefix)) {
            let method = request_header(":method").unwrap_or_default();
            let method = String::from_utf8_lossy(&method);
            if let Some(request) = crate::admin::parse(&a.path_prefix, &method, &path) {
                super::admin::serve(&core, request);
                return Action::Pause;
            }
        }
        let intake = match core.config().mode {
            Mode::Off => core.intake_off(&path, eos, request_header),
            _ => core.intake_headers(&path, eos, request_header),
        };
        self.intake(&core, intake, &path)
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if let Some(path) = self.awaiting_body.take() {
            let Some(core) = self.core.clone() else {
                return Action::Continue;
            };
            core.body_came_while_held();
            if !core.body_is_enough(size, eos) {
                // Let Envoy buffer the rest.
                self.awaiting_body = Some(path);
                return Action::Pause;
            }
            // (Routing reads the clock for the time to first byte; a body still
            // coming past the limit resets it at its end, below.)
            let read = |size| abi::body(Body::Request, 0, size);
            let intake = core.intake_body(&path, size, eos, request_header, read);
            return self.intake(&core, intake, &path);
        }
        if self.late_rewrite.is_some() {
            if let Some(core) = self.core.clone() {
                return self.late_body(&core, size, eos);
            }
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
        if let (Some(core), Some((plan, used))) = (&self.core, &mut self.plan) {
            let now = abi::now_ms();
            // One read: `:status`, the member that answered, Envoy's attempt count,
            // `content-type` and the rate-limit hints.
            let headers = abi::pairs(Map::Response);
            let status = headers.status();
            // The generated route names the answering upstream in the response header
            // this role overwrites anyway (when it is off, in [`SERVED_HEADER`], removed).
            let summary = core.config().response_header.as_deref();
            let served = headers.get(served_header(summary));
            if served.is_some() && summary.is_none() {
                let _ = abi::remove_header(Map::Response, SERVED_HEADER);
            }
            // Envoy's count matters only when no name came (and the generated configs
            // don't ask for it): not looked for otherwise.
            let envoy = match served {
                None => headers.get("x-envoy-attempt-count"),
                Some(_) => None,
            };
            let size = || abi::property_u64(&["request", "size"]);
            let s = core.served_within(plan, served, envoy, status, size);
            *used = s.attempts;
            self.gateway_key = s.gateway_key;
            if let Some((h, value)) = s.header {
                let _ = abi::set_header(Map::Response, h, &value);
            }
            if let Some(routed) = s.record {
                let header = |name: &str| headers.value(name);
                self.response
                    .headers(core, &routed, status, eos, now, header);
                self.routed = Some(routed);
            }
            return Action::Continue;
        }
        let (Some(core), Some(routed)) = (&self.core, &self.routed) else {
            if let Some(core) = self.core.as_ref().filter(|c| c.config().mode == Mode::Off) {
                // Off mode leaves no trace: not even the answering upstream's name the
                // route added for the downstream role.
                if core.config().failover == Failover::WithinRequest {
                    let summary = core.config().response_header.as_deref();
                    let _ = abi::remove_header(Map::Response, served_header(summary));
                }
            }
            return Action::Continue;
        };
        let now = abi::now_ms();
        // One read for `:status`, `content-type` and the rate-limit hints.
        let headers = abi::pairs(Map::Response);
        let header = |name: &str| headers.value(name);
        self.response
            .headers(core, routed, headers.status(), eos, now, header);
        if let Some((h, value)) = core.served_header(routed) {
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
        let Some(core) = self.core.take() else {
            return;
        };
        if let Some((plan, used)) = self.plan.take() {
            if plan.holds_permits() {
                core.release_unused(&plan, used, abi::now_ms());
            }
        }
        let Some(routed) = self.routed.take() else {
            return;
        };
        let facts = self.response.end(
            || {
                abi::property(&["response", "flags"])
                    .and_then(|b| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)))
                    .unwrap_or(0)
            },
            || abi::property(&["response", "code_details"]),
        );
        core.finish_with(&routed, facts, abi::now_ms(), self.gateway_key);
    }
}
