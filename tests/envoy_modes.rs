//! The three modes (`"mode": "enforce" | "shadow" | "off"`, issue 12) in the real
//! Envoy (two workers), each with a primary that answers 503 and a healthy fallback:
//! enforce fails over; shadow sends every request to the primary (the client gets
//! its 503), trips the breaker all the same and counts what enforcement would have
//! done; off touches nothing. Shadow and off under `within_request` too, with the
//! generator's clusters. Then the latency histograms (`ttfb_ms`, `duration_ms`) as
//! `/stats/prometheus` shows them: one sample per request, or per attempt under
//! `within_request`.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{Envoy, Options, Within};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// Consecutive failures that trip the primary.
const N: u64 = 3;
/// Requests each test sends.
const REQUESTS: u64 = 10;

/// openai → azure in `mode`, `extra` top-level fields; only the consecutive rule
/// trips (after `N`), open for a minute; the admin endpoints on.
fn config(mode: &str, extra: &str) -> String {
    format!(
        r#"{{"mode":"{mode}","admin":{{"enabled":true}}{extra},
            "routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure"]}}],
            "breaker":{{"consecutive_failures":{N},
              "failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
              "open":{{"base_ms":60000,"max_ms":600000,"jitter":0}}}}}}"#
    )
}

/// The two mocks, openai answering 503.
fn mocks() -> (MockUpstream, MockUpstream) {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    a.set(Behaviour::Status(503));
    (a, b)
}

/// Envoy with the generator's clusters (`within_request`) for the two mocks.
fn start_within(filter: &str, a: &MockUpstream, b: &MockUpstream) -> Envoy {
    let providers: [(&str, SocketAddr); 2] = [("openai", a.addr()), ("azure", b.addr())];
    let mut opts = Options::breaker(filter, &providers);
    opts.within = Some(Within::generated(
        filter,
        &providers,
        Duration::from_secs(1),
    ));
    Envoy::start(&opts)
}

fn post(e: &Envoy) -> Response {
    client::post(e.listener, CHAT, BODY).expect("request through Envoy")
}

/// The state `status` shows for `upstream`.
fn state_in_status(doc: &serde_json::Value, upstream: &str) -> String {
    doc["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == upstream)
        .map(|u| u["state"].as_str().unwrap().to_string())
        .unwrap()
}

/// Every llm-breaker stat Envoy has, with its value.
fn breaker_stats(e: &Envoy) -> Vec<(String, u64)> {
    client::get(e.admin, "/stats?filter=^wasmcustom\\.llm_breaker\\.")
        .unwrap()
        .text()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Off mode: every llm-breaker metric is still defined, and none moved.
fn assert_no_metric_moved(e: &Envoy) {
    let stats = breaker_stats(e);
    assert!(!stats.is_empty(), "the metrics are still defined");
    let moved: Vec<_> = stats.iter().filter(|(_, v)| *v != 0).collect();
    assert!(moved.is_empty(), "metrics moved in off mode: {moved:?}");
}

/// Sends `REQUESTS` sequential requests, each after the outcome of the one before
/// was counted (`outcome`: the metric that counts it on openai, if any).
fn send_all(e: &Envoy, outcome: Option<&str>) -> Vec<Response> {
    (0..REQUESTS)
        .map(|i| {
            let r = post(e);
            if let Some(m) = outcome {
                let seen = e.wait_upstream_stat("openai", m, i + 1);
                assert!(seen > i, "outcome {i} never counted ({m} = {seen})");
            }
            r
        })
        .collect()
}

#[test]
fn enforce_fails_over_from_the_failing_primary() {
    let (a, b) = mocks();
    let e = Envoy::start_breaker(&config("enforce", ""), &[&a, &b]);
    let mut answers = Vec::new();
    for _ in 0..REQUESTS {
        answers.push(e.send_recorded(CHAT, &[], BODY.as_bytes()));
    }
    let served: Vec<_> = answers.iter().map(|r| r.upstream().unwrap()).collect();
    assert!(served[..N as usize].iter().all(|&u| u == "openai"));
    assert!(served[N as usize..].iter().all(|&u| u == "azure"));
    assert_eq!(
        answers.last().unwrap().header("x-llm-breaker"),
        Some("upstream=azure; reason=failover; skipped=openai")
    );
    assert_eq!(a.requests() as u64, N);
    assert_eq!(
        e.upstream_stat("openai", "requests_failed_over"),
        REQUESTS - N
    );
    assert_eq!(e.upstream_stat("openai", "requests_would_fail_over"), 0);
    assert_eq!(e.status()["mode"], "enforce");
}

#[test]
fn shadow_sends_everything_to_the_primary_but_trips_and_counts_the_would_be_failover() {
    let (a, b) = mocks();
    let e = Envoy::start_breaker(&config("shadow", ""), &[&a, &b]);
    let answers = send_all(&e, Some("failures.status"));
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.upstream()),
            (503, Some("openai")),
            "request {i}"
        );
    }
    let headers: Vec<_> = answers.iter().map(|r| r.header("x-llm-breaker")).collect();
    assert_eq!(
        headers[0],
        Some("upstream=openai; reason=shadow; would=openai; would_reason=primary")
    );
    assert_eq!(
        headers[REQUESTS as usize - 1],
        Some("upstream=openai; reason=shadow; would=azure; would_reason=failover; skipped=openai")
    );
    assert_eq!((a.requests() as u64, b.requests()), (REQUESTS, 0));
    let doc = e.status();
    assert_eq!(doc["mode"], "shadow");
    assert_eq!(state_in_status(&doc, "openai"), "open");
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert_eq!(e.upstream_stat("openai", "transitions.closed_to_open"), 1);
    assert_eq!(
        e.upstream_stat("openai", "requests_would_fail_over"),
        REQUESTS - N
    );
    assert_eq!(e.upstream_stat("openai", "requests_failed_over"), 0);
    assert_eq!(e.upstream_stat("openai", "requests_admitted"), REQUESTS);
    assert_eq!(e.upstream_stat("azure", "requests_admitted"), 0);
    let log = e.log();
    assert!(log.contains("mode shadow"), "{log}");
    assert!(log.contains("upstream=openai from=closed to=open"), "{log}");
}

#[test]
fn shadow_never_answers_the_all_open_503_and_counts_it() {
    let (a, b) = mocks();
    let mut opts = Options::breaker_for(&config("shadow", ""), &[&a, &b]);
    opts.env = vec![("LLM_BREAKER_ADMIN_TOKEN".into(), "t0ken".into())];
    let e = Envoy::start(&opts);
    let auth = [("authorization", "Bearer t0ken")];
    let path = "/_llm_breaker/upstreams/azure/isolate";
    let r = client::request(e.listener, "POST", path, &auth, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Every worker sees the isolation after admission_cache_ms (1 ms).
    std::thread::sleep(Duration::from_millis(20));
    let answers = send_all(&e, Some("failures.status"));
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.upstream()),
            (503, Some("openai")),
            "request {i}"
        );
    }
    assert_eq!(
        answers.last().unwrap().header("x-llm-breaker"),
        Some("upstream=openai; reason=shadow; would=none; would_reason=all_open; skipped=openai,azure")
    );
    assert_eq!(b.requests(), 0);
    let would = REQUESTS - N;
    assert_eq!(e.upstream_stat("openai", "requests_would_reject"), would);
    assert_eq!(e.upstream_stat("azure", "requests_would_reject"), would);
    assert_eq!(
        e.stat("wasmcustom.llm_breaker.route.chat.requests_would_reject"),
        Some(would)
    );
    assert_eq!(
        e.stat("wasmcustom.llm_breaker.route.chat.requests_rejected"),
        Some(0)
    );
}

#[test]
fn off_passes_through_with_no_header_and_no_metrics_movement() {
    let (a, b) = mocks();
    let e = Envoy::start_breaker(&config("off", ""), &[&a, &b]);
    let answers = send_all(&e, None);
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.upstream()),
            (503, Some("openai")),
            "request {i}"
        );
        assert_eq!(r.header("x-llm-breaker"), None, "request {i}");
    }
    assert_eq!((a.requests() as u64, b.requests()), (REQUESTS, 0));
    // Give a late on_log every chance to count something.
    std::thread::sleep(Duration::from_millis(200));
    assert_no_metric_moved(&e);
    let doc = e.status();
    assert_eq!(doc["mode"], "off");
    assert_eq!(state_in_status(&doc, "openai"), "closed");
}

#[test]
fn within_request_shadow_uses_the_primary_alone_and_off_stays_out() {
    let (a, b) = mocks();
    let within = r#","failover":"within_request""#;
    let e = start_within(&config("shadow", within), &a, &b);
    let answers = send_all(&e, Some("failures.status"));
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.upstream()),
            (503, Some("openai")),
            "request {i}"
        );
    }
    assert_eq!(
        answers.last().unwrap().header("x-llm-breaker"),
        Some("upstream=openai; reason=shadow; would=azure; would_reason=failover; skipped=openai")
    );
    assert_eq!((a.requests() as u64, b.requests()), (REQUESTS, 0));
    assert_eq!(state_in_status(&e.status(), "openai"), "open");
    assert_eq!(e.upstream_stat("openai", "attempts"), REQUESTS);
    assert_eq!(e.upstream_stat("openai", "attempts_failed_retried"), 0);
    assert_eq!(
        e.upstream_stat("openai", "requests_would_fail_over"),
        REQUESTS - N
    );
    drop(e);

    let (a, b) = mocks();
    let e = start_within(&config("off", within), &a, &b);
    let answers = send_all(&e, None);
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.upstream()),
            (503, Some("openai")),
            "request {i}"
        );
        assert_eq!(r.header("x-llm-breaker"), None, "request {i}");
    }
    assert_eq!((a.requests() as u64, b.requests()), (REQUESTS, 0));
    std::thread::sleep(Duration::from_millis(200));
    assert_no_metric_moved(&e);
}

/// The value of the Prometheus sample `series` (exact, labels included), if shown.
fn sample(prom: &str, series: &str) -> Option<f64> {
    prom.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits (up to 30 s: Envoy merges histograms at its 5 s stats flush) until
/// `/stats/prometheus` shows `want` samples in `metric`'s `_count` of `upstream`;
/// returns the text.
fn wait_histogram(e: &Envoy, metric: &str, upstream: &str, want: u64) -> String {
    let series =
        format!("llm_breaker_upstream_{metric}_count{{llm_breaker_upstream=\"{upstream}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let prom = e.prometheus();
        let got = sample(&prom, &series);
        if got.is_some_and(|n| n >= want as f64) || Instant::now() > deadline {
            assert_eq!(got, Some(want as f64), "{series}:\n{prom}");
            return prom;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn latency_histograms_show_bucket_series_with_one_sample_per_request() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    a.set(Behaviour::Delay(Duration::from_millis(300)));
    let e = Envoy::start_breaker(&config("enforce", ""), &[&a, &b]);
    for _ in 0..4 {
        let r = e.send_recorded(CHAT, &[], BODY.as_bytes());
        assert_eq!((r.status, r.upstream()), (200, Some("openai")));
    }
    wait_histogram(&e, "ttfb_ms", "openai", 4);
    let prom = wait_histogram(&e, "duration_ms", "openai", 4);
    for m in ["ttfb_ms", "duration_ms"] {
        assert!(
            prom.contains(&format!("# TYPE llm_breaker_upstream_{m} histogram")),
            "{m} is not a histogram:\n{prom}"
        );
        let bucket = |le: &str| {
            let s = format!(
                r#"llm_breaker_upstream_{m}_bucket{{llm_breaker_upstream="openai",le="{le}"}}"#
            );
            sample(&prom, &s).unwrap_or_else(|| panic!("no {s}:\n{prom}"))
        };
        // Every request waited at least 300 ms for its first byte.
        assert_eq!(bucket("250"), 0.0, "{m}");
        assert_eq!(bucket("+Inf"), 4.0, "{m}");
    }
    // No request went to azure: no samples there.
    let azure = r#"llm_breaker_upstream_ttfb_ms_count{llm_breaker_upstream="azure"}"#;
    assert!(sample(&prom, azure).unwrap_or(0.0) == 0.0, "{prom}");
}

#[test]
fn within_request_records_one_latency_sample_per_timed_attempt() {
    let (a, b) = mocks();
    let e = start_within(
        &config("enforce", r#","failover":"within_request""#),
        &a,
        &b,
    );
    for i in 0..REQUESTS {
        let r = post(&e);
        assert_eq!(
            (r.status, r.upstream()),
            (200, Some("azure")),
            "request {i}"
        );
        assert_eq!(e.wait_upstream_stat("azure", "successes", i + 1), i + 1);
    }
    // openai got N attempts (then its breaker opened), azure every request. azure's
    // answers after a failed openai attempt are not timed (when that attempt started
    // is unknown), the others are.
    assert_eq!(a.requests() as u64, N);
    wait_histogram(&e, "ttfb_ms", "openai", N);
    wait_histogram(&e, "duration_ms", "openai", N);
    wait_histogram(&e, "ttfb_ms", "azure", REQUESTS - N);
    wait_histogram(&e, "duration_ms", "azure", REQUESTS - N);
}
