//! Envoy stats as the worker's [`Metrics`]: every metric the core lists for the
//! configuration ([`definitions`]) is defined once per VM at configure time
//! (definition takes a global lock); the request path only looks an id up by its
//! position. Counter increments are batched ([`Counters`]) and handed to Envoy when
//! no stream is in flight, after [`crate::worker::counters::FLUSH_MS`], or on the
//! tick; gauges and the two latency histograms are recorded at once.

use super::abi::{self, MetricKind};
use crate::config::Config;
use crate::worker::counters::Counters;
use crate::worker::metrics::{definitions, position, Kind, Metric, Metrics};

/// Host metric ids in [`definitions`] order (`None` where the host refused one).
#[derive(Debug, Default)]
pub struct HostMetrics {
    ids: Vec<Option<u32>>,
    upstreams: usize,
    counters: Counters,
}

impl HostMetrics {
    /// Defines every metric for `config`.
    pub fn define(config: &Config) -> HostMetrics {
        let kind = |k| match k {
            Kind::Counter => MetricKind::Counter,
            Kind::Gauge => MetricKind::Gauge,
            Kind::Histogram => MetricKind::Histogram,
        };
        let ids: Vec<Option<u32>> = definitions(config)
            .into_iter()
            .map(|(name, gauge)| abi::define_metric(kind(gauge), &name))
            .collect();
        let upstreams = config.upstreams.len();
        let counters = Counters::new(ids.len());
        HostMetrics {
            ids,
            upstreams,
            counters,
        }
    }

    /// A stream (or attempt) of this root context started.
    pub fn opened(&self) {
        self.counters.opened();
    }

    /// A stream ended: flushes when none is left in flight.
    pub fn closed(&self) {
        if self.counters.closed() {
            self.flush();
        }
    }

    /// Flushes when the batch waited long enough at `now_ms` (called at a stream's
    /// end and on the tick).
    pub fn flush_due(&self, now_ms: u64) {
        if self.counters.due(now_ms) {
            self.flush();
        }
    }

    /// Hands every batched increment to Envoy.
    pub fn flush(&self) {
        for (pos, n) in self.counters.drain() {
            abi::increment(self.ids.get(pos).copied().flatten(), i64::from(n));
        }
    }

    fn id(&self, metric: Metric) -> Option<u32> {
        self.ids
            .get(position(metric, self.upstreams))
            .copied()
            .flatten()
    }
}

impl Metrics for HostMetrics {
    fn increment(&self, metric: Metric) {
        self.counters.add(position(metric, self.upstreams));
    }

    fn record(&self, metric: Metric, value: u64) {
        abi::record(self.id(metric), value);
    }

    fn get(&self, metric: Metric) -> Option<u64> {
        let batched = u64::from(self.counters.pending(position(metric, self.upstreams)));
        abi::metric(self.id(metric)).map(|v| v + batched)
    }
}
