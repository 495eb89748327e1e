//! Which counters a routing decision and an outcome bump, and the metric table's
//! shape (the host defines metrics in `all()` order and looks them up by slot).

use super::fakes::*;
use crate::classify::FailureClass;
use crate::classify::{flags, ResponseFacts};
use crate::ids::{RouteId, UpstreamId};
use crate::worker::metrics::{Kind, Metric, RouteMetric, UpstreamMetric};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
use UpstreamMetric::*;

const T0: u64 = 1_000_000;

fn u(i: usize, m: UpstreamMetric) -> Metric {
    Metric::Upstream(UpstreamId::new(i), m)
}

#[test]
fn metric_slots_follow_the_definition_order_and_names_are_unique() {
    let all: Vec<UpstreamMetric> = UpstreamMetric::all().collect();
    assert_eq!(all.len(), UpstreamMetric::COUNT);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.slot(), i, "{m:?}");
    }
    let mut names: Vec<String> = all.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), UpstreamMetric::COUNT);
    assert_eq!(
        UpstreamMetric::client_status(418).name(),
        "client_errors.other"
    );
    assert_eq!(
        UpstreamMetric::client_status(404).name(),
        "client_errors.404"
    );
    for (i, m) in RouteMetric::ALL.iter().enumerate() {
        assert_eq!(m.slot(), i);
    }
}

#[test]
fn each_outcome_bumps_its_counters() {
    let slow = ResponseFacts {
        ttfb_ms: Some(60_000),
        ..answered(200)
    };
    let reset = ResponseFacts {
        completed: false,
        flags: flags::UPSTREAM_RESET,
        ..answered(200)
    };
    let cut_by_proxy_limit = ResponseFacts {
        completed: false,
        flags: flags::UPSTREAM_TIMEOUT,
        ended_by: crate::classify::EndedBy::TotalLimit,
        ..answered(200)
    };
    // (facts, counters bumped on upstream 0)
    let cases: [(ResponseFacts, &[UpstreamMetric]); 8] = [
        (answered(200), &[Successes]),
        (answered(503), &[Failures(FailureClass::Status)]),
        (answered(429), &[Failures(FailureClass::RateLimited)]),
        (slow, &[Successes, SlowCalls]),
        (reset, &[Failures(FailureClass::Reset)]),
        (
            answered(404),
            &[ClientErrors, ClientErrorsByStatus(Some(404))],
        ),
        (answered(418), &[ClientErrors, ClientErrorsByStatus(None)]),
        (cut_by_proxy_limit, &[Ignored, IgnoredProxyLimit]),
    ];
    for (facts, want) in cases {
        let store = Store::default();
        let w = worker(
            &config(&["openai"], &consecutive(100, 1000), ""),
            &store,
            T0,
        );
        let (routed, _) = send(&w, T0);
        w.metrics().take();
        w.finish(&routed, &facts, T0);
        let got = w.metrics().take();
        let want: Vec<Metric> = want.iter().map(|&m| u(0, m)).collect();
        assert_eq!(got, want, "{facts:?}");
    }
}

#[test]
fn each_routing_decision_bumps_its_counters() {
    let reject = config(&["openai", "azure"], &consecutive(1, 60_000), "");
    let fail_open = reject.replace(
        r#""upstreams":["openai","azure"]"#,
        r#""upstreams":["openai","azure"],"when_all_open":"fail_open""#,
    );
    let route = Metric::Route(RouteId::new(0), RouteMetric::Rejected);
    let open_route = Metric::Route(RouteId::new(0), RouteMetric::FailOpen);
    // (config, failures before: openai, azure, counters the next request bumps)
    let cases: [(&str, usize, usize, Vec<Metric>); 4] = [
        (&reject, 0, 0, vec![u(0, Admitted)]),
        (&reject, 1, 0, vec![u(1, Admitted), u(0, FailedOver)]),
        (&reject, 1, 1, vec![route, u(0, Rejected), u(1, Rejected)]),
        (&fail_open, 1, 1, vec![u(0, Admitted), open_route]),
    ];
    for (cfg, fail0, fail1, want) in cases {
        let store = Store::default();
        let w = worker(cfg, &store, T0);
        for _ in 0..fail0 {
            exchange(&w, 503, T0);
        }
        for _ in 0..fail1 {
            exchange(&w, 503, T0);
        }
        w.metrics().take();
        let _ = w.route(RouteId::new(0), None, T0 + 1);
        assert_eq!(w.metrics().take(), want, "{fail0} {fail1}");
    }
}

#[test]
fn a_probe_counts_as_admitted_probe_and_fails_over_the_skipped() {
    let store = Store::default();
    let w = tripped(&store, T0);
    // azure too, so that a probe of azure skips openai
    let (r, c) = send(&w, T0 + 1);
    assert_eq!(c, "azure");
    w.finish(&r, &answered(503), T0 + 1);
    w.metrics().take();
    let (r, c) = send(&w, T0 + 1000);
    assert_eq!((c.as_str(), r.skipped.is_empty()), ("openai", true));
    // The admission itself half-opens the breaker.
    let half_open = u(0, Transitions(crate::worker::metrics::Edge::OpenToHalfOpen));
    assert_eq!(
        w.metrics().take(),
        vec![half_open, u(0, Admitted), u(0, Probes)]
    );
}

#[test]
fn transitions_count_their_edge_and_set_the_state_gauge() {
    let store = Store::default();
    let w = worker(
        &config(&["openai", "azure"], &consecutive(1, 1000), ""),
        &store,
        T0,
    );
    assert_eq!(w.metrics().gauge(0, State), Some(0), "seeded gauge");
    exchange(&w, 503, T0);
    assert_eq!(
        w.metrics()
            .up(0, Transitions(crate::worker::metrics::Edge::ClosedToOpen)),
        1
    );
    assert_eq!(w.metrics().gauge(0, State), Some(1));
    let (r, _) = send(&w, T0 + 1000);
    assert_eq!(w.metrics().gauge(0, State), Some(2));
    w.finish(&r, &answered(200), T0 + 1000);
    assert_eq!(
        w.metrics()
            .up(0, Transitions(crate::worker::metrics::Edge::OpenToHalfOpen)),
        1
    );
}

#[test]
fn every_upstream_metric_keeps_its_documented_name() {
    let names: Vec<String> = UpstreamMetric::all().map(UpstreamMetric::name).collect();
    let want = [
        "state",
        "isolated",
        "transitions.closed_to_open",
        "transitions.open_to_half_open",
        "transitions.half_open_to_closed",
        "transitions.half_open_to_open",
        "active_probes",
        "active_probe_failures",
        "requests_admitted",
        "requests_probe",
        "requests_failed_over",
        "requests_rejected",
        "successes",
        "failures.status",
        "failures.rate_limited",
        "failures.connect_failure",
        "failures.reset",
        "failures.timeout",
        "failures.in_band_error",
        "failures.stream_truncated",
        "slow_calls",
        "client_errors",
        "client_errors.400",
        "client_errors.401",
        "client_errors.403",
        "client_errors.404",
        "client_errors.408",
        "client_errors.413",
        "client_errors.422",
        "client_errors.other",
        "outcomes_ignored",
        "outcomes_ignored.proxy_limit",
        "state_resets",
        "update_errors",
        "attempts",
        "attempts_failed_retried",
        "requests_would_fail_over",
        "requests_would_reject",
        "ttfb_ms",
        "duration_ms",
        "outcomes_ignored.credential_rejected",
        "requests_not_retried_over_buffer_limit",
    ];
    assert_eq!(names, want);
    let route: Vec<&str> = RouteMetric::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(
        route,
        [
            "requests_rejected",
            "requests_fail_open",
            "requests_would_reject",
            "requests_model_unread"
        ]
    );
}

#[test]
fn stat_names_are_prefixed_and_made_safe_and_positions_find_them() {
    let json = r#"{"routes":[{"name":"chat-v1","upstreams":["openai","azure.eu"]}]}"#;
    let w = worker(json, &Store::default(), T0);
    let defs = crate::worker::metrics::definitions(w.config());
    let n = UpstreamMetric::COUNT;
    assert_eq!(defs.len(), 2 * n + RouteMetric::ALL.len());
    let at = |m: Metric| defs[crate::worker::metrics::position(m, 2)].clone();
    let cases = [
        (
            u(0, State),
            "llm_breaker.upstream.openai.state",
            Kind::Gauge,
        ),
        (
            u(1, Isolated),
            "llm_breaker.upstream.azure_eu.isolated",
            Kind::Gauge,
        ),
        (
            u(1, Failures(FailureClass::Timeout)),
            "llm_breaker.upstream.azure_eu.failures.timeout",
            Kind::Counter,
        ),
        (
            u(0, TtfbMs),
            "llm_breaker.upstream.openai.ttfb_ms",
            Kind::Histogram,
        ),
        (
            u(1, DurationMs),
            "llm_breaker.upstream.azure_eu.duration_ms",
            Kind::Histogram,
        ),
        (
            Metric::Route(RouteId::new(0), RouteMetric::FailOpen),
            "llm_breaker.route.chat-v1.requests_fail_open",
            Kind::Counter,
        ),
    ];
    for (metric, name, kind) in cases {
        assert_eq!(at(metric), (name.to_string(), kind));
    }
}
