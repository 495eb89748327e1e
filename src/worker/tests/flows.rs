//! Whole breaker flows through the worker, with time as numbers: the scenarios the
//! Envoy tier used to run by sleeping through open and flush periods, and two
//! workers interleaved over one store.

use super::fakes::*;
use crate::history;
use crate::ids::{CellId, RouteId};
use crate::worker::metrics::{Edge, UpstreamMetric};
use crate::worker::request::{self, Routing};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

fn header(w: &TestWorker, r: &crate::worker::request::Routed) -> String {
    w.served_header(r).unwrap().1.into_owned()
}

#[test]
fn half_open_probes_close_the_breaker_when_the_primary_recovers() {
    let store = Store::default();
    let w = worker(
        &config(&["openai", "azure"], &consecutive(2, 1000), ""),
        &store,
        T0,
    );
    exchange(&w, 503, T0);
    exchange(&w, 503, T0 + 1);
    assert_eq!(send(&w, T0 + 2).1, "azure");
    // Open time passed: the next request is a probe to the primary.
    let (r, cluster) = send(&w, T0 + 1001);
    assert_eq!(cluster, "openai");
    assert_eq!(header(&w, &r), "upstream=openai; reason=probe");
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::State), Some(2));
    w.finish(&r, &answered(200), T0 + 1001);
    // success_threshold is 2: one more probe closes it.
    assert_eq!(exchange(&w, 200, T0 + 1002), "openai");
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::State), Some(0));
    assert_eq!(
        w.metrics()
            .up(0, UpstreamMetric::Transitions(Edge::HalfOpenToClosed)),
        1
    );
    let (r, _) = send(&w, T0 + 1003);
    assert_eq!(header(&w, &r), "upstream=openai; reason=primary");
}

#[test]
fn a_failed_probe_reopens_for_a_longer_time() {
    let store = Store::default();
    // base 1 s, multiplier 3: the re-open lasts 3 s.
    let w = tripped(&store, T0);
    let (probe, _) = send(&w, T0 + 1000);
    assert_eq!(header(&w, &probe), "upstream=openai; reason=probe");
    w.finish(&probe, &answered(503), T0 + 1000);
    assert_eq!(
        w.metrics()
            .up(0, UpstreamMetric::Transitions(Edge::HalfOpenToOpen)),
        1
    );
    assert!(logs().contains(
        &"llm-breaker: upstream=openai from=half_open to=open reason=probe_failed open_ms=3000"
            .to_string()
    ));
    // Past the first open time, inside the second: still failing over.
    assert_eq!(send(&w, T0 + 2200).1, "azure");
    assert_eq!(send(&w, T0 + 3999).1, "azure");
    let (r, _) = send(&w, T0 + 4000);
    assert_eq!(header(&w, &r), "upstream=openai; reason=probe");
}

#[test]
fn transitions_are_logged_and_appended_to_the_history() {
    let store = Store::default();
    let json = r#"{"routes":[{"name":"chat","upstreams":["openai","azure"]}],"admin":{"enabled":true},
        "breaker":{"consecutive_failures":1,"open":{"base_ms":1000,"jitter":0}}}"#;
    let w = worker(json, &store, T0);
    exchange(&w, 503, T0);
    let lines = logs();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "llm-breaker: upstream=openai from=closed to=open reason=consecutive_failures"
        )),
        "{lines:?}"
    );
    let h = history::read(&store);
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].cell, h[0].at_ms), (0, T0));
}

#[test]
fn undecodable_shared_state_is_reset_to_closed_reported_and_counted() {
    let store = Store::default();
    let w = worker(
        &config(&["openai"], "{}", r#","admission_cache_ms":0"#),
        &store,
        T0,
    );
    let key = w.cell(CellId::new(0)).unwrap().key.clone();
    store.put_raw(&key, b"\xffgarbage");
    assert_eq!(exchange(&w, 503, T0), "openai");
    assert_eq!(w.metrics().up(0, UpstreamMetric::StateResets), 1);
    assert!(logs().iter().any(|l| l
        .starts_with("llm-breaker: shared state of upstream openai did not decode (")
        && l.ends_with("); reset to closed")));
    assert_eq!(stored(&w, T0).window.totals(T0).failures, 1);
}

#[test]
fn held_successes_of_two_workers_reach_the_shared_window_and_dilute_the_failure_rate() {
    let store = Store::default();
    let breaker = r#"{"consecutive_failures":0,
                      "failure_rate":{"threshold":0.5,"minimum_calls":10,"window":{"seconds":60}},
                      "open":{"base_ms":60000,"jitter":0}}"#;
    let cfg = config(&["openai", "azure"], breaker, "");
    let workers = [worker(&cfg, &store, T0), worker(&cfg, &store, T0)];
    // Interleaved: three fast successes each, held by their worker.
    for i in 0..6 {
        assert_eq!(exchange(&workers[i % 2], 200, T0 + i as u64), "openai");
    }
    // Each worker writes its held successes within success_flush_ms (250 ms).
    for w in &workers {
        w.tick(T0 + 260);
    }
    assert_eq!(
        stored(&workers[0], T0 + 260).window.totals(T0 + 260).calls,
        6
    );
    for i in 0..5 {
        assert_eq!(exchange(&workers[i % 2], 500, T0 + 300), "openai");
    }
    // 5 of 11 must not trip.
    assert_eq!(
        stored(&workers[0], T0 + 300).kind(),
        crate::breaker::PhaseKind::Closed
    );
    // The 12th call makes it 6 of 12 = 0.5: trips.
    assert_eq!(exchange(&workers[1], 500, T0 + 301), "openai");
    assert!(logs()
        .iter()
        .any(|l| l.contains("from=closed to=open reason=failure_rate")));
    assert_eq!(send(&workers[0], T0 + 302).1, "azure");
}

#[test]
fn two_interleaved_workers_trip_after_exactly_n_failures_between_them() {
    let store = Store::default();
    let cfg = config(&["openai", "azure"], &consecutive(5, 60_000), "");
    let w = [worker(&cfg, &store, T0), worker(&cfg, &store, T0)];
    // Both admit first (quiet reads), then the failures complete in turn.
    let inflight: Vec<_> = (0..5).map(|i| (i % 2, send(&w[i % 2], T0).0)).collect();
    for (i, (k, r)) in inflight.iter().enumerate() {
        assert_eq!(
            stored(&w[0], T0).kind(),
            crate::breaker::PhaseKind::Closed,
            "after {i}"
        );
        w[*k].finish(r, &answered(503), T0 + 1);
    }
    assert_eq!(
        stored(&w[0], T0 + 1).kind(),
        crate::breaker::PhaseKind::Open
    );
    let opened: usize = w
        .iter()
        .map(|x| {
            x.metrics()
                .up(0, UpstreamMetric::Transitions(Edge::ClosedToOpen))
        })
        .sum();
    assert_eq!(opened, 1, "one worker saw the transition");
    assert_eq!(send(&w[0], T0 + 2).1, "azure");
    assert_eq!(send(&w[1], T0 + 2).1, "azure");
}

#[test]
fn half_open_admits_at_most_permitted_calls_across_interleaved_workers() {
    let store = Store::default();
    let breaker = r#"{"consecutive_failures":1,"failure_rate":{"minimum_calls":1000000},
                      "open":{"base_ms":1000,"jitter":0},
                      "half_open":{"permitted_calls":2,"success_threshold":10}}"#;
    let cfg = config(&["openai", "azure"], breaker, "");
    let w = [worker(&cfg, &store, T0), worker(&cfg, &store, T0)];
    exchange(&w[0], 503, T0);
    let served: Vec<String> = (0..8).map(|i| send(&w[i % 2], T0 + 1200).1).collect();
    assert_eq!(
        served.iter().filter(|c| *c == "openai").count(),
        2,
        "{served:?}"
    );
    let probes: usize = w
        .iter()
        .map(|x| x.metrics().up(0, UpstreamMetric::Probes))
        .sum();
    assert_eq!(probes, 2);
}

#[test]
fn a_success_completing_after_a_failure_ends_the_streak() {
    let store = Store::default();
    let w = worker(
        &config(&["openai", "azure"], &consecutive(3, 60_000), ""),
        &store,
        T0,
    );
    // A slow success is admitted while the breaker is quiet...
    let (slow, _) = send(&w, T0);
    // ...two failures start a streak while it is in flight...
    exchange(&w, 500, T0 + 1);
    exchange(&w, 500, T0 + 2);
    // ...and its completion ends the streak (it must not be held back in a batch).
    w.finish(&slow, &answered(200), T0 + 3);
    exchange(&w, 500, T0 + 4);
    exchange(&w, 500, T0 + 5);
    assert_eq!(stored(&w, T0 + 5).kind(), crate::breaker::PhaseKind::Closed);
    exchange(&w, 500, T0 + 6);
    assert_eq!(stored(&w, T0 + 6).kind(), crate::breaker::PhaseKind::Open);
}

#[test]
fn all_open_rejects_with_retry_after_and_names_the_skipped_upstreams() {
    let store = Store::default();
    let w = worker(
        &config(&["openai", "azure"], &consecutive(1, 10_000), ""),
        &store,
        T0,
    );
    exchange(&w, 503, T0);
    exchange(&w, 503, T0 + 500);
    let Some(Routing::Reject(r)) = w.route(RouteId::new(0), None, T0 + 600) else {
        panic!("expected a rejection");
    };
    assert_eq!(r.retry_after, "10", "until openai's open period ends");
    assert_eq!(
        r.headers(),
        [
            ("content-type", "application/json"),
            ("retry-after", "10"),
            (
                "x-llm-breaker",
                "upstream=none; reason=all_open; skipped=openai,azure"
            )
        ]
    );
}

#[test]
fn a_chain_entry_with_a_model_rewrites_the_request_on_that_upstream_only() {
    let store = Store::default();
    let json = r#"{"routes":[{"name":"chat","upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]}],
        "breaker":{"consecutive_failures":1,"open":{"base_ms":1000,"jitter":0}}}"#;
    let w = worker(json, &store, T0);
    let route = &w.config().routes[0];
    let ids: Vec<_> = route.chain.clone();
    assert_eq!(request::rewrite_on(route, ids[0]), None);
    assert_eq!(request::rewrite_on(route, ids[1]), Some("gpt-4o-az"));
    let pick = |now| match w.route(RouteId::new(0), Some("gpt-4o"), now) {
        Some(Routing::Send {
            routed, rewrite, ..
        }) => (routed, rewrite.map(str::to_string)),
        _ => panic!("expected a send"),
    };
    let (r, rewrite) = pick(T0);
    assert_eq!(rewrite, None);
    w.finish(&r, &answered(503), T0);
    let (r, rewrite) = pick(T0 + 1);
    assert_eq!(
        (r.upstream, rewrite.as_deref()),
        (ids[1], Some("gpt-4o-az"))
    );
}

#[test]
fn a_retry_after_of_two_seconds_opens_for_two_seconds_and_no_longer() {
    let store = Store::default();
    let breaker = r#"{"consecutive_failures":5,"failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
        "open":{"base_ms":60000,"max_ms":600000,"jitter":0},"half_open":{"permitted_calls":1,"success_threshold":1}}"#;
    let w = worker(&config(&["openai", "azure"], breaker, ""), &store, T0);
    // One 429 that says "come back in 2 s" opens at once, not after 5.
    let (routed, _) = send(&w, T0);
    let mut response = crate::worker::response::Response::default();
    let hint = |name: &str| (name == "retry-after").then(|| b"2".to_vec());
    response.headers(&w, &routed, Some(429), true, T0 + 5, hint);
    w.finish(&routed, response.end(|| 0, || None), T0 + 5);
    let rate_limited = UpstreamMetric::Failures(crate::classify::FailureClass::RateLimited);
    assert_eq!(w.metrics().up(0, rate_limited), 1);
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::State), Some(1));
    assert!(logs()
        .iter()
        .any(|l| l.ends_with("reason=rate_limit_reset open_ms=2000")));
    // Inside the 2 s the fallback answers, up to their last millisecond...
    assert_eq!(send(&w, T0 + 6).1, "azure");
    assert_eq!(send(&w, T0 + 2004).1, "azure");
    // ...and just after, the primary gets its probe, which closes the breaker.
    let (probe, cluster) = send(&w, T0 + 2005);
    assert_eq!(cluster, "openai");
    assert_eq!(header(&w, &probe), "upstream=openai; reason=probe");
    w.finish(&probe, &answered(200), T0 + 2006);
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::State), Some(0));
}
