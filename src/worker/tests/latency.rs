//! The latency histograms: time to first byte (the first event of a stream) and
//! duration, recorded once per finished request (`next_request`) or per attempt
//! (`within_request`: a failed one by the upstream log, the answer by the
//! downstream role).

use super::fakes::*;
use crate::ids::RouteId;
use crate::worker::metrics::UpstreamMetric::{DurationMs, TtfbMs};
use crate::worker::response::Response;
use crate::worker::within::WithinRouting;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

/// A streaming-policy config (bodies are scanned, so an event stream is seen).
fn two(extra: &str) -> String {
    config(&["openai", "azure"], &consecutive(3, 1000), extra)
}

#[test]
fn a_request_records_its_first_byte_and_duration_once() {
    let w = worker(&two(""), &Store::default(), T0);
    let (routed, _) = send(&w, T0);
    let mut resp = Response::default();
    resp.headers(&w, &routed, Some(200), false, T0 + 40, |_| None);
    resp.body(&routed, 10, true, || T0 + 90, |_, _| Vec::new());
    let facts = *resp.end(|| 0, || None);
    w.finish(&routed, &facts, T0 + 100);
    assert_eq!(w.metrics().recorded(0, TtfbMs), [40]);
    assert_eq!(w.metrics().recorded(0, DurationMs), [100]);
    assert!(w.metrics().recorded(1, TtfbMs).is_empty());
}

#[test]
fn an_event_stream_counts_its_first_event_not_its_headers() {
    let w = worker(&two(""), &Store::default(), T0);
    let (routed, _) = send(&w, T0);
    let mut resp = Response::default();
    let sse = |h: &str| (h == "content-type").then(|| b"text/event-stream".to_vec());
    resp.headers(&w, &routed, Some(200), false, T0 + 10, sse);
    resp.body(
        &routed,
        30,
        false,
        || T0 + 250,
        |_, _| b"data: {}\n\n".to_vec(),
    );
    resp.body(
        &routed,
        14,
        true,
        || T0 + 900,
        |_, _| b"data: [DONE]\n\n".to_vec(),
    );
    let facts = *resp.end(|| 0, || None);
    w.finish(&routed, &facts, T0 + 1000);
    assert_eq!(w.metrics().recorded(0, TtfbMs), [250]);
    assert_eq!(w.metrics().recorded(0, DurationMs), [1000]);
}

#[test]
fn no_response_headers_means_a_duration_but_no_first_byte() {
    let w = worker(&two(""), &Store::default(), T0);
    let (routed, _) = send(&w, T0);
    let facts = *Response::default().end(|| crate::classify::flags::CONNECT_FAILURE, || None);
    w.finish(&routed, &facts, T0 + 7);
    assert!(w.metrics().recorded(0, TtfbMs).is_empty());
    assert_eq!(w.metrics().recorded(0, DurationMs), [7]);
}

#[test]
fn within_request_records_each_attempt_once_on_its_upstream() {
    let store = Store::default();
    let json = two(r#","failover":"within_request""#);
    let down = worker(&json, &store, T0);
    let log = worker(
        &json.replacen('{', r#"{"role":"upstream_log","#, 1),
        &store,
        T0,
    );
    let send = |now| match down.route_within(RouteId::new(0), None, now) {
        // Every member closed: no tickets (the upstream log finds the breaker closed).
        Some(WithinRouting::Send { plan, tickets, .. }) => (plan, tickets.unwrap_or_default()),
        _ => panic!("not sent"),
    };
    // Attempt 1 on openai: 503 after 20 ms, as the upstream log says; attempt 2 on
    // azure: 200, its headers at T0 + 50, its body's end at T0 + 80.
    let (plan, tickets) = send(T0);
    let failed = logged("openai", &tickets, Some(503), 0, 20);
    log.log_attempt(failed, T0 + 20, |_| None);
    let s = down.served_within(&plan, Some(b"azure"), None, Some(200), || None);
    let routed = s.record.unwrap();
    let mut resp = Response::default();
    resp.headers(&down, &routed, Some(200), false, T0 + 50, |_| None);
    resp.body(&routed, 10, true, || T0 + 80, |_, _| Vec::new());
    down.finish(&routed, resp.end(|| 0, || None), T0 + 80);
    down.release_unused(&plan, s.attempts, T0 + 80);
    assert_eq!(log.metrics().recorded(0, TtfbMs), [20]);
    assert_eq!(log.metrics().recorded(0, DurationMs), [20]);
    // When azure's attempt started is not known: no time to first byte, no
    // duration (not a 0 ms sample that would look fast).
    assert!(down.metrics().recorded(1, TtfbMs).is_empty());
    assert!(down.metrics().recorded(1, DurationMs).is_empty());
    // The first attempt answers: it counts from the end of the request.
    let (plan, _) = send(T0 + 100);
    let s = down.served_within(&plan, Some(b"openai"), None, Some(200), || None);
    let routed = s.record.unwrap();
    let mut resp = Response::default();
    resp.headers(&down, &routed, Some(200), true, T0 + 140, |_| None);
    down.finish(&routed, resp.end(|| 0, || None), T0 + 150);
    assert_eq!(down.metrics().recorded(0, TtfbMs), [40]);
    assert_eq!(down.metrics().recorded(0, DurationMs), [50]);
    // Each once: neither role recorded the other's.
    assert_eq!(log.metrics().recorded(0, TtfbMs), [20]);
    assert!(log.metrics().recorded(1, TtfbMs).is_empty());
    assert!(log.metrics().recorded(1, DurationMs).is_empty());
}

#[test]
fn shadow_records_on_the_primary_even_while_its_breaker_is_open() {
    let w = worker(
        &config(
            &["openai", "azure"],
            &consecutive(1, 60_000),
            r#","mode":"shadow""#,
        ),
        &Store::default(),
        T0,
    );
    exchange(&w, 503, T0);
    exchange(&w, 503, T0 + 1);
    assert_eq!(w.metrics().recorded(0, TtfbMs), [1, 1]);
    assert!(w.metrics().recorded(1, DurationMs).is_empty());
}
