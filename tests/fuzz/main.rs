//! Property-based fuzzing of everything in llm-breaker that parses untrusted bytes:
//! the shared-state codecs (bytes another module or version wrote), the in-band
//! scanner (response bodies), the model scanner and rewriter (request bodies), the
//! rate-limit hint parsers (response headers) and the config (operator input).
//!
//! Only the crate's public API is used. Every property runs `FUZZ_CASES` cases
//! (default [`DEFAULT_CASES`], sized so that the whole target stays well under the
//! 60 s that `make test` allows it); `make fuzz` sets a larger count. A failure
//! prints the shrunk input: add it to `regressions.rs` as a named test.

// Native only: proptest, signals and processes have no wasm32 counterpart (`make lint`
// builds the test targets for wasm32-unknown-unknown too).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::test_runner::Config;

mod codec;
mod config;
mod driven;
mod fleet;
mod inband;
mod model;
mod ratelimit;
mod regressions;

/// Cases per property in the bounded pass.
const DEFAULT_CASES: u32 = 1024;

/// The proptest config of every property: `FUZZ_CASES` cases (or the default), no
/// persistence files (a failure becomes a named test in `regressions.rs` instead),
/// and a fixed seed unless `FUZZ_SEED` asks otherwise, so `make test` is repeatable
/// and `make fuzz` can explore.
pub fn cases() -> Config {
    cases_scaled(1)
}

/// As [`cases`], with `1/divisor` as many cases, for properties that are
/// expensive per case.
pub fn cases_scaled(divisor: u32) -> Config {
    let n = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    let rng_seed = match std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => proptest::test_runner::RngSeed::Fixed(seed),
        None if std::env::var_os("FUZZ_RANDOM").is_some() => proptest::test_runner::RngSeed::Random,
        None => proptest::test_runner::RngSeed::Fixed(0x0011_bb4e_a4e4),
    };
    Config {
        cases: (n / divisor).max(1),
        failure_persistence: None,
        rng_seed,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}
