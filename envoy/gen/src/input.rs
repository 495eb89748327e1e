//! The generator's two inputs: the filter's JSON (validated by the filter's own parser,
//! read for its route chains) and the provider file (where each upstream lives).

use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;

pub use crate::shaping::{with_shaping, ProviderCredential, ProviderPath};

/// Why the inputs were refused; `Display` names the file's field and the bad value.
#[derive(Debug, PartialEq)]
pub enum InputError {
    /// The filter's own parser refused the JSON (its message, unchanged).
    FilterConfig(String),
    /// The provider file is not valid YAML for [`Providers`].
    ProviderFile(String),
    /// A field of the provider file has a bad value.
    Field { field: String, message: String },
    /// An upstream of the filter's routes has no provider entry.
    MissingProvider { route: String, upstream: String },
    /// Two ordered subsets would get the same cluster name.
    NameCollision(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::FilterConfig(m) => write!(f, "filter configuration: {m}"),
            InputError::ProviderFile(m) => write!(f, "provider file: {m}"),
            InputError::Field { field, message } => write!(f, "provider file: `{field}`: {message}"),
            InputError::MissingProvider { route, upstream } => write!(
                f,
                "provider file: upstream {upstream:?} of route {route:?} has no entry in `providers`"
            ),
            InputError::NameCollision(n) => write!(
                f,
                "two different upstream orders would share the cluster name {n:?}; rename an upstream so no name contains '|'"
            ),
        }
    }
}

impl std::error::Error for InputError {}

/// The provider file (YAML or JSON). Only `providers` is required.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    /// One entry per upstream name used in the filter's routes.
    pub providers: Vec<Provider>,
    /// The module of the upstream log and the upstream role.
    #[serde(default)]
    pub wasm: Wasm,
    /// Retry settings of the generated aggregate clusters.
    #[serde(default)]
    pub retry: Retry,
    /// Istio-only settings (namespace, gateway selector, the route to patch).
    #[serde(default)]
    pub istio: Istio,
}

/// Where one upstream lives.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The upstream name, as in the filter's `routes[].upstreams`; also the cluster name.
    pub name: String,
    /// An IP address (a STATIC cluster) or a DNS name (a LOGICAL_DNS cluster).
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Originate TLS to it.
    #[serde(default)]
    pub tls: bool,
    /// SNI for TLS; defaults to `address`. Only with `tls`.
    #[serde(default)]
    pub sni: Option<String>,
    /// Connect timeout in ms (default 5000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
    /// For a DNS name: how often Envoy re-resolves it, in ms (Envoy's default 5000).
    /// Small values suit containers that come back with another address.
    #[serde(default)]
    pub dns_refresh_ms: Option<u32>,
    /// With `tls`: the CA bundle that verifies the provider's certificate.
    #[serde(default = "default_ca_file")]
    pub ca_file: String,
    /// The gateway's key for this provider: an SDS file Envoy reads (and re-reads when
    /// its directory changes), and the header the provider wants it in.
    #[serde(default)]
    pub credential: Option<ProviderCredential>,
    /// How the client's path becomes this provider's (Azure's deployment path).
    #[serde(default)]
    pub path: Option<ProviderPath>,
    /// Extra request headers for this provider (`anthropic-version`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_ca_file() -> String {
    "/etc/ssl/certs/ca-certificates.crt".into()
}

fn default_connect_timeout_ms() -> u32 {
    5000
}

/// The module of the upstream log and the upstream role: same `vm_id` as the
/// downstream filter.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Wasm {
    /// Must equal the downstream filter's `vm_config.vm_id` (shared breaker state).
    pub vm_id: String,
    /// Envoy output: `code.local.filename`.
    pub filename: String,
    /// Istio output: `code.remote.http_uri.uri` (an `oci://` or `https://` URL).
    pub url: String,
    /// Istio output: the module's sha256 (optional).
    pub sha256: Option<String>,
}

impl Default for Wasm {
    fn default() -> Self {
        Wasm {
            vm_id: "llm_breaker".into(),
            filename: "target/wasm32-wasip1/release/llm_breaker.wasm".into(),
            url: "oci://registry.example.com/llm-breaker:0.1.0".into(),
            sha256: None,
        }
    }
}

/// Retry settings of the aggregate clusters.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// `circuit_breakers.thresholds[DEFAULT].max_retries` of every aggregate cluster: the
    /// retries that may be in flight at once through it (Envoy's default is 3).
    pub max_retries: u32,
    /// Retry back-off base interval in ms (Envoy's default is 25): the next attempt goes
    /// to another provider, so waiting buys nothing.
    pub backoff_base_ms: u32,
    /// Statuses retried besides 5xx.
    pub retriable_status_codes: Vec<u16>,
    /// The route's `retry_policy.per_try_timeout`, in ms: each attempt's bound on the
    /// time to the response headers (300 s, as in the example: a non-streaming completion
    /// sends its headers only when it is done).
    pub per_try_timeout_ms: u32,
    /// The route's `retry_policy.per_try_idle_timeout`, in ms: each attempt's bound on
    /// silence, so a stream that stalls mid-way is cut (a `timeout` failure). Per attempt,
    /// not the route's `idle_timeout`, which would span every attempt of a request. Keep
    /// it at least `per_try_timeout_ms`: the idle timer also runs while headers are awaited.
    pub per_try_idle_timeout_ms: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_retries: 1024,
            backoff_base_ms: 1,
            retriable_status_codes: vec![429],
            per_try_timeout_ms: 300_000,
            per_try_idle_timeout_ms: 300_000,
        }
    }
}

/// Istio-only settings.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Istio {
    /// Namespace of the EnvoyFilter (the gateway's).
    pub namespace: String,
    /// `workloadSelector.labels` of the gateway.
    pub selector: std::collections::BTreeMap<String, String>,
    /// Name of the VirtualService http route that becomes the `cluster_header` route.
    pub route_name: String,
    /// Where the gateway pod has the module for the router's upstream log (a wasm
    /// access logger, which Istio can't deliver by ECDS as it does filters): mounted
    /// there, e.g. from a ConfigMap (envoy/istio/gateway-values.yaml).
    pub upstream_log_module: String,
}

impl Default for Istio {
    fn default() -> Self {
        Istio {
            namespace: "llm-gateway".into(),
            selector: [("istio".to_string(), "llm-gateway".to_string())]
                .into_iter()
                .collect(),
            route_name: "llm-breaker".into(),
            upstream_log_module: "/etc/llm-breaker/module/llm_breaker.wasm".into(),
        }
    }
}

/// What the generator needs from the filter's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterView {
    /// The header the downstream role writes and the route reads (`route_header`).
    pub route_header: String,
    /// Each route's name and chain of upstream names, primary first.
    pub chains: Vec<(String, Vec<String>)>,
    /// The upstream role's configuration: the same JSON with `"role": "upstream"` added
    /// (compact, keys sorted), so both roles always run the same breakers; with the
    /// providers' request blocks once [`with_shaping`] ran.
    pub upstream_config: String,
    /// Upstreams some chain entry gives a model (their attempts' bodies are rewritten
    /// by the upstream role).
    pub models: std::collections::BTreeSet<String>,
    /// Some route passes the client's credentials through (the upstream role puts them
    /// back on every attempt, whatever the provider).
    pub passthrough: bool,
    /// The response header the route's `response_headers_to_add` names the answering
    /// upstream in: the filter's `response_header`, which the downstream role then
    /// overwrites with its summary (no extra host call), or
    /// [`llm_breaker::worker::within::SERVED_HEADER`] when that is off.
    pub served_header: String,
}

impl FilterView {
    /// The upstream log's configuration: the upstream role's with `"role":
    /// "upstream_log"` (and no `attempt_upstream_header`).
    pub fn upstream_log_config(&self) -> String {
        let mut doc: serde_json::Value =
            serde_json::from_str(&self.upstream_config).unwrap_or_default();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("role".into(), serde_json::Value::from("upstream_log"));
            obj.remove("attempt_upstream_header");
        }
        doc.to_string()
    }
}

/// Validates `json` with the filter's own parser, then reads the route chains from the raw
/// JSON (the parsed `Config`'s internals are not relied on).
pub fn read_filter(json: &[u8]) -> Result<FilterView, InputError> {
    let config = llm_breaker::config::Config::parse(json)
        .map_err(|e| InputError::FilterConfig(e.to_string()))?;
    let served_header =
        llm_breaker::worker::within::served_header(config.response_header.as_deref()).to_string();
    let mut doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| InputError::FilterConfig(e.to_string()))?;
    let route_header = doc
        .get("route_header")
        .and_then(|v| v.as_str())
        .unwrap_or("x-llm-breaker-upstream")
        .to_string();
    let mut chains = Vec::new();
    let mut models = std::collections::BTreeSet::new();
    let mut passthrough = false;
    for route in doc
        .get("routes")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        passthrough |= route
            .get("pass_client_credentials")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let name = route
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let chain = route
            .get("upstreams")
            .and_then(|u| u.as_array())
            .into_iter()
            .flatten()
            .filter_map(|entry| match entry {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => {
                    let up = o.get("upstream").and_then(|u| u.as_str())?;
                    if o.get("model").is_some() {
                        models.insert(up.to_string());
                    }
                    Some(up.to_string())
                }
                _ => None,
            })
            .collect();
        chains.push((name, chain));
    }

    if let Some(obj) = doc.as_object_mut() {
        obj.insert("role".into(), serde_json::Value::from("upstream"));
        obj.insert(
            "attempt_upstream_header".into(),
            serde_json::Value::from(llm_breaker::config::ATTEMPT_UPSTREAM_HEADER),
        );
    }
    let upstream_config =
        serde_json::to_string(&doc).map_err(|e| InputError::FilterConfig(e.to_string()))?;
    // The upstream role must load too: it needs `failover: "within_request"`.
    llm_breaker::config::Config::parse(upstream_config.as_bytes())
        .map_err(|e| InputError::FilterConfig(e.to_string()))?;
    Ok(FilterView {
        route_header,
        chains,
        upstream_config,
        models,
        passthrough,
        served_header,
    })
}

/// One provider's fields (its name is checked by the caller, for uniqueness).
fn check_provider(i: usize, prov: &Provider) -> Result<(), InputError> {
    let field = |f: &str| format!("providers[{i}].{f}");
    if prov.address.is_empty() {
        return Err(InputError::Field {
            field: field("address"),
            message: "must not be empty".into(),
        });
    }
    if prov.port == 0 {
        return Err(InputError::Field {
            field: field("port"),
            message: "must be 1-65535, got 0".into(),
        });
    }
    if prov.sni.is_some() && !prov.tls {
        return Err(InputError::Field {
            field: field("sni"),
            message: "only with `tls: true`".into(),
        });
    }
    if prov.connect_timeout_ms == 0 {
        return Err(InputError::Field {
            field: field("connect_timeout_ms"),
            message: "must be above 0".into(),
        });
    }
    if prov.tls && prov.ca_file.is_empty() {
        return Err(InputError::Field {
            field: field("ca_file"),
            message: "must not be empty with `tls: true`".into(),
        });
    }
    if prov.dns_refresh_ms == Some(0) {
        return Err(InputError::Field {
            field: field("dns_refresh_ms"),
            message: "must be above 0".into(),
        });
    }
    if let Some(c) = &prov.credential {
        // A relative path is Envoy's working directory's (the demo's, run from the
        // repository root); production configs use absolute ones.
        if c.sds_file.trim().is_empty() {
            return Err(InputError::Field {
                field: field("credential.sds_file"),
                message: "must not be empty".into(),
            });
        }
        if c.watched_directory
            .as_ref()
            .is_some_and(|d| d.trim().is_empty())
        {
            return Err(InputError::Field {
                field: field("credential.watched_directory"),
                message: "must not be empty".into(),
            });
        }
    }
    Ok(())
}

/// Parses the provider file and checks it against the filter's chains.
pub fn read_providers(text: &str, filter: &FilterView) -> Result<Providers, InputError> {
    let p: Providers =
        serde_yaml::from_str(text).map_err(|e| InputError::ProviderFile(e.to_string()))?;
    let mut seen = BTreeSet::new();
    for (i, prov) in p.providers.iter().enumerate() {
        if prov.name.is_empty() || !seen.insert(prov.name.as_str()) {
            return Err(InputError::Field {
                field: format!("providers[{i}].name"),
                message: format!("empty or duplicate name {:?}", prov.name),
            });
        }
        check_provider(i, prov)?;
    }
    if p.wasm.vm_id.is_empty() {
        return Err(InputError::Field {
            field: "wasm.vm_id".into(),
            message: "must not be empty".into(),
        });
    }
    if p.retry.backoff_base_ms == 0
        || p.retry.per_try_timeout_ms == 0
        || p.retry.per_try_idle_timeout_ms == 0
    {
        return Err(InputError::Field {
            field: "retry".into(),
            message:
                "backoff_base_ms, per_try_timeout_ms and per_try_idle_timeout_ms must be above 0"
                    .into(),
        });
    }
    // The upstream log is called for 5xx, 429 and no response only (its access-log
    // filter and the downstream role agree on that set): a status retried outside it
    // would fail attempts nobody records.
    if let Some(c) = p
        .retry
        .retriable_status_codes
        .iter()
        .find(|&&c| c != 429 && !(500..=599).contains(&c))
    {
        return Err(InputError::Field {
            field: "retry.retriable_status_codes".into(),
            message: format!(
                "only 429 and 5xx statuses (the upstream log records those failed attempts), got {c}"
            ),
        });
    }
    for (route, chain) in &filter.chains {
        for upstream in chain {
            if !seen.contains(upstream.as_str()) {
                return Err(InputError::MissingProvider {
                    route: route.clone(),
                    upstream: upstream.clone(),
                });
            }
        }
    }
    Ok(p)
}
