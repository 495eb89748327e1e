//! Test support for llm-breaker: a mock LLM provider that fails like the real ones,
//! a minimal HTTP client, a guard that runs the real Envoy with the built filter,
//! and a load generator. Used by the integration tests in `tests/`, the demo, the
//! benchmark and the docker-compose harness, whose projects `docker` brings up,
//! breaks and tears down for the tests.

pub mod client;
pub mod docker;
pub mod envoy;
pub mod load;
#[cfg(test)]
mod sse;
pub mod upstream;
