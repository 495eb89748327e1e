//! Inputs the fuzzing found that break a property, kept as named tests.
//! An `#[ignore]`d test here is an open bug in `src/`, named in its comment: fix it,
//! then remove the `#[ignore]` (and the matching restriction in the property).
//! Both below are fixed (saturating arithmetic in `breaker::rules::admit_probe`).
//!
//! The first was found by `driven::any_decodable_state_survives_any_events`
//! (random seed, 40 000 cases; minimised by hand), the second by reading the same
//! function afterwards: arithmetic overflow in `Breaker::admit` for a half-open
//! state at a clock within `permit_timeout_ms` / 1 s of `u64::MAX`. With overflow checks (native
//! debug builds, these tests) it panics; the release wasm has no overflow checks and
//! wraps instead (a permit token of 0, or a `retry_at_ms` in 1970), so no VM dies.
//! Real clocks are ~2^40 ms, so only corrupt state plus a broken clock reaches it;
//! the properties now run clocks up to `u64::MAX`.

use crate::driven::configs;
use llm_breaker::breaker::{Breaker, Phase};

/// A half-open breaker holding `permits`, decoded from shared data.
fn half_open(permits: Vec<u64>) -> Breaker {
    let mut b = Breaker::new(&configs()[0], 0);
    b.phase = Phase::HalfOpen {
        permits,
        successes: 0,
    };
    b
}

// Was a bug: src/breaker.rs `admit`, `token += 1` overflows: the new permit's token
// saturates at u64::MAX, a permit with that token is held, and the search for a
// free token steps past u64::MAX. Fix: `token = token.wrapping_add(1)` or search
// downwards / with `checked_add`, so the token is unique without overflow.
#[test]
fn admit_with_a_permit_at_u64_max_does_not_overflow() {
    let cfg = &configs()[0];
    let mut b = half_open(vec![u64::MAX]);
    let _ = b.admit(cfg, u64::MAX - 1);
}

// Was a bug: src/breaker.rs `admit`, `now_ms + 1000` (the denial's `retry_at_ms` when
// every permit is taken) overflows for now_ms > u64::MAX - 1000. Fix:
// `now_ms.saturating_add(1000)`.
#[test]
fn admit_with_every_permit_taken_near_u64_max_does_not_overflow() {
    let cfg = &configs()[0];
    let mut b = half_open(vec![u64::MAX; 3]);
    let _ = b.admit(cfg, u64::MAX - 10);
}
