//! The shared-data codecs: a breaker's state, the transition history and the
//! probe lease. Another module with the same `vm_id`, an older version or memory
//! corruption can leave any bytes under these keys.

use llm_breaker::breaker::{Breaker, Phase, PhaseKind, Reason, MAX_PERMITS};
use llm_breaker::classify::FailureClass;
use llm_breaker::codec::{self, Head};
use llm_breaker::history::{self, Entry};
use llm_breaker::probe;
use llm_breaker::window::{Bucket, Totals, Window, MAX_BUCKETS, MAX_CALLS};
use proptest::prelude::*;

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Closed),
        any::<u64>().prop_map(|until_ms| Phase::Open { until_ms }),
        Just(Phase::Isolated),
        (
            prop::collection::vec(any::<u64>(), 0..=MAX_PERMITS),
            any::<u32>()
        )
            .prop_map(|(permits, successes)| Phase::HalfOpen { permits, successes }),
    ]
}

fn window() -> impl Strategy<Value = Window> {
    let bucket = (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(index, calls, failures, slow)| Bucket {
            index,
            totals: Totals {
                calls,
                failures,
                slow,
            },
        },
    );
    let time = (
        1..=u64::MAX,
        prop::collection::vec(bucket, 1..=MAX_BUCKETS as usize),
    )
        .prop_map(|(bucket_ms, buckets)| Window::Time { bucket_ms, buckets });
    let count = (1..=MAX_CALLS)
        .prop_flat_map(|capacity| {
            let n = usize::from(capacity).div_ceil(8);
            (
                Just(capacity),
                0..=capacity,
                0..capacity,
                prop::collection::vec(any::<u8>(), n),
                prop::collection::vec(any::<u8>(), n),
            )
        })
        .prop_map(|(capacity, len, next, failed, slow)| Window::Count {
            capacity,
            len,
            next,
            failed,
            slow,
        });
    prop_oneof![time, count]
}

/// Any breaker state the codec can represent.
pub fn breaker() -> impl Strategy<Value = Breaker> {
    let failure = prop::option::of((
        prop::sample::select(FailureClass::ALL.to_vec()),
        any::<u64>(),
    ));
    (
        phase(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        window(),
        failure,
    )
        .prop_map(
            |(
                phase,
                epoch,
                since_ms,
                consecutive_failures,
                reopens,
                times_opened,
                window,
                last_failure,
            )| {
                Breaker {
                    phase,
                    epoch,
                    since_ms,
                    consecutive_failures,
                    reopens,
                    times_opened,
                    window,
                    last_failure,
                }
            },
        )
}

/// A valid encoding, then damaged: bytes overwritten, cut, or appended. Reaches
/// deeper into the decoder than uniformly random bytes, which mostly fail at the
/// version byte.
fn damaged_encoding() -> impl Strategy<Value = Vec<u8>> {
    (
        breaker(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(b, edits, cut, extra)| {
            let mut bytes = codec::encode(&b);
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend(extra);
            bytes
        })
}

/// `peek` must agree with `decode` on whatever it answers.
fn peek_agrees_with_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let decoded = codec::decode(bytes);
    match codec::peek(bytes) {
        None => {
            if let Ok(b) = &decoded {
                prop_assert!(
                    !matches!(b.phase, Phase::Closed | Phase::Open { .. }),
                    "peek refused a closed/open state decode accepts: {b:?}"
                );
            }
        }
        Some(head) => {
            let b = decoded.map_err(|e| {
                TestCaseError::fail(format!(
                    "peek answered {head:?} for bytes decode refuses: {e}"
                ))
            })?;
            match (head, &b.phase) {
                (
                    Head::Closed {
                        epoch, consecutive, ..
                    },
                    Phase::Closed,
                ) => {
                    prop_assert_eq!(epoch, b.epoch);
                    prop_assert_eq!(consecutive, b.consecutive_failures);
                }
                (Head::Open { since_ms, until_ms }, Phase::Open { until_ms: u }) => {
                    prop_assert_eq!(since_ms, b.since_ms);
                    prop_assert_eq!(until_ms, *u);
                }
                (h, p) => prop_assert!(false, "peek {h:?} but decode {p:?}"),
            }
        }
    }
    Ok(())
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u16>(),
        prop::sample::select(PhaseKind::ALL.to_vec()),
        prop::sample::select(PhaseKind::ALL.to_vec()),
        prop::sample::select(Reason::ALL.to_vec()),
    )
        .prop_map(|(at_ms, cell, from, to, reason)| Entry {
            at_ms,
            cell,
            from,
            to,
            reason,
        })
}

proptest! {
    #![proptest_config(crate::cases())]

    #[test]
    fn breaker_state_round_trips(b in breaker()) {
        let bytes = codec::encode(&b);
        prop_assert_eq!(codec::decode(&bytes), Ok(b));
        peek_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_breaker_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        peek_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_the_version_byte_never_panic(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![codec::VERSION];
        bytes.extend(tail);
        peek_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn damaged_encodings_fail_or_decode_to_a_state_that_round_trips(bytes in damaged_encoding()) {
        peek_agrees_with_decode(&bytes)?;
        // Whatever decodes is a state the codec can hold: written back, it reads the
        // same, so a key never changes meaning by being rewritten.
        if let Ok(b) = codec::decode(&bytes) {
            prop_assert_eq!(codec::decode(&codec::encode(&b)), Ok(b));
        }
    }

    #[test]
    fn history_round_trips(entries in prop::collection::vec(entry(), 0..64)) {
        prop_assert_eq!(history::decode(&history::encode(&entries)), entries);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_history_decoder(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let entries = history::decode(&bytes);
        // A decoded ring accounts for every byte: 3 header bytes plus whole entries.
        if !entries.is_empty() {
            prop_assert_eq!(history::encode(&entries), bytes);
        }
    }

    #[test]
    fn probe_lease_round_trips_and_garbage_never_panics(due in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..32)) {
        prop_assert_eq!(probe::due_ms(&probe::encode(due)), due);
        let _ = probe::due_ms(&bytes);
    }
}
