//! Within-request failover through the core: the downstream role's attempt order,
//! aggregate name and tickets; the upstream log recording each failed attempt on its
//! own upstream and the downstream role the answer, each outcome once; the attempt
//! summary; half-open permits given back; untrusted tickets; the upstream role,
//! which shapes attempts and records nothing.

use super::fakes::*;
use crate::breaker::PhaseKind;
use crate::classify::{flags, FailureClass, ResponseFacts};
use crate::ids::{RouteId, UpstreamId};
use crate::routing::Why;
use crate::worker::metrics::UpstreamMetric;
use crate::worker::request::START_UNKNOWN;
use crate::worker::within::{self, Plan, WithinRouting};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;
const WITHIN: &str = r#","failover":"within_request""#;

/// `json` for another role.
fn as_role(json: &str, role: &str) -> String {
    json.replacen('{', &format!(r#"{{"role":"{role}","#), 1)
}

/// The downstream role and the upstream log over one store, on `chain` with a
/// breaker that `n` consecutive failures open for 1 s.
fn roles(chain: &[&str], n: u32) -> (TestWorker, TestWorker, Store) {
    let store = Store::default();
    let json = config(chain, &consecutive(n, 1000), WITHIN);
    let down = worker(&json, &store, T0);
    let log = worker(&as_role(&json, "upstream_log"), &store, T0);
    (down, log, store)
}

fn plan(w: &TestWorker, now: u64) -> (Plan, String, String) {
    match w.route_within(RouteId::new(0), None, now).unwrap() {
        WithinRouting::Send {
            plan,
            cluster,
            tickets,
            // `""` when every member is closed (no tickets): the upstream log then finds
            // the breaker closed itself.
        } => (plan, cluster.into_owned(), tickets.unwrap_or_default()),
        WithinRouting::Reject(r) => panic!("rejected, retry after {}", r.retry_after),
    }
}

fn failures(w: &TestWorker, u: usize, class: FailureClass) -> usize {
    w.metrics().up(u, UpstreamMetric::Failures(class))
}

#[test]
fn the_order_is_every_admitting_upstream_and_names_its_aggregate() {
    let (down, log, _) = roles(&["openai", "azure", "vllm"], 2);
    let (p, cluster, tickets) = plan(&down, T0);
    assert_eq!(cluster, "llmb|openai|azure|vllm");
    assert_eq!(p.order.len(), 3);
    // Twice openai fails (the upstream log records it) and azure answers (the
    // downstream role records it): openai trips.
    for i in 0..2 {
        log_failed(&log, "openai", &tickets, Some(503), 0, T0 + i);
        let s = answer_within(&down, &p, "azure", 200, T0 + i);
        assert_eq!(s.attempts, Some(2));
    }
    let status = FailureClass::Status;
    assert_eq!(failures(&log, 0, status), 2);
    assert_eq!(
        failures(&down, 0, status),
        0,
        "not again by the downstream role"
    );
    assert_eq!(down.metrics().up(1, UpstreamMetric::Successes), 2);
    assert_eq!(log.metrics().up(1, UpstreamMetric::Successes), 0);
    // The downstream role counts the attempts, the upstream log none.
    assert_eq!(down.metrics().up(0, UpstreamMetric::Attempts), 2);
    assert_eq!(down.metrics().up(1, UpstreamMetric::Attempts), 2);
    assert_eq!(down.metrics().up(2, UpstreamMetric::Attempts), 0);
    assert_eq!(log.metrics().up(0, UpstreamMetric::Attempts), 0);
    let (p, cluster, _) = plan(&down, T0 + 10);
    assert_eq!(cluster, "llmb|azure|vllm", "open openai is skipped");
    assert_eq!(p.skipped, [UpstreamId::new(0)]);
    // A single admitting upstream still goes through its one-member aggregate.
    let (down, _, _) = roles(&["openai"], 2);
    assert_eq!(plan(&down, T0).1, "llmb|openai");
}

#[test]
fn the_summary_names_the_failed_attempts_and_counts_the_retried_ones() {
    let (down, _, _) = roles(&["openai", "azure", "vllm"], 5);
    let (p, _, _) = plan(&down, T0);
    // The member that answered says how many attempts; Envoy's count is not needed.
    let s = down.served_within(&p, Some(b"azure"), Some(b"7"), Some(200), || None);
    assert_eq!(s.attempts, Some(2));
    assert_eq!(
        s.header.unwrap(),
        (
            "x-llm-breaker",
            "upstream=azure; reason=failover; attempts=2; failed=openai".to_string()
        )
    );
    assert_eq!(
        down.metrics().up(0, UpstreamMetric::AttemptsFailedRetried),
        1
    );
    let s = down.served_within(&p, Some(b"openai"), None, Some(200), || None);
    assert_eq!(
        (s.attempts, s.header.unwrap().1.as_str()),
        (Some(1), "upstream=openai; reason=primary; attempts=1")
    );
    // Nobody answered: Envoy's count says how many failed (at most the order).
    let s = down.served_within(&p, None, Some(b"3"), Some(503), || None);
    assert_eq!(s.attempts, Some(3));
    assert_eq!(
        s.header.unwrap().1,
        "upstream=none; reason=all_failed; attempts=3; failed=openai,azure,vllm"
    );
    assert_eq!(
        down.metrics().up(1, UpstreamMetric::AttemptsFailedRetried),
        1
    );
    assert_eq!(
        down.metrics().up(2, UpstreamMetric::AttemptsFailedRetried),
        0
    );
    let s = down.served_within(&p, None, Some(b" 9 "), Some(503), || None);
    assert_eq!(s.attempts, Some(3));
    // Neither: nothing known, no attempt counted.
    let s = down.served_within(&p, None, Some(b"x"), Some(503), || None);
    assert_eq!(s.attempts, None);
    assert_eq!(s.header.unwrap().1, "upstream=none; reason=all_failed");
    let attempts = |u| down.metrics().up(u, UpstreamMetric::Attempts);
    assert_eq!((attempts(0), attempts(1), attempts(2)), (4, 3, 2));
}

#[test]
fn a_half_open_member_takes_its_permit_and_unused_permits_are_given_back() {
    let (down, log, _) = roles(&["openai", "azure"], 1);
    let (_, _, t) = plan(&down, T0);
    log_failed(&log, "openai", &t, Some(503), 0, T0);
    // Open 1 s; then half-open with one permit: the probe stays first in the order.
    let (p, cluster, t) = plan(&down, T0 + 1000);
    assert_eq!(cluster, "llmb|openai|azure");
    assert!(p.order[0].ticket.unwrap().permit.is_some());
    // A second request meanwhile has no permit left: openai is skipped.
    assert_eq!(plan(&down, T0 + 1001).1, "llmb|azure");
    // The failed probe re-opens openai, the client got azure.
    log_failed(&log, "openai", &t, Some(503), 0, T0 + 1002);
    assert_eq!(stored(&down, T0 + 1002).kind(), PhaseKind::Open);
    // A probe member after the one that answered never ran: its permit comes back.
    let (down, log, _) = roles(&["openai", "azure"], 1);
    let (_, _, t) = plan(&down, T0);
    log_failed(&log, "azure", &t, Some(503), 0, T0);
    let (p, cluster, _) = plan(&down, T0 + 1000);
    assert_eq!(cluster, "llmb|openai|azure");
    assert!(p.order[1].ticket.unwrap().permit.is_some());
    assert_eq!(
        plan(&down, T0 + 1001).1,
        "llmb|openai",
        "the one permit is taken"
    );
    down.release_unused(&p, Some(1), T0 + 1002);
    assert_eq!(
        plan(&down, T0 + 1003).1,
        "llmb|openai|azure",
        "it came back"
    );
}

#[test]
fn a_logged_attempt_without_a_response_is_classed_by_envoys_flags() {
    let (down, log, _) = roles(&["openai", "azure"], 9);
    let (_, _, t) = plan(&down, T0);
    log_failed(&log, "openai", &t, None, flags::CONNECT_FAILURE, T0);
    assert_eq!(failures(&log, 0, FailureClass::ConnectFailure), 1);
    // Status 0 is how Envoy's access log says "no response".
    log_failed(&log, "openai", &t, Some(0), flags::CONNECT_FAILURE, T0 + 1);
    assert_eq!(failures(&log, 0, FailureClass::ConnectFailure), 2);
    log_failed(&log, "openai", &t, None, flags::UPSTREAM_TIMEOUT, T0 + 2);
    assert_eq!(failures(&log, 0, FailureClass::Timeout), 1);
    log_failed(&log, "openai", &t, None, flags::UPSTREAM_RESET, T0 + 3);
    log_failed(
        &log,
        "openai",
        &t,
        None,
        flags::UPSTREAM_TERMINATION,
        T0 + 4,
    );
    assert_eq!(failures(&log, 0, FailureClass::Reset), 2);
    // Envoy's own circuit breaker overflowed: not the provider's failure.
    log_failed(&log, "openai", &t, None, flags::UPSTREAM_OVERFLOW, T0 + 5);
    assert_eq!(log.metrics().up(0, UpstreamMetric::Ignored), 1);
    assert_eq!(failures(&log, 1, FailureClass::ConnectFailure), 0);
    // Two connect failures in a row trip a breaker of two.
    let (down, log, _) = roles(&["openai", "azure"], 2);
    let (_, _, t) = plan(&down, T0);
    log_failed(&log, "openai", &t, None, flags::CONNECT_FAILURE, T0);
    log_failed(&log, "openai", &t, None, flags::CONNECT_FAILURE, T0 + 1);
    assert_eq!(plan(&down, T0 + 2).1, "llmb|azure");
}

#[test]
fn a_logged_429_with_retry_after_opens_for_that_long() {
    let store = Store::default();
    let breaker = r#"{"consecutive_failures":5,"failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
        "open":{"base_ms":60000,"max_ms":600000,"jitter":0},"half_open":{"permitted_calls":1,"success_threshold":1}}"#;
    let json = config(&["openai", "azure"], breaker, WITHIN);
    let down = worker(&json, &store, T0);
    let log = worker(&as_role(&json, "upstream_log"), &store, T0);
    let (_, _, t) = plan(&down, T0);
    // One 429 that says "come back in 2 s" opens at once, not after 5.
    let hint = |name: &str| (name == "retry-after").then(|| b"2".to_vec());
    log.log_attempt(logged("openai", &t, Some(429), 0, 5), T0 + 5, hint);
    assert_eq!(failures(&log, 0, FailureClass::RateLimited), 1);
    assert!(logs()
        .iter()
        .any(|l| l.ends_with("reason=rate_limit_reset open_ms=2000")));
    // Inside the 2 s the order leaves openai out, up to their last millisecond...
    assert_eq!(plan(&down, T0 + 6).1, "llmb|azure");
    assert_eq!(plan(&down, T0 + 2004).1, "llmb|azure");
    // ...and just after, openai is the probe: its answer, recorded by the downstream
    // role with the permit, closes the breaker.
    let (p, cluster, _) = plan(&down, T0 + 2005);
    assert_eq!((cluster.as_str(), p.why), ("llmb|openai|azure", Why::Probe));
    let s = answer_within(&down, &p, "openai", 200, T0 + 2006);
    assert!(s.record.unwrap().ticket.unwrap().permit.is_some());
    assert_eq!(stored(&down, T0 + 2007).kind(), PhaseKind::Closed);
}

#[test]
fn an_outcome_is_recorded_once_by_the_upstream_log_or_the_downstream_role() {
    // openai alone, opened by two failures: one 503 counted twice would open it.
    let (down, log, store) = roles(&["openai"], 2);
    let (p, _, t) = plan(&down, T0);
    // A final 503: the upstream log records it; the downstream role leaves it.
    log_failed(&log, "openai", &t, Some(503), 0, T0);
    let s = answer_within(&down, &p, "openai", 503, T0);
    assert_eq!((s.attempts, s.record), (Some(1), None));
    assert_eq!(failures(&log, 0, FailureClass::Status), 1);
    assert_eq!(failures(&down, 0, FailureClass::Status), 0);
    assert_eq!(stored(&down, T0).kind(), PhaseKind::Closed, "counted once");
    let _ = log.metrics().take();
    // A final 200 or 400: the upstream log ignores it (Envoy's filter would not even
    // call it), the downstream role records it, from the end of the request.
    for (i, status) in [200u16, 400].into_iter().enumerate() {
        let now = T0 + 1 + i as u64;
        let (reads, writes) = (store.reads(), store.writes());
        log_failed(&log, "openai", &t, Some(status), 0, now);
        assert_eq!((store.reads(), store.writes()), (reads, writes));
        assert!(log.metrics().take().is_empty(), "{status}");
        let s = answer_within(&down, &p, "openai", status, now);
        let r = s.record.expect("the downstream role records it");
        assert_eq!(
            (r.upstream, r.ticket, r.why, r.start_ms),
            (UpstreamId::new(0), p.order[0].ticket, Why::Primary, T0)
        );
    }
    assert_eq!(down.metrics().up(0, UpstreamMetric::Successes), 1);
    assert_eq!(down.metrics().up(0, UpstreamMetric::ClientErrors), 1);
    // Retried, then a 503 from the last member: each attempt once, on its upstream,
    // by the upstream log.
    let (down, log, _) = roles(&["openai", "azure"], 2);
    let (p, _, t) = plan(&down, T0);
    log_failed(&log, "openai", &t, Some(503), 0, T0);
    log_failed(&log, "azure", &t, Some(502), 0, T0 + 1);
    let s = answer_within(&down, &p, "azure", 502, T0 + 1);
    assert_eq!((s.attempts, s.record), (Some(2), None));
    let status = FailureClass::Status;
    assert_eq!(
        (failures(&log, 0, status), failures(&log, 1, status)),
        (1, 1)
    );
    assert_eq!(
        (failures(&down, 0, status), failures(&down, 1, status)),
        (0, 0)
    );
    // Retried, then answered: the answer is the downstream role's, on its member,
    // untimed (when that attempt started is not known).
    log_failed(&log, "openai", &t, None, flags::UPSTREAM_RESET, T0 + 2);
    let s = answer_within(&down, &p, "azure", 200, T0 + 3);
    let r = s.record.unwrap();
    assert_eq!(
        (r.upstream, r.ticket, r.why, r.start_ms),
        (
            UpstreamId::new(1),
            p.order[1].ticket,
            Why::Failover,
            START_UNKNOWN
        )
    );
    assert_eq!(down.metrics().up(1, UpstreamMetric::Successes), 1);
    assert_eq!(log.metrics().up(1, UpstreamMetric::Successes), 0);
    assert_eq!(failures(&log, 0, FailureClass::Reset), 1);
}

#[test]
fn tickets_round_trip_and_untrusted_ones_are_refused() {
    let (down, log, store) = roles(&["openai", "azure"], 2);
    let (p, _, t) = plan(&down, T0);
    assert_eq!(t, "", "every member closed: no tickets");
    let t = within::encode_tickets(RouteId::new(0), &p.order);
    let (r, order) = within::decode_tickets(t.as_bytes(), 1).unwrap();
    assert_eq!((r, order), (RouteId::new(0), p.order));
    for bad in [
        "",
        "x",
        "1;0.0.1",
        "0;a.b",
        "0;0.0.1.2.3",
        "0;0.0.99999999999",
    ] {
        assert!(within::decode_tickets(bad.as_bytes(), 1).is_none(), "{bad}");
    }
    // A forged cell of another upstream is not used: the upstream log asks the
    // breaker itself...
    let a = log
        .attempt(b"azure", Some(b"0;1.0.0"), T0, Some(T0))
        .unwrap();
    assert_eq!(a.routed.cell.index(), 1);
    assert!(a.routed.ticket.is_some());
    // ...the upstream role, which records nothing, does not ask.
    let reads = store.reads();
    let a = log.attempt(b"azure", Some(b"0;1.0.0"), T0, None).unwrap();
    assert_eq!((a.routed.cell.index(), a.routed.ticket), (1, None));
    assert_eq!(store.reads(), reads);
    assert!(log.attempt(b"nobody", None, T0, Some(T0)).is_none());
}

#[test]
fn every_member_open_answers_as_when_all_open_says() {
    let (down, log, _) = roles(&["openai"], 1);
    let (_, _, t) = plan(&down, T0);
    log_failed(&log, "openai", &t, Some(503), 0, T0);
    assert!(matches!(
        down.route_within(RouteId::new(0), None, T0 + 500),
        Some(WithinRouting::Reject(_))
    ));
}

#[test]
fn the_upstream_role_carries_the_chain_entrys_model() {
    let store = Store::default();
    let json = r#"{"failover":"within_request","routes":[{"name":"chat",
        "upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]}]}"#;
    let down = worker(json, &store, T0);
    let up = worker(&as_role(json, "upstream"), &store, T0);
    let (_, _, t) = plan(&down, T0);
    let a = up.attempt(b"azure", Some(t.as_bytes()), T0, None).unwrap();
    assert_eq!(
        (a.rewrite, a.routed.upstream, a.route),
        (Some("gpt-4o-az"), UpstreamId::new(1), Some(RouteId::new(0)))
    );
    let a = up.attempt(b"openai", Some(t.as_bytes()), T0, None).unwrap();
    assert_eq!(a.rewrite, None);
}

#[test]
fn status_lists_the_attempt_counters_under_within_request() {
    use crate::admin::Endpoint;
    use crate::worker::operator::Reply;
    let store = Store::default();
    let json = r#"{"failover":"within_request","admin":{"enabled":true},
        "routes":[{"name":"chat","upstreams":["openai","azure"]}]}"#;
    let w = worker(json, &store, T0);
    let (p, _, _) = plan(&w, T0);
    let _ = w.served_within(&p, Some(b"azure"), None, Some(200), || None);
    let Reply::Json { body, .. } = w.answer(Ok(Endpoint::Status), || None, T0) else {
        panic!("status is JSON");
    };
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["failover"]["mode"], "within_request");
    assert_eq!(doc["failover"]["upstreams"][0]["upstream"], "openai");
    assert_eq!(doc["failover"]["upstreams"][0]["attempts"], 1);
    assert_eq!(
        doc["failover"]["upstreams"][0]["attempts_failed_retried"],
        1
    );
    assert_eq!(doc["failover"]["upstreams"][1]["attempts"], 1);
    assert_eq!(
        doc["failover"]["upstreams"][1]["attempts_failed_retried"],
        0
    );
    // next_request keeps the document as it was.
    let w = worker(ADMIN_NEXT, &Store::default(), T0);
    let Reply::Json { body, .. } = w.answer(Ok(Endpoint::Status), || None, T0) else {
        panic!("status is JSON");
    };
    assert!(!body.contains("\"failover\""));
}

const ADMIN_NEXT: &str =
    r#"{"admin":{"enabled":true},"routes":[{"name":"chat","upstreams":["a"]}]}"#;

#[test]
fn an_attempt_holds_its_body_to_rewrite_or_fix_the_length_and_records_nothing() {
    use crate::worker::attempt::{Attempt, BodyStep};
    let store = Store::default();
    let json = r#"{"failover":"within_request","routes":[{"name":"chat",
        "upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]}],
        "breaker":{"consecutive_failures":1}}"#;
    let down = worker(json, &store, T0);
    let up = worker(&as_role(json, "upstream"), &store, T0);
    let (_, _, t) = plan(&down, T0);
    let (reads, writes) = (store.reads(), store.writes());
    // openai: no model of its own, but a later member rewrites: hold, then fix the length.
    let mut a = Attempt::default();
    assert!(a.start(&up, b"openai", Some(t.as_bytes()), false, T0));
    assert_eq!(a.route(), Some(RouteId::new(0)));
    assert_eq!(a.request_body(false), BodyStep::Hold);
    assert_eq!(a.request_body(true), BodyStep::FixLength);
    // azure: its chain entry's model.
    let mut b = Attempt::default();
    assert!(b.start(&up, b"azure", Some(t.as_bytes()), false, T0));
    assert_eq!(b.request_body(false), BodyStep::Hold);
    assert_eq!(b.request_body(true), BodyStep::Rewrite("gpt-4o-az".into()));
    // No body: nothing to hold.
    let mut c = Attempt::default();
    assert!(!c.start(&up, b"azure", Some(t.as_bytes()), true, T0));
    // Without tickets (another configuration's request): no route, nothing to
    // rewrite for.
    let mut d = Attempt::default();
    assert!(!d.start(&up, b"azure", None, false, T0));
    assert_eq!(d.route(), None);
    assert_eq!(d.request_body(false), BodyStep::Continue);
    assert_eq!(d.request_body(true), BodyStep::Continue);
    // An unknown upstream is not shaped.
    let mut e = Attempt::default();
    assert!(!e.start(&up, b"nobody", Some(t.as_bytes()), false, T0));
    assert_eq!(e.request_body(true), BodyStep::Continue);
    // The upstream role neither read nor wrote the breakers, nor counted anything.
    assert_eq!((store.reads(), store.writes()), (reads, writes));
    assert!(up.metrics().take().is_empty());
}

#[test]
fn the_downstream_role_reads_shared_data_for_an_answer_once_per_freshness_period() {
    use crate::worker::cache::SEEN_FRESH_MS;
    let (down, _, store) = roles(&["openai", "azure"], 3);
    // The plan read the breakers: answers within the period are held on that read.
    let (p, _, _) = plan(&down, T0);
    let before = store.reads();
    for i in 0..=SEEN_FRESH_MS {
        answer_within(&down, &p, "openai", 200, T0 + i);
    }
    assert_eq!(store.reads(), before);
    answer_within(&down, &p, "openai", 200, T0 + SEEN_FRESH_MS + 1);
    assert_eq!(store.reads(), before + 1);
    // A failure it records (a 200 cut short) still goes to shared data at once,
    // and ends the quiet read.
    let writes = store.writes();
    let now = T0 + SEEN_FRESH_MS + 2;
    let s = down.served_within(&p, Some(b"openai"), None, Some(200), || None);
    let cut = ResponseFacts {
        status: Some(200),
        completed: false,
        ttfb_ms: Some(1),
        flags: flags::UPSTREAM_RESET,
        ..ResponseFacts::default()
    };
    down.finish(&s.record.unwrap(), &cut, now);
    assert!(store.writes() > writes);
    assert_eq!(failures(&down, 0, FailureClass::Reset), 1);
    let before = store.reads();
    answer_within(&down, &p, "openai", 200, now + 1);
    assert!(store.reads() > before, "a streak is not quiet");
}

#[test]
fn a_failed_attempt_not_retried_for_the_requests_size_is_counted() {
    let json = config(&["openai", "azure"], &consecutive(3, 1000), WITHIN).replacen(
        '{',
        r#"{"retry_buffer_limit_bytes":100,"#,
        1,
    );
    let down = worker(&json, &Store::default(), T0);
    let over = || UpstreamMetric::NotRetriedOverBufferLimit;
    // openai's 503 went to the client after one attempt, the body being 1 KB.
    let (p, _, _) = plan(&down, T0);
    let served = |name: Option<&[u8]>, status, size: u64| {
        let _ = down.served_within(&p, name, Some(b"1"), Some(status), || Some(size));
    };
    served(Some(b"openai"), 503, 1000);
    assert_eq!(down.metrics().up(0, over()), 1);
    // Not counted: a small body (retries were off for another reason), a 400 (not
    // retried anyway), a retry that happened, the last member.
    served(Some(b"openai"), 503, 99);
    served(Some(b"openai"), 400, 1000);
    served(Some(b"azure"), 503, 1000);
    assert_eq!(down.metrics().up(0, over()), 1);
    assert_eq!(down.metrics().up(1, over()), 0);
    // Without the member that answered (Envoy answered for a reset attempt, after
    // one attempt by its count), and another 5xx.
    served(None, 503, 1000);
    served(Some(b"openai"), 502, 1000);
    assert_eq!(down.metrics().up(0, over()), 3);
    // With no member left untried, the size is not read.
    let _ = down.served_within(&p, Some(b"azure"), None, Some(502), || -> Option<u64> {
        panic!("size read")
    });
    // The field is checked.
    let bad = config(
        &["a"],
        &consecutive(3, 1000),
        r#","retry_buffer_limit_bytes":0"#,
    );
    let err = crate::config::Config::parse(bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("retry_buffer_limit_bytes"), "{err}");
}

#[test]
fn the_attempt_upstream_header_names_the_upstream_only_when_it_says_something() {
    let store = Store::default();
    let json = config(&["openai", "azure"], &consecutive(3, 1000), WITHIN);
    let up = worker(
        &json.replacen(
            '{',
            r#"{"role":"upstream","attempt_upstream_header":"x-up","#,
            1,
        ),
        &store,
        T0,
    );
    let given = |v: &'static [u8]| move |h: &str| (h == "x-up").then_some(v);
    assert_eq!(up.attempt_upstream(given(b"openai")), Some(&b"openai"[..]));
    assert!(!logs().iter().any(|l| l.contains("without `x-up`")));
    // Envoy's formatter for an endpoint without the metadata, or no header: the host
    // reads the metadata, and the worker says so once.
    assert_eq!(up.attempt_upstream(given(b"")), None);
    assert_eq!(up.attempt_upstream(given(b"-")), None);
    assert_eq!(up.attempt_upstream(|_| None), None);
    let said = logs()
        .iter()
        .filter(|l| l.contains("without `x-up`"))
        .count();
    assert_eq!(said, 1, "once per worker");
    // Not configured: the header is not even looked at.
    let plain = worker(&as_role(&json, "upstream"), &store, T0);
    assert_eq!(
        plain.attempt_upstream(|_| -> Option<&[u8]> { panic!("read") }),
        None
    );
}

#[test]
fn a_later_members_quiet_read_answers_for_longer_than_the_firsts() {
    let (down, _, store) = roles(&["openai", "azure"], 3);
    let _ = plan(&down, T0);
    let before = store.reads();
    // openai's read (1 ms) is read again; azure's, a later member's, still answers.
    let _ = plan(&down, T0 + 5);
    assert_eq!(store.reads() - before, 1);
    // Past `SEEN_FRESH_MS` both are read.
    let _ = plan(&down, T0 + 30);
    assert_eq!(store.reads() - before, 3);
}

#[test]
fn an_answer_naming_no_member_is_warned_about_once() {
    let (down, _, _) = roles(&["openai", "azure"], 3);
    let (p, _, _) = plan(&down, T0);
    let _ = logs();
    let _ = down.served_within(&p, None, None, Some(200), || None);
    let _ = down.served_within(&p, Some(b"elsewhere"), None, Some(200), || None);
    let warned = logs();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("named no member"), "{warned:?}");
    // A failed attempt's answer is the upstream log's: no warning for it.
    let (down, _, _) = roles(&["openai", "azure"], 3);
    let (p, _, _) = plan(&down, T0);
    let _ = logs();
    let _ = down.served_within(&p, None, None, Some(503), || None);
    assert!(logs().is_empty());
}

#[test]
fn tickets_are_written_only_when_one_matters() {
    let send = |w: &TestWorker, now| match w.route_within(RouteId::new(0), None, now).unwrap() {
        WithinRouting::Send { tickets, .. } => tickets,
        WithinRouting::Reject(_) => panic!("rejected"),
    };
    // Every member closed: none (the host removes a client's).
    let (down, log, _) = roles(&["openai", "azure"], 1);
    assert_eq!(send(&down, T0), None);
    // A half-open member holds a permit: the tickets carry it.
    log_failed(&log, "openai", "", Some(503), 0, T0);
    let t = send(&down, T0 + 1000).expect("a permit matters");
    assert_eq!(within::decode_tickets(t.as_bytes(), 1).unwrap().1.len(), 2);
    // Model cells, chain models and shaping always write them.
    let store = Store::default();
    let json = r#"{"failover":"within_request","routes":[{"name":"chat",
        "upstreams":["openai",{"upstream":"azure","model":"gpt-4o-mini"}]}]}"#;
    assert!(send(&worker(json, &store, T0), T0).is_some());
    let json = r#"{"failover":"within_request","routes":[{"name":"chat","upstreams":["openai","azure"]}],
        "upstreams":{"openai":{"request":{"headers":{"x-a":"1"}}}}}"#;
    assert!(send(&worker(json, &Store::default(), T0), T0).is_some());
}

#[test]
fn an_attempt_without_tickets_counts_only_on_a_closed_breaker() {
    // Closed: recorded, in the epoch it has now.
    let (down, log, _) = roles(&["openai", "azure"], 2);
    log_failed(&log, "openai", "", Some(503), 0, T0);
    assert_eq!(failures(&log, 0, FailureClass::Status), 1);
    log_failed(&log, "openai", "", Some(503), 0, T0 + 1);
    assert_eq!(stored(&log, T0 + 1).kind(), PhaseKind::Open);
    // Open: the breaker is left as it is (nor does a forged ticket of the old epoch
    // change it; the failures are still counted in the metrics).
    let open = stored(&log, T0 + 1);
    log_failed(&log, "openai", "", Some(503), 0, T0 + 2);
    log_failed(&log, "openai", "0;0.0.0", Some(503), 0, T0 + 3);
    assert_eq!(stored(&log, T0 + 3), open);
    // Half-open: a ticketless attempt was no probe: it takes no permit and is not
    // recorded; the downstream role's probe still gets the permit.
    log_failed(&log, "openai", "", Some(503), 0, T0 + 1000);
    assert_eq!(stored(&log, T0 + 1000), open);
    let (p, cluster, _) = plan(&down, T0 + 1001);
    assert_eq!(cluster, "llmb|openai|azure");
    assert!(p.order[0].ticket.unwrap().permit.is_some());
}

#[test]
fn a_ticketless_attempt_older_than_its_breakers_closed_period_is_stale() {
    // openai trips, its probe succeeds: closed again from about T0 + 1000.
    let (down, log, _) = roles(&["openai", "azure"], 1);
    log_failed(&log, "openai", "", Some(503), 0, T0);
    // (Two successful probes close it.)
    for at in [T0 + 1000, T0 + 1001] {
        let (p, _, t) = plan(&down, at);
        assert!(p.order[0].ticket.unwrap().permit.is_some());
        assert!(!t.is_empty(), "a probe carries tickets");
        let _ = answer_within(&down, &p, "openai", 200, at);
        down.release_unused(&p, Some(1), at);
    }
    let closed = stored(&log, T0 + 1002);
    assert_eq!(closed.kind(), PhaseKind::Closed);
    // An attempt that hung from T0 + 500 through the trip and the recovery: stale.
    let timeout = flags::UPSTREAM_TIMEOUT;
    let hung = logged("openai", "", None, timeout, 1600);
    log.log_attempt(hung, T0 + 2100, |_| None);
    assert_eq!(stored(&log, T0 + 2100), closed);
    // One that started after it closed counts (a breaker of one: it trips).
    let fresh = logged("openai", "", None, timeout, 10);
    log.log_attempt(fresh, T0 + 2100, |_| None);
    assert_eq!(stored(&log, T0 + 2100).kind(), PhaseKind::Open);
}
