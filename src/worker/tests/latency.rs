//! The latency histograms: time to first byte (the first event of a stream) and
//! duration, recorded once per finished request (`next_request`) or per attempt
//! (the upstream role of `within_request`), never by the downstream role there.

use super::fakes::*;
use crate::ids::RouteId;
use crate::worker::attempt::Attempt;
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
fn within_request_records_each_attempt_once_on_its_upstream_and_the_downstream_role_none() {
    let store = Store::default();
    let json = two(r#","failover":"within_request""#);
    let down = worker(&json, &store, T0);
    let up = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    let Some(WithinRouting::Send { plan, tickets, .. }) =
        down.route_within(RouteId::new(0), None, T0)
    else {
        panic!("not sent");
    };
    // Attempt 1 on openai: 503 after 20 ms; attempt 2 on azure: 200 after 30 ms.
    for (name, status, start, ttfb) in [("openai", 503, T0, 20), ("azure", 200, T0 + 20, 30)] {
        let mut a = Attempt::default();
        a.start(
            &up,
            name.as_bytes(),
            Some(tickets.as_bytes()),
            None,
            true,
            start,
        );
        a.response_headers(&up, Some(status), true, start + ttfb, |_| None);
        a.done(&up, start + ttfb, || false);
    }
    let (used, _) = down.served_within(&plan, Some(b"azure"), || None, no_read());
    down.release_unused(&plan, used, T0 + 50);
    assert_eq!(up.metrics().recorded(0, TtfbMs), [20]);
    assert_eq!(up.metrics().recorded(0, DurationMs), [20]);
    assert_eq!(up.metrics().recorded(1, TtfbMs), [30]);
    assert_eq!(up.metrics().recorded(1, DurationMs), [30]);
    for u in 0..2 {
        assert!(down.metrics().recorded(u, TtfbMs).is_empty());
        assert!(down.metrics().recorded(u, DurationMs).is_empty());
    }
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
