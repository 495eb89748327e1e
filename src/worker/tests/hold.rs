//! Holding headers for the body: how a worker learns whether Envoy runs body
//! callbacks while headers are held, when the tick resumes a held request, and
//! how requests are routed once it knows the callbacks never come.

use super::fakes::*;
use crate::ids::RouteId;
use crate::worker::hold::{BodyCallbacks, HeldVerdict, HOLD_DEADLINE_MS, HOLD_LIMIT_MS};
use crate::worker::intake::{Intake, RequestBody};
use crate::worker::metrics::{Metric, RouteMetric};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

const MODELS: &str = r#"{"routes":[
    {"name":"gpt","match":{"models":["gpt-*"]},"upstreams":["openai"]},
    {"name":"rest","upstreams":["vllm",{"upstream":"azure","model":"gpt-4o-az"}]}]}"#;

fn no_header(_: &str) -> Option<Vec<u8>> {
    None
}

fn unread(w: &TestWorker, route: usize) -> usize {
    w.metrics()
        .count(Metric::Route(RouteId::new(route), RouteMetric::ModelUnread))
}

#[test]
fn a_body_callback_while_held_proves_the_knob_and_the_tick_never_resumes() {
    let w = worker(MODELS, &Store::default(), T0);
    assert_eq!(w.body_callbacks(), BodyCallbacks::Unknown);
    w.body_came_while_held();
    assert_eq!(w.body_callbacks(), BodyCallbacks::Run);
    for received in [None, Some(true), Some(false)] {
        assert_eq!(w.held(HOLD_DEADLINE_MS * 5, received), HeldVerdict::Wait);
    }
    // Nothing hangs for ever, though: a client that sends no body.
    assert_eq!(w.held(HOLD_LIMIT_MS, Some(false)), HeldVerdict::Resume);
    assert_eq!(w.body_callbacks(), BodyCallbacks::Run);
}

#[test]
fn a_body_envoy_received_without_a_callback_proves_the_knob_off_and_logs_once() {
    let w = worker(MODELS, &Store::default(), T0);
    // (held ms, Envoy received some body, verdict)
    for (ms, received, want) in [
        (0, Some(true), HeldVerdict::Wait),
        (HOLD_DEADLINE_MS - 1, Some(true), HeldVerdict::Wait),
        // A slow client: no body yet, the knob may be on.
        (HOLD_DEADLINE_MS, Some(false), HeldVerdict::Wait),
        (HOLD_LIMIT_MS - 1, Some(false), HeldVerdict::Wait),
    ] {
        assert_eq!(w.held(ms, received), want, "{ms} {received:?}");
        assert_eq!(w.body_callbacks(), BodyCallbacks::Unknown);
    }
    assert!(logs().is_empty());
    assert_eq!(w.held(HOLD_DEADLINE_MS, Some(true)), HeldVerdict::Resume);
    assert_eq!(w.body_callbacks(), BodyCallbacks::Absent);
    // Later resumes (and a late body callback) change nothing and log nothing more.
    assert_eq!(w.held(HOLD_DEADLINE_MS, None), HeldVerdict::Resume);
    w.body_came_while_held();
    assert_eq!(w.body_callbacks(), BodyCallbacks::Absent);
    let lines = logs();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("`allow_on_headers_stop_iteration: true`"));
}

#[test]
fn an_unreadable_byte_count_resumes_after_the_deadline() {
    let w = worker(MODELS, &Store::default(), T0);
    assert_eq!(w.held(HOLD_DEADLINE_MS - 1, None), HeldVerdict::Wait);
    assert_eq!(w.held(HOLD_DEADLINE_MS, None), HeldVerdict::Resume);
    assert_eq!(w.body_callbacks(), BodyCallbacks::Absent);
    let _ = logs();
}

#[test]
fn without_body_callbacks_requests_are_not_held_and_route_as_for_an_unknown_model() {
    let w = worker(MODELS, &Store::default(), T0);
    assert_eq!(
        w.intake_headers("/v1/chat", false, no_header),
        Intake::AwaitBody
    );
    w.held(HOLD_DEADLINE_MS, Some(true));
    let _ = logs();
    let want = Intake::Route {
        route: RouteId::new(1),
        model: None,
        body: RequestBody::Late,
    };
    assert_eq!(w.intake_headers("/v1/chat", false, no_header), want);
    // Counted on the model route the path matched first.
    assert_eq!((unread(&w, 0), unread(&w, 1)), (1, 0));
    // A request without a body never waited for one.
    let want = Intake::Route {
        route: RouteId::new(1),
        model: None,
        body: RequestBody::None,
    };
    assert_eq!(w.intake_headers("/v1/chat", true, no_header), want);
    assert_eq!(unread(&w, 0), 1);
}

#[test]
fn a_late_route_keeps_the_header_model_and_counts_nothing_when_only_rewriting() {
    let cfg = r#"{"model":{"source":"header"},"routes":[
        {"name":"chat","upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]}]}"#;
    let w = worker(cfg, &Store::default(), T0);
    let header = |_: &str| Some(b"gpt-4o".to_vec());
    let want = Intake::Route {
        route: RouteId::new(0),
        model: Some("gpt-4o".into()),
        body: RequestBody::Late,
    };
    assert_eq!(w.intake_late("/v1/chat", header), want);
    assert_eq!(unread(&w, 0), 0);
    // Nothing to rewrite from a body still to come.
    assert_eq!(RequestBody::Late.rewrite("x", |_| panic!("not read")), None);
}

#[test]
fn configs_with_models_tick_to_watch_held_requests() {
    let w = worker(MODELS, &Store::default(), T0);
    assert!((1..=250).contains(&w.tick_period_ms()));
    let cfg = r#"{"success_flush_ms":0,"routes":[{"name":"c","upstreams":["a"]}]}"#;
    assert_eq!(worker(cfg, &Store::default(), T0).tick_period_ms(), 0);
    let cfg = r#"{"success_flush_ms":0,"routes":[{"name":"c","match":{"models":["m"]},"upstreams":["a"]}]}"#;
    assert_eq!(worker(cfg, &Store::default(), T0).tick_period_ms(), 250);
}

#[test]
fn only_routes_that_need_the_body_hold_and_within_request_holds_none_for_rewrites() {
    let c = worker(MODELS, &Store::default(), T0);
    assert!(c.config().needs_body("/v1/chat"));
    assert!(c.config().body_model_decides("/v1/chat"));
    // Rewrites alone need the body but not its model.
    let rewrites = r#"{"routes":[{"name":"c","upstreams":["a",{"upstream":"b","model":"m"}]}]}"#;
    let c = worker(rewrites, &Store::default(), T0);
    assert!(c.config().needs_body("/v1/chat"));
    assert!(!c.config().body_model_decides("/v1/chat"));
    // Under within_request the upstream role rewrites: the downstream role holds nothing.
    let within = r#"{"failover":"within_request",
        "routes":[{"name":"c","upstreams":["a",{"upstream":"b","model":"m"}]}]}"#;
    let c = worker(within, &Store::default(), T0);
    assert!(!c.config().needs_body("/v1/chat"));
    // A model read from a header never needs the body to decide.
    let header = r#"{"model":{"source":"header"},
        "routes":[{"name":"c","match":{"models":["m"]},"upstreams":["a"]}]}"#;
    let c = worker(header, &Store::default(), T0);
    assert!(!c.config().needs_body("/v1/chat"));
    assert!(!c.config().body_model_decides("/v1/chat"));
}
