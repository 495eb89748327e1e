//! llm-breaker: a proxy-wasm HTTP filter that gives each upstream LLM provider
//! cluster a circuit breaker shared by all Envoy workers, and fails requests over
//! along a route's chain of upstreams.
//!
//! The crate is a pure core (config, breaker, windows, backoff, classification,
//! routing, shared-state encoding and CAS loop, and the per-worker logic in
//! [`worker`]) that builds and tests natively and on `wasm32-unknown-unknown`,
//! plus a thin host adapter ([`host`], only on `wasm32-wasip1`) that talks to
//! Envoy through proxy-wasm. Unsafe code is denied everywhere but in the
//! adapter's ABI module (`host::abi`).

#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod aggregate;
pub mod backoff;
pub mod breaker;
pub mod classify;
pub mod codec;
pub mod config;
pub mod fleet;
pub mod history;
pub mod ids;
pub mod inband;
pub mod model;
pub mod pairs;
pub mod probe;
pub mod ratelimit;
pub mod routing;
pub mod store;
pub mod window;
pub mod worker;

#[cfg(target_os = "wasi")]
pub mod host;
