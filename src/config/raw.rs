//! The configuration exactly as users write it: serde structs with defaults and
//! `deny_unknown_fields`. Nothing here is validated beyond its JSON type; see
//! [`super::validate`] for the rules.

use super::units::Millis;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Top level of the filter's JSON configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Request header the filter writes and the Envoy route reads (`cluster_header`).
    #[serde(default = "default_route_header")]
    pub route_header: String,
    /// Response header naming the upstream that served the request; "" turns it off.
    #[serde(default = "default_response_header")]
    pub response_header: String,
    /// Routes: which requests get a failover chain.
    pub routes: Vec<RawRoute>,
    /// How long a worker may hold fast successes on a healthy upstream before
    /// writing them to shared data in one update; 0 writes each one.
    #[serde(default = "default_success_flush_ms")]
    pub success_flush_ms: Millis,
    /// How long a worker may admit requests to a closed, quiet breaker from its own
    /// last read of it, without reading shared data again; 0 reads every time.
    #[serde(default = "default_admission_cache_ms")]
    pub admission_cache_ms: Millis,
    /// Breaker settings for every upstream, kept as JSON so per-upstream overrides
    /// can be merged into it before it is typed.
    #[serde(default)]
    pub breaker: serde_json::Value,
    /// Per-upstream overrides.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// In-band error detection on response bodies.
    #[serde(default)]
    pub in_band: RawInBand,
    /// Where a request's model name comes from.
    #[serde(default)]
    pub model: RawModel,
    /// The operator endpoints served by the filter.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Models that get breakers of their own on upstreams with
    /// `breaker.scope: "upstream_and_model"` (besides those named exactly in routes).
    #[serde(default)]
    pub models: Vec<String>,
    /// When a failed request moves to the next upstream: on the next request (today's
    /// behaviour) or within the request, through Envoy retries over aggregate clusters.
    #[serde(default)]
    pub failover: Failover,
    /// Where this filter instance runs: the listener's filter chain, or the aggregate
    /// clusters' upstream filters (one context per attempt).
    #[serde(default)]
    pub role: Role,
    /// `within_request`: the route's `per_request_buffer_limit_bytes` (Envoy's
    /// default is the listener's 1 MiB connection buffer): a failed attempt of a
    /// bigger request is not retried, and is counted as such.
    #[serde(default = "default_retry_buffer_limit_bytes")]
    pub retry_buffer_limit_bytes: u64,
    /// Upstream role: the request header an upstream `header_mutation` filter ahead
    /// of it sets to the attempt's endpoint metadata (`llm_breaker.upstream`); ""
    /// reads the metadata itself (one more host call per attempt).
    #[serde(default)]
    pub attempt_upstream_header: String,
    /// Whether the filter steers traffic (`enforce`), only says what it would do
    /// (`shadow`), or stands aside (`off`).
    #[serde(default)]
    pub mode: Mode,
    /// Breakers shared with other Envoys through etcd ([`super::FleetConfig`]).
    #[serde(default)]
    pub fleet: Option<super::RawFleet>,
}

/// What the filter does with what its breakers decide.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Fail over, rewrite models, reject when all are open.
    #[default]
    Enforce,
    /// Breakers, metrics, logs, status and history run as usual, but every request
    /// goes to its route's primary unchanged and nothing is rejected; counters and
    /// the response header say what enforcement would have done.
    Shadow,
    /// An emergency switch: requests go to their route's primary, nothing is read,
    /// recorded or written but the route header; the admin endpoints still answer.
    Off,
}

impl Mode {
    /// Its name in the configuration and the `status` document.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
        }
    }
}

/// When a failed request moves to the next upstream of its chain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failover {
    /// The failure is the client's; the breaker only steers later requests.
    #[default]
    NextRequest,
    /// Envoy retries a failed attempt on the next admitting upstream (aggregate
    /// cluster `llmb|a|b` with `previous_priorities`); the upstream-log role records
    /// every failed attempt, the downstream role the one that answered.
    WithinRequest,
}

/// Where a filter instance runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The listener's HTTP filter: picks the upstream (or aggregate) per request.
    #[default]
    Downstream,
    /// An upstream HTTP filter of the aggregate clusters: shapes each attempt for the
    /// upstream it goes to (credential, path, headers, model).
    Upstream,
    /// The router's upstream access log (a wasm access logger, called by Envoy only
    /// for attempts that failed the way its retry policy retries): records each such
    /// attempt on the upstream it went to.
    UpstreamLog,
}

/// Operator endpoints: status, health, reset / isolate / release, dashboard.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Serve them at all (off by default: requests under the prefix are then normal
    /// traffic).
    #[serde(default)]
    pub enabled: bool,
    /// Path prefix of the endpoints.
    #[serde(default = "default_admin_prefix")]
    pub path_prefix: String,
    /// Require the token for the read endpoints too.
    #[serde(default)]
    pub protect_reads: bool,
    /// Environment variable of the Wasm VM holding the bearer token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Transitions kept in the history ring.
    #[serde(default = "default_history")]
    pub history: u32,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            enabled: false,
            path_prefix: default_admin_prefix(),
            protect_reads: false,
            token_env: default_token_env(),
            history: default_history(),
        }
    }
}

fn default_admin_prefix() -> String {
    "/_llm_breaker".to_string()
}

fn default_token_env() -> String {
    "LLM_BREAKER_ADMIN_TOKEN".to_string()
}

fn default_history() -> u32 {
    50
}

/// Where the model comes from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// The request body's top-level JSON `model` field.
    #[default]
    Body,
    /// A request header (`model.header`).
    Header,
}

/// Model extraction settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Body or header.
    #[serde(default)]
    pub source: ModelSource,
    /// The header, when `source` is `header`.
    #[serde(default = "default_model_header")]
    pub header: String,
    /// Largest request body held to read (or rewrite) the model.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

impl Default for RawModel {
    fn default() -> Self {
        Self {
            source: ModelSource::Body,
            header: default_model_header(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_model_header() -> String {
    "x-llm-model".to_string()
}

fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

/// Scope of a breaker's state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One breaker per upstream.
    #[default]
    Upstream,
    /// One breaker per upstream and model.
    UpstreamAndModel,
}

/// A failover chain entry: an upstream name, or an upstream with the model to ask
/// it for.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawChainEntry {
    /// Just the upstream (cluster) name.
    Name(String),
    /// Upstream and model.
    Entry(RawChainObject),
}

/// The object form of a chain entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChainObject {
    /// Upstream (cluster) name.
    pub upstream: String,
    /// Model to put in the request body when the request goes to this upstream.
    pub model: Option<String>,
}

impl RawChainEntry {
    /// The upstream name.
    pub fn upstream(&self) -> &str {
        match self {
            RawChainEntry::Name(n) => n,
            RawChainEntry::Entry(e) => &e.upstream,
        }
    }

    /// The model rewrite, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            RawChainEntry::Name(_) => None,
            RawChainEntry::Entry(e) => e.model.as_deref(),
        }
    }
}

/// How much of each response body the filter scans for in-band errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInBand {
    /// Bytes of one response body parsed for error events; past it only the last
    /// bytes of each chunk are looked at (for the stream's terminal event).
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: u64,
}

impl Default for RawInBand {
    fn default() -> Self {
        Self {
            max_scan_bytes: default_max_scan_bytes(),
        }
    }
}

fn default_retry_buffer_limit_bytes() -> u64 {
    1024 * 1024
}

fn default_max_scan_bytes() -> u64 {
    65_536
}

fn default_route_header() -> String {
    "x-llm-breaker-upstream".to_string()
}

fn default_admission_cache_ms() -> Millis {
    Millis(1)
}

fn default_success_flush_ms() -> Millis {
    Millis(250)
}

fn default_response_header() -> String {
    "x-llm-breaker".to_string()
}

/// One route: a match and the ordered list of upstreams to try.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in metrics.
    pub name: String,
    /// Which requests this route takes; an empty match takes every request.
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// Upstream cluster names (or `{"upstream", "model"}` objects) in failover
    /// order; the first is the primary.
    pub upstreams: Vec<RawChainEntry>,
    /// What to do when no upstream in the chain admits the request.
    #[serde(default)]
    pub when_all_open: WhenAllOpen,
    /// The client's own credential headers go to the providers unchanged, and the
    /// gateway's keys are not injected on this route.
    #[serde(default)]
    pub pass_client_credentials: bool,
}

/// Request match of a route. Both fields may be given; both must then match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// The path (without query) starts with this.
    pub path_prefix: Option<String>,
    /// The path (without query) is exactly this.
    pub path: Option<String>,
    /// The request's model matches one of these names or globs (`gpt-4o*`).
    pub models: Option<Vec<String>>,
}

/// Behaviour when every upstream of a route is open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllOpen {
    /// Answer locally with 503, an OpenAI-shaped error body and `retry-after`.
    #[default]
    Reject,
    /// Send the request to the primary anyway.
    FailOpen,
}

/// Per-upstream override block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Partial breaker settings merged over the global `breaker`.
    #[serde(default)]
    pub breaker: serde_json::Value,
    /// Active recovery probe while the breaker is open (opt-in).
    pub probe: Option<RawProbe>,
    /// How each attempt to this upstream is shaped by the upstream role
    /// (`within_request`): the credential header, the path, extra headers.
    #[serde(default)]
    pub request: Option<RawRequestShape>,
}

/// Per-upstream request shaping (non-secret: the key itself is injected by Envoy's
/// `credential_injector` into a staging header, see `docs/providers.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestShape {
    /// The provider's credential header, filled from the staging header.
    pub credential: Option<RawCredential>,
    /// How the client's path becomes the provider's.
    pub path: Option<RawPathRule>,
    /// Extra request headers (e.g. `anthropic-version`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Where the provider wants its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// `authorization`, `api-key`, `x-api-key`, …
    pub header: String,
    /// Put before the key (`"Bearer "`).
    #[serde(default)]
    pub prefix: String,
}

/// A path rewrite: strip a prefix, add one, append a query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRule {
    /// Removed from the start of the path when it is there (`/v1`).
    #[serde(default)]
    pub strip_prefix: String,
    /// Put in front of what is left (`/openai/deployments/gpt-4o`).
    #[serde(default)]
    pub prefix: String,
    /// Appended to the query (`api-version=2024-10-21`).
    #[serde(default)]
    pub query: String,
}

/// A health request sent to an open upstream's cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// HTTP method.
    #[serde(default = "default_probe_method")]
    pub method: String,
    /// Request path.
    pub path: String,
    /// Extra request headers (`host` sets the authority; default: the upstream name).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (e.g. a one-token completion).
    #[serde(default)]
    pub body: String,
    /// Statuses that mean healthy.
    #[serde(default = "default_expect_status")]
    pub expect_status: Vec<u16>,
    /// Probe timeout.
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: Millis,
    /// One probe per this interval, across all workers.
    #[serde(default = "default_probe_interval_ms")]
    pub interval_ms: Millis,
}

fn default_probe_method() -> String {
    "GET".to_string()
}

fn default_expect_status() -> Vec<u16> {
    vec![200]
}

fn default_probe_timeout_ms() -> Millis {
    Millis(5_000)
}

fn default_probe_interval_ms() -> Millis {
    Millis(5_000)
}

mod breaker;
pub use breaker::{
    RawBreaker, RawFailure, RawFailureRate, RawHalfOpen, RawOpen, RawRateLimit, RawSlowCall,
    RawWindow,
};
