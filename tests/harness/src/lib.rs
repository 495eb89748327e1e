//! Test support for llm-breaker: a controllable mock upstream, a minimal HTTP
//! client, and a guard that runs the real Envoy with the built filter. Used by the
//! integration tests in `tests/`, the demo and the benchmark.

pub mod client;
pub mod envoy;
pub mod load;
pub mod upstream;
