use super::*;
use crate::classify::FailureClass;
use crate::config::WindowSpec;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn sample(phase: Phase, spec: WindowSpec) -> Breaker {
    let mut window = Window::new(spec);
    window.record(5_000, true, false);
    window.record(6_000, false, true);
    Breaker {
        phase,
        epoch: 7,
        since_ms: 1_700_000_000_000,
        consecutive_failures: 3,
        reopens: 2,
        times_opened: 9,
        window,
        last_failure: Some((FailureClass::InBandError, 1_700_000_000_123)),
    }
}

#[test]
fn every_phase_and_window_round_trips() {
    let phases = [
        Phase::Closed,
        Phase::Open { until_ms: 42 },
        Phase::HalfOpen {
            permits: vec![1, 2, 3],
            successes: 1,
        },
        Phase::Isolated,
    ];
    for phase in phases {
        for spec in [
            WindowSpec::Seconds(60),
            WindowSpec::Calls(100),
            WindowSpec::Calls(1),
        ] {
            let b = sample(phase.clone(), spec);
            assert_eq!(decode(&encode(&b)), Ok(b));
        }
    }
}

#[test]
fn garbage_never_panics_and_is_reported() {
    let good = encode(&sample(Phase::Closed, WindowSpec::Calls(16)));
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::Version(9)));
    // Every truncation fails cleanly.
    for n in 0..good.len() {
        assert!(decode(&good[..n]).is_err(), "prefix {n}");
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
    // Every single-byte corruption either decodes or errs, never panics.
    for i in 0..good.len() {
        for v in [0u8, 1, 2, 0x7f, 0xff] {
            let mut bad = good.clone();
            bad[i] = v;
            let _ = decode(&bad);
        }
    }
    // Pseudo-random byte strings.
    let mut x = 1u64;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = crate::backoff::splitmix64(x);
                x as u8
            })
            .collect();
        let _ = decode(&bytes);
        let mut v = vec![VERSION];
        v.extend_from_slice(&bytes);
        let _ = decode(&v);
    }
}

#[test]
fn peek_reads_the_head_of_closed_and_open_breakers() {
    let b = sample(Phase::Closed, WindowSpec::Seconds(60));
    assert_eq!(
        peek(&encode(&b)),
        Some(Head::Closed {
            epoch: 7,
            consecutive: 3,
            since_ms: b.since_ms,
        })
    );
    let open = sample(Phase::Open { until_ms: 99 }, WindowSpec::Calls(4));
    assert_eq!(
        peek(&encode(&open)),
        Some(Head::Open {
            since_ms: 1_700_000_000_000,
            until_ms: 99
        })
    );
    let half = sample(
        Phase::HalfOpen {
            permits: vec![],
            successes: 0,
        },
        WindowSpec::Calls(4),
    );
    assert_eq!(peek(&encode(&half)), None);
    assert_eq!(peek(&[VERSION, 0, 1]), None);
    assert_eq!(peek(&[VERSION, 1]), None);
    assert_eq!(peek(&[]), None);
    let mut bad = encode(&open);
    bad[0] = 9;
    assert_eq!(peek(&bad), None);
}

#[test]
fn peek_answers_only_for_bytes_that_decode_and_agrees_with_them() {
    let mut x = 7u64;
    let mut rand = move || {
        x = crate::backoff::splitmix64(x);
        x
    };
    let goods = [
        encode(&sample(Phase::Closed, WindowSpec::Seconds(60))),
        encode(&sample(Phase::Open { until_ms: 5 }, WindowSpec::Calls(16))),
        encode(&sample(Phase::Closed, WindowSpec::Calls(3))),
    ];
    for good in &goods {
        for _ in 0..3000 {
            let mut b = good.clone();
            match rand() % 4 {
                0 => {
                    let i = rand() as usize % b.len();
                    b[i] = rand() as u8;
                }
                1 => b.truncate(rand() as usize % b.len()),
                2 => b.push(rand() as u8),
                _ => {
                    let i = 35 + rand() as usize % (b.len() - 35);
                    b[i] = rand() as u8;
                }
            }
            if let Some(head) = peek(&b) {
                let d = decode(&b).unwrap_or_else(|e| panic!("peek Some, decode {e}"));
                match (head, d.phase) {
                    (
                        Head::Closed {
                            epoch,
                            consecutive,
                            since_ms,
                        },
                        Phase::Closed,
                    ) => {
                        assert_eq!(
                            (epoch, consecutive, since_ms),
                            (d.epoch, d.consecutive_failures, d.since_ms)
                        )
                    }
                    (Head::Open { since_ms, until_ms }, Phase::Open { until_ms: u }) => {
                        assert_eq!((since_ms, until_ms), (d.since_ms, u))
                    }
                    other => panic!("peek and decode disagree: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn impossible_values_are_rejected() {
    let mut b = sample(Phase::Closed, WindowSpec::Calls(16));
    if let Window::Count { len, .. } = &mut b.window {
        *len = 17;
    }
    assert_eq!(
        decode(&encode(&b)),
        Err(DecodeError::Invalid("count window"))
    );
}

/// The bytes of a few states, as running Envoys and the corruptor test filter read
/// them: a change here is a change of the shared-data format (bump [`VERSION`]).
#[test]
fn the_byte_layout_is_pinned() {
    let cases = [
        (
            Phase::Open { until_ms: 42 },
            WindowSpec::Calls(10),
            concat!(
                "0201070000000068e5cf8b010000030000000200000009000000067b68e5cf8b",
                "0100002a00000000000000010a000200020001000200"
            ),
        ),
        (
            Phase::HalfOpen {
                permits: vec![7, 9],
                successes: 1,
            },
            WindowSpec::Calls(3),
            concat!(
                "0202070000000068e5cf8b010000030000000200000009000000067b68e5cf8b",
                "0100000100000002070000000000000009000000000000000103000200020001",
                "02"
            ),
        ),
        (
            Phase::Isolated,
            WindowSpec::Seconds(2),
            concat!(
                "0203070000000068e5cf8b010000030000000200000009000000067b68e5cf8b",
                "01000000e8030000000000000206000000000000000100000000000000010000",
                "000500000000000000010000000100000000000000"
            ),
        ),
    ];
    for (phase, spec, want) in cases {
        let hex: String = encode(&sample(phase, spec))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, want);
    }
}
