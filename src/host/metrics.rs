//! Envoy stats as the worker's [`Metrics`]: every metric of every upstream and
//! route is defined once per VM at configure time (definition takes a global
//! lock); the request path only looks up an id in a flat table and increments.

use super::abi::{self, MetricKind};
use crate::config::Config;
use crate::worker::metrics::{stat_segment, Metric, Metrics, RouteMetric, UpstreamMetric};

/// Host metric ids (`None` where the host refused the definition), per upstream
/// `UpstreamMetric::COUNT` in slot order, then per route.
#[derive(Debug, Default)]
pub struct HostMetrics {
    upstreams: Vec<Option<u32>>,
    routes: Vec<Option<u32>>,
}

impl HostMetrics {
    /// Defines every metric for `config`.
    pub fn define(config: &Config) -> HostMetrics {
        let mut upstreams = Vec::with_capacity(config.upstreams.len() * UpstreamMetric::COUNT);
        for u in &config.upstreams {
            let p = format!("llm_breaker.upstream.{}.", stat_segment(&u.name));
            for m in UpstreamMetric::all() {
                let kind = if m.is_gauge() {
                    MetricKind::Gauge
                } else {
                    MetricKind::Counter
                };
                upstreams.push(abi::define_metric(kind, &format!("{p}{}", m.name())));
            }
        }
        let mut routes = Vec::with_capacity(config.routes.len() * RouteMetric::ALL.len());
        for r in &config.routes {
            let p = format!("llm_breaker.route.{}.", stat_segment(&r.name));
            for m in RouteMetric::ALL {
                routes.push(abi::define_metric(
                    MetricKind::Counter,
                    &format!("{p}{}", m.name()),
                ));
            }
        }
        HostMetrics { upstreams, routes }
    }

    fn id(&self, metric: Metric) -> Option<u32> {
        let (table, i) = match metric {
            Metric::Upstream(u, m) => (
                &self.upstreams,
                u.index() * UpstreamMetric::COUNT + m.slot(),
            ),
            Metric::Route(r, m) => (&self.routes, r.index() * RouteMetric::ALL.len() + m.slot()),
        };
        table.get(i).copied().flatten()
    }
}

impl Metrics for HostMetrics {
    fn increment(&self, metric: Metric) {
        abi::increment(self.id(metric), 1);
    }

    fn record(&self, metric: Metric, value: u64) {
        abi::record(self.id(metric), value);
    }
}
