//! Within-request failover (issue 10) in the real Envoy, two workers: the downstream
//! role writes the aggregate of the admitting upstreams, Envoy retries each failed
//! attempt on the next member, the router's upstream log records every failed attempt
//! on its own upstream and the downstream role the one that answered. The Envoy clusters come from the generator (`llm-breaker-gen`), as a
//! user would deploy them.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{free_port, Envoy, Options, Within};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream, ResetForm};
use std::net::SocketAddr;
use std::time::Duration;

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const N: u32 = 3;

/// openai → azure, `within_request`; only the consecutive rule trips, after `N`,
/// open `open_ms`; `azure_entry` is azure's chain entry (a name or an object).
fn config(open_ms: u64, azure_entry: &str) -> String {
    format!(
        r#"{{"failover":"within_request","admin":{{"enabled":true}},
            "routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai",{azure_entry}]}}],
            "breaker":{{"consecutive_failures":{N},
              "failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
              "open":{{"base_ms":{open_ms},"max_ms":600000,"jitter":0}},
              "half_open":{{"permitted_calls":1,"success_threshold":1}}}}}}"#
    )
}

/// Envoy with the generator's clusters for these providers and a 1 s per-try timeout.
fn start(filter: &str, providers: &[(&str, SocketAddr)]) -> Envoy {
    let mut opts = Options::breaker(filter, providers);
    opts.within = Some(Within::generated(filter, providers, Duration::from_secs(1)));
    Envoy::start(&opts)
}

fn start_mocks(filter: &str, a: &MockUpstream, b: &MockUpstream) -> Envoy {
    start(filter, &[("openai", a.addr()), ("azure", b.addr())])
}

fn post(e: &Envoy, body: &str) -> Response {
    client::post(e.listener, CHAT, body).expect("request through Envoy")
}

/// Every member open: the next request gets the filter's own all-open 503.
fn assert_all_open(e: &Envoy) {
    let r = post(e, BODY);
    assert_eq!(r.status, 503);
    let header = r.header("x-llm-breaker").unwrap_or_default();
    assert!(
        header.starts_with("upstream=none; reason=all_open"),
        "{header}"
    );
}

/// Sends `n` sequential requests; returns the client errors and checks every answer
/// came from `from` (when given).
fn sequential(e: &Envoy, n: usize, from: Option<&str>) -> usize {
    let mut errors = 0;
    for i in 0..n {
        let r = post(e, BODY);
        if r.status != 200 {
            errors += 1;
            eprintln!("request {i}: {} {:?}", r.status, r.header("x-llm-breaker"));
        }
        if let Some(f) = from {
            assert_eq!(
                r.upstream(),
                Some(f),
                "request {i}: {:?}",
                r.header("x-llm-breaker")
            );
        }
        // Let the attempt's outcome reach shared data before the next request.
        std::thread::sleep(Duration::from_millis(5));
    }
    errors
}

#[test]
fn a_503_outage_costs_no_client_error_and_the_primary_exactly_n_attempts() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Status(503));
    let r = post(&e, BODY);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=azure; reason=failover; attempts=2; failed=openai")
    );
    let errors = sequential(&e, 49, Some("azure"));
    assert_eq!(errors, 0, "client errors");
    assert_eq!(
        a.requests(),
        N as usize,
        "the primary gets exactly N attempts"
    );
    assert_eq!(b.requests(), 50);
    // Accounting: every failed attempt the primary received is recorded once, on it.
    assert_eq!(
        e.wait_upstream_stat("openai", "failures.status", u64::from(N)),
        u64::from(N)
    );
    assert_eq!(e.upstream_stat("openai", "attempts"), u64::from(N));
    assert_eq!(
        e.upstream_stat("openai", "attempts_failed_retried"),
        u64::from(N)
    );
    assert_eq!(e.upstream_stat("azure", "failures.status"), 0);
    assert_eq!(e.wait_upstream_stat("azure", "successes", 50), 50);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    let status = e.status();
    assert_eq!(status["failover"]["upstreams"][0]["upstream"], "openai");
    assert_eq!(status["failover"]["upstreams"][0]["attempts"], N);
    assert_eq!(status["failover"]["upstreams"][1]["attempts"], 50);
    // The answer named its provider to the downstream role in the response header the
    // route adds (`x-llm-breaker` here, overwritten by the summary above).
    // Nothing here is shaped: the aggregates run no wasm filter per attempt, and the
    // upstream log is the only other role.
    let cfg = e.config_dump();
    assert!(
        !cfg.contains(r#""name": "llm-breaker-upstream""#),
        "no upstream role expected"
    );
    assert!(cfg.contains("llm-breaker-upstream-log"));
    let r = post(&e, BODY);
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=azure; reason=failover; attempts=1; skipped=openai")
    );
    assert!(!e.log().contains("critical"));
}

/// With `response_header` off, the route names the answer in `x-llm-breaker-attempt`:
/// the downstream role reads it (and records the answer), and removes it.
#[test]
fn with_the_response_header_off_the_served_name_is_read_and_removed() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let filter = config(60_000, r#""azure""#).replacen('{', r#"{"response_header":"","#, 1);
    let e = start_mocks(&filter, &a, &b);
    a.set(Behaviour::Status(503));
    let r = post(&e, BODY);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llm-breaker-attempt"), None, "removed");
    assert_eq!(r.header("x-llm-breaker"), None, "off");
    assert_eq!(
        e.wait_upstream_stat("azure", "successes", 1),
        1,
        "answer recorded"
    );
    assert_eq!(e.wait_upstream_stat("openai", "failures.status", 1), 1);
    assert_eq!(e.upstream_stat("openai", "attempts_failed_retried"), 1);
}

#[test]
fn after_the_open_time_the_probe_fails_and_its_client_still_gets_200() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(1_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Status(503));
    assert_eq!(sequential(&e, 10, Some("azure")), 0);
    assert_eq!(a.requests(), N as usize);
    std::thread::sleep(Duration::from_millis(1100));
    // The probe goes to openai, fails, and is retried on azure.
    let r = post(&e, BODY);
    assert_eq!((r.status, r.upstream()), (200, Some("azure")));
    assert_eq!(a.requests(), N as usize + 1, "one probe");
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=azure; reason=failover; attempts=2; failed=openai")
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sequential(&e, 5, Some("azure")), 0);
    assert_eq!(a.requests(), N as usize + 1, "re-opened: no more attempts");
    assert_eq!(
        e.upstream_stat("openai", "transitions.half_open_to_open"),
        1
    );
}

#[test]
fn a_primary_refusing_connections_costs_no_client_error() {
    let b = MockUpstream::start("azure");
    let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let e = start(
        &config(60_000, r#""azure""#),
        &[("openai", refused), ("azure", b.addr())],
    );
    assert_eq!(sequential(&e, 20, Some("azure")), 0);
    assert_eq!(
        e.wait_upstream_stat("openai", "failures.connect_failure", u64::from(N)),
        u64::from(N)
    );
    assert_eq!(e.upstream_stat("openai", "attempts"), u64::from(N));
    assert_eq!(e.upstream_stat("openai", "state"), 1);
}

#[test]
fn a_429_with_retry_after_2_opens_the_primary_for_2_s_without_client_errors() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::RateLimited {
        status: 429,
        reset: ResetForm::RetryAfter,
        after: Duration::from_secs(2),
    });
    assert_eq!(sequential(&e, 10, Some("azure")), 0);
    assert_eq!(a.requests(), 1, "one 429 with a hint opens at once");
    assert!(e
        .log()
        .lines()
        .any(|l| l.contains("upstream=openai from=closed to=open") && l.contains("open_ms=2000")));
    a.set(Behaviour::Ok);
    std::thread::sleep(Duration::from_millis(2100));
    let r = post(&e, BODY);
    assert_eq!(
        r.upstream(),
        Some("openai"),
        "2 s later the primary is probed"
    );
}

#[test]
fn a_primary_hanging_past_the_per_try_timeout_costs_no_client_error() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Hang);
    assert_eq!(sequential(&e, 5, Some("azure")), 0);
    assert_eq!(a.requests(), N as usize);
    assert_eq!(
        e.wait_upstream_stat("openai", "failures.timeout", u64::from(N)),
        u64::from(N)
    );
    assert_eq!(e.upstream_stat("openai", "failures.reset"), 0);
}

#[test]
fn thirty_concurrent_requests_at_the_trip_get_no_client_error() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Status(503));
    let listener = e.listener;
    let handles: Vec<_> = (0..30)
        .map(|_| std::thread::spawn(move || client::post(listener, CHAT, BODY).unwrap().status))
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let errors = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(errors, 0, "{statuses:?}");
    assert_eq!(b.requests(), 30);
    eprintln!(
        "30 concurrent: primary got {}, fallback {}",
        a.requests(),
        b.requests()
    );
    // Accounting under concurrency: each failed attempt the primary got is recorded,
    // once (outcomes admitted before the trip in the old epoch are counted, not
    // written to the breaker).
    let got = a.requests() as u64;
    assert_eq!(
        e.wait_upstream_stat("openai", "attempts", got),
        got,
        "attempts counted by the downstream role"
    );
    assert_eq!(e.wait_upstream_stat("openai", "failures.status", got), got);
}

#[test]
fn the_fallback_attempt_carries_its_chain_entrys_model_byte_exact_otherwise() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let c = MockUpstream::start("vllm");
    let e = start(
        &config(60_000, r#"{"upstream":"azure","model":"gpt-4o-az"},"vllm""#),
        &[
            ("openai", a.addr()),
            ("azure", b.addr()),
            ("vllm", c.addr()),
        ],
    );
    a.set(Behaviour::Status(503));
    let r = post(&e, BODY);
    assert_eq!((r.status, r.upstream()), (200, Some("azure")));
    let length = |r: &llm_breaker_harness::upstream::RecordedRequest| {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.clone())
    };
    let first = a.last_request().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&first.body),
        BODY,
        "openai got the original"
    );
    let second = b.last_request().unwrap();
    let want = BODY.replace("\"gpt-4o\"", "\"gpt-4o-az\"");
    assert_eq!(String::from_utf8_lossy(&second.body), want);
    assert_eq!(length(&second), Some(want.len().to_string()));
    // A third attempt after the rewritten one gets the original bytes and length back.
    b.set(Behaviour::Status(503));
    let r = post(&e, BODY);
    assert_eq!((r.status, r.upstream()), (200, Some("vllm")));
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=vllm; reason=failover; attempts=3; failed=openai,azure")
    );
    let third = c.last_request().unwrap();
    assert_eq!(String::from_utf8_lossy(&third.body), BODY);
    assert_eq!(length(&third), Some(BODY.len().to_string()));
}

#[test]
fn an_sse_stream_cut_after_its_headers_is_recorded_on_its_upstream_not_retried() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::SseCut { chunks: 1 });
    let _ = client::post(e.listener, CHAT, STREAM);
    let failed = e.wait_upstream_stat("openai", "failures.reset", 1)
        + e.upstream_stat("openai", "failures.stream_truncated");
    assert_eq!(failed, 1, "recorded on the upstream that served it");
    assert_eq!(b.requests(), 0, "not retried");
    assert_eq!(e.upstream_stat("azure", "attempts"), 0);
}

#[test]
fn a_primary_resetting_before_its_headers_costs_no_client_error() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Close);
    assert_eq!(sequential(&e, 10, Some("azure")), 0);
    assert_eq!(a.requests(), N as usize);
    assert_eq!(
        e.wait_upstream_stat("openai", "failures.reset", u64::from(N)),
        u64::from(N)
    );
}

#[test]
fn every_upstream_failing_answers_promptly_with_at_most_one_attempt_each() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start_mocks(&config(60_000, r#""azure""#), &a, &b);
    a.set(Behaviour::Status(503));
    b.set(Behaviour::Status(503));
    for i in 0..N as usize {
        let r = post(&e, BODY);
        assert_eq!(r.status, 503, "the last upstream's error");
        assert_eq!(
            r.header("x-llm-breaker"),
            Some("upstream=azure; reason=failover; attempts=2; failed=openai")
        );
        assert_eq!((a.requests(), b.requests()), (i + 1, i + 1));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both open: the filter's own 503, no attempt at all.
    assert_all_open(&e);
    assert_eq!((a.requests(), b.requests()), (N as usize, N as usize));
}

#[test]
fn every_upstream_refusing_connections_answers_and_records_each_attempt() {
    // The last attempt ends with no response at all: Envoy's own 503 (UF) reaches the
    // client, and the upstream log records each attempt's connect failure.
    let (dead_a, dead_b) = (free_port(), free_port());
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let e = start(
        &config(60_000, r#""azure""#),
        &[("openai", addr(dead_a)), ("azure", addr(dead_b))],
    );
    for i in 0..N as usize {
        let r = post(&e, BODY);
        assert_eq!(
            r.status, 503,
            "request {i}: Envoy's reply to the last attempt"
        );
        assert_eq!(
            r.header("x-llm-breaker"),
            Some("upstream=azure; reason=failover; attempts=2; failed=openai"),
            "request {i}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for u in ["openai", "azure"] {
        assert_eq!(
            e.wait_upstream_stat(u, "failures.connect_failure", u64::from(N)),
            u64::from(N),
            "{u}"
        );
        assert_eq!(e.upstream_stat(u, "attempts"), u64::from(N), "{u}");
    }
    // Both open: the filter's own 503, at once.
    assert_all_open(&e);
}

#[test]
fn a_body_over_the_buffer_limit_is_sent_once_and_counted() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let filter =
        config(60_000, r#""azure""#).replacen('{', r#"{"retry_buffer_limit_bytes":1000,"#, 1);
    let providers = [("openai", a.addr()), ("azure", b.addr())];
    let mut opts = Options::breaker(&filter, &providers);
    let mut w = Within::generated(&filter, &providers, Duration::from_secs(1));
    w.buffer_limit = Some(1000);
    opts.within = Some(w);
    let e = Envoy::start(&opts);
    a.set(Behaviour::Status(503));
    // A small body is retried on azure.
    let r = post(&e, BODY);
    assert_eq!((r.status, r.upstream()), (200, Some("azure")));
    // A 4 KB one goes once: the client gets openai's 503, counted on openai.
    let big = BODY.replace("hi", &"x".repeat(4000));
    let r = post(&e, &big);
    assert_eq!(r.status, 503, "{:?}", r.header("x-llm-breaker"));
    assert_eq!(b.requests(), 1);
    assert_eq!(
        e.wait_upstream_stat("openai", "requests_not_retried_over_buffer_limit", 1),
        1
    );
    assert_eq!(
        e.upstream_stat("azure", "requests_not_retried_over_buffer_limit"),
        0
    );
    let status = e.status();
    let openai = &status["failover"]["upstreams"][0];
    assert_eq!(openai["requests_not_retried_over_buffer_limit"], 1);
}
