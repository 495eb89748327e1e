//! Native tests of the worker core: a [`fakes::Store`] over `MemoryStore` that
//! counts reads and writes and fails writes on demand, a recording metrics fake,
//! a log capture, and time as plain numbers. Two workers over one store stand for
//! two Envoy workers. They also run on wasm32-unknown-unknown (no threads, no clock).

mod accounting;
mod admission;
mod batching;
mod fakes;
mod fleet;
mod flows;
mod hold;
mod intake;
mod latency;
mod modes;
mod operator;
mod shape;
mod within;
