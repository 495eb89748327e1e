//! Within-request failover through the core: the downstream role's attempt order,
//! aggregate name and tickets; the upstream role recording each attempt on its own
//! upstream; the attempt summary; half-open permits given back; untrusted tickets.

use super::fakes::*;
use crate::breaker::PhaseKind;
use crate::ids::{RouteId, UpstreamId};
use crate::worker::metrics::UpstreamMetric;
use crate::worker::within::{self, attempt_flags, Plan, WithinRouting};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;
const WITHIN: &str = r#","failover":"within_request""#;

fn pair(chain: &[&str], n: u32) -> (TestWorker, TestWorker, Store) {
    let store = Store::default();
    let json = config(chain, &consecutive(n, 1000), WITHIN);
    let down = worker(&json, &store, T0);
    let up_json = json.replacen('{', r#"{"role":"upstream","#, 1);
    let up = worker(&up_json, &store, T0);
    (down, up, store)
}

fn plan(w: &TestWorker, now: u64) -> (Plan, String, String) {
    match w.route_within(RouteId::new(0), None, now).unwrap() {
        WithinRouting::Send {
            plan,
            cluster,
            tickets,
        } => (plan, cluster, tickets),
        WithinRouting::Reject(r) => panic!("rejected, retry after {}", r.retry_after),
    }
}

/// One attempt on `name` answered `status`, recorded by the upstream role.
fn attempt(up: &TestWorker, name: &str, tickets: &str, status: Option<u16>, now: u64) {
    let a = up
        .attempt(name.as_bytes(), Some(tickets.as_bytes()), now)
        .unwrap();
    let mut facts = match status {
        Some(s) => answered(s),
        None => crate::classify::ResponseFacts::default(),
    };
    if crate::classify::needs_flags(facts.status, facts.completed) {
        facts.flags = attempt_flags(facts.status, 0, None, || false);
    }
    up.finish(&a.routed, &facts, now);
}

#[test]
fn the_order_is_every_admitting_upstream_and_names_its_aggregate() {
    let (down, up, _) = pair(&["openai", "azure", "vllm"], 2);
    let (p, cluster, tickets) = plan(&down, T0);
    assert_eq!(cluster, "llmb|openai|azure|vllm");
    assert_eq!(p.order.len(), 3);
    // Two failed attempts trip openai; the downstream role recorded nothing.
    for i in 0..2 {
        attempt(&up, "openai", &tickets, Some(503), T0 + i);
        attempt(&up, "azure", &tickets, Some(200), T0 + i);
    }
    assert_eq!(
        down.metrics().up(
            0,
            UpstreamMetric::Failures(crate::classify::FailureClass::Status)
        ),
        0
    );
    assert_eq!(up.metrics().up(0, UpstreamMetric::Attempts), 2);
    assert_eq!(up.metrics().up(1, UpstreamMetric::Successes), 2);
    let (p, cluster, _) = plan(&down, T0 + 10);
    assert_eq!(cluster, "llmb|azure|vllm", "open openai is skipped");
    assert_eq!(p.skipped, [UpstreamId::new(0)]);
    // A single admitting upstream still goes through its one-member aggregate.
    let (down, _, _) = pair(&["openai"], 2);
    assert_eq!(plan(&down, T0).1, "llmb|openai");
}

#[test]
fn the_summary_names_the_failed_attempts_and_counts_the_retried_ones() {
    let (down, _, _) = pair(&["openai", "azure", "vllm"], 5);
    let (p, _, _) = plan(&down, T0);
    let (n, h) = down.served_within(&p, Some(b"azure"), || None, no_read());
    assert_eq!(n, Some(2));
    assert_eq!(
        h.unwrap(),
        (
            "x-llm-breaker",
            "upstream=azure; reason=failover; attempts=2; failed=openai".to_string()
        )
    );
    assert_eq!(
        down.metrics().up(0, UpstreamMetric::AttemptsFailedRetried),
        1
    );
    let (n, h) = down.served_within(&p, Some(b"openai"), || None, no_read());
    assert_eq!(
        (n, h.unwrap().1.as_str()),
        (Some(1), "upstream=openai; reason=primary; attempts=1")
    );
    // Nobody answered: Envoy's count says how many failed.
    let (n, h) = down.served_within(&p, None, || Some(b"3".to_vec()), no_read());
    assert_eq!(n, Some(3));
    assert_eq!(
        h.unwrap().1,
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
}

#[test]
fn a_half_open_member_takes_its_permit_and_unused_permits_are_given_back() {
    let (down, up, store) = pair(&["openai", "azure"], 1);
    let (_, _, t) = plan(&down, T0);
    attempt(&up, "openai", &t, Some(503), T0);
    // Open 1 s; then half-open with one permit: the probe stays first in the order.
    let (p, cluster, t) = plan(&down, T0 + 1000);
    assert_eq!(cluster, "llmb|openai|azure");
    assert!(p.order[0].ticket.unwrap().permit.is_some());
    // A second request meanwhile has no permit left: openai is skipped.
    assert_eq!(plan(&down, T0 + 1001).1, "llmb|azure");
    // The failed probe re-opens openai, the client got azure.
    attempt(&up, "openai", &t, Some(503), T0 + 1002);
    assert_eq!(stored(&down, T0 + 1002).kind(), PhaseKind::Open);
    let _ = store;
    // A probe member after the one that answered never ran: its permit comes back.
    let (down, up, _) = pair(&["openai", "azure"], 1);
    let (_, _, t) = plan(&down, T0);
    attempt(&up, "azure", &t, Some(503), T0);
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
fn an_attempt_without_headers_is_a_connect_failure_a_timeout_or_a_reset() {
    use crate::classify::flags;
    assert_eq!(
        attempt_flags(None, 5, None, || true),
        flags::CONNECT_FAILURE
    );
    assert_eq!(
        attempt_flags(None, 5, Some(1000), || false),
        flags::UPSTREAM_RESET
    );
    assert_eq!(
        attempt_flags(None, 1000, Some(1000), || false),
        flags::UPSTREAM_TIMEOUT
    );
    assert_eq!(
        attempt_flags(None, 1000, None, || false),
        flags::UPSTREAM_RESET
    );
    assert_eq!(
        attempt_flags(Some(200), 1, None, || true),
        flags::UPSTREAM_RESET
    );
    assert_eq!(attempt_flags(Some(503), 1, None, || true), 0);
    let (down, up, _) = pair(&["openai", "azure"], 2);
    let (_, _, t) = plan(&down, T0);
    attempt(&up, "openai", &t, None, T0);
    attempt(&up, "openai", &t, None, T0 + 1);
    assert_eq!(plan(&down, T0 + 2).1, "llmb|azure");
    let reset = crate::classify::FailureClass::Reset;
    assert_eq!(up.metrics().up(0, UpstreamMetric::Failures(reset)), 2);
}

#[test]
fn tickets_round_trip_and_untrusted_ones_are_refused() {
    let (down, up, _) = pair(&["openai", "azure"], 2);
    let (p, _, t) = plan(&down, T0);
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
    // A forged cell of another upstream is not used: the attempt asks itself.
    let a = up.attempt(b"azure", Some(b"0;1.0.0"), T0).unwrap();
    assert_eq!(a.routed.cell.index(), 1);
    assert!(up.attempt(b"nobody", None, T0).is_none());
}

#[test]
fn every_member_open_answers_as_when_all_open_says() {
    let (down, up, _) = pair(&["openai"], 1);
    let (_, _, t) = plan(&down, T0);
    attempt(&up, "openai", &t, Some(503), T0);
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
    let up = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    let (_, _, t) = plan(&down, T0);
    let a = up.attempt(b"azure", Some(t.as_bytes()), T0).unwrap();
    assert_eq!((a.rewrite, a.name), (Some("gpt-4o-az"), "azure"));
    let a = up.attempt(b"openai", Some(t.as_bytes()), T0).unwrap();
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
    let _ = w.served_within(&p, Some(b"azure"), || None, no_read());
    let Reply::Json { body, .. } = w.answer(Ok(Endpoint::Status), || None, T0) else {
        panic!("status is JSON");
    };
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["failover"]["mode"], "within_request");
    assert_eq!(doc["failover"]["upstreams"][0]["upstream"], "openai");
    assert_eq!(
        doc["failover"]["upstreams"][0]["attempts_failed_retried"],
        1
    );
    assert_eq!(doc["failover"]["upstreams"][1]["attempts"], 0);
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
fn an_attempt_holds_its_body_rewrites_or_fixes_the_length_and_records_once() {
    use crate::worker::attempt::{Attempt, BodyStep};
    let store = Store::default();
    let json = r#"{"failover":"within_request","routes":[{"name":"chat",
        "upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]}],
        "breaker":{"consecutive_failures":1}}"#;
    let down = worker(json, &store, T0);
    let up = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    let (_, _, t) = plan(&down, T0);
    // openai: no model of its own, but a later member rewrites: hold, then fix the length.
    let mut a = Attempt::default();
    assert!(a.start(&up, b"openai", Some(t.as_bytes()), Some(b"1000"), false, T0));
    assert_eq!(a.request_body(false, || T0), BodyStep::Hold);
    assert_eq!(a.request_body(true, || T0), BodyStep::FixLength);
    assert_eq!(
        a.response_headers(&up, Some(503), true, T0 + 5, |_| None),
        Some("openai")
    );
    a.done(&up, T0 + 5, || false);
    a.done(&up, T0 + 6, || false);
    let status = crate::classify::FailureClass::Status;
    assert_eq!(
        up.metrics().up(0, UpstreamMetric::Failures(status)),
        1,
        "once"
    );
    // azure: its chain entry's model.
    let mut b = Attempt::default();
    assert!(b.start(&up, b"azure", Some(t.as_bytes()), None, false, T0));
    assert_eq!(
        b.request_body(true, || T0),
        BodyStep::Rewrite("gpt-4o-az".into())
    );
    // No headers, lasted the per-try timeout: a timeout.
    let mut c = Attempt::default();
    assert!(!c.start(&up, b"azure", Some(t.as_bytes()), Some(b"1000"), true, T0));
    c.done(&up, T0 + 1000, || false);
    let timeout = crate::classify::FailureClass::Timeout;
    assert_eq!(up.metrics().up(1, UpstreamMetric::Failures(timeout)), 1);
    // An unknown upstream is not tracked.
    let mut d = Attempt::default();
    assert!(!d.start(&up, b"nobody", None, None, false, T0));
    assert_eq!(d.request_body(true, || T0), BodyStep::Continue);
    assert_eq!(d.response_headers(&up, Some(200), true, T0, |_| None), None);
}

#[test]
fn the_upstream_role_reads_shared_data_for_a_success_once_per_freshness_period() {
    use crate::worker::cache::SEEN_FRESH_MS;
    let (down, up, store) = pair(&["openai", "azure"], 3);
    let (_, _, tickets) = plan(&down, T0);
    attempt(&up, "openai", &tickets, Some(200), T0);
    let before = store.reads();
    // Successes within the period are held on the first one's read.
    for i in 1..=SEEN_FRESH_MS {
        attempt(&up, "openai", &tickets, Some(200), T0 + i);
    }
    assert_eq!(store.reads(), before);
    attempt(
        &up,
        "openai",
        &tickets,
        Some(200),
        T0 + 2 * SEEN_FRESH_MS + 1,
    );
    assert_eq!(store.reads(), before + 1);
    // A failure still goes to shared data at once, and ends the quiet read.
    let writes = store.writes();
    attempt(
        &up,
        "openai",
        &tickets,
        Some(503),
        T0 + 2 * SEEN_FRESH_MS + 2,
    );
    assert!(store.writes() > writes);
    let before = store.reads();
    attempt(
        &up,
        "openai",
        &tickets,
        Some(200),
        T0 + 2 * SEEN_FRESH_MS + 3,
    );
    assert!(store.reads() > before, "a streak is not quiet");
}

#[test]
fn roles_sharing_a_vm_hand_over_the_attempts_without_headers() {
    use crate::worker::attempt::Attempt;
    let store = Store::default();
    let json = config(&["openai", "azure"], &consecutive(3, 1000), WITHIN);
    let down = worker(&json, &store, T0);
    let mut up = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    up.share_relay(down.relay().clone());
    let (p, _, t) = plan(&down, T0);
    assert!(within::ticket_token(t.as_bytes()).is_some());
    // openai answers 503 (retried), azure 200: no served-by header on either.
    let mut a = Attempt::default();
    a.start(&up, b"openai", Some(t.as_bytes()), None, true, T0);
    assert_eq!(a.response_headers(&up, Some(503), true, T0, |_| None), None);
    a.done(&up, T0, || false);
    let mut b = Attempt::default();
    b.start(&up, b"azure", Some(t.as_bytes()), None, true, T0);
    assert_eq!(b.response_headers(&up, Some(200), true, T0, |_| None), None);
    b.done(&up, T0, || false);
    let handed_over = |p: &Plan| {
        let relayed = down.relay().close(p.token.unwrap()).unwrap();
        let (n, h) = down.served_relayed(p, relayed, || None);
        (n, h.unwrap().1)
    };
    assert_eq!(
        handed_over(&p),
        (
            Some(2),
            "upstream=azure; reason=failover; attempts=2; failed=openai".into()
        )
    );
    assert_eq!(
        down.metrics().up(0, UpstreamMetric::AttemptsFailedRetried),
        1
    );
    // Both attempts failed, the last without headers: Envoy answers, nobody served.
    let (p, _, t) = plan(&down, T0 + 1);
    for name in ["openai", "azure"] {
        let mut a = Attempt::default();
        a.start(&up, name.as_bytes(), Some(t.as_bytes()), None, true, T0 + 1);
        if name == "openai" {
            a.response_headers(&up, Some(503), true, T0 + 1, |_| None);
        }
        a.done(&up, T0 + 1, || true);
    }
    assert_eq!(
        handed_over(&p),
        (
            Some(2),
            "upstream=none; reason=all_failed; attempts=2; failed=openai,azure".into()
        )
    );
    // An upstream role in another VM (its own relay) says it in the header.
    let other = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    let (_, _, t) = plan(&down, T0 + 2);
    let mut c = Attempt::default();
    c.start(&other, b"openai", Some(t.as_bytes()), None, true, T0 + 2);
    assert_eq!(
        c.response_headers(&other, Some(200), true, T0 + 2, |_| None),
        Some("openai")
    );
    assert!(logs()
        .iter()
        .any(|l| l.contains("relay slot in another VM")));
}

#[test]
fn a_failed_attempt_not_retried_for_the_requests_size_is_counted() {
    use crate::worker::relay::Relayed;
    let json = config(&["openai", "azure"], &consecutive(3, 1000), WITHIN).replacen(
        '{',
        r#"{"retry_buffer_limit_bytes":100,"#,
        1,
    );
    let down = worker(&json, &Store::default(), T0);
    let over = || UpstreamMetric::NotRetriedOverBufferLimit;
    let one = |served, status| Relayed {
        attempts: 1,
        served,
        status,
    };
    let openai = Some(UpstreamId::new(0));
    // openai's 503 went to the client after one attempt, the body being 1 KB.
    let (p, _, _) = plan(&down, T0);
    let _ = down.served_relayed(&p, one(openai, Some(503)), || Some(1000));
    assert_eq!(down.metrics().up(0, over()), 1);
    // Not counted: a small body (retries were off for another reason), a 400 (not
    // retried anyway), a retry that happened, the last member.
    let _ = down.served_relayed(&p, one(openai, Some(503)), || Some(99));
    let _ = down.served_relayed(&p, one(openai, Some(400)), || Some(1000));
    let two = Relayed {
        attempts: 2,
        served: Some(UpstreamId::new(1)),
        status: Some(503),
    };
    let _ = down.served_relayed(&p, two, || Some(1000));
    assert_eq!(down.metrics().up(0, over()), 1);
    assert_eq!(down.metrics().up(1, over()), 0);
    // Without headers (Envoy answered for a reset attempt), and through the header
    // fallback, which reads the status.
    let _ = down.served_relayed(&p, one(None, None), || Some(1000));
    let fwd = within::Forwarded {
        status: || Some(502),
        size: || Some(1000),
    };
    let _ = down.served_within(&p, Some(b"openai"), || None, fwd);
    assert_eq!(down.metrics().up(0, over()), 3);
    // With no member left untried, neither the status nor the size is read.
    let unread = within::Forwarded {
        status: || -> Option<u16> { panic!("status read") },
        size: || -> Option<u64> { panic!("size read") },
    };
    let _ = down.served_within(&p, Some(b"azure"), || None, unread);
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
    let plain = worker(&json.replacen('{', r#"{"role":"upstream","#, 1), &store, T0);
    assert_eq!(
        plain.attempt_upstream(|_| -> Option<&[u8]> { panic!("read") }),
        None
    );
}
