//! Istio packaging: the OCI image `make oci` builds and the manifests in
//! `envoy/istio/`.
//!
//! - The image must be what Istio's image fetcher accepts for a Wasm plugin in the
//!   Docker ("compat") format: exactly one layer, holding `plugin.wasm` and nothing
//!   else, byte-identical to the filter build. Checked on `docker save`'s archive.
//!   Needs a Docker engine (a failure under `CI=true` without one).
//! - Every manifest in `envoy/istio/` (the generated `failover.yaml` included) passes
//!   Istio 1.22's CRD schemas (`tests/istio/crd-all.gen.yaml`, vendored unmodified), with
//!   unknown (pruned) fields as failures: a small structural-schema validator
//!   (`tests/istio/schema.rs`), itself tested on broken manifests.
//! - `failover.yaml` is what the generator writes from `envoy/istio/gen/` (`make gen`),
//!   and the WasmPlugin's `pluginConfig` is the generator's filter input.
//! - The pieces fit: pin and pull policy, probe hosts, the VirtualService routes the
//!   EnvoyFilters patch by name, the fail-open route to the primary, one gateway.
//! - In real Envoy: the downstream and upstream roles share breaker state only with the
//!   same `vm_id` (a WasmPlugin sets none).
//!
//! Nothing here talks to a Kubernetes API server or runs Istio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "istio/schema.rs"]
mod schema;

use llm_breaker::config::Config;
use llm_breaker_harness::client;
use llm_breaker_harness::docker::{docker, image_exists, plugin_image, require_engine};
use llm_breaker_harness::envoy::{filter_wasm, workspace_root, Envoy, Options, Within};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use schema::Crds;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(name: &str, text: &str) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        if !v.is_null() {
            docs.push((name.to_string(), v));
        }
    }
    docs
}

/// Every document of every YAML file directly in `envoy/istio/` (not `gen/`, the
/// generator's input), with its file name.
fn manifests() -> Vec<(String, Value)> {
    let mut paths: Vec<_> = std::fs::read_dir(istio_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        docs.extend(yaml_docs(&name, &std::fs::read_to_string(&path).unwrap()));
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

fn named<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| str_at(d, &["metadata", "name"]) == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

// ---- against Istio's CRD schemas -------------------------------------------------

/// Istio's CRDs at the minimum supported release, 1.22.0 (`istio/istio`
/// `manifests/charts/base/crds/crd-all.gen.yaml`, unmodified).
const CRD_FILE: &str = "tests/istio/crd-all.gen.yaml";

fn crds() -> Crds {
    Crds::parse(&read(CRD_FILE)).unwrap()
}

/// The CEL rules (`x-kubernetes-validations`) the manifests reach, checked by hand;
/// any other rule fails the test until it is added here.
fn check_cel(doc: &Value, path: &str, rule: &str) -> Result<(), String> {
    match rule {
        "url must have schema one of [http, https, file, oci]" => {
            let url = str_at(doc, &["spec", "url"]).unwrap_or_default();
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            ["", "http", "https", "file", "oci"]
                .contains(&scheme)
                .then_some(())
                .ok_or_else(|| format!("{path}: {rule}"))
        }
        other => Err(format!(
            "{path}: CEL rule {other:?} is not checked by this test: add it to check_cel"
        )),
    }
}

/// Schema errors and unchecked or failed CEL rules of one manifest.
fn schema_errors(crds: &Crds, doc: &Value) -> Vec<String> {
    let report = crds.validate(doc);
    let mut errors = report.errors;
    for (path, rule) in &report.cel {
        if let Err(e) = check_cel(doc, path, rule) {
            errors.push(e);
        }
    }
    errors
}

#[test]
fn the_vendored_crds_are_istio_1_22s_for_every_kind_used() {
    let crds = crds();
    let kinds: BTreeSet<String> = crds.kinds().map(|(a, k)| format!("{a} {k}")).collect();
    for want in [
        "extensions.istio.io/v1alpha1 WasmPlugin",
        "networking.istio.io/v1alpha3 EnvoyFilter",
        "networking.istio.io/v1 VirtualService",
        "networking.istio.io/v1 Gateway",
        "networking.istio.io/v1 ServiceEntry",
        "networking.istio.io/v1 DestinationRule",
    ] {
        assert!(kinds.contains(want), "{CRD_FILE} has no {want}");
    }
    // 1.22 is the first release with the v1 networking APIs and the last without
    // FAIL_RELOAD (1.27): the file is neither older nor newer.
    let text = read(CRD_FILE);
    assert!(
        !text.contains("FAIL_RELOAD"),
        "{CRD_FILE} is newer than 1.22"
    );
}

#[test]
fn every_manifest_passes_the_istio_1_22_crd_schemas() {
    let crds = crds();
    let docs = manifests();
    assert!(docs.len() >= 7, "manifests in {}", istio_dir().display());
    assert!(
        docs.iter().any(|(f, _)| f == "failover.yaml"),
        "the generated failover.yaml is validated too"
    );
    let mut failures = Vec::new();
    // The generator's own example output too (envoy/gen/example/, `make gen`).
    let example = "envoy/gen/example/istio-failover.yaml";
    let mut docs = docs;
    docs.extend(yaml_docs(example, &read(example)));
    for (file, doc) in &docs {
        let name = str_at(doc, &["metadata", "name"]).unwrap_or("?");
        for e in schema_errors(&crds, doc) {
            failures.push(format!("{file} ({name}): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "schema violations:\n{}",
        failures.join("\n")
    );
    eprintln!("{} manifests pass Istio 1.22's CRD schemas", docs.len());
}

/// A manifest with `edit` applied to a copy of `doc` must fail with an error containing
/// `expect`.
fn assert_refused(crds: &Crds, doc: &Value, edit: &str, expect: &str, change: impl Fn(&mut Value)) {
    let mut broken = doc.clone();
    change(&mut broken);
    let errors = schema_errors(crds, &broken);
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "{edit}: expected an error containing {expect:?}, got {errors:?}"
    );
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let parent = parents.iter().fold(v, |v, k| &mut v[*k]);
    parent
        .as_mapping_mut()
        .unwrap()
        .insert(Value::from(*last), value);
}

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}

#[test]
fn the_schema_check_refuses_broken_manifests() {
    let crds = crds();
    let docs = manifests();
    let plugin = named(&docs, "WasmPlugin", "llm-breaker");
    let vs = named(&docs, "VirtualService", "llm");
    let filter = named(&docs, "EnvoyFilter", "llm-idle-timeout");
    let entry = named(&docs, "ServiceEntry", "openai");
    for d in [plugin, vs, filter, entry] {
        assert_eq!(schema_errors(&crds, d), Vec::<String>::new());
    }
    let spec = |k: &'static str| move |v: &mut Value| set(v, &["spec", k], yaml("x"));
    assert_refused(
        &crds,
        plugin,
        "a misspelt field",
        "$.spec.failStratgy: unknown field",
        spec("failStratgy"),
    );
    assert_refused(&crds, plugin, "a wrong type", "$.spec.priority:", |v| {
        set(v, &["spec", "priority"], yaml("high"))
    });
    assert_refused(
        &crds,
        plugin,
        "an enum value 1.22 lacks",
        "FAIL_RELOAD is not one of",
        |v| set(v, &["spec", "failStrategy"], yaml("FAIL_RELOAD")),
    );
    assert_refused(
        &crds,
        plugin,
        "a .wasm checksum that is no hex digest",
        "does not match",
        |v| set(v, &["spec", "sha256"], yaml("sha256:abc")),
    );
    assert_refused(
        &crds,
        plugin,
        "a scheme Istio does not fetch",
        "url must have schema",
        |v| set(v, &["spec", "url"], yaml("ftp://registry.example.com/x")),
    );
    assert_refused(
        &crds,
        plugin,
        "an unknown metadata field",
        "$.metadata.nmae",
        |v| set(v, &["metadata", "nmae"], yaml("x")),
    );
    assert_refused(
        &crds,
        vs,
        "a nested unknown field",
        "$.spec.http[0].retries.perTryTimout: unknown field",
        |v| {
            set(
                &mut v["spec"]["http"][0],
                &["retries", "perTryTimout"],
                yaml("1s"),
            )
        },
    );
    assert_refused(
        &crds,
        vs,
        "a string where a list belongs",
        "$.spec.gateways: ",
        |v| set(v, &["spec", "gateways"], yaml("llm-gateway")),
    );
    assert_refused(
        &crds,
        vs,
        "a negative port",
        "$.spec.http[0].route[0].destination.port.number: -1 is outside",
        |v| {
            set(
                &mut v["spec"]["http"][0]["route"][0],
                &["destination", "port", "number"],
                yaml("-1"),
            )
        },
    );
    assert_refused(
        &crds,
        filter,
        "two exclusive match fields (oneOf)",
        "oneOf",
        |v| {
            set(
                &mut v["spec"]["configPatches"][0],
                &["match", "cluster"],
                yaml("{name: x}"),
            )
        },
    );
    assert_refused(
        &crds,
        filter,
        "a patch op that does not exist",
        "$.spec.configPatches[0].patch.operation",
        |v| {
            set(
                &mut v["spec"]["configPatches"][0],
                &["patch", "operation"],
                yaml("UPSERT"),
            )
        },
    );
    assert_refused(
        &crds,
        entry,
        "a missing required field",
        "$.spec.hosts: required",
        |v| {
            v["spec"].as_mapping_mut().unwrap().remove("hosts");
        },
    );
    assert_refused(
        &crds,
        entry,
        "an apiVersion without a CRD",
        "no CRD for apiVersion",
        |v| set(v, &["apiVersion"], yaml("networking.istio.io/v2")),
    );
    // An EnvoyFilter patch `value` keeps unknown fields (x-kubernetes-preserve-unknown-fields):
    // Envoy, not the API server, checks it.
    let mut value = filter.clone();
    set(
        &mut value["spec"]["configPatches"][0]["patch"],
        &["value", "anything"],
        yaml("1"),
    );
    assert_eq!(schema_errors(&crds, &value), Vec::<String>::new());
}

// ---- the generated EnvoyFilter and its inputs -------------------------------------

const GEN_FILTER: &str = "envoy/istio/gen/filter.json";
const GEN_PROVIDERS: &str = "envoy/istio/gen/providers.yaml";
const GEN_OUT: &str = "envoy/istio/failover.yaml";

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

fn plugin_spec(docs: &[(String, Value)]) -> Value {
    let plugins = of_kind(docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "one WasmPlugin");
    plugins[0]["spec"].clone()
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
    let failover: Value = serde_yaml::from_str(&read(GEN_OUT)).unwrap();
    let module = failover["spec"]["configPatches"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_at(p, &["applyTo"]) == Some("EXTENSION_CONFIG"))
        .expect("failover.yaml delivers the upstream module")["patch"]["value"]["typed_config"]
        ["config"]["vm_config"]["code"]["remote"]
        .clone();
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

// ---- how the pieces fit -------------------------------------------------------------

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

#[test]
fn the_virtualservice_hands_filter_routed_requests_to_the_failover_route() {
    let docs = manifests();
    let config = &plugin_spec(&docs)["pluginConfig"];
    let header = str_at(config, &["route_header"]).unwrap();
    let providers: Value = serde_yaml::from_str(&read(GEN_PROVIDERS)).unwrap();
    let route_name = str_at(&providers, &["istio", "route_name"]).unwrap_or("llm-breaker");
    let services = of_kind(&docs, "VirtualService");
    assert_eq!(services.len(), 1, "one VirtualService");
    let gateway = str_at(of_kind(&docs, "Gateway")[0], &["metadata", "name"]).unwrap();
    assert!(services[0]["spec"]["gateways"]
        .as_sequence()
        .unwrap()
        .contains(&Value::from(gateway)));
    let http = services[0]["spec"]["http"].as_sequence().unwrap();

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

    // Every route has its idle bound: per attempt (generated) or idle_timeout (timeouts.yaml).
    for r in http {
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
    assert_eq!(hosts("DestinationRule", &["spec", "host"]), entries);
    for vs in of_kind(&docs, "VirtualService") {
        for r in vs["spec"]["http"].as_sequence().unwrap() {
            let host = str_at(&r["route"][0], &["destination", "host"]).unwrap();
            assert!(entries.contains(host), "{host} has no ServiceEntry");
        }
    }
}

// ---- in real Envoy: the two roles share breaker state only through one vm_id ---------

/// Within-request failover openai → azure in Envoy (clusters from the generator), the
/// downstream role with `vm_id: llm_breaker` (as the harness runs it) and the upstream
/// role with `upstream_vm_id`. The primary answers 503; returns how many of 20
/// sequential requests it received, and how many requests failed.
fn primary_attempts(upstream_vm_id: &str) -> (usize, usize) {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    a.set(Behaviour::Status(503));
    let filter = r#"{"failover":"within_request",
        "routes":[{"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai","azure"]}],
        "breaker":{"consecutive_failures":3,
          "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
          "open":{"base_ms":600000,"max_ms":600000,"jitter":0}}}"#;
    let mut providers = String::from("providers:\n");
    for (name, addr) in [("openai", a.addr()), ("azure", b.addr())] {
        providers.push_str(&format!(
            "- {{name: {name}, address: {}, port: {}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    providers.push_str(&format!(
        "wasm: {{vm_id: {upstream_vm_id}, filename: {}}}\n",
        filter_wasm().display()
    ));
    let out = llm_breaker_gen::generate(
        filter.as_bytes(),
        &providers,
        llm_breaker_gen::Format::Envoy,
    )
    .unwrap();
    let doc: Value = serde_yaml::from_str(&out).unwrap();
    let clusters = doc["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    let mut opts = Options::breaker(filter, &[("openai", a.addr()), ("azure", b.addr())]);
    opts.within = Some(Within {
        clusters,
        per_try_timeout: Duration::from_secs(5),
    });
    let e = Envoy::start(&opts);
    let mut errors = 0;
    let mut send = |n: usize| {
        for _ in 0..n {
            let r =
                client::post(e.listener, "/v1/chat/completions", r#"{"model":"gpt-4o"}"#).unwrap();
            errors += usize::from(r.status != 200);
        }
    };
    send(3);
    // Give the third failure time to reach the breaker the downstream role reads (a
    // condition with a deadline: with split state it never comes, and that is the point).
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.upstream_stat("openai", "state") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    send(17);
    (a.requests(), errors)
}

/// A WasmPlugin gives its VM no `vm_id` (Istio's `buildVMConfig` sets none), while the
/// generated EnvoyFilter's upstream role has `wasm.vm_id` (`llm_breaker`). Envoy keys
/// shared data by `vm_id`, so different ids mean two sets of breakers: the upstream
/// role records the primary's failures where the downstream role never looks, and
/// every request still tries the failing primary first.
#[test]
fn the_downstream_and_upstream_roles_share_breakers_only_with_one_vm_id() {
    let (same, same_errors) = primary_attempts("llm_breaker");
    let (split, split_errors) = primary_attempts("another_vm_id");
    eprintln!(
        "primary attempts for 20 requests: same vm_id {same}, different vm_ids {split}; \
         client errors {same_errors} / {split_errors}"
    );
    assert_eq!(
        (same_errors, split_errors),
        (0, 0),
        "failover works either way"
    );
    assert_eq!(same, 3, "one vm_id: the breaker opens after 3 failures");
    assert_eq!(
        split, 20,
        "different vm_ids: the breaker the downstream role reads never opens"
    );
}

/// The upstream role of failover.yaml must share the WasmPlugin's `vm_id`, which is
/// empty: Istio's `buildVMConfig` (pilot/pkg/model/extensions.go, 1.22 to today) sets
/// none, and `WasmPlugin` has no field for it. Fails today: the generator requires a
/// non-empty `wasm.vm_id` (see docs/deployment.md, "Known gaps"); enable it with the fix.
#[test]
#[ignore = "known gap: llm-breaker-gen requires a non-empty wasm.vm_id, a WasmPlugin's VM has none"]
fn the_upstream_role_shares_the_wasmplugins_vm_id() {
    let failover: Value = serde_yaml::from_str(&read(GEN_OUT)).unwrap();
    let module = failover["spec"]["configPatches"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_at(p, &["applyTo"]) == Some("EXTENSION_CONFIG"))
        .unwrap()["patch"]["value"]["typed_config"]["config"]["vm_config"]
        .clone();
    assert_eq!(
        str_at(&module, &["vm_id"]).unwrap_or(""),
        "",
        "the upstream role's vm_id must be the WasmPlugin's (none)"
    );
}
