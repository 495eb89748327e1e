//! Envoy stats as the worker's [`Metrics`]: every metric the core lists for the
//! configuration ([`definitions`]) is defined once per VM at configure time
//! (definition takes a global lock); the request path only looks an id up by its
//! position and increments (or records: the two latency histograms, two host
//! calls per recorded request).

use super::abi::{self, MetricKind};
use crate::config::Config;
use crate::worker::metrics::{definitions, position, Kind, Metric, Metrics};

/// Host metric ids in [`definitions`] order (`None` where the host refused one).
#[derive(Debug, Default)]
pub struct HostMetrics {
    ids: Vec<Option<u32>>,
    upstreams: usize,
}

impl HostMetrics {
    /// Defines every metric for `config`.
    pub fn define(config: &Config) -> HostMetrics {
        let kind = |k| match k {
            Kind::Counter => MetricKind::Counter,
            Kind::Gauge => MetricKind::Gauge,
            Kind::Histogram => MetricKind::Histogram,
        };
        let ids = definitions(config)
            .into_iter()
            .map(|(name, gauge)| abi::define_metric(kind(gauge), &name))
            .collect();
        let upstreams = config.upstreams.len();
        HostMetrics { ids, upstreams }
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
        abi::increment(self.id(metric), 1);
    }

    fn record(&self, metric: Metric, value: u64) {
        abi::record(self.id(metric), value);
    }

    fn get(&self, metric: Metric) -> Option<u64> {
        abi::metric(self.id(metric))
    }
}
