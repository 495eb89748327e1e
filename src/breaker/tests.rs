use super::*;
use crate::classify::FailureClass;
use crate::config::{Config, WindowSpec};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn cfg(extra: &str) -> BreakerConfig {
    let json = format!(
        r#"{{"routes":[{{"name":"r","upstreams":["a"]}}],
            "breaker":{{"open":{{"base_ms":1000,"max_ms":8000,"multiplier":2.0,"jitter":0}}{extra}}}}}"#
    );
    Config::parse(json.as_bytes()).unwrap().upstreams[0]
        .breaker
        .clone()
}

const OK: Outcome = Outcome {
    failure: None,
    slow: false,
    reset_in_ms: None,
};
const FAIL: Outcome = Outcome {
    failure: Some(FailureClass::Status),
    slow: false,
    reset_in_ms: None,
};
const SLOW: Outcome = Outcome {
    failure: None,
    slow: true,
    reset_in_ms: None,
};

fn ticket(b: &mut Breaker, c: &BreakerConfig, now: u64) -> Ticket {
    match b.admit(c, now).value {
        Admission::Admitted(t) => t,
        d => panic!("expected admission at {now}, got {d:?}"),
    }
}

fn feed(b: &mut Breaker, c: &BreakerConfig, now: u64, o: Outcome) -> Option<Transition> {
    let t = ticket(b, c, now);
    b.record(c, now, t, o, 1).transition
}

#[test]
fn closed_admits_without_changing_state() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    let step = b.admit(&c, 10);
    assert!(!step.changed);
    assert!(matches!(step.value, Admission::Admitted(_)));
}

#[test]
fn trips_after_five_consecutive_failures() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    for i in 0..4 {
        assert_eq!(feed(&mut b, &c, i, FAIL), None, "failure {i}");
    }
    let t = feed(&mut b, &c, 4, FAIL).expect("fifth failure trips");
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            PhaseKind::Closed,
            PhaseKind::Open,
            Reason::ConsecutiveFailures
        )
    );
    assert_eq!(b.phase, Phase::Open { until_ms: 1004 });
    assert_eq!(b.times_opened, 1);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    for _ in 0..4 {
        feed(&mut b, &c, 0, FAIL);
    }
    feed(&mut b, &c, 0, OK);
    for _ in 0..4 {
        assert_eq!(feed(&mut b, &c, 0, FAIL), None);
    }
    assert_eq!(b.kind(), PhaseKind::Closed);
}

#[test]
fn failure_rate_trips_once_minimum_calls_are_in_the_window() {
    let c = cfg(
        r#","consecutive_failures":0,"failure_rate":{"threshold":0.5,"minimum_calls":10,"window":{"calls":10}}"#,
    );
    let mut b = Breaker::new(&c, 0);
    // 5 failures, 4 successes: 9 calls, below minimum.
    for i in 0..9 {
        let o = if i % 2 == 0 { FAIL } else { OK };
        assert_eq!(feed(&mut b, &c, 0, o), None);
    }
    let t = feed(&mut b, &c, 0, OK).expect("10th call: 5/10 = 0.5 trips");
    assert_eq!(t.reason, Reason::FailureRate);
}

#[test]
fn failure_rate_below_threshold_does_not_trip() {
    let c = cfg(
        r#","consecutive_failures":0,"failure_rate":{"threshold":0.5,"minimum_calls":10,"window":{"seconds":10}}"#,
    );
    let mut b = Breaker::new(&c, 0);
    for i in 0..100u64 {
        let o = if i % 3 == 0 { FAIL } else { OK };
        assert_eq!(feed(&mut b, &c, i * 10, o), None);
    }
}

#[test]
fn time_window_forgets_old_failures() {
    let c = cfg(
        r#","consecutive_failures":0,"failure_rate":{"threshold":0.5,"minimum_calls":4,"window":{"seconds":10}}"#,
    );
    let mut b = Breaker::new(&c, 0);
    for _ in 0..3 {
        feed(&mut b, &c, 0, FAIL);
    }
    // 20 s later the three failures are gone: one failure among 4 calls isn't 50%.
    for o in [OK, OK, OK] {
        assert_eq!(feed(&mut b, &c, 20_000, o), None);
    }
    assert_eq!(feed(&mut b, &c, 20_000, FAIL), None);
}

#[test]
fn slow_call_rate_trips() {
    let c = cfg(
        r#","failure_rate":{"minimum_calls":4,"window":{"calls":4}},"slow_call":{"ttfb_ms":100,"rate_threshold":0.75}"#,
    );
    let mut b = Breaker::new(&c, 0);
    for o in [SLOW, OK, SLOW] {
        assert_eq!(feed(&mut b, &c, 0, o), None);
    }
    let t = feed(&mut b, &c, 0, SLOW).expect("3 of 4 slow");
    assert_eq!(t.reason, Reason::SlowCallRate);
}

fn tripped(c: &BreakerConfig) -> Breaker {
    let mut b = Breaker::new(c, 0);
    for _ in 0..5 {
        feed(&mut b, c, 0, FAIL);
    }
    assert_eq!(b.phase, Phase::Open { until_ms: 1000 });
    b
}

#[test]
fn open_denies_until_its_time_passes_then_half_opens_on_the_next_request() {
    let c = cfg("");
    let mut b = tripped(&c);
    assert_eq!(
        b.admit(&c, 999).value,
        Admission::Denied { retry_at_ms: 1000 }
    );
    let step = b.admit(&c, 1000);
    assert!(step.changed);
    let t = step.transition.unwrap();
    assert_eq!((t.from, t.to), (PhaseKind::Open, PhaseKind::HalfOpen));
    assert!(matches!(
        step.value,
        Admission::Admitted(Ticket {
            permit: Some(_),
            ..
        })
    ));
}

#[test]
fn half_open_admits_at_most_permitted_calls() {
    let c = cfg("");
    let mut b = tripped(&c);
    for _ in 0..3 {
        ticket(&mut b, &c, 1000);
    }
    assert!(matches!(b.admit(&c, 1000).value, Admission::Denied { .. }));
}

#[test]
fn half_open_closes_after_success_threshold_and_resets_growth() {
    let c = cfg("");
    let mut b = tripped(&c);
    let t1 = ticket(&mut b, &c, 1000);
    let t2 = ticket(&mut b, &c, 1000);
    assert_eq!(b.record(&c, 1001, t1, OK, 1).transition, None);
    let t = b.record(&c, 1002, t2, OK, 1).transition.unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            PhaseKind::HalfOpen,
            PhaseKind::Closed,
            Reason::ProbesSucceeded
        )
    );
    assert_eq!(b.reopens, 0);
    // The next trip opens for the base time again.
    for _ in 0..5 {
        feed(&mut b, &c, 2000, FAIL);
    }
    assert_eq!(b.phase, Phase::Open { until_ms: 3000 });
}

#[test]
fn a_probe_failure_reopens_for_longer_each_time_up_to_the_cap() {
    let c = cfg("");
    let mut b = tripped(&c);
    let mut now = 1000;
    for want in [2000, 4000, 8000, 8000] {
        let t = ticket(&mut b, &c, now);
        let tr = b.record(&c, now, t, FAIL, 1).transition.unwrap();
        assert_eq!(tr.reason, Reason::ProbeFailed);
        assert_eq!(tr.open_ms, Some(want));
        assert_eq!(
            b.phase,
            Phase::Open {
                until_ms: now + want
            }
        );
        now += want;
    }
}

#[test]
fn expired_permits_are_handed_out_again() {
    let c =
        cfg(r#","half_open":{"permitted_calls":1,"success_threshold":1,"permit_timeout_ms":500}"#);
    let mut b = tripped(&c);
    let lost = ticket(&mut b, &c, 1000);
    assert!(matches!(b.admit(&c, 1499).value, Admission::Denied { .. }));
    let fresh = ticket(&mut b, &c, 1500);
    assert_ne!(lost, fresh);
    let tr = b.record(&c, 1600, fresh, OK, 1).transition.unwrap();
    assert_eq!(tr.to, PhaseKind::Closed);
}

#[test]
fn outcomes_from_an_older_epoch_are_ignored() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    let stale: Vec<Ticket> = (0..3).map(|_| ticket(&mut b, &c, 0)).collect();
    for _ in 0..5 {
        feed(&mut b, &c, 0, FAIL);
    }
    let before = b.clone();
    for t in stale {
        let step = b.record(&c, 10, t, FAIL, 1);
        assert!(!step.changed);
    }
    assert_eq!(b, before);
}

#[test]
fn release_frees_a_probe_permit_without_counting() {
    let c = cfg(r#","half_open":{"permitted_calls":1,"success_threshold":1}"#);
    let mut b = tripped(&c);
    let t = ticket(&mut b, &c, 1000);
    assert!(b.release(t).changed);
    assert!(!b.release(t).changed);
    assert_eq!(b.kind(), PhaseKind::HalfOpen);
    ticket(&mut b, &c, 1000);
}

#[test]
fn conform_resets_a_window_of_another_shape() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    b.window = crate::window::Window::new(WindowSpec::Calls(5));
    assert!(b.conform(&c));
    assert!(!b.conform(&c));
}

#[test]
fn aggregated_successes_dilute_the_rate_but_never_trip_or_reset_a_streak() {
    let c = cfg(r#","failure_rate":{"threshold":0.5,"minimum_calls":4,"window":{"calls":10}}"#);
    let mut b = Breaker::new(&c, 0);
    feed(&mut b, &c, 0, FAIL);
    assert!(b.record_successes(0, b.epoch, 3).changed);
    assert_eq!(b.consecutive_failures, 1);
    // 1 failure in 4 calls: below 50%.
    assert_eq!(feed(&mut b, &c, 0, OK), None);
    // A stale epoch or a non-closed breaker ignores them.
    assert!(!b.record_successes(0, b.epoch + 1, 3).changed);
    let mut open = tripped(&cfg(""));
    let e = open.epoch;
    assert!(!open.record_successes(0, e, 3).changed);
}

#[test]
fn an_open_period_beyond_max_ms_is_not_trusted() {
    let c = cfg("");
    let mut b = tripped(&c);
    b.phase = Phase::Open { until_ms: u64::MAX };
    let step = b.admit(&c, 2000);
    assert!(matches!(
        step.value,
        Admission::Admitted(Ticket {
            permit: Some(_),
            ..
        })
    ));
    assert_eq!(step.transition.unwrap().to, PhaseKind::HalfOpen);
}

#[test]
fn an_open_period_written_by_a_worker_with_a_later_clock_is_trusted() {
    // base == max: the period is exactly max_ms; another worker's clock is 1 ms ahead.
    let c = cfg(r#","open":{"base_ms":8000,"max_ms":8000,"jitter":0}"#);
    let mut b = Breaker::new(&c, 0);
    for _ in 0..5 {
        feed(&mut b, &c, 10_001, FAIL);
    }
    assert_eq!(b.phase, Phase::Open { until_ms: 18_001 });
    assert!(matches!(
        b.admit(&c, 10_000).value,
        Admission::Denied { .. }
    ));
    assert!(matches!(
        b.admit(&c, 18_000).value,
        Admission::Denied { .. }
    ));
}

fn rate_limited(reset_in_ms: Option<u64>) -> Outcome {
    Outcome {
        failure: Some(FailureClass::RateLimited),
        slow: false,
        reset_in_ms,
    }
}

fn open_until(b: &Breaker) -> u64 {
    match b.phase {
        Phase::Open { until_ms } => until_ms,
        ref p => panic!("expected open, got {p:?}"),
    }
}

#[test]
fn a_rate_limit_with_a_reset_hint_opens_at_once_for_exactly_that_long() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    let t = feed(&mut b, &c, 100, rate_limited(Some(2000))).expect("trips");
    assert_eq!(t.reason, Reason::RateLimitReset);
    assert_eq!(t.open_ms, Some(2000));
    assert_eq!(open_until(&b), 2100);
    // Exactly: denied just before, half-open at the end.
    assert!(matches!(b.admit(&c, 2099).value, Admission::Denied { .. }));
    assert!(matches!(b.admit(&c, 2100).value, Admission::Admitted(_)));
}

#[test]
fn a_reset_hint_is_capped_by_max_open_ms_and_trusted_beyond_open_max() {
    // open.max_ms is 8000 here; the rate-limit cap is higher and still trusted.
    let c = cfg(r#","rate_limit":{"max_open_ms":20000}"#);
    let mut b = Breaker::new(&c, 0);
    feed(&mut b, &c, 0, rate_limited(Some(600_000)));
    assert_eq!(open_until(&b), 20_000);
    assert!(matches!(
        b.admit(&c, 19_999).value,
        Admission::Denied { .. }
    ));
}

#[test]
fn rate_limits_without_a_hint_or_with_hints_off_count_like_other_failures() {
    for (extra, hint) in [
        ("", None),
        ("", Some(0)),
        (r#","rate_limit":{"trip_on_reset_hint":false}"#, Some(2000)),
    ] {
        let c = cfg(extra);
        let mut b = Breaker::new(&c, 0);
        for i in 0..4 {
            assert_eq!(
                feed(&mut b, &c, i, rate_limited(hint)),
                None,
                "{extra} {hint:?}"
            );
        }
        let t = feed(&mut b, &c, 4, rate_limited(hint)).expect("fifth trips");
        assert_eq!(t.reason, Reason::ConsecutiveFailures);
        assert_eq!(open_until(&b), 1004, "backoff schedule, not the hint");
    }
}

#[test]
fn a_probe_rate_limited_with_a_hint_reopens_for_the_hint() {
    let c = cfg("");
    let mut b = tripped(&c);
    let now = open_until(&b);
    let t = ticket(&mut b, &c, now);
    let step = b.record(&c, now, t, rate_limited(Some(1500)), 1);
    let tr = step.transition.expect("re-opens");
    assert_eq!(tr.reason, Reason::ProbeFailed);
    assert_eq!(open_until(&b), now + 1500);
}

#[test]
fn an_isolated_upstream_admits_nothing_until_released_and_ignores_outcomes() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    let before = ticket(&mut b, &c, 1);
    let t = b.operator_isolate(10).transition.expect("isolates");
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            PhaseKind::Closed,
            PhaseKind::Isolated,
            Reason::OperatorIsolate
        )
    );
    assert!(
        !b.operator_isolate(11).changed,
        "isolating twice changes nothing"
    );
    // Long past any open time: still denied, never half-open.
    assert!(matches!(
        b.admit(&c, 10_000_000).value,
        Admission::Denied { .. }
    ));
    // An outcome admitted before the isolation is ignored.
    assert_eq!(b.record(&c, 20, before, FAIL, 1).transition, None);
    assert_eq!(b.phase, Phase::Isolated);
    let t = b.operator_release(30).transition.expect("releases");
    assert_eq!(
        (t.to, t.reason),
        (PhaseKind::Closed, Reason::OperatorRelease)
    );
    assert!(matches!(b.admit(&c, 31).value, Admission::Admitted(_)));
    assert!(
        !b.operator_release(32).changed,
        "release of a closed breaker is a no-op"
    );
}

#[test]
fn an_operator_reset_closes_and_clears_counts_and_backoff() {
    let c = cfg("");
    let mut b = tripped(&c);
    assert!(b.reopens > 0);
    let t = b.operator_reset(&c, 50).transition.expect("resets");
    assert_eq!((t.to, t.reason), (PhaseKind::Closed, Reason::OperatorReset));
    assert_eq!((b.consecutive_failures, b.reopens), (0, 0));
    assert_eq!(b.window.totals(50).calls, 0);
    assert!(matches!(b.admit(&c, 51).value, Admission::Admitted(_)));
    // Opening already cleared the streak and the window above: a closed breaker
    // with both filled shows that the reset itself clears them.
    let mut b = Breaker::new(&c, 0);
    for now in 0..3 {
        feed(&mut b, &c, now, FAIL);
    }
    assert_eq!(b.consecutive_failures, 3);
    assert_eq!(b.window.totals(10).calls, 3);
    b.operator_reset(&c, 10);
    assert_eq!(b.consecutive_failures, 0);
    assert_eq!(b.window.totals(10).calls, 0);
}

#[test]
fn the_last_failure_is_remembered_with_its_class_and_time() {
    let c = cfg("");
    let mut b = Breaker::new(&c, 0);
    assert_eq!(b.last_failure, None);
    feed(&mut b, &c, 7, FAIL);
    feed(&mut b, &c, 9, OK);
    assert_eq!(b.last_failure, Some((FailureClass::Status, 7)));
}

#[test]
fn a_successful_active_probe_half_opens_early_and_only_from_open() {
    let c = cfg("");
    let mut b = tripped(&c);
    let t = b.probe_succeeded(1).transition.expect("half-opens");
    assert_eq!(
        (t.from, t.to, t.reason),
        (PhaseKind::Open, PhaseKind::HalfOpen, Reason::ActiveProbe)
    );
    assert!(matches!(
        b.admit(&c, 2).value,
        Admission::Admitted(Ticket {
            permit: Some(_),
            ..
        })
    ));
    assert!(!b.probe_succeeded(3).changed, "half-open stays as it is");
    b.operator_isolate(4);
    assert!(!b.probe_succeeded(5).changed, "isolation wins");
}
