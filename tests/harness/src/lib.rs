//! Test support for llm-breaker: a mock LLM provider that fails like the real ones,
//! a minimal HTTP client, a guard that runs the real Envoy with the built filter,
//! and a load generator. Used by the integration tests in `tests/`, the demo, the
//! benchmark and the docker-compose harness, whose projects `docker` brings up,
//! breaks and tears down for the tests.

pub mod client;
pub mod docker;
pub mod envoy;
pub mod load;
pub mod sse;
#[cfg(unix)]
pub mod stop;
pub mod upstream;

use std::time::{Duration, Instant};

/// Whether this runs in CI (`CI=true` or `CI=1`): then a missing Envoy, Docker
/// engine, Chromium or promtool fails a test instead of skipping it.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Polls `f` every 10 ms until it holds: how long that took, or `None` if it still
/// did not after `limit`.
pub fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(t0.elapsed())
}

/// [`poll`], panicking with `what` if `f` never held.
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    poll(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}
