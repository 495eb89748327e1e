//! Decoded shared state is untrusted too: whatever `codec::decode` accepts, the
//! breaker must then run on without panicking, through any sequence of events at
//! any clock value, and every state it writes back must decode again.

use crate::codec::breaker;
use llm_breaker::breaker::{Admission, Breaker, Ticket};
use llm_breaker::classify::{FailureClass, Outcome};
use llm_breaker::codec;
use llm_breaker::config::{BreakerConfig, Config};
use proptest::prelude::*;

/// The same breaker settings over a time window and over a count window.
pub fn configs() -> [BreakerConfig; 2] {
    let parse = |window: &str| {
        let json = format!(
            r#"{{"routes":[{{"name":"r","upstreams":["a"]}}],
                 "breaker":{{"failure_rate":{{"minimum_calls":4,"window":{window}}},
                             "consecutive_failures":3,
                             "open":{{"base_ms":1000,"max_ms":8000,"jitter":0.2}},
                             "half_open":{{"permitted_calls":3,"success_threshold":2,"permit_timeout_ms":5000}}}}}}"#
        );
        Config::parse(json.as_bytes()).unwrap().upstreams[0]
            .breaker
            .clone()
    };
    [parse(r#"{"seconds":10}"#), parse(r#"{"calls":16}"#)]
}

#[derive(Debug, Clone)]
enum Event {
    Admit,
    Record {
        outcome: Outcome,
        latest_ticket: bool,
        epoch: u32,
        permit: Option<u64>,
        seed: u64,
    },
    Successes {
        n: u32,
    },
    Release {
        latest_ticket: bool,
        permit: Option<u64>,
    },
    Conform,
    Reset,
    Isolate,
    Unisolate,
    ProbeOk,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    (
        prop::option::of(prop::sample::select(FailureClass::ALL.to_vec())),
        any::<bool>(),
        prop::option::of(prop_oneof![0..10_000u64, any::<u64>()]),
    )
        .prop_map(|(failure, slow, reset_in_ms)| Outcome {
            failure,
            slow,
            reset_in_ms,
        })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Admit),
        4 => (outcome(), any::<bool>(), any::<u32>(), prop::option::of(any::<u64>()), any::<u64>())
            .prop_map(|(outcome, latest_ticket, epoch, permit, seed)| Event::Record { outcome, latest_ticket, epoch, permit, seed }),
        1 => any::<u32>().prop_map(|n| Event::Successes { n }),
        1 => (any::<bool>(), prop::option::of(any::<u64>())).prop_map(|(latest_ticket, permit)| Event::Release { latest_ticket, permit }),
        1 => Just(Event::Conform),
        1 => Just(Event::Reset),
        1 => Just(Event::Isolate),
        1 => Just(Event::Unisolate),
        1 => Just(Event::ProbeOk),
    ]
}

/// The largest clock: every value, since the overflows in `Breaker::admit`
/// (`regressions.rs`) are fixed.
const CLOCK_MAX: u64 = u64::MAX;

/// Clock values: around now, around the state's own times, and the extremes.
fn clock() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1_700_000_000_000u64..1_900_000_000_000,
        1 => 0..100_000u64,
        1 => (CLOCK_MAX - 100_000)..=CLOCK_MAX,
        1 => 0..=CLOCK_MAX,
    ]
}

/// A starting state as another worker, version or corruption could leave it.
fn start_state() -> impl Strategy<Value = Breaker> {
    prop_oneof![
        breaker(),
        (0usize..2).prop_map(|i| Breaker::new(&configs()[i], 1_800_000_000_000)),
    ]
}

fn drive(cfg: &BreakerConfig, mut b: Breaker, steps: &[(Event, u64)]) -> Result<(), TestCaseError> {
    let mut last: Option<Ticket> = None;
    for (event, now) in steps {
        let now = *now;
        match event.clone() {
            Event::Admit => {
                if let Admission::Admitted(t) = b.admit(cfg, now).value {
                    last = Some(t);
                }
            }
            Event::Record {
                outcome,
                latest_ticket,
                epoch,
                permit,
                seed,
            } => {
                let ticket = match (latest_ticket, last) {
                    (true, Some(t)) => t,
                    _ => Ticket { epoch, permit },
                };
                b.record(cfg, now, ticket, outcome, seed);
            }
            Event::Successes { n } => {
                b.record_successes(now, b.epoch, n);
            }
            Event::Release {
                latest_ticket,
                permit,
            } => {
                let ticket = match (latest_ticket, last) {
                    (true, Some(t)) => t,
                    _ => Ticket {
                        epoch: b.epoch,
                        permit,
                    },
                };
                b.release(ticket);
            }
            Event::Conform => {
                b.conform(cfg);
            }
            Event::Reset => {
                b.operator_reset(cfg, now);
            }
            Event::Isolate => {
                b.operator_isolate(now);
            }
            Event::Unisolate => {
                b.operator_release(now);
            }
            Event::ProbeOk => {
                b.probe_succeeded(now);
            }
        }
        let _ = b.window.totals(now);
        let bytes = codec::encode(&b);
        let back = codec::decode(&bytes).map_err(|e| {
            TestCaseError::fail(format!(
                "after {event:?} at {now} the state no longer decodes: {e}: {b:?}"
            ))
        })?;
        prop_assert_eq!(&back, &b);
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases_scaled(2))]

    #[test]
    fn any_decodable_state_survives_any_events(
        cfg in 0usize..2,
        b in start_state(),
        steps in prop::collection::vec((event(), clock()), 1..40),
    ) {
        // Through the codec first, as the filter reads it.
        let b = codec::decode(&codec::encode(&b)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        drive(&configs()[cfg], b, &steps)?;
    }

    #[test]
    fn realistic_clocks_never_panic(
        cfg in 0usize..2,
        steps in prop::collection::vec((event(), 1_800_000_000_000u64..1_800_000_100_000), 1..80),
    ) {
        let cfg = &configs()[cfg];
        let mut sorted = steps;
        sorted.sort_by_key(|(_, t)| *t);
        drive(cfg, Breaker::new(cfg, 1_800_000_000_000), &sorted)?;
    }
}
