//! The Istio example's pieces fit: the generated EnvoyFilter and its inputs, the pin,
//! the probes, the routes the EnvoyFilters patch, one gateway.

use super::{
    manifests, of_kind, plugin_spec, read, str_at, upstream_vm_config, GEN_FILTER, GEN_OUT,
    GEN_PROVIDERS,
};
use llm_breaker::config::Config;
use serde_yaml::Value;
use std::collections::BTreeSet;

#[test]
fn the_checked_in_failover_yaml_is_what_make_gen_writes() {
    let want = llm_breaker_gen::generate(
        read(GEN_FILTER).as_bytes(),
        &read(GEN_PROVIDERS),
        llm_breaker_gen::Format::Istio,
    )
    .unwrap();
    assert!(
        read(GEN_OUT) == want,
        "{GEN_OUT} is out of date with {GEN_FILTER} and {GEN_PROVIDERS}: run `make gen`"
    );
}

#[test]
fn the_plugin_runs_the_generators_filter_config_from_the_same_image() {
    let docs = manifests();
    let spec = plugin_spec(&docs);
    let plugin_json = serde_json::to_value(&spec["pluginConfig"]).unwrap();
    let gen_json: serde_json::Value = serde_json::from_str(&read(GEN_FILTER)).unwrap();
    assert_eq!(
        plugin_json, gen_json,
        "the WasmPlugin's pluginConfig must equal {GEN_FILTER}"
    );
    let config = Config::parse(&serde_json::to_vec(&plugin_json).unwrap())
        .unwrap_or_else(|e| panic!("pluginConfig is not a valid llm-breaker config: {e}"));
    assert_eq!(
        plugin_json["failover"], "within_request",
        "the example uses within-request failover"
    );
    assert!(!config.upstreams.is_empty());
    let providers: Value = serde_yaml::from_str(&read(GEN_PROVIDERS)).unwrap();
    assert_eq!(
        str_at(&spec, &["url"]),
        str_at(&providers, &["wasm", "url"]),
        "the upstream role ({GEN_PROVIDERS} wasm.url) must load the WasmPlugin's module"
    );
}

/// The digest of an `oci://…@sha256:<hex>` URL.
fn url_digest(url: &str) -> Option<&str> {
    let (_, d) = url.strip_prefix("oci://")?.split_once("@sha256:")?;
    (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())).then_some(d)
}

#[test]
fn the_module_is_pinned_by_its_manifest_digest_and_never_a_mutable_tag() {
    let spec = plugin_spec(&manifests());
    let url = str_at(&spec, &["url"]).unwrap();
    let policy = str_at(&spec, &["imagePullPolicy"]).unwrap_or("UNSPECIFIED_POLICY");
    let pinned = url_digest(url);
    // istio-agent compares `sha256` of an oci:// module with the image manifest digest
    // (pkg/wasm/imagefetcher.go), so the only pin that can be checked here is the
    // URL's own digest: with both, they must agree.
    if let (Some(d), Some(sum)) = (pinned, str_at(&spec, &["sha256"])) {
        assert_eq!(sum, d, "spec.sha256 must be the manifest digest of the url");
    }
    assert!(
        pinned.is_some() || str_at(&spec, &["sha256"]).is_some() || policy == "Always",
        "{url} with imagePullPolicy {policy}: a mutable tag that a gateway caches \
         (pin it with @sha256:<manifest digest>, or pull Always)"
    );
    assert!(
        url.starts_with("oci://") && pinned.is_some(),
        "the example pins the image by digest: {url}"
    );
    let module = upstream_vm_config()["code"]["remote"].clone();
    assert_eq!(
        str_at(&module, &["http_uri", "uri"]),
        Some(url),
        "the upstream role's module: the same pinned image"
    );
}

#[test]
fn every_probe_sets_the_host_its_provider_expects() {
    let spec = plugin_spec(&manifests());
    let providers: Value = serde_yaml::from_str(&read(GEN_PROVIDERS)).unwrap();
    let upstreams = spec["pluginConfig"]["upstreams"].as_mapping().unwrap();
    let mut probes = 0;
    for (name, u) in upstreams {
        let Some(probe) = u.get("probe") else {
            continue;
        };
        probes += 1;
        let name = name.as_str().unwrap();
        let provider = providers["providers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| str_at(p, &["name"]) == Some(name))
            .unwrap_or_else(|| panic!("probe of {name}: no provider (cluster) of that name"));
        let address = str_at(provider, &["address"]).unwrap();
        let host = str_at(probe, &["headers", "host"]).unwrap_or_else(|| {
            panic!("probe of {name}: no headers.host, so it sends Host: {name}")
        });
        let port = provider["port"].as_u64().unwrap();
        let default_port = if provider["tls"].as_bool() == Some(true) {
            443
        } else {
            80
        };
        let expected = if port == default_port {
            address.to_string()
        } else {
            format!("{address}:{port}")
        };
        assert_eq!(host, expected, "probe of {name}: Host");
    }
    assert!(probes > 0, "the example shows a probe");
}

/// The HTTP_ROUTE patches of every EnvoyFilter: (route name, patched route action).
fn route_patches(docs: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for f in of_kind(docs, "EnvoyFilter") {
        for p in f["spec"]["configPatches"].as_sequence().unwrap() {
            if str_at(p, &["applyTo"]) != Some("HTTP_ROUTE") {
                continue;
            }
            assert_eq!(str_at(p, &["match", "context"]), Some("GATEWAY"));
            assert_eq!(str_at(p, &["patch", "operation"]), Some("MERGE"));
            let name = str_at(
                p,
                &["match", "routeConfiguration", "vhost", "route", "name"],
            )
            .expect("a route patch names its route");
            out.push((name.to_string(), p["patch"]["value"]["route"].clone()));
        }
    }
    out
}

#[test]
fn one_gateway_namespace_and_selector_for_every_manifest() {
    let docs = manifests();
    let ns: BTreeSet<&str> = docs
        .iter()
        .map(|(f, d)| {
            str_at(d, &["metadata", "namespace"]).unwrap_or_else(|| panic!("{f}: no namespace"))
        })
        .collect();
    assert_eq!(ns.len(), 1, "one namespace: {ns:?}");
    let labels = &plugin_spec(&docs)["selector"]["matchLabels"];
    assert!(labels.is_mapping(), "the WasmPlugin selects its gateway");
    assert!(!of_kind(&docs, "EnvoyFilter").is_empty() && !of_kind(&docs, "Gateway").is_empty());
    for f in of_kind(&docs, "EnvoyFilter") {
        assert_eq!(
            &f["spec"]["workloadSelector"]["labels"], labels,
            "EnvoyFilter selector"
        );
    }
    for g in of_kind(&docs, "Gateway") {
        assert_eq!(&g["spec"]["selector"], labels, "Gateway selector");
    }
}

/// The VirtualService and what its routes are checked against.
struct Routing {
    docs: Vec<(String, Value)>,
    config: Value,
    header: String,
    providers: Value,
    route_name: String,
    http: Vec<Value>,
}

fn routing() -> Routing {
    let docs = manifests();
    let config = plugin_spec(&docs)["pluginConfig"].clone();
    let header = str_at(&config, &["route_header"]).unwrap().to_string();
    let providers: Value = serde_yaml::from_str(&read(GEN_PROVIDERS)).unwrap();
    let route_name = str_at(&providers, &["istio", "route_name"])
        .unwrap_or("llm-breaker")
        .to_string();
    let services = of_kind(&docs, "VirtualService");
    assert_eq!(services.len(), 1, "one VirtualService");
    let gateway = str_at(of_kind(&docs, "Gateway")[0], &["metadata", "name"]).unwrap();
    assert!(services[0]["spec"]["gateways"]
        .as_sequence()
        .unwrap()
        .contains(&Value::from(gateway)));
    let http = services[0]["spec"]["http"].as_sequence().unwrap().clone();
    Routing {
        docs,
        config,
        header,
        providers,
        route_name,
        http,
    }
}

#[test]
fn the_virtualservice_hands_filter_routed_requests_to_the_failover_route() {
    let Routing {
        docs,
        header,
        route_name,
        http,
        ..
    } = routing();
    let (header, route_name) = (header.as_str(), route_name.as_str());
    // First: the route the generated EnvoyFilter turns into the cluster_header route,
    // taken only with an aggregate name (`llmb|…`) in the routing header.
    let first = &http[0];
    assert_eq!(
        str_at(first, &["name"]),
        Some(route_name),
        "the failover route comes first"
    );
    assert_eq!(
        str_at(&first["match"][0]["headers"][header], &["prefix"]),
        Some("llmb|"),
        "only the generated aggregates can be chosen through the header"
    );
    assert_eq!(
        first["retries"]["attempts"].as_u64(),
        Some(0),
        "Istio's retries off"
    );
    assert_eq!(first["timeout"].as_str(), Some("0s"));
    let patches = route_patches(&docs);
    let generated: Vec<_> = patches.iter().filter(|(n, _)| n == route_name).collect();
    assert_eq!(
        generated.len(),
        1,
        "failover.yaml patches {route_name} once"
    );
    let action = &generated[0].1;
    assert_eq!(str_at(action, &["cluster_header"]), Some(header));
    assert!(str_at(action, &["retry_policy", "per_try_timeout"]).is_some());
    assert!(str_at(action, &["retry_policy", "per_try_idle_timeout"]).is_some());
}

#[test]
fn requests_the_filter_did_not_route_go_to_the_primary() {
    let Routing {
        config,
        header,
        providers,
        http,
        ..
    } = routing();
    let header = header.as_str();
    // Last: no header (plugin not loaded or crashed, FAIL_OPEN) → the primary, with the
    // LLM timeout shape and retries that never fire.
    let last = http.last().unwrap();
    assert!(
        last["match"][0]["headers"].is_null(),
        "the header-less route comes last"
    );
    let primary = config["routes"][0]["upstreams"][0]
        .as_str()
        .unwrap()
        .to_string();
    let primary_host = providers["providers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_at(p, &["name"]) == Some(&primary))
        .and_then(|p| str_at(p, &["address"]))
        .unwrap();
    assert_eq!(
        str_at(&last["route"][0], &["destination", "host"]),
        Some(primary_host)
    );
    assert_eq!(str_at(last, &["rewrite", "authority"]), Some(primary_host));
    assert_eq!(last["timeout"].as_str(), Some("0s"));
    assert!(last["retries"]["perTryTimeout"].as_str().is_some());
    assert_eq!(
        (
            last["retries"]["attempts"].as_u64(),
            last["retries"]["retryOn"].as_str()
        ),
        (Some(1), Some("retriable-status-codes"))
    );
    assert!(last["headers"]["request"]["remove"]
        .as_sequence()
        .unwrap()
        .contains(&Value::from(header)));
}

#[test]
fn every_route_has_an_idle_bound() {
    let Routing { docs, http, .. } = routing();
    let patches = route_patches(&docs);
    // Every route has its idle bound: per attempt (generated) or idle_timeout (timeouts.yaml).
    for r in &http {
        let name = str_at(r, &["name"]).expect("named routes (patches find them by name)");
        let bounded = patches.iter().any(|(n, a)| {
            n == name
                && (a.get("idle_timeout").is_some()
                    || a["retry_policy"].get("per_try_idle_timeout").is_some())
        });
        assert!(bounded, "route {name}: no idle bound");
    }
    for (n, _) in &patches {
        assert!(
            http.iter().any(|r| str_at(r, &["name"]) == Some(n)),
            "a patch of no route: {n}"
        );
    }
}

#[test]
fn every_istio_destination_has_a_service_entry_and_destination_rule() {
    let docs = manifests();
    let hosts = |kind: &str, path: &[&str]| -> BTreeSet<String> {
        of_kind(&docs, kind)
            .iter()
            .flat_map(|d| {
                let v = path.iter().fold(*d, |v, k| &v[*k]);
                match v {
                    Value::Sequence(s) => {
                        s.iter().map(|h| h.as_str().unwrap().to_string()).collect()
                    }
                    v => vec![v.as_str().unwrap().to_string()],
                }
            })
            .collect()
    };
    let entries = hosts("ServiceEntry", &["spec", "hosts"]);
    assert!(!entries.is_empty(), "no ServiceEntry");
    assert_eq!(hosts("DestinationRule", &["spec", "host"]), entries);
    for vs in of_kind(&docs, "VirtualService") {
        for r in vs["spec"]["http"].as_sequence().unwrap() {
            let host = str_at(&r["route"][0], &["destination", "host"]).unwrap();
            assert!(entries.contains(host), "{host} has no ServiceEntry");
        }
    }
}

/// istio-agent replaces a module it can't fetch by an allow-all RBAC filter when the
/// config says fail open (`pkg/wasm/convert.go`); a WasmPlugin's `config_discovery`
/// allows that type (`pilot/pkg/networking/core/extension/wasmplugin.go`). The aggregates'
/// upstream filter must allow it too, or Envoy rejects the substitute and requests get a
/// 500 (checked by hand in Envoy 1.40).
#[test]
fn the_upstream_filter_accepts_the_agents_fail_open_substitute() {
    let failover: Value = serde_yaml::from_str(&read(GEN_OUT)).unwrap();
    let rbac = Value::from("type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC");
    let mut checked = 0;
    for p in failover["spec"]["configPatches"].as_sequence().unwrap() {
        let options = &p["patch"]["value"]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        for f in options["http_filters"].as_sequence().into_iter().flatten() {
            if let Some(urls) = f["config_discovery"]["type_urls"].as_sequence() {
                checked += 1;
                assert!(
                    urls.contains(&rbac),
                    "{:?}: type_urls {urls:?}",
                    p["patch"]["value"]["name"]
                );
            }
        }
    }
    assert!(
        checked > 0,
        "no aggregate's upstream filter found in {GEN_OUT}"
    );
}
