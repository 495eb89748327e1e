//! The Istio output: one `EnvoyFilter` that adds the same clusters as the Envoy output
//! (cluster `ADD`), turns the VirtualService route named `istio.route_name` into a
//! `cluster_header` route with the per-try timeout (`HTTP_ROUTE` `MERGE`), delivers the
//! upstream role's wasm module through ECDS (`EXTENSION_CONFIG`), which the aggregate
//! clusters' `http_filters` reference, and adds the upstream log to the gateway's router
//! (`HTTP_FILTER` `MERGE`; its module is a file mounted into the pod at
//! `istio.upstream_log_module`: access loggers have no ECDS). Istio-owned clusters are not
//! patched.
//!
//! Credentials: the aggregates carry the same `credential_injector` filters as in
//! plain Envoy, reading file-based SDS secrets; in Istio those files are mounted into
//! the gateway pod (a Kubernetes Secret volume; its atomic `..data` swap is a move in
//! the watched directory, so a rotated key is re-read). See `docs/providers.md`.

use crate::credentials;
use crate::envoy::{self, map, FilterSource, UPSTREAM_FILTER};
use crate::input::{FilterView, Providers};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

fn s(v: &str) -> Value {
    Value::from(v)
}

/// The `EnvoyFilter` manifest.
pub fn envoy_filter(
    p: &Providers,
    filter: &FilterView,
    aggregates: &BTreeMap<String, Vec<String>>,
) -> Value {
    let context = "GATEWAY";
    // A WasmPlugin's VM has no vm_id (Istio's `buildVMConfig` sets none and the API has no
    // field for it), and shared data is keyed by vm_id: the upstream role must have none
    // too, or it records on breakers the downstream role never reads.
    let mut p = p.clone();
    p.wasm.vm_id = String::new();
    let p = &p;
    let mut patches = Vec::new();
    let mut code = Mapping::new();
    code.insert(
        s("remote"),
        match &p.wasm.sha256 {
            Some(sum) => map([
                (
                    "http_uri",
                    map([("uri", s(&p.wasm.url)), ("timeout", s("30s"))]),
                ),
                ("sha256", s(sum)),
            ]),
            None => map([(
                "http_uri",
                map([("uri", s(&p.wasm.url)), ("timeout", s("30s"))]),
            )]),
        },
    );
    patches.push(map([
        ("applyTo", s("EXTENSION_CONFIG")),
        (
            "patch",
            map([
                ("operation", s("ADD")),
                (
                    "value",
                    map([
                        ("name", s(UPSTREAM_FILTER)),
                        (
                            "typed_config",
                            envoy::wasm_config(p, &filter.upstream_config, Value::Mapping(code)),
                        ),
                    ]),
                ),
            ]),
        ),
    ]));
    for cluster in envoy::clusters(p, aggregates, &FilterSource::Discovery, filter) {
        patches.push(map([
            ("applyTo", s("CLUSTER")),
            ("match", map([("context", s(context))])),
            ("patch", map([("operation", s("ADD")), ("value", cluster)])),
        ]));
    }
    // The router's upstream log: failed attempts recorded on their provider.
    let log_code = map([(
        "local",
        map([("filename", s(&p.istio.upstream_log_module))]),
    )]);
    patches.push(map([
        ("applyTo", s("HTTP_FILTER")),
        (
            "match",
            map([
                ("context", s(context)),
                (
                    "listener",
                    map([(
                        "filterChain",
                        map([(
                            "filter",
                            map([
                                ("name", s("envoy.filters.network.http_connection_manager")),
                                ("subFilter", map([("name", s("envoy.filters.http.router"))])),
                            ]),
                        )]),
                    )]),
                ),
            ]),
        ),
        (
            "patch",
            map([
                ("operation", s("MERGE")),
                (
                    "value",
                    map([(
                        "typed_config",
                        map([
                            (
                                "@type",
                                s("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
                            ),
                            ("upstream_log", envoy::upstream_log(p, filter, log_code)),
                        ]),
                    )]),
                ),
            ]),
        ),
    ]));
    patches.push(map([
        ("applyTo", s("HTTP_ROUTE")),
        (
            "match",
            map([
                ("context", s(context)),
                (
                    "routeConfiguration",
                    map([(
                        "vhost",
                        map([("route", map([("name", s(&p.istio.route_name))]))]),
                    )]),
                ),
            ]),
        ),
        (
            "patch",
            map([
                ("operation", s("MERGE")),
                (
                    "value",
                    map([
                        ("route", envoy::route_action(&filter.route_header, p)),
                        // The client's credential and original-path headers, removed by
                        // Envoy itself.
                        (
                            "request_headers_to_remove",
                            credentials::request_headers_to_remove(),
                        ),
                        // The answering provider's name for the downstream role.
                        (
                            "response_headers_to_add",
                            envoy::response_headers_to_add(filter),
                        ),
                    ]),
                ),
            ]),
        ),
    ]));
    let selector: Mapping = p.istio.selector.iter().map(|(k, v)| (s(k), s(v))).collect();
    map([
        ("apiVersion", s("networking.istio.io/v1alpha3")),
        ("kind", s("EnvoyFilter")),
        (
            "metadata",
            map([
                ("name", s("llm-breaker-failover")),
                ("namespace", s(&p.istio.namespace)),
            ]),
        ),
        (
            "spec",
            map([
                (
                    "workloadSelector",
                    map([("labels", Value::Mapping(selector))]),
                ),
                ("configPatches", Value::Sequence(patches)),
            ]),
        ),
    ])
}
