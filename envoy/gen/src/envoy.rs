//! The Envoy clusters: one per provider (endpoint metadata naming the upstream) and one
//! aggregate cluster per ordered subset, which carries the retry policy, the raised
//! `max_retries`, the `header_mutation` naming the member that answered and, where
//! attempts are shaped, the upstream role's wasm filter; and the router's upstream log
//! (the upstream-log role, for failed attempts only).
//!
//! Why there (measured in Envoy 1.40, docs/within-request.md): the retry state and the
//! `max_retries` limit are the route's cluster's, i.e. the aggregate's; upstream filters in
//! `HttpProtocolOptions.http_filters` are taken from the aggregate too (the provider
//! cluster's own are not run); a cluster `retry_policy` overrides the route's, except for
//! the timeouts, which stay the route's (`per_try_timeout`).

use crate::credentials;
use crate::input::FilterView;
use crate::input::{Provider, Providers};
use llm_breaker::config::ATTEMPT_UPSTREAM_HEADER;
use llm_breaker::worker::within::GATEWAY_KEY_SUFFIX;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// Endpoint metadata namespace and key naming the upstream: copied per shaped
/// attempt into `x-llm-breaker-attempt-upstream` by
/// `%UPSTREAM_METADATA(["llm_breaker","upstream"])%` (the
/// `llm-breaker-attempt-upstream` filter), read by the upstream log as the property
/// `xds.upstream_host_metadata.filter_metadata.llm_breaker.upstream`.
pub use llm_breaker::worker::within::{
    METADATA_NS, METADATA_SERVED as SERVED_KEY, METADATA_UPSTREAM as METADATA_KEY,
};
/// Name of the upstream wasm filter (and of its ECDS resource in Istio).
pub const UPSTREAM_FILTER: &str = "llm-breaker-upstream";
/// Name of the router's upstream access log (the upstream-log role).
pub const UPSTREAM_LOG: &str = "llm-breaker-upstream-log";

/// Builds a mapping keeping the given key order.
pub fn map<const N: usize>(kv: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in kv {
        m.insert(Value::from(k), v);
    }
    Value::Mapping(m)
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn seq(v: Vec<Value>) -> Value {
    Value::Sequence(v)
}

fn duration_ms(ms: u32) -> Value {
    if ms % 1000 == 0 {
        s(&format!("{}s", ms / 1000))
    } else {
        s(&format!("{}.{:03}s", ms / 1000, ms % 1000))
    }
}

fn is_ip(address: &str) -> bool {
    address.parse::<std::net::IpAddr>().is_ok()
}

/// One provider's cluster.
pub fn provider_cluster(p: &Provider) -> Value {
    let served = match p.credential {
        Some(_) => format!("{}{GATEWAY_KEY_SUFFIX}", p.name),
        None => p.name.clone(),
    };
    let mut ep = Mapping::new();
    ep.insert(
        s("address"),
        map([(
            "socket_address",
            map([
                ("address", s(&p.address)),
                ("port_value", Value::from(p.port)),
            ]),
        )]),
    );
    if !is_ip(&p.address) {
        // What `auto_host_rewrite` writes into Host.
        ep.insert(s("hostname"), s(&p.address));
    }
    let endpoint = map([
        ("endpoint", Value::Mapping(ep)),
        (
            "metadata",
            map([(
                "filter_metadata",
                map([(
                    METADATA_NS,
                    map([(METADATA_KEY, s(&p.name)), (SERVED_KEY, s(&served))]),
                )]),
            )]),
        ),
    ]);
    let mut c = Mapping::new();
    c.insert(s("name"), s(&p.name));
    if is_ip(&p.address) {
        c.insert(s("type"), s("STATIC"));
    } else {
        c.insert(s("type"), s("LOGICAL_DNS"));
        c.insert(s("dns_lookup_family"), s("V4_PREFERRED"));
        if let Some(ms) = p.dns_refresh_ms {
            c.insert(s("dns_refresh_rate"), duration_ms(ms));
        }
    }
    c.insert(s("connect_timeout"), duration_ms(p.connect_timeout_ms));
    c.insert(
        s("load_assignment"),
        map([
            ("cluster_name", s(&p.name)),
            (
                "endpoints",
                seq(vec![map([("lb_endpoints", seq(vec![endpoint]))])]),
            ),
        ]),
    );
    if p.tls {
        let sni = p.sni.clone().unwrap_or_else(|| p.address.clone());
        c.insert(
            s("transport_socket"),
            map([
                ("name", s("envoy.transport_sockets.tls")),
                (
                    "typed_config",
                    map([
                        ("@type", s("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")),
                        ("sni", s(&sni)),
                        // Verify the provider's certificate: the CA bundle, and the SNI
                        // name among its subject alternative names.
                        (
                            "common_tls_context",
                            map([(
                                "validation_context",
                                map([
                                    ("trusted_ca", map([("filename", s(&p.ca_file))])),
                                    (
                                        "match_typed_subject_alt_names",
                                        seq(vec![map([
                                            ("san_type", s("DNS")),
                                            ("matcher", map([("exact", s(&sni))])),
                                        ])]),
                                    ),
                                ]),
                            )]),
                        ),
                    ]),
                ),
            ]),
        );
    }
    Value::Mapping(c)
}

/// How the upstream wasm filter's module is referenced.
pub enum FilterSource<'a> {
    /// Inline, with `code.local.filename` (plain Envoy), and this configuration.
    Local(&'a Providers, &'a str),
    /// Through ECDS over ADS (Istio's `EXTENSION_CONFIG`).
    Discovery,
}

/// The upstream role's wasm filter config (`envoy.extensions.filters.http.wasm.v3.Wasm`),
/// with `code` given.
pub fn wasm_config(p: &Providers, upstream_config: &str, code: Value) -> Value {
    plugin(
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        UPSTREAM_FILTER,
        p,
        upstream_config,
        code,
        true,
    )
}

/// A wasm plugin config of type `type_url` named `name` (same VM as every other role:
/// same `vm_id`, runtime and code, so the same shared data and VM per worker), with
/// `config` (the filter's JSON plus its `role`).
/// `holds_headers`: the upstream role, which holds an attempt's headers until its
/// body is in.
fn plugin(
    type_url: &str,
    name: &str,
    p: &Providers,
    config: &str,
    code: Value,
    holds_headers: bool,
) -> Value {
    let mut c = Mapping::new();
    c.insert(s("name"), s(name));
    c.insert(s("root_id"), s("llm_breaker"));
    if holds_headers {
        // Hold the request headers until the body is in, so the per-attempt model
        // rewrite can fix content-length.
        c.insert(s("allow_on_headers_stop_iteration"), Value::from(true));
    }
    // A VM that fails at run time lets attempts through unshaped and unrecorded, rather
    // than failing every request through an aggregate.
    c.insert(s("failure_policy"), s("FAIL_OPEN"));
    c.insert(
        s("vm_config"),
        map([
            ("vm_id", s(&p.wasm.vm_id)),
            ("runtime", s("envoy.wasm.runtime.v8")),
            ("code", code),
        ]),
    );
    c.insert(
        s("configuration"),
        map([
            (
                "@type",
                s("type.googleapis.com/google.protobuf.StringValue"),
            ),
            ("value", s(config)),
        ]),
    );
    map([("@type", s(type_url)), ("config", Value::Mapping(c))])
}

/// The router's `upstream_log`: the upstream-log role as a wasm access logger, called
/// only for attempts that got a 5xx or 429 or no response (the statuses
/// `llm_breaker::worker::within::upstream_log_records` names), with `code` given.
pub fn upstream_log(p: &Providers, filter: &FilterView, code: Value) -> Value {
    let status = |op: &str, v: u64, key: &str| {
        map([(
            "status_code_filter",
            map([(
                "comparison",
                map([
                    ("op", s(op)),
                    (
                        "value",
                        map([("default_value", Value::from(v)), ("runtime_key", s(key))]),
                    ),
                ]),
            )]),
        )])
    };
    seq(vec![map([
        ("name", s(UPSTREAM_LOG)),
        (
            "filter",
            map([(
                "or_filter",
                map([(
                    "filters",
                    seq(vec![
                        status("GE", 500, "llm_breaker.upstream_log.ge"),
                        status("EQ", 429, "llm_breaker.upstream_log.rate_limited"),
                        status("EQ", 0, "llm_breaker.upstream_log.no_response"),
                    ]),
                )]),
            )]),
        ),
        (
            "typed_config",
            plugin(
                "type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
                UPSTREAM_LOG,
                p,
                &filter.upstream_log_config(),
                code,
                false,
            ),
        ),
    ])])
}

/// The local module (`wasm.filename`).
pub fn local_code(p: &Providers) -> Value {
    map([("local", map([("filename", s(&p.wasm.filename))]))])
}

fn upstream_filter(source: &FilterSource) -> Value {
    match source {
        FilterSource::Local(p, config) => map([
            ("name", s(UPSTREAM_FILTER)),
            ("typed_config", wasm_config(p, config, local_code(p))),
        ]),
        FilterSource::Discovery => map([
            ("name", s(UPSTREAM_FILTER)),
            (
                "config_discovery",
                map([
                    (
                        "config_source",
                        map([("ads", map([])), ("initial_fetch_timeout", s("0s"))]),
                    ),
                    // istio-agent replaces a module it can't fetch by an allow-all RBAC
                    // filter (fail open); Envoy rejects a type not listed here.
                    (
                        "type_urls",
                        seq(vec![
                            s("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
                            s("type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"),
                        ]),
                    ),
                ]),
            ),
        ]),
    }
}

/// Where attempts are shaped, the aggregate's `header_mutation` ahead of the upstream
/// role: the attempt's endpoint metadata into [`ATTEMPT_UPSTREAM_HEADER`] (a client's
/// value removed first), which the role reads with the request headers it reads anyway
/// instead of reading the metadata (measured: 14k fewer Envoy instructions per attempt;
/// this filter costs about 7k).
fn attempt_upstream() -> Value {
    map([
        ("name", s("llm-breaker-attempt-upstream")),
        (
            "typed_config",
            map([
                (
                    "@type",
                    s("type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"),
                ),
                (
                    "mutations",
                    map([(
                        "request_mutations",
                        seq(vec![
                            map([("remove", s(ATTEMPT_UPSTREAM_HEADER))]),
                            map([("append", overwrite(ATTEMPT_UPSTREAM_HEADER, METADATA_KEY))]),
                        ]),
                    )]),
                ),
            ]),
        ),
    ])
}

/// A `HeaderValueOption` overwriting `header` with the endpoint metadata's `key`.
fn overwrite(header: &str, key: &str) -> Value {
    let metadata = format!("%UPSTREAM_METADATA([\"{METADATA_NS}\",\"{key}\"])%");
    map([
        ("header", map([("key", s(header)), ("value", s(&metadata))])),
        ("append_action", s("OVERWRITE_IF_EXISTS_OR_ADD")),
    ])
}

/// The route's `response_headers_to_add`: the answering upstream's endpoint metadata
/// ([`SERVED_KEY`]) into `filter.served_header` (the filter's `response_header`, which
/// the downstream role overwrites with its summary, else `x-llm-breaker-attempt`), over
/// anything the provider sent. Envoy's router adds it to the response it forwards, once
/// per request (a router's own reply after a failed last attempt names that attempt's
/// upstream); the downstream role reads it with the response headers it reads anyway.
pub fn response_headers_to_add(filter: &FilterView) -> Value {
    seq(vec![overwrite(&filter.served_header, SERVED_KEY)])
}

/// An aggregate's upstream filters: where attempts are shaped (`shaped`), the members'
/// credential injectors, the `header_mutation` naming the attempt's upstream, the
/// upstream role and the staging-header removal (see [`crate::credentials`]); the codec
/// last.
fn http_filters(
    members: &[String],
    p: &Providers,
    source: &FilterSource,
    shaped: bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    if shaped {
        out.extend(
            members
                .iter()
                .filter_map(|m| p.providers.iter().find(|x| &x.name == m))
                .filter_map(credentials::injector),
        );
        out.push(attempt_upstream());
        out.push(upstream_filter(source));
        out.push(credentials::strip_staging(p));
    }
    out.push(map([
        ("name", s("envoy.filters.http.upstream_codec")),
        (
            "typed_config",
            map([(
                "@type",
                s("type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"),
            )]),
        ),
    ]));
    out
}

/// One aggregate cluster over `members`, in order.
pub fn aggregate_cluster(
    name: &str,
    members: &[String],
    p: &Providers,
    source: &FilterSource,
    shaped: bool,
) -> Value {
    let retries = members.len().saturating_sub(1) as u64;
    let mut retry_on = String::from("5xx,reset,connect-failure");
    if !p.retry.retriable_status_codes.is_empty() {
        retry_on.push_str(",retriable-status-codes");
    }
    let mut policy = Mapping::new();
    policy.insert(s("retry_on"), s(&retry_on));
    if !p.retry.retriable_status_codes.is_empty() {
        policy.insert(
            s("retriable_status_codes"),
            seq(p
                .retry
                .retriable_status_codes
                .iter()
                .map(|c| Value::from(*c))
                .collect()),
        );
    }
    policy.insert(s("num_retries"), Value::from(retries));
    policy.insert(
        s("retry_priority"),
        map([
            ("name", s("envoy.retry_priorities.previous_priorities")),
            (
                "typed_config",
                map([
                    (
                        "@type",
                        s("type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"),
                    ),
                    ("update_frequency", Value::from(1)),
                ]),
            ),
        ]),
    );
    let base = p.retry.backoff_base_ms;
    policy.insert(
        s("retry_back_off"),
        map([
            ("base_interval", duration_ms(base)),
            ("max_interval", duration_ms(base.saturating_mul(4))),
        ]),
    );
    map([
        ("name", s(name)),
        ("connect_timeout", s("5s")),
        ("lb_policy", s("CLUSTER_PROVIDED")),
        (
            "circuit_breakers",
            map([(
                "thresholds",
                seq(vec![map([("priority", s("DEFAULT")), ("max_retries", Value::from(p.retry.max_retries))])]),
            )]),
        ),
        (
            "typed_extension_protocol_options",
            map([(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                map([
                    ("@type", s("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")),
                    ("explicit_http_config", map([("http_protocol_options", map([]))])),
                    ("retry_policy", Value::Mapping(policy)),
                    ("http_filters", seq(http_filters(members, p, source, shaped))),
                ]),
            )]),
        ),
        (
            "cluster_type",
            map([
                ("name", s("envoy.clusters.aggregate")),
                (
                    "typed_config",
                    map([
                        ("@type", s("type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig")),
                        ("clusters", seq(members.iter().map(|m| s(m)).collect())),
                    ]),
                ),
            ]),
        ),
    ])
}

/// Every cluster: the providers used by some route (sorted by name), then the aggregates
/// (sorted by name). An aggregate gets the upstream role when some member's requests
/// are shaped or some chain entry gives it a model, and every aggregate does when some
/// route passes the client's credentials through.
pub fn clusters(
    p: &Providers,
    aggregates: &BTreeMap<String, Vec<String>>,
    source: &FilterSource,
    filter: &FilterView,
) -> Vec<Value> {
    let shaped = |members: &[String]| {
        filter.passthrough
            || members.iter().any(|m| {
                filter.models.contains(m) || p.providers.iter().any(|x| &x.name == m && x.shaped())
            })
    };
    let mut providers: Vec<&Provider> = p.providers.iter().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Value> = providers.into_iter().map(provider_cluster).collect();
    out.extend(
        aggregates
            .iter()
            .map(|(name, members)| aggregate_cluster(name, members, p, source, shaped(members))),
    );
    out
}

/// The route action pieces the route naming the aggregates needs (the retry policy's
/// timeouts stay on the route: a cluster's `per_try_timeout` is ignored).
pub fn route_action(route_header: &str, p: &Providers) -> Value {
    map([
        ("cluster_header", s(route_header)),
        // Host per attempt from the attempt's endpoint `hostname` (set for providers
        // named by DNS): measured in Envoy 1.40, a retry through the aggregate gets the
        // next member's hostname. Providers given by IP keep the client's Host.
        ("auto_host_rewrite", Value::from(true)),
        ("timeout", s("0s")),
        (
            "retry_policy",
            map([
                (
                    "retry_on",
                    s("5xx,reset,connect-failure,retriable-status-codes"),
                ),
                (
                    "retriable_status_codes",
                    seq(p
                        .retry
                        .retriable_status_codes
                        .iter()
                        .map(|c| Value::from(*c))
                        .collect()),
                ),
                ("per_try_timeout", duration_ms(p.retry.per_try_timeout_ms)),
                (
                    "per_try_idle_timeout",
                    duration_ms(p.retry.per_try_idle_timeout_ms),
                ),
            ]),
        ),
    ])
}
