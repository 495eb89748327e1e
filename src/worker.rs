//! The worker core: everything one Envoy worker does for the filter, as plain Rust
//! with no `proxy_wasm`. The host adapter ([`crate::host`]) translates Envoy
//! callbacks into calls on a [`Worker`] and carries its answers back; tests drive
//! the same worker with [`crate::store::MemoryStore`], a recording [`Metrics`] and
//! time passed in as a value.
//!
//! One file per concept: [`cells`] (the per-cell record), [`cache`] (the admission
//! cache), [`batch`] (success batching), [`intake`] (route match, model source,
//! the body for a rewrite), [`hold`] (holding headers for the body, and when the
//! body callbacks never come), [`request`] (routing a request and the model rewrite), [`response`] (what to watch in a response), [`shadow`] (shadow and off modes), [`outcome`]
//! (recording it), [`within`] (within-request failover: the downstream role and the
//! upstream log), [`attempt`] (one attempt of the upstream role, which shapes it), [`shape`] (its per-provider request shaping), [`report`] (reporting state changes), [`accounting`] (which
//! counters move), [`metrics`] (the metrics seam), [`operator`] (admin endpoints
//! and active probes).

pub mod accounting;
pub mod attempt;
pub mod batch;
pub mod cache;
pub mod cells;
pub mod fleet;
pub mod hold;
pub mod intake;
pub mod metrics;
pub mod operator;
pub mod outcome;
pub mod report;
pub mod request;
pub mod response;
pub mod shadow;
pub mod shape;
pub mod within;

use crate::breaker::PhaseKind;
use crate::config::{Config, Mode, Upstream};
use crate::ids::{CellId, UpstreamId};
use crate::routing::{self, Why};
use crate::store::{self, SharedStore};
use cells::CellRecord;
pub use metrics::Metrics;

/// How often probe leases are looked at.
pub const PROBE_TICK_MS: u64 = 250;

/// One worker's filter state for one configuration.
pub struct Worker<S, M> {
    config: Config,
    store: S,
    metrics: M,
    /// Per breaker cell, indexed by [`CellId`].
    cells: Vec<CellRecord>,
    /// Per upstream: the response header value of the common case (primary,
    /// nothing skipped; `within_request`: answered at the first attempt), built once.
    primary_header: Vec<String>,
    /// Shadow mode, per upstream: the response header value when enforcement would
    /// have sent the request there too, breaker closed (empty in other modes).
    shadow_header: Vec<String>,
    /// Some route depends on the request's model ([`Config::uses_models`]).
    uses_models: bool,
    /// The admin bearer token ([`Worker::load_admin_token`]).
    admin_token: Option<String>,
    /// Whether Envoy runs body callbacks while headers are held.
    hold: hold::Hold,
    /// Some upstream's requests are shaped ([`Config::shapes_requests`]).
    shapes: bool,
    /// Per upstream: when this worker last warned about its credential (ms), so
    /// the warning is logged at most once a minute per upstream and worker.
    warned: Vec<std::cell::Cell<u64>>,
    /// An attempt came without `attempt_upstream_header` (logged once per worker).
    attempt_header_missed: std::cell::Cell<bool>,
    /// Per route: the aggregate cluster of its whole chain (`within_request`'s
    /// common case, every entry admitting).
    chain_clusters: Vec<String>,
    /// A `within_request` answer named no member of its plan (logged once per worker).
    served_header_missed: std::cell::Cell<bool>,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// A worker for `config`, keeping breaker state in `store` and counting into
    /// `metrics`. Touches neither: see [`Worker::seed`].
    pub fn new(config: Config, store: S, metrics: M) -> Worker<S, M> {
        // `within_request` also says how many attempts (the first answered).
        let attempts = match config.failover {
            crate::config::Failover::WithinRequest => "; attempts=1",
            crate::config::Failover::NextRequest => "",
        };
        let primary_header = config
            .upstreams
            .iter()
            .map(|u| routing::describe(&u.name, Why::Primary, &[]) + attempts)
            .collect();
        let shadow_header = match config.mode {
            Mode::Shadow => config
                .upstreams
                .iter()
                .map(|u| routing::describe_shadow(&u.name, Some(&u.name), "primary", &[]))
                .collect(),
            _ => Vec::new(),
        };
        let chain_clusters = config
            .routes
            .iter()
            .map(|r| {
                crate::aggregate::aggregate_name(
                    r.chain
                        .iter()
                        .filter_map(|&u| config.upstream(u).map(|x| x.name.as_str())),
                )
            })
            .collect();
        Worker {
            chain_clusters,
            shadow_header,
            cells: CellRecord::all(&config),
            uses_models: config.uses_models(),
            primary_header,
            admin_token: None,
            hold: hold::Hold::default(),
            shapes: config.shapes_requests(),
            warned: config
                .upstreams
                .iter()
                .map(|_| Default::default())
                .collect(),
            config,
            store,
            metrics,
            attempt_header_missed: std::cell::Cell::new(false),
            served_header_missed: std::cell::Cell::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the counters go.
    pub fn metrics(&self) -> &M {
        &self.metrics
    }

    /// Where breaker state lives.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Whether some route depends on the request's model.
    pub fn uses_models(&self) -> bool {
        self.uses_models
    }

    /// The record of a breaker cell.
    pub fn cell(&self, cell: CellId) -> Option<&CellRecord> {
        cells::get(&self.cells, cell)
    }

    /// The upstream a breaker cell belongs to.
    fn upstream_of(&self, cell: CellId) -> Option<(UpstreamId, &Upstream)> {
        let u = self.config.cells.get(cell.index())?.upstream;
        Some((u, self.config.upstream(u)?))
    }

    /// Configuration-time setup of shared data: creates every cell's key (keeping
    /// the request path away from Envoy's non-atomic "create if absent"), sets the
    /// state gauges from what is stored, and creates the probe leases. Idempotent,
    /// so the canary VM may run it too.
    pub fn seed(&self, now_ms: u64) {
        for (cell, c) in CellId::all(self.cells.len()).zip(&self.config.cells) {
            let (Some((u, up)), Some(rec)) = (self.upstream_of(cell), self.cell(cell)) else {
                continue;
            };
            if let Err(e) = store::seed(&self.store, &rec.key, &up.breaker, now_ms) {
                log::warn!(
                    "llm-breaker: cannot seed shared state of {}: {e}",
                    rec.label
                );
            }
            if let Ok(state) = store::peek(&self.store, &rec.key, &up.breaker, now_ms) {
                if c.model.is_none() || state.kind() != PhaseKind::Closed {
                    accounting::state(&self.metrics, u, state.kind());
                }
            }
        }
        log::info!(
            "llm-breaker: configured {} route(s), {} upstream(s)",
            self.config.routes.len(),
            self.config.upstreams.len()
        );
        if self.config.mode != Mode::Enforce {
            log::warn!(
                "llm-breaker: mode {}: requests go to their route's primary; nothing is failed over or rejected",
                self.config.mode.as_str()
            );
        }
        for u in self.config.upstreams.iter().filter(|u| u.probe.is_some()) {
            crate::probe::seed(&self.store, &crate::probe::key(&u.name));
        }
    }

    /// The period of the worker's timer: the flush period, or the probe period
    /// (250 ms, or the flush period if shorter) when some upstream has a probe or
    /// some route may hold headers for the body ([`hold`]); 0 for none.
    pub fn tick_period_ms(&self) -> u64 {
        let probing = self.config.upstreams.iter().any(|u| u.probe.is_some());
        let fast = probing || self.uses_models;
        let tick = match (self.config.success_flush_ms.get(), fast) {
            (0, true) => PROBE_TICK_MS.min(hold::HOLD_TICK_MS),
            (f, true) => f.min(PROBE_TICK_MS).min(hold::HOLD_TICK_MS),
            (f, false) => f,
        };
        match (&self.config.fleet, tick) {
            (Some(fl), 0) => (fl.sync_ms.get() / 4).clamp(25, PROBE_TICK_MS),
            (Some(fl), t) => t.min((fl.sync_ms.get() / 4).clamp(25, PROBE_TICK_MS)),
            (None, t) => t,
        }
    }

    /// The timer fired: writes the batches that are due.
    pub fn tick(&self, now_ms: u64) {
        self.flush_due(now_ms);
    }
}

#[cfg(test)]
mod tests;
