use super::*;
use crate::breaker::{Admission, PhaseKind, Ticket};
use crate::classify::{FailureClass, Outcome};
use crate::config::Config;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn cfg() -> BreakerConfig {
    Config::parse(br#"{"routes":[{"name":"r","upstreams":["a"]}]}"#)
        .unwrap()
        .upstreams[0]
        .breaker
        .clone()
}

const FAIL: Outcome = Outcome {
    failure: Some(FailureClass::Status),
    slow: false,
    reset_in_ms: None,
};

fn admit(s: &MemoryStore, c: &BreakerConfig, now: u64) -> Ticket {
    match update(s, &key("a"), c, now, |b| b.admit(c, now))
        .unwrap()
        .value
    {
        Admission::Admitted(t) => t,
        d => panic!("{d:?}"),
    }
}

fn fail(s: &MemoryStore, c: &BreakerConfig, now: u64, t: Ticket) -> Updated<()> {
    update(s, &key("a"), c, now, |b| b.record(c, now, t, FAIL, 0)).unwrap()
}

#[test]
fn outcomes_accumulate_in_the_store() {
    let s = MemoryStore::default();
    let c = cfg();
    for i in 0..4 {
        let t = admit(&s, &c, 0);
        assert!(fail(&s, &c, 0, t).transition.is_none(), "{i}");
    }
    let t = admit(&s, &c, 0);
    let u = fail(&s, &c, 0, t);
    assert_eq!(u.transition.unwrap().to, PhaseKind::Open);
    assert_eq!(peek(&s, &key("a"), &c, 0).unwrap().kind(), PhaseKind::Open);
}

#[test]
fn closed_admission_writes_nothing_once_the_key_exists() {
    let s = MemoryStore::default();
    let c = cfg();
    assert!(seed(&s, &key("a"), &c, 0).unwrap());
    assert!(!seed(&s, &key("a"), &c, 0).unwrap());
    let before = s.get(&key("a")).unwrap().unwrap().1;
    admit(&s, &c, 5);
    assert_eq!(s.get(&key("a")).unwrap().unwrap().1, before);
}

#[test]
fn corrupt_bytes_reset_to_closed_and_are_reported() {
    let s = MemoryStore::default();
    let c = cfg();
    s.put_raw(&key("a"), b"\x63garbage");
    let u = update(&s, &key("a"), &c, 7, |b| b.admit(&c, 7)).unwrap();
    assert!(u.reset.is_some());
    assert_eq!(u.state.kind(), PhaseKind::Closed);
    // The reset was written back: the next read decodes.
    let u = update(&s, &key("a"), &c, 8, |b| b.admit(&c, 8)).unwrap();
    assert!(u.reset.is_none());
}

/// A store whose first `n` writes lose a CAS race to another worker that records
/// one failure each time.
struct Racy {
    inner: MemoryStore,
    races: std::cell::Cell<u32>,
    cfg: BreakerConfig,
}

impl SharedStore for Racy {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.races.get() > 0 {
            self.races.set(self.races.get() - 1);
            // The other worker wins.
            let c = self.cfg.clone();
            update(&self.inner, key, &c, 0, |b| {
                let t = match b.admit(&c, 0).value {
                    Admission::Admitted(t) => t,
                    _ => unreachable!(),
                };
                b.record(&c, 0, t, FAIL, 0)
            })
            .unwrap();
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn lost_cas_races_are_retried_and_no_outcome_is_lost() {
    let c = cfg();
    let s = Racy {
        inner: MemoryStore::default(),
        races: std::cell::Cell::new(3),
        cfg: c.clone(),
    };
    seed(&s.inner, &key("a"), &c, 0).unwrap();
    let t = admit(&s.inner, &c, 0);
    let u = update(&s, &key("a"), &c, 0, |b| b.record(&c, 0, t, FAIL, 0)).unwrap();
    // 3 failures by the other worker + ours.
    assert_eq!(u.state.consecutive_failures, 4);
    assert_eq!(
        peek(&s.inner, &key("a"), &c, 0)
            .unwrap()
            .consecutive_failures,
        4
    );
}

struct AlwaysLoses(MemoryStore);

impl SharedStore for AlwaysLoses {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.0.get(key)
    }
    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
        Err(StoreError::CasMismatch)
    }
}

#[test]
fn the_cas_loop_is_bounded() {
    let c = cfg();
    let s = AlwaysLoses(MemoryStore::default());
    let t = Ticket {
        epoch: 0,
        permit: None,
    };
    let r = update(&s, &key("a"), &c, 0, |b| b.record(&c, 0, t, FAIL, 0));
    assert_eq!(r, Err(UpdateError::Contention));
}

#[test]
fn read_modify_cas_runs_its_step_once_per_attempt_and_skips_unneeded_writes() {
    let s = AlwaysLoses(MemoryStore::default());
    let mut runs = 0;
    let r = read_modify_cas(&s, "k", 3, |_| {
        runs += 1;
        Rewrite {
            value: (),
            bytes: Some(vec![1]),
        }
    });
    assert_eq!((r, runs), (Err(UpdateError::Contention), 3));
    // A step that writes nothing answers from its one read, even on a losing store.
    let r = read_modify_cas(&s, "k", 3, |read| Rewrite {
        value: read.is_none(),
        bytes: None,
    });
    assert_eq!(r, Ok(true));
    // A host refusal ends the loop at once.
    let r = read_modify_cas(&Refuses, "k", 3, |_| Rewrite {
        value: (),
        bytes: Some(vec![1]),
    });
    assert_eq!(r, Err(UpdateError::Host(7)));
}

struct Refuses;

impl SharedStore for Refuses {
    fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(None)
    }
    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
        Err(StoreError::Host(7))
    }
}

// Threads are not available under wasm-bindgen-test.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn threads_sharing_one_store_lose_no_outcome() {
    let c = cfg();
    let c = BreakerConfig {
        consecutive_failures: 1_000_000,
        minimum_calls: 1_000_000,
        ..c
    };
    let s = std::sync::Arc::new(MemoryStore::default());
    seed(&*s, &key("a"), &c, 0).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (s, c) = (s.clone(), c.clone());
            std::thread::spawn(move || {
                for _ in 0..500 {
                    let t = admit(&s, &c, 0);
                    fail(&s, &c, 0, t);
                    // A worker handles a whole request between two updates; two
                    // threads doing nothing but CAS in lockstep would starve one.
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        peek(&*s, &key("a"), &c, 0).unwrap().consecutive_failures,
        1000
    );
}

#[test]
fn admit_answers_closed_from_the_head_and_others_through_the_state_machine() {
    let s = MemoryStore::default();
    let c = cfg();
    seed(&s, &key("a"), &c, 0).unwrap();
    let a = super::admit(&s, &key("a"), &c, 0).unwrap();
    assert!(matches!(
        a.admission,
        Admission::Admitted(Ticket { permit: None, .. })
    ));
    for _ in 0..5 {
        let t = super::admit(&s, &key("a"), &c, 0).unwrap();
        assert!(!matches!(t.admission, Admission::Denied { .. }));
        if let Admission::Admitted(t) = t.admission {
            fail(&s, &c, 0, t);
        }
    }
    assert!(matches!(
        super::admit(&s, &key("a"), &c, 1).unwrap().admission,
        Admission::Denied { .. }
    ));
    // After the open time the next admission is a probe, through the full path.
    let later = 10 * 60 * 1000;
    let a = super::admit(&s, &key("a"), &c, later).unwrap();
    assert!(matches!(
        a.admission,
        Admission::Admitted(Ticket {
            permit: Some(_),
            ..
        })
    ));
    assert_eq!(a.transition.unwrap().to, PhaseKind::HalfOpen);
    // Garbage reads as closed (and is rewritten).
    s.put_raw(&key("a"), b"junk");
    let a = super::admit(&s, &key("a"), &c, later).unwrap();
    assert!(a.reset.is_some());
}

#[test]
fn a_valid_looking_open_state_with_an_absurd_end_is_not_answered_from_the_head() {
    let s = MemoryStore::default();
    let c = cfg();
    let mut b = crate::breaker::Breaker::new(&c, 0);
    b.phase = crate::breaker::Phase::Open { until_ms: u64::MAX };
    s.put_raw(&key("a"), &crate::codec::encode(&b));
    let a = super::admit(&s, &key("a"), &c, 1000).unwrap();
    assert!(matches!(
        a.admission,
        Admission::Admitted(Ticket {
            permit: Some(_),
            ..
        })
    ));
}

#[test]
fn quiet_now_is_true_only_for_a_closed_breaker_without_a_streak_in_the_same_epoch() {
    let s = MemoryStore::default();
    let c = cfg();
    seed(&s, &key("a"), &c, 0).unwrap();
    assert!(quiet_now(&s, &key("a"), 0));
    assert!(!quiet_now(&s, &key("a"), 1));
    assert!(!quiet_now(&s, &key("missing"), 0));
    let t = admit(&s, &c, 0);
    fail(&s, &c, 0, t);
    assert!(!quiet_now(&s, &key("a"), 0), "a failure streak");
    s.put_raw(&key("a"), b"junk");
    assert!(!quiet_now(&s, &key("a"), 0));
}

#[test]
fn is_open_reads_the_head_and_falls_back_to_the_whole_state() {
    let s = MemoryStore::default();
    let c = cfg();
    let a = key("a");
    seed(&s, &a, &c, 0).unwrap();
    assert!(!is_open(&s, &a, &c, 0), "closed");
    for _ in 0..5 {
        let t = admit(&s, &c, 0);
        fail(&s, &c, 0, t);
    }
    assert!(is_open(&s, &a, &c, 0), "open");
    // Past the open time, a request half-opens it: neither closed nor open.
    let open_ms = c.open.max_ms.get();
    admit(&s, &c, open_ms + 1);
    assert_eq!(
        peek(&s, &a, &c, open_ms + 1).unwrap().kind(),
        PhaseKind::HalfOpen
    );
    assert!(!is_open(&s, &a, &c, open_ms + 1), "half-open");
    assert!(!is_open(&s, &key("missing"), &c, 0));
    s.put_raw(&a, b"junk");
    assert!(!is_open(&s, &a, &c, 0), "undecodable reads as closed");
}
