//! Configuration: parsed from the filter's JSON in two phases. [`raw`] holds the serde
//! structs users write; [`Config::parse`] types them, merges per-upstream overrides and
//! checks every rule, returning a [`ConfigError`] that names the offending field.

mod breaker;
mod checks;
mod error;
mod fleet;
mod limits;
mod models;
mod probe;
pub mod raw;
mod routes;
mod sections;
mod shape;
mod units;
mod validate;

use crate::ids::{CellId, RouteId, UpstreamId};
use crate::model::ModelPattern;
pub use raw::{Failover, Mode, ModelSource, Role, Scope, WhenAllOpen};

pub use error::ConfigError;
pub use fleet::{FleetConfig, RawFleet};
pub use limits::{MAX_CALLS, MAX_MODELS, MAX_PERMITS};
pub use shape::{
    Credential, PathRule, RequestShape, ATTEMPT_UPSTREAM_HEADER, CLIENT_CREDENTIAL_HEADERS,
    CLIENT_STAGING_PREFIX, STAGING_PREFIX,
};
pub use units::Millis;

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Request header that carries the chosen upstream to Envoy's router.
    pub route_header: String,
    /// Response header naming the serving upstream, if enabled.
    pub response_header: Option<String>,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Aggregation period for fast successes on healthy upstreams (0 = off).
    pub success_flush_ms: Millis,
    /// How long a worker's own read of a breaker answers admissions: quiet admits,
    /// denying denies until its end (0 = off).
    pub admission_cache_ms: Millis,
    /// Every upstream named by some route, each with its effective breaker settings.
    pub upstreams: Vec<Upstream>,
    /// Bytes of a response body parsed for in-band errors.
    pub max_scan_bytes: usize,
    /// Where the model comes from.
    pub model_source: ModelSource,
    /// The model header, when the source is a header.
    pub model_header: String,
    /// Largest request body held for the model.
    pub max_body_bytes: usize,
    /// Models with breakers of their own (on model-scoped upstreams); any other
    /// model shares one breaker per upstream.
    pub models: Vec<String>,
    /// Breaker state cells: one per upstream, or one per model (and one for every
    /// other model) on model-scoped upstreams. Each has its own shared-data key.
    pub cells: Vec<Cell>,
    /// Per upstream: its first cell.
    pub cell_base: Vec<CellId>,
    /// The operator endpoints, when enabled.
    pub admin: Option<AdminConfig>,
    /// Next-request or within-request failover.
    pub failover: Failover,
    /// Downstream (routing) or upstream (per-attempt) instance.
    pub role: Role,
    /// `within_request`: the request size over which Envoy sends a request once.
    pub retry_buffer_limit_bytes: u64,
    /// Upstream role: the request header naming the attempt's upstream (set by an
    /// upstream `header_mutation` from the endpoint metadata); `None`: read the
    /// metadata.
    pub attempt_upstream_header: Option<String>,
    /// Enforce, shadow (observe only) or off.
    pub mode: Mode,
    /// Breakers shared with other Envoys through etcd, when configured.
    pub fleet: Option<FleetConfig>,
}

/// Operator endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Path prefix, without a trailing `/`.
    pub path_prefix: String,
    /// Reads need the token too.
    pub protect_reads: bool,
    /// VM environment variable with the token.
    pub token_env: String,
    /// Transitions kept.
    pub history: u16,
}

/// One breaker's state: an upstream, or an upstream and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Its upstream.
    pub upstream: UpstreamId,
    /// `None` for an upstream-scoped breaker; the model name, or `*` for every model
    /// not in [`Config::models`].
    pub model: Option<String>,
}

/// Name of the cell shared by models without a breaker of their own.
pub const OTHER_MODELS: &str = "*";

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique route name.
    pub name: String,
    /// Path prefix the request must start with, if any.
    pub path_prefix: Option<String>,
    /// Exact path the request must have, if any.
    pub path: Option<String>,
    /// Upstreams, primary first.
    pub chain: Vec<UpstreamId>,
    /// Per chain entry: the model to rewrite the request to on that upstream.
    pub chain_models: Vec<Option<String>>,
    /// Model names or globs the request's model must match (empty: any request).
    pub models: Vec<ModelPattern>,
    /// Behaviour when no upstream admits the request.
    pub when_all_open: WhenAllOpen,
    /// The client's credential headers pass through; no gateway key is injected.
    pub pass_client_credentials: bool,
}

impl Route {
    /// Whether a request matches: its path, and its model where the route names
    /// models (a request without a known model matches no such route).
    pub fn matches_request(&self, path: &str, model: Option<&str>) -> bool {
        self.matches(path)
            && (self.models.is_empty()
                || model.is_some_and(|m| self.models.iter().any(|p| p.matches(m))))
    }

    /// Whether a request path (query included or not) matches this route.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if let Some(exact) = &self.path {
            if path != exact {
                return false;
            }
        }
        match &self.path_prefix {
            Some(prefix) => path.starts_with(prefix.as_str()),
            None => true,
        }
    }
}

/// An upstream cluster and its breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Cluster name, written into the route header.
    pub name: String,
    /// Effective breaker settings (global merged with this upstream's override).
    pub breaker: BreakerConfig,
    /// Active recovery probe, if configured.
    pub probe: Option<ProbeConfig>,
    /// How the upstream role shapes each attempt to it (empty: not at all).
    pub request: RequestShape,
}

/// An active recovery probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Healthy statuses.
    pub expect_status: Vec<u16>,
    /// Timeout in ms.
    pub timeout_ms: Millis,
    /// Interval in ms.
    pub interval_ms: Millis,
}

/// Effective breaker settings of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that trip; 0 = rule off.
    pub consecutive_failures: u32,
    /// Failure-rate threshold in (0, 1].
    pub failure_rate_threshold: f64,
    /// Outcomes the window must hold before either rate rule applies.
    pub minimum_calls: u32,
    /// The sliding window shape.
    pub window: WindowSpec,
    /// First byte later than this (ms) makes a call slow.
    pub slow_ttfb_ms: Millis,
    /// Slow-call-rate threshold in (0, 1].
    pub slow_rate_threshold: f64,
    /// Open-duration schedule.
    pub open: OpenPolicy,
    /// Probe settings.
    pub half_open: HalfOpenPolicy,
    /// What counts as a failure.
    pub failure: FailurePolicy,
    /// Rate limits with a reset hint.
    pub rate_limit: RateLimitPolicy,
    /// One breaker per upstream, or per upstream and model.
    pub scope: Scope,
}

impl BreakerConfig {
    /// The longest open period this breaker can set (backoff or reset hint).
    pub fn longest_open_ms(&self) -> u64 {
        if self.rate_limit.trip_on_reset_hint {
            self.open.max_ms.max(self.rate_limit.max_open_ms).get()
        } else {
            self.open.max_ms.get()
        }
    }
}

/// What a rate-limited response with a reset hint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Open at once for the hinted time (capped), instead of counting.
    pub trip_on_reset_hint: bool,
    /// Cap on a hinted open period, in ms.
    pub max_open_ms: Millis,
}

/// Shape of the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// The last `n` seconds.
    Seconds(u32),
    /// The last `n` outcomes.
    Calls(u32),
}

/// How long an open breaker stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenPolicy {
    /// First open duration in ms.
    pub base_ms: Millis,
    /// Upper bound in ms.
    pub max_ms: Millis,
    /// Growth factor per re-open.
    pub multiplier: f64,
    /// Fractional random spread.
    pub jitter: f64,
}

/// Half-open probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfOpenPolicy {
    /// Probes admitted at once.
    pub permitted_calls: u32,
    /// Successes that close the breaker.
    pub success_threshold: u32,
    /// Permit lifetime in ms.
    pub permit_timeout_ms: Millis,
}

/// Which outcomes count as provider failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Upstream statuses counted as `status` failures.
    pub status: Vec<u16>,
    /// Upstream statuses counted as `rate_limited` failures.
    pub rate_limited: Vec<u16>,
    /// Count connection failures.
    pub connect_failure: bool,
    /// Count resets.
    pub reset: bool,
    /// Count upstream timeouts.
    pub timeout: bool,
    /// Count in-band errors in 200 responses.
    pub in_band_error: bool,
    /// Count SSE streams that end without their terminal event.
    pub stream_truncated: bool,
    /// Client 4xx statuses that count as `status` failures after all.
    pub client_errors_as_failures: Vec<u16>,
}

impl FailurePolicy {
    /// Whether response bodies need scanning for this policy.
    pub fn scans_bodies(&self) -> bool {
        self.in_band_error || self.stream_truncated
    }
}

impl Config {
    /// Parses and validates the filter configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        validate::parse(bytes)
    }

    /// The first route matching `path`, with its index.
    pub fn route_for(&self, path: &str) -> Option<(RouteId, &Route)> {
        self.route_for_request(path, None)
    }

    /// The first route matching the path and model, with its index.
    pub fn route_for_request(&self, path: &str, model: Option<&str>) -> Option<(RouteId, &Route)> {
        RouteId::all(self.routes.len())
            .zip(&self.routes)
            .find(|(_, r)| r.matches_request(path, model))
    }

    /// An upstream by id.
    pub fn upstream(&self, id: UpstreamId) -> Option<&Upstream> {
        self.upstreams.get(id.index())
    }

    /// Every upstream with its id.
    pub fn upstream_ids(&self) -> impl Iterator<Item = (UpstreamId, &Upstream)> {
        UpstreamId::all(self.upstreams.len()).zip(&self.upstreams)
    }

    /// Whether routing a request with this path must wait for its body: a route it
    /// may take names models, rewrites them, or uses model-scoped breakers, and the
    /// model (or the rewrite) needs the body.
    pub fn needs_body(&self, path: &str) -> bool {
        // Under `within_request` the downstream role rewrites nothing: the upstream
        // role does, per attempt.
        let downstream_rewrites = self.failover == Failover::NextRequest;
        self.routes.iter().filter(|r| r.matches(path)).any(|r| {
            let rewrites = downstream_rewrites && r.chain_models.iter().any(Option::is_some);
            let uses_model = !r.models.is_empty()
                || r.chain.iter().any(|&u| {
                    self.upstream(u)
                        .is_some_and(|x| x.breaker.scope == Scope::UpstreamAndModel)
                });
            rewrites || (uses_model && self.model_source == ModelSource::Body)
        })
    }

    /// Whether a route this path may take needs the body's model to match or to pick
    /// a breaker (rather than only to rewrite it).
    pub fn body_model_decides(&self, path: &str) -> bool {
        self.model_source == ModelSource::Body
            && self.routes.iter().filter(|r| r.matches(path)).any(|r| {
                !r.models.is_empty()
                    || r.chain.iter().any(|&u| {
                        self.upstream(u)
                            .is_some_and(|x| x.breaker.scope == Scope::UpstreamAndModel)
                    })
            })
    }

    /// Whether `route` (if known) passes the client's credentials through: then no
    /// gateway key is injected on it.
    pub fn passes_client_credentials(&self, route: Option<RouteId>) -> bool {
        route
            .and_then(|r| self.routes.get(r.index()))
            .is_some_and(|r| r.pass_client_credentials)
    }

    /// Whether the upstream role shapes requests: some upstream has a request block
    /// (credential, path or headers), or some route passes client credentials (the
    /// generated Envoy route removes them; the two roles carry them across).
    pub fn shapes_requests(&self) -> bool {
        self.upstreams.iter().any(|u| !u.request.is_empty())
            || self.routes.iter().any(|r| r.pass_client_credentials)
    }

    /// Whether any route depends on the model at all.
    pub fn uses_models(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !r.models.is_empty() || r.chain_models.iter().any(Option::is_some))
            || self
                .upstreams
                .iter()
                .any(|u| u.breaker.scope == Scope::UpstreamAndModel)
    }

    /// The breaker cells of `upstream` (contiguous: one, or one per model and `*`).
    pub fn cells_of(&self, upstream: UpstreamId) -> impl Iterator<Item = CellId> + Clone {
        let at = |i: usize| self.cell_base.get(i).map(|c| c.index());
        let start = at(upstream.index()).unwrap_or(0);
        let end = at(upstream.index() + 1).unwrap_or(self.cells.len());
        (start..end.max(start)).map(CellId::new)
    }

    /// The breaker cell of `upstream` for a request for `model`.
    pub fn cell(&self, upstream: UpstreamId, model: Option<&str>) -> CellId {
        let base = self
            .cell_base
            .get(upstream.index())
            .map_or(0, |c| c.index());
        let scoped = self
            .upstream(upstream)
            .is_some_and(|u| u.breaker.scope == Scope::UpstreamAndModel);
        if !scoped {
            return CellId::new(base);
        }
        let slot = model
            .and_then(|m| self.models.iter().position(|x| x == m))
            .unwrap_or(self.models.len());
        CellId::new(base + slot)
    }
}

#[cfg(test)]
mod tests;
