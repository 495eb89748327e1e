//! Istio packaging: the OCI image `make oci` builds and the manifests in
//! `envoy/istio/`.
//!
//! - The image must be what Istio's image fetcher accepts for a Wasm plugin in the
//!   Docker ("compat") format: exactly one layer, holding `plugin.wasm` and nothing
//!   else, byte-identical to the filter build. Checked on `docker save`'s archive.
//!   Needs a Docker engine (a failure under `CI=true` without one).
//! - The manifests must parse and carry the fields Istio requires; the WasmPlugin's
//!   `pluginConfig` must be a configuration the filter accepts; and every upstream
//!   it names must be routed by the VirtualService (the header value the filter
//!   writes) to a host with a ServiceEntry and a DestinationRule.
//!
//! Nothing here talks to a Kubernetes API server or runs Istio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker::config::Config;
use llm_breaker_harness::docker::{docker, image_exists, plugin_image, require_engine};
use llm_breaker_harness::envoy::{filter_wasm, workspace_root};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

// ---- the OCI image -------------------------------------------------------------

/// Regular files of a tar archive, by name (ustar; pax and GNU long-name headers
/// are skipped as entries, which is enough for the short names here).
fn tar_files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let field = |from: usize, len: usize| {
            let f = &h[from..from + len];
            let end = f.iter().position(|b| *b == 0).unwrap_or(len);
            String::from_utf8_lossy(&f[..end]).trim().to_string()
        };
        let mut name = field(0, 100);
        let prefix = field(345, 155);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(&field(124, 12), 8).expect("tar size field");
        let kind = h[156];
        let body = at + 512;
        assert!(body + size <= tar.len(), "truncated tar entry {name}");
        if kind == b'0' || kind == 0 {
            files.push((name, tar[body..body + size].to_vec()));
        }
        at = body + size.div_ceil(512) * 512;
    }
    files
}

#[test]
fn oci_image_is_one_layer_holding_the_built_plugin_wasm() {
    if !require_engine("oci_image_is_one_layer_holding_the_built_plugin_wasm") {
        return;
    }
    let image = plugin_image();
    assert!(
        image_exists(&image),
        "image {image} not found — run `make oci` (`make istio-test` builds it)"
    );
    let wasm = std::fs::read(filter_wasm()).expect("the filter build (`make build`)");

    let dir = std::env::temp_dir().join(format!("llm-breaker-oci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("image.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &image]).unwrap();
    let saved = std::fs::read(&archive).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let files = tar_files(&saved);
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("{name} not in the saved image"))
    };

    let manifest: serde_json::Value = serde_json::from_slice(&file("manifest.json")).unwrap();
    let manifest = manifest.as_array().expect("manifest.json is a list");
    assert_eq!(manifest.len(), 1, "one image in the archive");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "exactly one layer: {layers:?}");
    let config: serde_json::Value =
        serde_json::from_slice(&file(manifest[0]["Config"].as_str().unwrap())).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1),
        "one filesystem layer in the image config"
    );

    let layer = tar_files(&file(layers[0].as_str().unwrap()));
    let names: Vec<&str> = layer.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["plugin.wasm"], "the layer holds plugin.wasm only");
    assert!(
        layer[0].1 == wasm,
        "plugin.wasm ({} bytes) differs from {} ({} bytes)",
        layer[0].1.len(),
        filter_wasm().display(),
        wasm.len()
    );
    eprintln!(
        "{image}: 1 layer, plugin.wasm {} bytes, identical to the build; archive {} bytes",
        wasm.len(),
        saved.len()
    );
}

// ---- the manifests -------------------------------------------------------------

fn istio_dir() -> PathBuf {
    workspace_root().join("envoy/istio")
}

/// Every document of every YAML file in `envoy/istio/`, with its file name.
fn manifests() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(istio_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                docs.push((name.clone(), v));
            }
        }
    }
    docs
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

fn one_of(what: &str, value: Option<&str>, allowed: &[&str]) {
    let v = value.unwrap_or_else(|| panic!("{what} is missing"));
    assert!(
        allowed.contains(&v),
        "{what} = {v:?}, expected one of {allowed:?}"
    );
}

#[test]
fn istio_manifests_parse_and_carry_the_required_fields() {
    let docs = manifests();
    assert!(
        !docs.is_empty(),
        "no manifests in {}",
        istio_dir().display()
    );
    for (file, d) in &docs {
        let kind = str_at(d, &["kind"]).unwrap_or_else(|| panic!("{file}: no kind"));
        let api = str_at(d, &["apiVersion"]).unwrap_or_else(|| panic!("{file}: no apiVersion"));
        let expected_api: &[&str] = match kind {
            "WasmPlugin" => &["extensions.istio.io/v1alpha1"],
            "EnvoyFilter" => &["networking.istio.io/v1alpha3"],
            "ServiceEntry" | "DestinationRule" | "VirtualService" | "Gateway" => &[
                "networking.istio.io/v1",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3",
            ],
            other => panic!("{file}: unexpected kind {other}"),
        };
        one_of(
            &format!("{file}: {kind} apiVersion"),
            Some(api),
            expected_api,
        );
        assert!(
            str_at(d, &["metadata", "name"]).is_some_and(|n| !n.is_empty()),
            "{file}: {kind} without metadata.name"
        );
        assert!(
            d.get("spec").is_some_and(Value::is_mapping),
            "{file}: {kind} without spec"
        );
    }

    // The WasmPlugin: where the module comes from, where it runs, what happens if it
    // can't, and a configuration the filter itself accepts.
    let plugins = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "one WasmPlugin");
    let p = &plugins[0]["spec"];
    let url = str_at(p, &["url"]).expect("WasmPlugin spec.url");
    assert!(
        ["oci://", "https://", "http://", "file://"]
            .iter()
            .any(|s| url.starts_with(s)),
        "spec.url {url:?} has no scheme Istio fetches"
    );
    one_of(
        "spec.phase",
        str_at(p, &["phase"]),
        &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"],
    );
    one_of(
        "spec.failStrategy",
        str_at(p, &["failStrategy"]),
        &["FAIL_CLOSE", "FAIL_OPEN"],
    );
    one_of("spec.type", str_at(p, &["type"]), &["HTTP"]);
    one_of(
        "spec.imagePullPolicy",
        str_at(p, &["imagePullPolicy"]),
        &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"],
    );
    assert!(
        p.get("selector").is_some() || p.get("targetRefs").is_some(),
        "the WasmPlugin must select its workloads"
    );
    let plugin_config = p.get("pluginConfig").expect("spec.pluginConfig");
    let json = serde_json::to_vec(plugin_config).unwrap();
    let config = Config::parse(&json)
        .unwrap_or_else(|e| panic!("pluginConfig is not a valid llm-breaker config: {e}"));
    let route_header = config.route_header.as_str();
    let upstreams: BTreeSet<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    assert!(!upstreams.is_empty());

    // Providers: a ServiceEntry and a DestinationRule per host.
    let mut entry_hosts = BTreeSet::new();
    for se in of_kind(&docs, "ServiceEntry") {
        let spec = &se["spec"];
        let hosts = spec["hosts"]
            .as_sequence()
            .expect("ServiceEntry spec.hosts");
        assert!(!hosts.is_empty());
        entry_hosts.extend(hosts.iter().map(|h| h.as_str().unwrap().to_string()));
        one_of(
            "ServiceEntry resolution",
            str_at(spec, &["resolution"]),
            &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"],
        );
        one_of(
            "ServiceEntry location",
            str_at(spec, &["location"]),
            &["MESH_EXTERNAL", "MESH_INTERNAL"],
        );
        let ports = spec["ports"]
            .as_sequence()
            .expect("ServiceEntry spec.ports");
        assert!(!ports.is_empty(), "ServiceEntry spec.ports is empty");
        for port in ports {
            assert!(port["number"].as_u64().is_some_and(|n| n > 0 && n < 65536));
            assert!(port["name"].as_str().is_some_and(|n| !n.is_empty()));
            one_of(
                "ServiceEntry port protocol",
                port["protocol"].as_str(),
                &["HTTP", "HTTPS", "HTTP2", "GRPC", "TLS", "TCP"],
            );
        }
    }
    let rule_hosts: BTreeSet<String> = of_kind(&docs, "DestinationRule")
        .iter()
        .map(|d| {
            str_at(d, &["spec", "host"])
                .expect("DestinationRule spec.host")
                .to_string()
        })
        .collect();
    assert_eq!(
        rule_hosts, entry_hosts,
        "a DestinationRule for every ServiceEntry host"
    );

    // Routing: each upstream name, as the routing header's value, goes to one provider.
    let services = of_kind(&docs, "VirtualService");
    assert_eq!(services.len(), 1, "one VirtualService");
    let http = services[0]["spec"]["http"]
        .as_sequence()
        .expect("VirtualService spec.http");
    let mut routed = BTreeSet::new();
    let mut catch_all = None;
    let mut idle_patched = Vec::new();
    for (i, route) in http.iter().enumerate() {
        let dests = route["route"].as_sequence().expect("http[].route");
        assert_eq!(dests.len(), 1, "http[{i}]: one destination per provider");
        let host = str_at(&dests[0], &["destination", "host"]).expect("destination.host");
        assert!(
            entry_hosts.contains(host),
            "http[{i}]: {host} has no ServiceEntry"
        );
        // The LLM timeout shape: no total bound, a bound on the first byte that
        // Istio keeps (it drops the retry policy for `attempts: 0`), no retries.
        assert_eq!(
            route["timeout"].as_str(),
            Some("0s"),
            "http[{i}]: no total bound (a flowing stream would be cut)"
        );
        assert!(
            route["retries"]["perTryTimeout"].as_str().is_some(),
            "http[{i}]: retries.perTryTimeout bounds the time to the response headers"
        );
        assert_eq!(
            (
                route["retries"]["attempts"].as_u64(),
                route["retries"]["retryOn"].as_str()
            ),
            (Some(1), Some("retriable-status-codes")),
            "http[{i}]: Istio retries must never fire (the filter sees only the final outcome)"
        );
        let name = str_at(route, &["name"]).expect("http[].name (the idle patch targets it)");
        idle_patched.push(name.to_string());
        let values: Vec<&str> = route["match"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|m| m["headers"][route_header]["exact"].as_str())
            .collect();
        match values.as_slice() {
            [] => catch_all = Some(host),
            [v] => {
                assert!(
                    upstreams.contains(*v),
                    "http[{i}]: {v} is no upstream of the plugin"
                );
                assert!(routed.insert(v.to_string()), "{v} routed twice");
            }
            _ => panic!("http[{i}]: one header value per route"),
        }
    }
    assert_eq!(
        routed, upstreams,
        "every upstream routed by its header value"
    );
    let primary = &config.upstreams[config.routes[0].chain[0].index()].name;
    let primary_host = http
        .iter()
        .find(|r| {
            r["match"][0]["headers"][route_header]["exact"].as_str() == Some(primary.as_str())
        })
        .and_then(|r| str_at(&r["route"][0], &["destination", "host"]));
    assert!(catch_all.is_some(), "no route without a header match");
    assert_eq!(
        catch_all, primary_host,
        "the last route (no header: plugin missing) goes to the primary"
    );
    assert!(
        http.last()
            .is_some_and(|r| r["match"][0]["headers"].is_null()),
        "the header-less route must come last"
    );

    // The idle bound: an EnvoyFilter on the plugin's gateway gives every route an
    // `idle_timeout`.
    let filters = of_kind(&docs, "EnvoyFilter");
    assert_eq!(filters.len(), 1, "one EnvoyFilter (the idle bound)");
    let f = &filters[0]["spec"];
    assert_eq!(
        f["workloadSelector"]["labels"], p["selector"]["matchLabels"],
        "the EnvoyFilter selects the WasmPlugin's gateway"
    );
    let mut patched = Vec::new();
    for patch in f["configPatches"].as_sequence().expect("configPatches") {
        assert_eq!(str_at(patch, &["applyTo"]), Some("HTTP_ROUTE"));
        assert_eq!(str_at(patch, &["match", "context"]), Some("GATEWAY"));
        assert_eq!(str_at(patch, &["patch", "operation"]), Some("MERGE"));
        assert!(
            str_at(patch, &["patch", "value", "route", "idle_timeout"]).is_some(),
            "a patch without route.idle_timeout"
        );
        let name = str_at(
            patch,
            &["match", "routeConfiguration", "vhost", "route", "name"],
        )
        .expect("a patch names its route");
        patched.push(name.to_string());
    }
    patched.sort();
    idle_patched.sort();
    assert_eq!(
        patched, idle_patched,
        "an idle_timeout patch for every VirtualService route"
    );
}
