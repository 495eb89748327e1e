//! Success batching: fast successes on a quiet breaker are held and written once
//! per flush period, a failed write is put back and retried, and anything else is
//! written at once with what is held.

use super::fakes::*;
use crate::ids::CellId;
use crate::worker::batch::{self, Batch, MAX_HELD};
use crate::worker::metrics::UpstreamMetric;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

fn batch(epoch: u32, count: u32, since_ms: u64) -> Batch {
    Batch {
        epoch,
        count,
        since_ms,
    }
}

#[test]
fn hold_returns_the_batch_that_is_due() {
    // (held, epoch, now, due, held after), flush period 250
    let cases = [
        (None, 1, 0, None, Some(batch(1, 1, 0))),
        (Some(batch(1, 3, 0)), 1, 100, None, Some(batch(1, 4, 0))),
        (Some(batch(1, 3, 0)), 1, 250, Some(batch(1, 4, 0)), None),
        (
            Some(batch(1, MAX_HELD - 1, 0)),
            1,
            1,
            Some(batch(1, MAX_HELD, 0)),
            None,
        ),
        (
            Some(batch(1, 3, 0)),
            2,
            100,
            Some(batch(1, 3, 0)),
            Some(batch(2, 1, 100)),
        ),
    ];
    for (i, (mut held, epoch, now, due, after)) in cases.into_iter().enumerate() {
        assert_eq!(batch::hold(&mut held, epoch, now, 250), due, "case {i}");
        assert_eq!(held, after, "case {i}");
    }
}

#[test]
fn restore_merges_a_failed_batch_of_the_same_epoch_and_drops_an_older_one() {
    // (held, restored, now, held after)
    let cases = [
        (None, batch(1, 5, 0), 70, Some(batch(1, 5, 70))),
        (
            Some(batch(1, 2, 50)),
            batch(1, 5, 0),
            70,
            Some(batch(1, 7, 70)),
        ),
        (
            Some(batch(1, MAX_HELD, 50)),
            batch(1, 5, 0),
            70,
            Some(batch(1, MAX_HELD, 70)),
        ),
        (
            Some(batch(2, 2, 50)),
            batch(1, 5, 0),
            70,
            Some(batch(2, 2, 50)),
        ),
    ];
    for (i, (mut held, b, now, after)) in cases.into_iter().enumerate() {
        batch::restore(&mut held, b, now);
        assert_eq!(held, after, "case {i}");
    }
}

#[test]
fn fast_successes_are_held_and_written_once_per_flush_period() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", ""), &store, T0);
    let before = store.writes();
    for i in 0..6 {
        exchange(&w, 200, T0 + i);
    }
    assert_eq!(store.writes(), before, "held, not written");
    assert_eq!(stored(&w, T0 + 10).window.totals(T0 + 10).calls, 0);
    w.tick(T0 + 249);
    assert_eq!(store.writes(), before, "not due yet");
    w.tick(T0 + 250);
    assert_eq!(store.writes(), before + 1, "one write for six");
    assert_eq!(stored(&w, T0 + 250).window.totals(T0 + 250).calls, 6);
    assert_eq!(w.metrics().up(0, UpstreamMetric::Successes), 6);
}

#[test]
fn a_success_after_the_flush_period_writes_the_batch_itself() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", ""), &store, T0);
    exchange(&w, 200, T0);
    exchange(&w, 200, T0 + 300);
    assert_eq!(stored(&w, T0 + 300).window.totals(T0 + 300).calls, 2);
}

#[test]
fn a_failed_batch_is_restored_and_retried_one_flush_period_later() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", ""), &store, T0);
    for i in 0..3 {
        exchange(&w, 200, T0 + i);
    }
    store.fail_writes(true);
    w.tick(T0 + 250);
    assert_eq!(w.metrics().up(0, UpstreamMetric::UpdateErrors), 1);
    assert!(logs().iter().any(|l| l.starts_with(
        "llm-breaker: breaker update for upstream openai not applied: shared data call failed with status 3"
    )));
    store.fail_writes(false);
    let writes = store.writes();
    w.tick(T0 + 251);
    assert_eq!(
        store.writes(),
        writes,
        "retried a flush period later, not at once"
    );
    w.tick(T0 + 500);
    assert_eq!(
        stored(&w, T0 + 500).window.totals(T0 + 500).calls,
        3,
        "no success lost"
    );
}

#[test]
fn held_successes_go_in_with_the_next_written_outcome() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", ""), &store, T0);
    for i in 0..3 {
        exchange(&w, 200, T0 + i);
    }
    let before = store.writes();
    exchange(&w, 503, T0 + 10);
    assert_eq!(
        store.writes(),
        before + 1,
        "one write for the batch and the failure"
    );
    let t = stored(&w, T0 + 10).window.totals(T0 + 10);
    assert_eq!((t.calls, t.failures), (4, 1));
    w.tick(T0 + 1000);
    assert_eq!(
        stored(&w, T0 + 1000).window.totals(T0 + 1000).calls,
        4,
        "nothing left held"
    );
}

#[test]
fn some_successes_are_never_held() {
    let calls = r#"{"failure_rate":{"window":{"calls":20}}}"#;
    let slow = crate::classify::ResponseFacts {
        ttfb_ms: Some(3_600_001),
        ..answered(200)
    };
    // (breaker, extra, response, why)
    let cases = [
        (
            "{}",
            r#","success_flush_ms":0"#,
            answered(200),
            "batching off",
        ),
        (calls, "", answered(200), "count window"),
        ("{}", "", slow, "slow success"),
    ];
    for (breaker, extra, facts, why) in cases {
        let store = Store::default();
        let w = worker(&config(&["openai"], breaker, extra), &store, T0);
        let before = store.writes();
        let (routed, _) = send(&w, T0);
        w.finish(&routed, &facts, T0);
        assert_eq!(store.writes(), before + 1, "{why}");
    }
}

#[test]
fn an_operator_action_drops_held_successes() {
    let store = Store::default();
    let json = r#"{"routes":[{"name":"chat","upstreams":["openai"]}],"admin":{"enabled":true}}"#;
    let mut w = worker(json, &store, T0);
    w.load_admin_token(|_| Some("s3cret".into()));
    exchange(&w, 200, T0);
    exchange(&w, 200, T0 + 1);
    let act = crate::admin::Endpoint::Act {
        upstream: "openai".into(),
        action: crate::admin::Action::Reset,
    };
    w.answer(Ok(act), || Some(b"Bearer s3cret".to_vec()), T0 + 2);
    assert!(w.cell(CellId::new(0)).unwrap().take().is_none());
}
