//! The admission cache: quiet reads and denials answered from this worker's own
//! read within `admission_cache_ms`, and shared data read again after.

use super::fakes::*;
use crate::breaker::Admission;
use crate::ids::CellId;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

fn cached(ms: u64) -> String {
    format!(r#","admission_cache_ms":{ms}"#)
}

#[test]
fn a_quiet_read_answers_admissions_until_the_cache_window_ends() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", &cached(100)), &store, T0);
    let cell = CellId::new(0);
    // (time, whether shared data is read)
    let cases = [
        (T0, true),
        (T0 + 50, false),
        (T0 + 100, false),
        (T0 + 101, true),
        (T0 + 150, false),
    ];
    for (now, reads) in cases {
        let before = store.reads();
        assert!(matches!(w.admit(cell, now), Some(Admission::Admitted(_))));
        assert_eq!(store.reads() > before, reads, "at +{}", now - T0);
    }
}

#[test]
fn without_a_cache_every_admission_reads_shared_data() {
    let store = Store::default();
    let w = worker(&config(&["openai"], "{}", &cached(0)), &store, T0);
    for i in 0..3 {
        let before = store.reads();
        w.admit(CellId::new(0), T0 + i);
        assert_eq!(store.reads(), before + 1);
    }
}

#[test]
fn a_denial_is_reused_until_the_open_period_ends_then_the_next_request_probes() {
    let store = Store::default();
    let cfg = config(&["openai", "azure"], &consecutive(1, 150), &cached(100));
    let w = worker(&cfg, &store, T0);
    assert_eq!(exchange(&w, 503, T0), "openai");
    // The next read tells this worker the breaker denies until T0 + 150.
    assert_eq!(send(&w, T0 + 10).1, "azure");
    let before = store.reads();
    for now in [T0 + 11, T0 + 60, T0 + 110] {
        let denied = Some(Admission::Denied {
            retry_at_ms: T0 + 150,
        });
        assert_eq!(w.admit(CellId::new(0), now), denied);
    }
    assert_eq!(store.reads(), before, "answered from the cache");
    // After the cache window the breaker is read again (still open)...
    assert_eq!(send(&w, T0 + 111).1, "azure");
    assert!(store.reads() > before);
    // ...and past the open period the request is the probe.
    let (routed, cluster) = send(&w, T0 + 150);
    assert_eq!(cluster, "openai");
    assert!(routed.ticket.is_some_and(|t| t.permit.is_some()));
}

#[test]
fn a_busy_read_is_not_cached() {
    // Closed with a failure streak: admits, but every admission reads again.
    let store = Store::default();
    let w = worker(
        &config(&["openai"], &consecutive(3, 1000), &cached(100)),
        &store,
        T0,
    );
    exchange(&w, 503, T0);
    let before = store.reads();
    w.admit(CellId::new(0), T0 + 1);
    w.admit(CellId::new(0), T0 + 2);
    assert_eq!(store.reads(), before + 2);
}

#[test]
fn another_workers_trip_is_seen_once_the_cached_read_expires() {
    let store = Store::default();
    let cfg = config(&["openai", "azure"], &consecutive(1, 60_000), &cached(100));
    let (w1, w2) = (worker(&cfg, &store, T0), worker(&cfg, &store, T0));
    assert_eq!(send(&w1, T0).1, "openai");
    assert_eq!(exchange(&w2, 503, T0 + 1), "openai");
    // w1's quiet read still answers within its window (bounded staleness)...
    assert_eq!(send(&w1, T0 + 100).1, "openai");
    // ...and no longer after it.
    assert_eq!(send(&w1, T0 + 101).1, "azure");
}

#[test]
fn a_fresh_read_tells_whether_a_success_may_be_held_without_another_read() {
    let store = Store::default();
    let w = worker(
        &config(&["openai", "azure"], &consecutive(1, 1000), ""),
        &store,
        T0,
    );
    let cell = CellId::new(0);
    let (ok, _) = send(&w, T0);
    let epoch = ok.ticket.unwrap().epoch;
    let before = store.reads();
    assert!(w.quiet(cell, epoch, T0 + 20), "its quiet read, 20 ms old");
    assert_eq!(store.reads(), before);
    assert!(
        w.quiet(cell, epoch, T0 + 21),
        "too old: read again, still quiet"
    );
    assert_eq!(store.reads(), before + 1);
    exchange(&w, 503, T0 + 30);
    send(&w, T0 + 31);
    let before = store.reads();
    assert!(!w.quiet(cell, epoch, T0 + 40), "a fresh denial: not quiet");
    assert_eq!(store.reads(), before, "answered by the denial");
}
