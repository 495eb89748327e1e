//! End-to-end LLM-aware detection: the built filter in the real Envoy (two workers)
//! in front of the mock LLM provider, which fails the way OpenAI and Anthropic do.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::Envoy;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream, ResetForm};
use std::time::Duration;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const CLAUDE_STREAM: &str = r#"{"model":"claude-sonnet-4","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

/// Sends a request and waits until the filter has recorded its outcome.
fn send(e: &Envoy, path: &str, body: &str) -> Response {
    e.send_recorded(path, &[], body.as_bytes())
}

/// One route over openai → azure; only the consecutive rule trips, after `n`.
fn config(n: u32, extra_breaker: &str) -> String {
    format!(
        r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure"]}}],
            "breaker":{{"consecutive_failures":{n},
              "failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
              "open":{{"base_ms":60000,"max_ms":600000,"jitter":0}},
              "half_open":{{"permitted_calls":1,"success_threshold":1}}{extra_breaker}}}}}"#
    )
}

/// The `open_ms=` of the last closed→open transition in Envoy's log.
fn last_open_ms(e: &Envoy) -> Option<u64> {
    e.log()
        .lines()
        .rfind(|l| l.contains("upstream=openai from=closed to=open"))?
        .split("open_ms=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_retry_after_of_two_seconds_opens_at_once_with_an_open_time_of_two_seconds() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(5, ""), &[&a, &b]);
    a.set(Behaviour::RateLimited {
        status: 429,
        reset: ResetForm::RetryAfter,
        after: Duration::from_secs(2),
    });
    // One 429 that says "come back in 2 s" opens at once, not after 5.
    let r = send(&e, CHAT, BODY);
    assert_eq!(r.status, 429);
    assert_eq!(r.upstream(), Some("openai"));
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert_eq!(e.upstream_stat("openai", "failures.rate_limited"), 1);
    assert_eq!(last_open_ms(&e), Some(2000));
    assert!(e.log().contains("reason=rate_limit_reset"));
    a.set(Behaviour::Ok);
    // Well inside the 2 s: the fallback answers.
    let r = send(&e, CHAT, BODY);
    assert_eq!(r.upstream(), Some("azure"));
    // That it opens for the 2 s and no longer (then the primary gets its probe) is
    // tested natively without sleeping through them:
    // src/worker/tests/flows.rs a_retry_after_of_two_seconds_opens_for_two_seconds_and_no_longer.
}

#[test]
fn every_reset_header_form_sets_the_open_time_and_garbage_is_ignored() {
    // (form, reset in, accepted open_ms range)
    let forms = [
        (ResetForm::RetryAfterMs, 1500, 1500..=1500),
        (ResetForm::OpenAi, 3000, 3000..=3000),
        // Whole seconds from the wall clock: rounding moves it by up to a second.
        (ResetForm::HttpDate, 3000, 1500..=4000),
        (ResetForm::Anthropic, 3000, 1500..=3100),
    ];
    for (form, after_ms, accepted) in forms {
        let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
        let e = Envoy::start_breaker(&config(5, ""), &[&a, &b]);
        a.set(Behaviour::RateLimited {
            status: 429,
            reset: form,
            after: Duration::from_millis(after_ms),
        });
        let path = if form == ResetForm::Anthropic {
            MESSAGES
        } else {
            CHAT
        };
        assert_eq!(send(&e, path, BODY).status, 429);
        assert_eq!(
            e.upstream_stat("openai", "state"),
            1,
            "{form:?} trips at once"
        );
        let open = last_open_ms(&e).expect("transition logged");
        assert!(accepted.contains(&open), "{form:?}: open_ms={open}");
    }
    // Unparsable hints (and none at all) count like any other failure: no trip yet.
    for form in [ResetForm::Garbage, ResetForm::None] {
        let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
        let e = Envoy::start_breaker(&config(3, ""), &[&a, &b]);
        a.set(Behaviour::RateLimited {
            status: 429,
            reset: form,
            after: Duration::from_secs(2),
        });
        for _ in 0..2 {
            assert_eq!(send(&e, CHAT, BODY).status, 429);
        }
        assert_eq!(e.upstream_stat("openai", "state"), 0, "{form:?}");
        assert_eq!(e.upstream_stat("openai", "failures.rate_limited"), 2);
        send(&e, CHAT, BODY);
        assert_eq!(
            e.upstream_stat("openai", "state"),
            1,
            "{form:?} third trips"
        );
        assert_eq!(last_open_ms(&e), Some(60000), "{form:?}: backoff schedule");
    }
}

#[test]
fn a_reset_hint_can_be_set_to_count_like_other_failures() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(2, r#","rate_limit":{"trip_on_reset_hint":false}"#),
        &[&a, &b],
    );
    a.set(Behaviour::RateLimited {
        status: 429,
        reset: ResetForm::RetryAfter,
        after: Duration::from_secs(2),
    });
    send(&e, CHAT, BODY);
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    send(&e, CHAT, BODY);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    assert_eq!(last_open_ms(&e), Some(60000));
}

#[test]
fn sse_error_events_after_three_chunks_trip_and_the_next_request_fails_over() {
    for (path, body) in [(CHAT, STREAM), (MESSAGES, CLAUDE_STREAM)] {
        let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
        let e = Envoy::start_breaker(&config(3, ""), &[&a, &b]);
        a.set(Behaviour::SseError { chunks: 3 });
        for i in 0..3 {
            let r = send(&e, path, body);
            // The client already got its 200 and the first tokens.
            assert_eq!(r.status, 200, "{path} stream {i}");
            assert_eq!(r.upstream(), Some("openai"));
            assert!(r.text().contains("error"), "{path}: {}", r.text());
        }
        assert_eq!(
            e.upstream_stat("openai", "failures.in_band_error"),
            3,
            "{path}"
        );
        assert_eq!(e.upstream_stat("openai", "state"), 1, "{path}");
        let r = send(&e, path, body);
        assert_eq!(r.upstream(), Some("azure"), "{path}");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn healthy_streams_of_both_providers_are_successes() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(1, ""), &[&a, &b]);
    for (path, body) in [(CHAT, STREAM), (MESSAGES, CLAUDE_STREAM), (CHAT, BODY)] {
        let r = send(&e, path, body);
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), Some("openai"), "{path} {body}");
    }
    assert_eq!(e.upstream_stat("openai", "successes"), 3);
    assert_eq!(e.upstream_stat("openai", "state"), 0);
}

#[test]
fn streams_cut_or_ended_without_their_terminal_event_count() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(100, ""), &[&a, &b]);
    a.set(Behaviour::SseCut { chunks: 2 });
    let before = e.completed_total();
    // The client sees the 200 head and a chunked body that never ends properly.
    let mut r = client::open(e.listener, "POST", CHAT, &[], STREAM.as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    let (_, end) = r.read_all();
    assert!(end.is_err(), "the client saw a complete body");
    assert!(
        e.wait_completed(before + 1) > before,
        "outcome never recorded"
    );
    assert_eq!(e.upstream_stat("openai", "failures.reset"), 1);
    a.set(Behaviour::SseNoTerminal { chunks: 2 });
    for path in [CHAT, MESSAGES] {
        let r = send(&e, path, if path == CHAT { STREAM } else { CLAUDE_STREAM });
        assert_eq!(r.status, 200);
    }
    assert_eq!(e.upstream_stat("openai", "failures.stream_truncated"), 2);
    assert_eq!(e.upstream_stat("openai", "successes"), 0);
}

#[test]
fn a_200_json_body_that_is_an_error_counts() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(2, ""), &[&a, &b]);
    a.set(Behaviour::JsonError(500));
    for path in [CHAT, MESSAGES] {
        let r = send(&e, path, BODY);
        assert_eq!(r.status, 200);
        assert!(r.text().contains("error"));
    }
    assert_eq!(e.upstream_stat("openai", "failures.in_band_error"), 2);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
}

#[test]
fn client_errors_do_not_count_but_show_by_status() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(&config(1, ""), &[&a, &b]);
    for status in [400, 400, 401, 403, 404, 413, 422] {
        a.set(Behaviour::Status(status));
        let r = send(&e, CHAT, BODY);
        assert_eq!(r.status, status);
        assert_eq!(r.upstream(), Some("openai"));
        if status == 400 {
            assert!(r.text().contains("context_length_exceeded"), "{}", r.text());
        }
    }
    assert_eq!(
        e.upstream_stat("openai", "state"),
        0,
        "a threshold of 1 never tripped"
    );
    assert_eq!(e.upstream_stat("openai", "client_errors"), 7);
    assert_eq!(e.upstream_stat("openai", "client_errors.400"), 2);
    for s in [401, 403, 404, 413, 422] {
        assert_eq!(
            e.upstream_stat("openai", &format!("client_errors.{s}")),
            1,
            "{s}"
        );
    }
    // Opting a status in makes it count.
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = Envoy::start_breaker(
        &config(1, r#","failure":{"client_errors_as_failures":[403]}"#),
        &[&a, &b],
    );
    a.set(Behaviour::Status(403));
    send(&e, CHAT, BODY);
    assert_eq!(e.upstream_stat("openai", "failures.status"), 1);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
}

#[test]
fn a_slow_first_byte_counts_as_slow_and_the_slow_rate_trips() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    // Every outcome written at once (no held successes), so the window's count
    // does not depend on when a worker's tick flushes.
    let cfg = r#"{"routes":[{"name":"chat","upstreams":["openai","azure"]}],
        "success_flush_ms":0,
        "breaker":{"consecutive_failures":0,
          "failure_rate":{"minimum_calls":3,"window":{"seconds":60}},
          "slow_call":{"ttfb_ms":200,"rate_threshold":0.6},
          "open":{"base_ms":60000,"max_ms":60000,"jitter":0}}}"#;
    let e = Envoy::start_breaker(cfg, &[&a, &b]);
    send(&e, CHAT, STREAM);
    a.set(Behaviour::Delay(Duration::from_millis(400)));
    send(&e, CHAT, STREAM);
    assert_eq!(e.upstream_stat("openai", "slow_calls"), 1);
    assert_eq!(
        e.upstream_stat("openai", "state"),
        0,
        "1 of 2 slow, minimum 3"
    );
    send(&e, MESSAGES, CLAUDE_STREAM);
    assert_eq!(e.upstream_stat("openai", "slow_calls"), 2);
    assert_eq!(
        e.upstream_stat("openai", "successes"),
        3,
        "slow is not failed"
    );
    assert_eq!(e.upstream_stat("openai", "state"), 1, "2 of 3 slow >= 0.6");
    assert!(e.log().contains("reason=slow_call_rate"));
    assert_eq!(send(&e, CHAT, STREAM).upstream(), Some("azure"));
}
