//! Shadow and off modes: enforcement's decision is taken and counted, but the
//! request goes to the primary unchanged (shadow), or nothing is asked at all (off).

use super::fakes::*;
use crate::breaker::PhaseKind;
use crate::config::{Config, Mode};
use crate::ids::RouteId;
use crate::worker::intake::Intake;
use crate::worker::metrics::{Edge, Metric, RouteMetric, UpstreamMetric};
use crate::worker::request::Routing;
use crate::worker::within::WithinRouting;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
use UpstreamMetric::*;

const T0: u64 = 1_000_000;
const SHADOW: &str = r#","mode":"shadow""#;

fn header(w: &TestWorker, r: &crate::worker::request::Routed) -> String {
    w.served_header(r).unwrap().1.into_owned()
}

fn shadow(chain: &[&str], n: u32, store: &Store) -> TestWorker {
    worker(&config(chain, &consecutive(n, 1000), SHADOW), store, T0)
}

#[test]
fn mode_defaults_to_enforce_and_invalid_values_name_the_field() {
    let route = r#""routes":[{"name":"r","upstreams":["a"]}]"#;
    let parse = |extra: &str| Config::parse(format!("{{{route}{extra}}}").as_bytes());
    assert_eq!(parse("").unwrap().mode, Mode::Enforce);
    assert_eq!(parse(r#","mode":"shadow""#).unwrap().mode, Mode::Shadow);
    assert_eq!(parse(r#","mode":"off""#).unwrap().mode, Mode::Off);
    for bad in [r#","mode":"observe""#, r#","mode":1"#] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid configuration: `mode`"), "{e}");
    }
}

#[test]
fn shadow_sends_to_the_open_primary_and_counts_the_would_be_failover() {
    let store = Store::default();
    let w = shadow(&["openai", "azure"], 2, &store);
    let (r, cluster) = send(&w, T0);
    assert_eq!(cluster, "openai");
    assert_eq!(
        header(&w, &r),
        "upstream=openai; reason=shadow; would=openai; would_reason=primary"
    );
    // Failures are recorded as under enforcement: the breaker trips.
    w.finish(&r, &answered(503), T0);
    exchange(&w, 503, T0 + 1);
    assert_eq!(stored(&w, T0 + 2).kind(), PhaseKind::Open);
    assert_eq!(w.metrics().up(0, Transitions(Edge::ClosedToOpen)), 1);
    let before = store.writes();
    let (r, cluster) = send(&w, T0 + 2);
    assert_eq!(cluster, "openai", "still the primary");
    assert_eq!(r.ticket, None, "untracked while its breaker denies");
    assert_eq!(
        header(&w, &r),
        "upstream=openai; reason=shadow; would=azure; would_reason=failover; skipped=openai"
    );
    w.finish(&r, &answered(503), T0 + 2);
    assert_eq!(
        store.writes(),
        before,
        "nothing recorded for an open breaker"
    );
    assert_eq!(w.metrics().up(0, WouldFailOver), 1);
    assert_eq!(w.metrics().up(0, FailedOver), 0);
    assert_eq!(w.metrics().up(1, Admitted), 0);
    assert_eq!(w.metrics().up(0, Admitted), 3);
}

#[test]
fn shadow_never_rejects_and_counts_the_would_be_503() {
    let store = Store::default();
    let w = shadow(&["openai", "azure"], 1, &store);
    exchange(&w, 503, T0);
    exchange(&w, 503, T0 + 1); // went to openai again: azure is untouched
    assert_eq!(w.metrics().up(1, Admitted), 0);
    // Trip azure too (another worker's view is the same store).
    let enforce = worker(
        &config(&["azure"], &consecutive(1, 1000), ""),
        &store,
        T0 + 2,
    );
    exchange(&enforce, 503, T0 + 2);
    let (r, cluster) = send(&w, T0 + 3);
    assert_eq!(cluster, "openai");
    assert_eq!(
        header(&w, &r),
        "upstream=openai; reason=shadow; would=none; would_reason=all_open; skipped=openai,azure"
    );
    let route = Metric::Route(RouteId::new(0), RouteMetric::WouldReject);
    assert_eq!(w.metrics().count(route), 1);
    assert_eq!(w.metrics().up(0, WouldReject), 1);
    assert_eq!(w.metrics().up(1, WouldReject), 1);
    let rejected = Metric::Route(RouteId::new(0), RouteMetric::Rejected);
    assert_eq!(w.metrics().count(rejected), 0);
}

#[test]
fn shadow_probes_close_the_primary_once_it_heals() {
    let store = Store::default();
    let w = shadow(&["openai", "azure"], 1, &store);
    exchange(&w, 503, T0);
    assert_eq!(stored(&w, T0).kind(), PhaseKind::Open);
    let (probe, _) = send(&w, T0 + 1000);
    assert_eq!(
        header(&w, &probe),
        "upstream=openai; reason=shadow; would=openai; would_reason=probe"
    );
    w.finish(&probe, &answered(200), T0 + 1000);
    exchange(&w, 200, T0 + 1001);
    assert_eq!(stored(&w, T0 + 1002).kind(), PhaseKind::Closed);
    assert_eq!(w.metrics().up(0, Probes), 2);
}

#[test]
fn shadow_gives_back_a_probe_permit_enforcement_would_have_used_elsewhere() {
    let store = Store::default();
    let w = shadow(&["openai", "azure"], 1, &store);
    exchange(&w, 503, T0); // openai open until T0 + 1000
    let azure = worker(&config(&["azure"], &consecutive(1, 1000), ""), &store, T0);
    exchange(&azure, 503, T0 + 500); // azure open until T0 + 1500
                                     // Both half-open, one permit each; an enforcing worker takes openai's, so
                                     // enforcement would probe azure.
    let openai = worker(&config(&["openai"], &consecutive(1, 1000), ""), &store, T0);
    let (held, _) = send(&openai, T0 + 1600);
    assert!(held.ticket.and_then(|t| t.permit).is_some());
    for i in 0..2 {
        let (r, cluster) = send(&w, T0 + 1700 + i);
        assert_eq!(cluster, "openai");
        assert_eq!(r.ticket, None);
        assert_eq!(
            header(&w, &r),
            "upstream=openai; reason=shadow; would=azure; would_reason=probe; skipped=openai",
            "the permit came back, so the next request would probe again"
        );
    }
}

#[test]
fn shadow_does_not_rewrite_the_model() {
    let json = r#"{"mode":"shadow","routes":[{"name":"r",
        "upstreams":[{"upstream":"openai","model":"gpt-4o"},"azure"]}]}"#;
    let w = worker(json, &Store::default(), T0);
    match w.route(RouteId::new(0), Some("gpt-4o-mini"), T0).unwrap() {
        Routing::Send {
            cluster, rewrite, ..
        } => assert_eq!((cluster, rewrite), ("openai", None)),
        Routing::Reject(_) => panic!("rejected"),
    }
}

#[test]
fn shadow_within_request_sends_the_primary_alone() {
    let store = Store::default();
    let json = config(
        &["openai", "azure"],
        &consecutive(1, 1000),
        r#","failover":"within_request","mode":"shadow""#,
    );
    let down = worker(&json, &store, T0);
    let log = worker(
        &json.replacen('{', r#"{"role":"upstream_log","#, 1),
        &store,
        T0,
    );
    let send_within = |now| match down.route_within(RouteId::new(0), None, now).unwrap() {
        WithinRouting::Send {
            plan,
            cluster,
            tickets,
        } => (
            plan,
            cluster.into_owned(),
            tickets.expect("shadow writes tickets"),
        ),
        WithinRouting::Reject(_) => panic!("rejected"),
    };
    let (plan, cluster, tickets) = send_within(T0);
    assert_eq!(cluster, "llmb|openai");
    // The attempt on openai fails and the upstream log records it on openai: it trips.
    log_failed(&log, "openai", &tickets, Some(503), 0, T0);
    assert_eq!(stored(&log, T0).kind(), PhaseKind::Open);
    let s = answer_within(&down, &plan, "openai", 503, T0);
    assert!(s.record.is_none(), "the upstream log recorded it");
    assert_eq!(
        s.header.unwrap().1,
        "upstream=openai; reason=shadow; would=openai; would_reason=primary"
    );
    let (plan, cluster, tickets) = send_within(T0 + 10);
    assert_eq!(cluster, "llmb|openai", "no narrowing to azure");
    assert_eq!(tickets, "0;0.0", "the open primary goes untracked");
    let s = answer_within(&down, &plan, "openai", 200, T0 + 10);
    assert_eq!(s.record.unwrap().ticket, None);
    assert_eq!(
        s.header.unwrap().1,
        "upstream=openai; reason=shadow; would=azure; would_reason=failover; skipped=openai"
    );
    assert_eq!(down.metrics().up(0, WouldFailOver), 1);
    assert_eq!(down.metrics().up(1, Admitted), 0);
}

#[test]
fn off_names_the_primary_and_touches_nothing() {
    let store = Store::default();
    let json = config(
        &["openai", "azure"],
        &consecutive(1, 1000),
        r#","mode":"off""#,
    );
    let w = worker(&json, &store, T0);
    let (reads, writes) = (store.reads(), store.writes());
    let intake = w.intake_off("/v1/chat", false, |_| None);
    assert_eq!(
        intake,
        Intake::Route {
            route: RouteId::new(0),
            model: None,
            body: crate::worker::intake::RequestBody::None
        }
    );
    assert_eq!(w.route_off(RouteId::new(0)).as_deref(), Some("openai"));
    assert_eq!((store.reads(), store.writes()), (reads, writes));
    assert!(w.metrics().take().is_empty());
    let within = config(
        &["openai", "azure"],
        &consecutive(1, 1000),
        r#","mode":"off","failover":"within_request""#,
    );
    let w = worker(&within, &store, T0);
    assert_eq!(w.route_off(RouteId::new(0)).as_deref(), Some("llmb|openai"));
    // Nor does the upstream log record a failed attempt.
    let log = worker(
        &within.replacen('{', r#"{"role":"upstream_log","#, 1),
        &store,
        T0,
    );
    let (reads, writes) = (store.reads(), store.writes());
    log_failed(&log, "openai", "0;0.0.0", Some(503), 0, T0);
    log_failed(
        &log,
        "openai",
        "",
        None,
        crate::classify::flags::CONNECT_FAILURE,
        T0,
    );
    assert_eq!((store.reads(), store.writes()), (reads, writes));
    assert!(log.metrics().take().is_empty());
}

#[test]
fn off_mode_routing_without_the_bodys_model_moves_no_metric() {
    let store = Store::default();
    let json = r#"{"mode":"off","routes":[{"name":"chat","match":{"models":["gpt-*"]},
        "upstreams":["openai","azure"]}]}"#;
    let w = worker(json, &store, T0);
    let _ = w.intake_late("/v1/chat", |_| None);
    assert!(w.metrics().take().is_empty());
    // Enforcement counts it.
    let w = worker(&json.replace(r#""mode":"off","#, ""), &store, T0);
    let _ = w.intake_late("/v1/chat", |_| None);
    assert!(!w.metrics().take().is_empty());
}
