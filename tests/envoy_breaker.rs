//! End-to-end: the built filter inside the real Envoy (two workers) in front of mock
//! upstreams on loopback. Each test starts its own Envoy and upstreams.
//!
//! Envoy missing is a failure, never a skip (`require_prerequisites`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{free_port, Envoy, Options};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

/// Sends a chat request and, unless the filter answered it locally, waits until
/// the filter has recorded its outcome, so the next request sees the new state.
fn chat(e: &Envoy) -> Response {
    e.send_recorded(CHAT, &[], BODY.as_bytes())
}

/// A config with one route over `chain` and the given breaker block.
fn config(chain: &[&str], breaker: &str, extra: &str) -> String {
    let ups: Vec<String> = chain.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":[{}]{extra}}}],
            "breaker":{breaker}}}"#,
        ups.join(",")
    )
}

/// Breaker settings that only the consecutive rule can trip, with a fixed open time.
fn consecutive(n: u32, open_ms: u64) -> String {
    format!(
        r#"{{"consecutive_failures":{n},"failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
            "open":{{"base_ms":{open_ms},"max_ms":600000,"multiplier":3.0,"jitter":0}},
            "half_open":{{"permitted_calls":1,"success_threshold":2}}}}"#
    )
}

fn assert_served_by(r: &Response, upstream: &str) {
    assert_eq!(
        r.upstream(),
        Some(upstream),
        "expected {upstream} to answer; got status {} headers {:?} body {}",
        r.status,
        r.headers,
        r.text()
    );
}

#[test]
fn healthy_primary_takes_all_traffic_and_the_response_says_so() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(&["openai", "azure"], "{}", ""), &[&a, &b]);
    for _ in 0..10 {
        let r = chat(&e);
        assert_eq!(r.status, 200);
        assert_served_by(&r, "openai");
        assert_eq!(
            r.header("x-llm-breaker"),
            Some("upstream=openai; reason=primary")
        );
    }
    assert_eq!((a.requests(), b.requests()), (10, 0));
    assert_eq!(e.upstream_stat("openai", "requests_admitted"), 10);
    assert_eq!(e.upstream_stat("openai", "successes"), 10);
}

#[test]
fn trips_after_exactly_n_failures_across_both_workers_and_fails_over() {
    const N: usize = 20;
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(N as u32, 60_000), ""),
        &[&a, &b],
    );
    a.set(Behaviour::Status(503));
    // N-1 failures at once, each on its own connection, spread over both workers.
    let listener = e.listener;
    let handles: Vec<_> = (0..N - 1)
        .map(|_| std::thread::spawn(move || client::post(listener, CHAT, BODY).unwrap()))
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 503);
        assert_served_by(&r, "openai");
    }
    assert_eq!(e.wait_completed(N as u64 - 1), N as u64 - 1);
    let port = e.listener.port();
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            e.stat(&format!(
                "listener.127.0.0.1_{port}.worker_{w}.downstream_cx_total"
            ))
            .unwrap_or(0)
        })
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers must have served: {per_worker:?}"
    );
    // One short of the threshold in total: still closed.
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    assert_eq!(e.upstream_stat("openai", "failures.status"), (N - 1) as u64);
    // The Nth failure trips it...
    assert_served_by(&chat(&e), "openai");
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert_eq!(e.upstream_stat("openai", "transitions.closed_to_open"), 1);
    // ...and later requests go to the fallback.
    for _ in 0..5 {
        let r = chat(&e);
        assert_eq!(r.status, 200);
        assert_served_by(&r, "azure");
        assert_eq!(
            r.header("x-llm-breaker"),
            Some("upstream=azure; reason=failover; skipped=openai")
        );
    }
    assert_eq!(a.requests(), N);
    assert_eq!(e.upstream_stat("openai", "requests_failed_over"), 5);
    let log = e.log();
    assert!(
        log.contains(
            "llm-breaker: upstream=openai from=closed to=open reason=consecutive_failures"
        ),
        "transition log line missing:\n{log}"
    );
}

#[test]
fn a_chain_of_three_skips_every_open_upstream() {
    let ups = [
        MockUpstream::start("openai"),
        MockUpstream::start("azure"),
        MockUpstream::start("vllm"),
    ];
    let e = Envoy::start_breaker(
        &config(&["openai", "azure", "vllm"], &consecutive(2, 60_000), ""),
        &[&ups[0], &ups[1], &ups[2]],
    );
    ups[0].set(Behaviour::Status(500));
    ups[1].set(Behaviour::Status(502));
    let served: Vec<String> = (0..6)
        .map(|_| chat(&e).upstream().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        served,
        ["openai", "openai", "azure", "azure", "vllm", "vllm"]
    );
    assert_eq!(
        chat(&e).header("x-llm-breaker"),
        Some("upstream=vllm; reason=failover; skipped=openai,azure")
    );
}

// The open-period logic (a recovered primary's probes close the breaker; a failed
// probe re-opens for multiplier × the open time) is tested natively, without
// sleeping through open periods, in src/worker/tests/flows.rs
// (half_open_probes_close_the_breaker_when_the_primary_recovers,
// a_failed_probe_reopens_for_a_longer_time). Probes through Envoy stay covered by
// half_open_admits_at_most_permitted_calls_across_workers and envoy_llm's
// reset-hint test.

#[test]
fn all_open_rejects_with_an_openai_error_and_retry_after() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(1, 30_000), ""),
        &[&a, &b],
    );
    a.set(Behaviour::Status(503));
    b.set(Behaviour::Status(503));
    chat(&e);
    chat(&e);
    let r = chat(&e);
    assert_eq!(r.status, 503);
    assert_eq!(r.upstream(), None, "no upstream may be called");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // 30 s open, rounded up; a slow machine may take a moment to get here.
    assert!((27..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.text();
    assert!(body.contains(r#""error":{"#), "{body}");
    assert!(body.contains(r#""type":"upstream_unavailable""#), "{body}");
    assert_eq!((a.requests(), b.requests()), (1, 1));
    assert_eq!(
        e.stat("wasmcustom.llm_breaker.route.chat.requests_rejected"),
        Some(1)
    );
}

#[test]
fn fail_open_sends_to_the_primary_when_all_are_open() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(
            &["openai", "azure"],
            &consecutive(1, 30_000),
            r#","when_all_open":"fail_open""#,
        ),
        &[&a, &b],
    );
    a.set(Behaviour::Status(503));
    b.set(Behaviour::Status(503));
    chat(&e);
    chat(&e);
    a.set(Behaviour::Ok);
    let r = chat(&e);
    assert_eq!(r.status, 200);
    assert_served_by(&r, "openai");
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=openai; reason=fail_open; skipped=openai,azure")
    );
    // The fail-open success is not a probe: the breaker stays open.
    e.wait_completed(3);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert_eq!(
        e.upstream_stat("openai", "transitions.open_to_half_open"),
        0
    );
    // Not a failover or a rejection for the primary it went to (the 1 is from the
    // second request above, which failed over to azure).
    assert_eq!(e.upstream_stat("openai", "requests_failed_over"), 1);
    assert_eq!(e.upstream_stat("openai", "requests_rejected"), 0);
    assert_eq!(
        e.stat("wasmcustom.llm_breaker.route.chat.requests_fail_open"),
        Some(1)
    );
}

#[test]
fn connection_refused_counts_as_a_connect_failure() {
    let b = MockUpstream::start("azure");
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let e = Envoy::start(&Options::breaker(
        &config(&["openai", "azure"], &consecutive(2, 60_000), ""),
        &[("openai", dead), ("azure", b.addr())],
    ));
    assert_eq!(chat(&e).status, 503);
    assert_eq!(chat(&e).status, 503);
    assert_eq!(e.upstream_stat("openai", "failures.connect_failure"), 2);
    assert_served_by(&chat(&e), "azure");
}

#[test]
fn an_upstream_timeout_counts_as_a_timeout() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let mut opts = Options::breaker_for(
        &config(&["openai", "azure"], &consecutive(2, 60_000), ""),
        &[&a, &b],
    );
    opts.route_timeout = Duration::from_millis(500);
    let e = Envoy::start(&opts);
    a.set(Behaviour::Hang);
    assert_eq!(chat(&e).status, 504);
    assert_eq!(chat(&e).status, 504);
    assert_eq!(e.upstream_stat("openai", "failures.timeout"), 2);
    assert_served_by(&chat(&e), "azure");
}

#[test]
fn a_stream_cut_after_the_headers_counts_as_a_reset() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(2, 60_000), ""),
        &[&a, &b],
    );
    a.set(Behaviour::CutMidBody);
    for _ in 0..2 {
        // The client sees a 200 whose body never completes.
        let _ = client::post(e.listener, CHAT, BODY);
    }
    assert_eq!(e.wait_completed(2), 2);
    assert_eq!(e.upstream_stat("openai", "failures.reset"), 2);
    assert_served_by(&chat(&e), "azure");
}

#[test]
fn a_slow_first_byte_counts_as_a_slow_call() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let breaker = r#"{"failure_rate":{"minimum_calls":2,"window":{"calls":2}},
                      "slow_call":{"ttfb_ms":200,"rate_threshold":1.0},
                      "open":{"base_ms":60000,"jitter":0}}"#;
    let e = Envoy::start_breaker(&config(&["openai", "azure"], breaker, ""), &[&a, &b]);
    a.set(Behaviour::Delay(Duration::from_millis(400)));
    assert_eq!(chat(&e).status, 200);
    assert_eq!(chat(&e).status, 200);
    assert_eq!(e.upstream_stat("openai", "slow_calls"), 2);
    assert!(e
        .log()
        .contains("upstream=openai from=closed to=open reason=slow_call_rate"));
    assert_served_by(&chat(&e), "azure");
}

#[test]
fn client_errors_never_trip_the_breaker() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(2, 60_000), ""),
        &[&a, &b],
    );
    for status in [400, 401, 404, 413, 422, 400, 400] {
        a.set(Behaviour::Status(status));
        let r = chat(&e);
        assert_eq!(r.status, status);
        assert_served_by(&r, "openai");
    }
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    assert_eq!(e.upstream_stat("openai", "client_errors"), 7);
    assert_eq!(b.requests(), 0);
}

#[test]
fn clients_cannot_choose_the_cluster() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(&["openai", "azure"], "{}", ""), &[&a, &b]);
    let spoof = [("x-llm-breaker-upstream", "azure")];
    let r = client::request(e.listener, "POST", CHAT, &spoof, BODY.as_bytes()).unwrap();
    assert_served_by(&r, "openai");
    // The upstream saw the filter's value, not the client's.
    let seen = a.last_headers();
    let v: Vec<&str> = seen
        .iter()
        .filter(|(k, _)| k == "x-llm-breaker-upstream")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(v, ["openai"]);
    // On a path no filter route matches, the header is removed rather than obeyed.
    let r = client::request(e.listener, "GET", "/other", &spoof, b"").unwrap();
    assert_ne!(r.upstream(), Some("azure"));
    assert_eq!(b.requests(), 0);
}

#[test]
fn requests_matching_no_route_pass_through_untouched() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    // The filter routes only /v1/; Envoy sends everything else to a fixed cluster.
    let e = Envoy::start_breaker(&config(&["azure", "openai"], "{}", ""), &[&a, &b]);
    let r = client::request(
        e.listener,
        "GET",
        "/healthz",
        &[("x-llm-breaker-upstream", "azure"), ("x-other", "kept")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_served_by(&r, "openai");
    assert_eq!(r.header("x-llm-breaker"), None);
    let seen = a.last_headers();
    assert!(seen.iter().any(|(k, v)| k == "x-other" && v == "kept"));
    // Only the client's routing header is taken away.
    assert!(!seen.iter().any(|(k, _)| k == "x-llm-breaker-upstream"));
    assert_eq!(b.requests(), 0);
    for up in ["openai", "azure"] {
        assert_eq!(e.upstream_stat(up, "requests_admitted"), 0);
    }
}

#[test]
fn metrics_appear_in_prometheus_with_upstream_labels() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(1, 60_000), ""),
        &[&a, &b],
    );
    a.set(Behaviour::Status(529));
    chat(&e);
    chat(&e);
    let p = e.prometheus();
    for line in [
        r#"llm_breaker_upstream_state{llm_breaker_upstream="openai"} 1"#,
        r#"llm_breaker_upstream_state{llm_breaker_upstream="azure"} 0"#,
        r#"llm_breaker_upstream_transitions_closed_to_open{llm_breaker_upstream="openai"} 1"#,
        r#"llm_breaker_upstream_failures_status{llm_breaker_upstream="openai"} 1"#,
        r#"llm_breaker_upstream_requests_failed_over{llm_breaker_upstream="openai"} 1"#,
        r#"llm_breaker_upstream_successes{llm_breaker_upstream="azure"} 1"#,
        r#"llm_breaker_route_requests_rejected{llm_breaker_route="chat"} 0"#,
    ] {
        assert!(p.contains(line), "missing {line} in:\n{p}");
    }
}

#[test]
fn invalid_configs_stop_envoy_with_a_message_naming_the_field() {
    let a = MockUpstream::start("openai");
    let cases = [
        (
            r#"{"routes":[{"name":"chat","upstreams":["openai"]}],"breaker":{"failure_rate":{"threshold":1.5}}}"#,
            "invalid configuration: `breaker.failure_rate.threshold`: must be above 0 and at most 1, got 1.5",
        ),
        (
            r#"{"routes":[{"name":"chat","upstreams":["openai"]}],"bogus":true}"#,
            "unknown field `bogus`",
        ),
        (
            r#"{"routes":[{"name":"chat","upstreams":["openai"]},{"name":"chat","upstreams":["openai"]}]}"#,
            "`routes[1].name`: duplicate route name",
        ),
        (
            r#"{"routes":[{"name":"chat","upstreams":[]}]}"#,
            "`routes[0].upstreams`: must list at least one upstream",
        ),
        ("", "configuration is empty"),
        ("{not json", "not valid JSON"),
    ];
    for (cfg, want) in cases {
        let opts = Options::breaker_for(cfg, &[&a]);
        match Envoy::try_start(&opts) {
            Ok(_) => panic!("Envoy started with invalid config {cfg}"),
            Err(log) => assert!(
                log.lines()
                    .any(|l| l.contains("llm-breaker: invalid configuration") && l.contains(want)),
                "config {cfg}: no log line containing {want:?}:\n{log}"
            ),
        }
    }
}

#[test]
fn held_successes_reach_the_shared_window_and_dilute_the_failure_rate() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let breaker = r#"{"consecutive_failures":0,
                      "failure_rate":{"threshold":0.5,"minimum_calls":10,"window":{"seconds":60}},
                      "open":{"base_ms":60000,"jitter":0}}"#;
    let e = Envoy::start_breaker(&config(&["openai", "azure"], breaker, ""), &[&a, &b]);
    // A time window: these fast successes on a quiet breaker are held by their
    // worker, not written one by one (count windows are always written at once).
    for _ in 0..6 {
        assert_served_by(&chat(&e), "openai");
    }
    // Each worker writes its held successes within success_flush_ms (250 ms).
    sleep(Duration::from_millis(1000));
    a.set(Behaviour::Status(500));
    for _ in 0..4 {
        assert_served_by(&chat(&e), "openai");
    }
    // 4 failures in 10 calls: below 50%.
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    assert_served_by(&chat(&e), "openai");
    assert_eq!(
        e.upstream_stat("openai", "state"),
        0,
        "5 of 11 must not trip"
    );
    // The 12th call makes it 6 of 12 = 0.5: trips.
    assert_served_by(&chat(&e), "openai");
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert!(e.log().contains("from=closed to=open reason=failure_rate"));
    assert_served_by(&chat(&e), "azure");
}

#[test]
fn undecodable_shared_state_resets_to_closed_without_crashing() {
    let corruptor = llm_breaker_harness::envoy::workspace_root()
        .join("target/wasm32-wasip1/release/llm_breaker_corruptor.wasm");
    assert!(
        corruptor.exists(),
        "build it: cargo build --release --target wasm32-wasip1 -p llm-breaker-corruptor (make integration does)"
    );
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    // Every admission reads shared data (no admission cache), so each corrupting
    // request is sure to read what the corruptor just wrote.
    let mut opts = Options::breaker_for(
        &config(&["openai", "azure"], &consecutive(1, 60_000), "").replacen(
            '{',
            r#"{"admission_cache_ms":0,"#,
            1,
        ),
        &[&a, &b],
    );
    opts.before = Some(corruptor);
    let e = Envoy::start(&opts);
    let key = llm_breaker::store::key("openai");
    a.set(Behaviour::Status(503));
    chat(&e);
    assert_served_by(&chat(&e), "azure");
    // Another module in the same vm_id overwrites openai's state with garbage just
    // before llm-breaker reads it for this request.
    a.set(Behaviour::Ok);
    let r = e.send_recorded(CHAT, &[("x-test-corrupt", &key)], BODY.as_bytes());
    assert_eq!(r.status, 200);
    assert_served_by(&r, "openai");
    assert_eq!(e.upstream_stat("openai", "state_resets"), 1);
    assert!(
        e.log()
            .contains("shared state of upstream openai did not decode"),
        "{}",
        e.log()
    );
    // Bytes of the right version whose head says "open" (with a plausible end) but
    // whose window is garbage: the fast path must not trust the head.
    a.set(Behaviour::Status(503));
    chat(&e);
    assert_served_by(&chat(&e), "azure");
    a.set(Behaviour::Ok);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut head = vec![llm_breaker::codec::VERSION, 1];
    head.extend_from_slice(&0u32.to_le_bytes()); // epoch
    head.extend_from_slice(&now.to_le_bytes()); // since
    head.extend_from_slice(&[0; 12]); // consecutive, reopens, times_opened
    head.extend_from_slice(&[0; 9]); // no last failure
    head.extend_from_slice(&(now + 30_000).to_le_bytes()); // until
    head.extend_from_slice(&[0xff; 8]); // no such window kind
    let garbage: String = head.iter().map(|b| format!("{b:02x}")).collect();
    let r = e.send_recorded(
        CHAT,
        &[("x-test-corrupt", &key), ("x-test-corrupt-hex", &garbage)],
        BODY.as_bytes(),
    );
    assert_served_by(&r, "openai");
    assert_eq!(e.upstream_stat("openai", "state_resets"), 2);
    // A well-formed open state whose end lies beyond any possible open period (max_ms
    // is 600 s here) is not trusted either: the upstream gets probed, not stranded.
    a.set(Behaviour::Status(503));
    chat(&e);
    assert_served_by(&chat(&e), "azure");
    a.set(Behaviour::Ok);
    let c = llm_breaker::config::Config::parse(
        br#"{"routes":[{"name":"r","upstreams":["openai"]}],"breaker":{"open":{"max_ms":600000}}}"#,
    )
    .unwrap();
    let mut stranded = llm_breaker::breaker::Breaker::new(&c.upstreams[0].breaker, now);
    stranded.phase = llm_breaker::breaker::Phase::Open {
        until_ms: now + 10 * 86_400_000,
    };
    let hex: String = llm_breaker::codec::encode(&stranded)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = e.send_recorded(
        CHAT,
        &[("x-test-corrupt", &key), ("x-test-corrupt-hex", &hex)],
        BODY.as_bytes(),
    );
    assert_served_by(&r, "openai");
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=openai; reason=probe")
    );
    assert_eq!(e.upstream_stat("openai", "state_resets"), 2);
    // The filter keeps working on every worker.
    for _ in 0..10 {
        assert_eq!(chat(&e).status, 200);
    }
    assert!(!e.log().contains("panic"), "{}", e.log());
}

#[test]
fn the_response_header_can_be_turned_off() {
    let a = MockUpstream::start("openai");
    let cfg = r#"{"response_header":"","routes":[{"name":"chat","upstreams":["openai"]}]}"#;
    let e = Envoy::start_breaker(cfg, &[&a]);
    let r = chat(&e);
    assert_served_by(&r, "openai");
    assert_eq!(r.header("x-llm-breaker"), None);
}

#[test]
fn a_success_that_completes_after_a_failure_ends_the_streak() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(&["openai", "azure"], &consecutive(3, 60_000), ""),
        &[&a, &b],
    );
    // A slow success is admitted while the breaker is quiet...
    a.set(Behaviour::Delay(Duration::from_millis(1000)));
    let listener = e.listener;
    let slow = std::thread::spawn(move || client::post(listener, CHAT, BODY).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.requests() == 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
    assert_eq!(
        a.requests(),
        1,
        "the slow request never reached the upstream"
    );
    // ...two failures start a streak while it is in flight...
    a.set(Behaviour::Status(500));
    chat(&e);
    chat(&e);
    // ...and its completion ends the streak (it must not be held back in a batch).
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(e.wait_completed(3), 3);
    chat(&e);
    chat(&e);
    // Two failures since the success: below 3, still closed.
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    assert_served_by(&chat(&e), "openai");
    assert_eq!(e.upstream_stat("openai", "state"), 1);
}

#[test]
fn half_open_admits_at_most_permitted_calls_across_workers() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let breaker = r#"{"consecutive_failures":1,"failure_rate":{"minimum_calls":1000000},
                      "open":{"base_ms":1000,"jitter":0},
                      "half_open":{"permitted_calls":2,"success_threshold":10}}"#;
    let e = Envoy::start_breaker(&config(&["openai", "azure"], breaker, ""), &[&a, &b]);
    a.set(Behaviour::Status(503));
    chat(&e);
    // Probes hold their permits for 2 s, longer than the eight requests take to arrive.
    a.set(Behaviour::Delay(Duration::from_millis(2000)));
    sleep(Duration::from_millis(1200));
    // Eight at once, each on its own connection (so on both workers): two probes.
    let listener = e.listener;
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || client::post(listener, CHAT, BODY).unwrap()))
        .collect();
    let served: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().upstream().unwrap_or("").to_string())
        .collect();
    let probes = served.iter().filter(|u| *u == "openai").count();
    assert_eq!(probes, 2, "served by {served:?}");
    assert_eq!(served.iter().filter(|u| *u == "azure").count(), 6);
    assert_eq!(e.upstream_stat("openai", "requests_probe"), 2);
}
