//! One HTTP stream: choose the upstream on request headers, note the time to first
//! byte and status on response headers, watch for the end of the body, and record
//! the outcome in the breaker when Envoy logs the stream (the one callback that runs
//! however the stream ended).

use super::abi::{self, Body, Level, Map};
use super::{EnvoyStore, Shared};
use crate::backoff::{fnv1a, splitmix64};
use crate::breaker::{Admission, Step, Ticket};
use crate::classify::{self, Outcome, ResponseFacts, Verdict};
use crate::config::{ModelSource, WindowSpec};
use crate::inband::{self, BodyKind, Scanner};
use crate::model;
use crate::ratelimit;
use crate::routing::{self, Decision, Why};
use crate::store;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// A request the filter routed and still has to account for.
struct Routed {
    upstream: usize,
    /// The breaker cell (the upstream, or the upstream and model).
    cell: usize,
    ticket: Option<Ticket>,
    why: Why,
    skipped: Vec<usize>,
    /// When the request was complete (headers, end of body, or trailers): the
    /// provider's time to first byte counts from here, not from a slow upload.
    start_ms: u64,
}

/// Per-stream state.
pub struct Stream {
    shared: Option<Rc<Shared>>,
    routed: Option<Routed>,
    facts: ResponseFacts,
    /// In-band error scanner of the response body, when it is worth scanning.
    scan: Option<Scanner>,
    /// The response is an event stream whose first body byte has not come yet:
    /// its time to first byte is taken then (the first token, as users feel it).
    awaiting_first_event: bool,
    /// Routing waits for the request body (to read or rewrite the model); holds
    /// the request path meanwhile.
    awaiting_body: Option<String>,
}

impl Stream {
    pub fn new(shared: Option<Rc<Shared>>) -> Stream {
        Stream {
            shared,
            routed: None,
            facts: ResponseFacts::default(),
            scan: None,
            awaiting_first_event: false,
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

    /// Routes a request that matched route `route_idx`: picks the upstream, writes
    /// the route header (and, failing over to an entry that names a model, the
    /// body's model), or answers locally when every upstream is open.
    fn route(
        &mut self,
        shared: &Rc<Shared>,
        route_idx: usize,
        model: Option<&str>,
        body: RequestBody,
    ) -> Action {
        let cfg = &shared.config;
        let Some(route) = cfg.routes.get(route_idx) else {
            return Action::Continue;
        };
        let now = abi::now_ms();
        let model_on = |u: usize| {
            let i = route.chain.iter().position(|&x| x == u)?;
            route.chain_models.get(i)?.as_deref()
        };
        let decision = routing::choose(route, now, |u| {
            let up = cfg.upstreams.get(u)?;
            let cell = cfg.cell(u, model_on(u).or(model));
            if let Some(a) = shared.admit_cached(cell, now) {
                return Some(a);
            }
            match store::admit(&EnvoyStore, shared.key(cell), &up.breaker, now) {
                Ok(a) => {
                    shared.report(cell, a.transition.as_ref(), a.reset.as_ref());
                    match a.admission {
                        Admission::Admitted(t) => shared.saw(cell, t.epoch, a.quiet, now),
                        Admission::Denied { retry_at_ms } => {
                            shared.saw_denied(cell, retry_at_ms, now)
                        }
                    }
                    Some(a.admission)
                }
                Err(e) => {
                    shared.report_error(cell, e);
                    None
                }
            }
        });
        match decision {
            Decision::Send {
                upstream,
                ticket,
                why,
                skipped,
            } => {
                let name = cfg.upstreams.get(upstream).map_or("", |u| u.name.as_str());
                if let Err(s) = abi::set_header(Map::Request, &cfg.route_header, name) {
                    abi::log(
                        Level::Warn,
                        &format!(
                            "llm-breaker: cannot set {} (status {})",
                            cfg.route_header, s.0
                        ),
                    );
                }
                // Envoy clears the route cache on this write, so the router sees the
                // new value: it does for every module that exports ABI 0.2.1 (as the
                // Rust SDK 0.2 does); only newer ABIs need the `clear_route_cache`
                // foreign call, which would cost a host call on every request here.
                // The failover tests fail if a request ever goes to the old route.
                let rewrite = model_on(upstream);
                if let Some(new_model) = rewrite {
                    let read;
                    let (span, bytes) = match body {
                        RequestBody::None => (None, &[][..]),
                        RequestBody::Scanned(span, bytes) => (span, bytes),
                        // Read and scanned only now that a rewrite needs it.
                        RequestBody::Unread(size) => {
                            read = abi::body(Body::Request, 0, size);
                            (model::find_model(&read).ok().flatten(), &read[..])
                        }
                    };
                    if let Some(span) = span.as_ref().filter(|s| s.value != new_model) {
                        rewrite_body(bytes, span, new_model);
                    }
                }
                let m = &shared.metrics;
                if let Some(um) = m.upstream(upstream) {
                    abi::increment(um.admitted, 1);
                    if why == Why::Probe {
                        abi::increment(um.probes, 1);
                    }
                }
                if matches!(why, Why::Failover | Why::Probe) {
                    for &s in &skipped {
                        abi::increment(m.upstream(s).and_then(|x| x.failed_over), 1);
                    }
                }
                if why == Why::FailOpen {
                    abi::increment(m.route(route_idx).and_then(|r| r.fail_open), 1);
                }
                self.routed = Some(Routed {
                    upstream,
                    cell: cfg.cell(upstream, rewrite.or(model)),
                    ticket,
                    why,
                    skipped,
                    start_ms: now,
                });
                Action::Continue
            }
            Decision::Reject {
                retry_after_s,
                skipped,
            } => {
                abi::increment(shared.metrics.route(route_idx).and_then(|r| r.rejected), 1);
                for &s in &skipped {
                    abi::increment(shared.metrics.upstream(s).and_then(|x| x.rejected), 1);
                }
                let body = routing::reject_body(&route.name, retry_after_s);
                let retry = retry_after_s.to_string();
                let info = cfg.response_header.as_ref().map(|h| {
                    let names: Vec<&str> = skipped
                        .iter()
                        .filter_map(|&i| cfg.upstreams.get(i).map(|u| u.name.as_str()))
                        .collect();
                    let value = format!(
                        "upstream=none; reason=all_open; skipped={}",
                        names.join(",")
                    );
                    (h.as_str(), value)
                });
                let mut headers = vec![
                    ("content-type", "application/json"),
                    ("retry-after", retry.as_str()),
                ];
                if let Some((h, value)) = &info {
                    headers.push((h, value.as_str()));
                }
                if abi::send_local_response(503, "llm_breaker_all_open", body.as_bytes(), &headers)
                    .is_err()
                {
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }
}

impl Context for Stream {}

/// The model a request names in the configured header, when that is the source.
fn header_model(cfg: &crate::config::Config) -> Option<String> {
    match cfg.model_source {
        ModelSource::Header => {
            abi::header(Map::Request, &cfg.model_header).and_then(|v| model::model_from_header(&v))
        }
        ModelSource::Body => None,
    }
}

/// Lets a request that matches no route through; clients never choose a cluster.
fn pass_through(cfg: &crate::config::Config) -> Action {
    let _ = abi::remove_header(Map::Request, &cfg.route_header);
    Action::Continue
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

/// Replaces the buffered request body with one naming `new_model`, and fixes its
/// `content-length` (a chunked body has none to fix).
fn rewrite_body(bytes: &[u8], span: &model::ModelSpan, new_model: &str) {
    let new = model::rewrite_model(bytes, span, new_model);
    if abi::set_body(Body::Request, 0, bytes.len(), &new).is_err() {
        abi::log(
            Level::Warn,
            "llm-breaker: cannot rewrite the request body's model",
        );
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
        let cfg = &shared.config;
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
        if !shared.uses_models {
            return match cfg.route_for(&path) {
                Some((route_idx, _)) => self.route(&shared, route_idx, None, RequestBody::None),
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
            Some((route_idx, _)) => {
                self.route(&shared, route_idx, model.as_deref(), RequestBody::None)
            }
            None => pass_through(cfg),
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if let Some(path) = self.awaiting_body.take() {
            let Some(shared) = self.shared.clone() else {
                return Action::Continue;
            };
            let cfg = &shared.config;
            if !eos && size <= cfg.max_body_bytes {
                // Let Envoy buffer the rest.
                self.awaiting_body = Some(path);
                return Action::Pause;
            }
            // The whole body, or more than the limit: decide on what is known. Only
            // a complete body within the limit can be rewritten. (Routing reads the
            // clock for the time to first byte; a body still coming past the limit
            // resets it at its end, below.)
            let whole = eos && size <= cfg.max_body_bytes;
            let read;
            let (model, body) = match cfg.model_source {
                ModelSource::Header => (
                    header_model(cfg),
                    if whole {
                        RequestBody::Unread(size)
                    } else {
                        RequestBody::None
                    },
                ),
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
            return match cfg.route_for_request(&path, model.as_deref()) {
                Some((route_idx, _)) => self.route(&shared, route_idx, model.as_deref(), body),
                None => pass_through(cfg),
            };
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
        self.facts.ttfb_ms = Some(now.saturating_sub(routed.start_ms));
        self.facts.status = abi::header(Map::Response, ":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok());
        self.facts.completed = eos;
        if let Some(up) = shared.config.upstreams.get(routed.upstream) {
            let policy = &up.breaker.failure;
            match self.facts.status {
                // The hint only sets an open time: read its headers only when the
                // outcome will be recorded and hints are used.
                Some(s)
                    if policy.rate_limited.contains(&s)
                        && routed.ticket.is_some()
                        && up.breaker.rate_limit.trip_on_reset_hint =>
                {
                    self.facts.reset_in_ms =
                        ratelimit::reset_hint_ms(|name| abi::header(Map::Response, name), now);
                }
                Some(200..=299) if !eos && policy.scans_bodies() => {
                    let kind = abi::header(Map::Response, "content-type")
                        .map_or(BodyKind::Other, |v| inband::body_kind(&v));
                    self.awaiting_first_event = kind == BodyKind::Sse;
                    // A JSON body can only hold an error object: not worth scanning
                    // when in-band errors do not count.
                    let useful = match kind {
                        BodyKind::Sse => true,
                        BodyKind::Json => policy.in_band_error,
                        BodyKind::Other => false,
                    };
                    if useful {
                        self.scan = Some(Scanner::new(kind, shared.config.max_scan_bytes));
                    }
                }
                _ => {}
            }
        }
        if let Some(h) = &shared.config.response_header {
            let common = (routed.why == Why::Primary && routed.skipped.is_empty())
                .then(|| shared.primary_header.get(routed.upstream))
                .flatten();
            let _ = match common {
                Some(value) => abi::set_header(Map::Response, h, value),
                None => {
                    let cfg = &shared.config;
                    let name = |i: usize| cfg.upstreams.get(i).map_or("", |u| u.name.as_str());
                    let skipped: Vec<&str> = routed.skipped.iter().map(|&i| name(i)).collect();
                    let value = routing::describe(name(routed.upstream), routed.why, &skipped);
                    abi::set_header(Map::Response, h, &value)
                }
            };
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if self.awaiting_first_event && size > 0 {
            self.awaiting_first_event = false;
            if let Some(r) = &self.routed {
                self.facts.ttfb_ms = Some(abi::now_ms().saturating_sub(r.start_ms));
            }
        }
        if let Some(scan) = &mut self.scan {
            let (offset, len) = scan.wants(size);
            if len > 0 {
                scan.feed(&abi::body(Body::Response, offset, len));
            }
            if eos {
                self.facts.in_band = scan.finish(true);
                self.scan = None;
            }
        }
        if eos {
            self.facts.completed = true;
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        if let Some(mut scan) = self.scan.take() {
            self.facts.in_band = scan.finish(true);
        }
        self.facts.completed = true;
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(shared), Some(routed)) = (self.shared.take(), self.routed.take()) else {
            return;
        };
        let u = routed.upstream;
        let cell = routed.cell;
        let Some(up) = shared.config.upstreams.get(u) else {
            return;
        };
        if let Some(mut scan) = self.scan.take() {
            // The body never ended: only an error already seen says anything.
            self.facts.in_band = scan.finish(false);
        }
        if classify::needs_flags(self.facts.status, self.facts.completed) {
            self.facts.flags = abi::property(&["response", "flags"])
                .and_then(|b| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)))
                .unwrap_or(0);
        }
        if classify::needs_details(&self.facts) {
            self.facts.ended_by = abi::property(&["response", "code_details"])
                .map_or(classify::EndedBy::Other, |d| classify::ended_by(&d));
        }
        let verdict = classify::classify(&up.breaker.failure, up.breaker.slow_ttfb_ms, &self.facts);
        let now = abi::now_ms();
        let holdable = shared.config.success_flush_ms > 0
            && matches!(up.breaker.window, WindowSpec::Seconds(_))
            && matches!(
                verdict,
                Verdict::Counted(Outcome {
                    failure: None,
                    slow: false,
                    ..
                })
            );
        match routed.ticket {
            // A fast success on a breaker that is closed with no failure streak right
            // now changes nothing but the window's call count: hold it and write a
            // batch later (saves a CAS write per request). Not for count windows,
            // where a late batch would push out failures that came after it.
            Some(t) if holdable && t.permit.is_none() && shared.quiet(cell, t.epoch, now) => {
                if let Some(batch) = shared.hold_success(cell, t.epoch, now) {
                    shared.write_successes(cell, batch, now);
                }
            }
            Some(t) if matches!(verdict, Verdict::Counted(_)) || t.permit.is_some() => {
                // Anything held for this upstream goes in first, in the same update.
                let held = shared.take_pending(cell);
                let seed = splitmix64(now ^ fnv1a(&up.name));
                let result = store::update(&EnvoyStore, shared.key(cell), &up.breaker, now, |b| {
                    let first = held.map(|p| b.record_successes(now, p.epoch, p.count));
                    let step = match verdict {
                        Verdict::Counted(outcome) => b.record(&up.breaker, now, t, outcome, seed),
                        // A probe that says nothing about the provider gives its permit back.
                        _ => b.release(t),
                    };
                    Step {
                        changed: step.changed || first.is_some_and(|f| f.changed),
                        ..step
                    }
                });
                match &result {
                    Ok(r) => shared.saw(cell, r.state.epoch, r.state.is_quiet(), now),
                    Err(_) => {
                        if let Some(p) = held {
                            shared.restore_pending(cell, p, now);
                        }
                    }
                }
                shared.report_update(cell, &result);
            }
            _ => {}
        }
        // Counters last, so that a visible count implies the breaker saw the outcome.
        shared.metrics.outcome(u, &verdict);
    }
}
