//! The Envoy clusters: one per provider (endpoint metadata naming the upstream) and one
//! aggregate cluster per ordered subset, which carries the retry policy, the raised
//! `max_retries` and the upstream role's wasm filter.
//!
//! Why there (measured in Envoy 1.40, docs/within-request.md): the retry state and the
//! `max_retries` limit are the route's cluster's, i.e. the aggregate's; upstream filters in
//! `HttpProtocolOptions.http_filters` are taken from the aggregate too (the provider
//! cluster's own are not run); a cluster `retry_policy` overrides the route's, except for
//! the timeouts, which stay the route's (`per_try_timeout`).

use crate::credentials;
use crate::input::{Provider, Providers};
use llm_breaker::config::ATTEMPT_UPSTREAM_HEADER;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// Endpoint metadata namespace and key naming the upstream: copied per attempt into
/// `x-llm-breaker-attempt-upstream` by `%UPSTREAM_METADATA(["llm_breaker","upstream"])%`
/// (the `llm-breaker-attempt-upstream` filter), read as the property
/// `xds.upstream_host_metadata.filter_metadata.llm_breaker.upstream` without it.
pub const METADATA_NS: &str = "llm_breaker";
/// See [`METADATA_NS`].
pub const METADATA_KEY: &str = "upstream";
/// Name of the upstream wasm filter (and of its ECDS resource in Istio).
pub const UPSTREAM_FILTER: &str = "llm-breaker-upstream";

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
                map([(METADATA_NS, map([(METADATA_KEY, s(&p.name))]))]),
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
    map([
        (
            "@type",
            s("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
        ),
        (
            "config",
            map([
                ("name", s(UPSTREAM_FILTER)),
                ("root_id", s("llm_breaker")),
                // Hold the request headers until the body is in, so the per-attempt model
                // rewrite can fix content-length.
                ("allow_on_headers_stop_iteration", Value::from(true)),
                // A VM that fails at run time lets attempts through unrecorded, rather
                // than failing every request through an aggregate.
                ("failure_policy", s("FAIL_OPEN")),
                (
                    "vm_config",
                    map([
                        ("vm_id", s(&p.wasm.vm_id)),
                        ("runtime", s("envoy.wasm.runtime.v8")),
                        ("code", code),
                    ]),
                ),
                (
                    "configuration",
                    map([
                        (
                            "@type",
                            s("type.googleapis.com/google.protobuf.StringValue"),
                        ),
                        // The filter's JSON plus `"role": "upstream"` (issue 10's filter side).
                        ("value", s(upstream_config)),
                    ]),
                ),
            ]),
        ),
    ])
}

fn upstream_filter(source: &FilterSource) -> Value {
    match source {
        FilterSource::Local(p, config) => map([
            ("name", s(UPSTREAM_FILTER)),
            (
                "typed_config",
                wasm_config(
                    p,
                    config,
                    map([("local", map([("filename", s(&p.wasm.filename))]))]),
                ),
            ),
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

/// The `header_mutation` ahead of the upstream role: the attempt's endpoint metadata
/// into [`ATTEMPT_UPSTREAM_HEADER`] (a client's value removed first), which the role
/// reads with the request headers it reads anyway instead of reading the metadata
/// (measured: 14k fewer Envoy instructions per attempt, this filter costs 7k).
fn attempt_upstream() -> Value {
    let metadata = format!("%UPSTREAM_METADATA([\"{METADATA_NS}\",\"{METADATA_KEY}\"])%");
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
                            map([(
                                "append",
                                map([
                                    (
                                        "header",
                                        map([
                                            ("key", s(ATTEMPT_UPSTREAM_HEADER)),
                                            ("value", s(&metadata)),
                                        ]),
                                    ),
                                    ("append_action", s("OVERWRITE_IF_EXISTS_OR_ADD")),
                                ]),
                            )]),
                        ]),
                    )]),
                ),
            ]),
        ),
    ])
}

/// An aggregate's upstream filters: the members' credential injectors, the
/// attempt's upstream name, the upstream role, the staging-header removal, the
/// codec (see [`crate::credentials`]).
fn http_filters(members: &[String], p: &Providers, source: &FilterSource) -> Vec<Value> {
    let mut out: Vec<Value> = members
        .iter()
        .filter_map(|m| p.providers.iter().find(|x| &x.name == m))
        .filter_map(credentials::injector)
        .collect();
    out.push(attempt_upstream());
    out.push(upstream_filter(source));
    out.push(credentials::strip_staging(p));
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
                    ("http_filters", seq(http_filters(members, p, source))),
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
/// (sorted by name).
pub fn clusters(
    p: &Providers,
    aggregates: &BTreeMap<String, Vec<String>>,
    source: &FilterSource,
) -> Vec<Value> {
    let mut providers: Vec<&Provider> = p.providers.iter().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Value> = providers.into_iter().map(provider_cluster).collect();
    out.extend(
        aggregates
            .iter()
            .map(|(name, members)| aggregate_cluster(name, members, p, source)),
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
