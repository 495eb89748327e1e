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
//! - Kinds with no CRD are checked explicitly (`tests/istio/core.rs`): the provider-key
//!   `Secret` by hand, the gateway chart's values file against the chart's own
//!   `values.schema.json` (Istio 1.22, vendored); anything else fails.
//! - The provider keys fit (`tests/istio/keys.rs`): every provider with a credential has
//!   its SDS document in the Secret, mounted where `sds_file` points.
//! - The pieces fit: pin and pull policy, probe hosts, the VirtualService routes the
//!   EnvoyFilters patch by name, the fail-open route to the primary, one gateway.
//! - In real Envoy: the downstream role and the upstream log share breaker state only
//!   with the same `vm_id` (a WasmPlugin sets none).
//!
//! Nothing here talks to a Kubernetes API server or runs Istio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "istio/core.rs"]
mod core_kinds;
#[path = "istio/crd.rs"]
mod crd;
#[path = "istio/fit.rs"]
mod fit;
#[path = "istio/in_envoy.rs"]
mod in_envoy;
#[path = "istio/keys.rs"]
mod keys;
#[path = "istio/schema.rs"]
mod schema;

use llm_breaker_harness::docker::{docker, image_exists, plugin_image, require_engine};
use llm_breaker_harness::envoy::{filter_wasm, workspace_root};
use serde::Deserialize;
use serde_yaml::Value;
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

pub(crate) fn istio_dir() -> PathBuf {
    workspace_root().join("envoy/istio")
}

pub(crate) fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn yaml_docs(name: &str, text: &str) -> Vec<(String, Value)> {
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
/// generator's input), with its file name: the Kubernetes objects ([`manifests`]) and
/// the Helm values files ([`helm_values`], named `*-values.yaml`).
pub(crate) fn all_yaml() -> Vec<(String, Value)> {
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

/// Whether `file` is a Helm values file (not a Kubernetes object).
pub(crate) fn is_helm_values(file: &str) -> bool {
    file.ends_with("-values.yaml")
}

/// The Kubernetes objects of `envoy/istio/`.
pub(crate) fn manifests() -> Vec<(String, Value)> {
    all_yaml()
        .into_iter()
        .filter(|(f, _)| !is_helm_values(f))
        .collect()
}

/// The Helm values files of `envoy/istio/` (`gateway-values.yaml`, for the `istio/gateway`
/// chart).
pub(crate) fn helm_values() -> Vec<(String, Value)> {
    all_yaml()
        .into_iter()
        .filter(|(f, _)| is_helm_values(f))
        .collect()
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

pub(crate) fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

pub(crate) fn named<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| str_at(d, &["metadata", "name"]) == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// The generator's input for the Istio example, and its output (`make gen`).
pub(crate) const GEN_FILTER: &str = "envoy/istio/gen/filter.json";
pub(crate) const GEN_PROVIDERS: &str = "envoy/istio/gen/providers.yaml";
pub(crate) const GEN_OUT: &str = "envoy/istio/failover.yaml";

/// The spec of the one WasmPlugin.
pub(crate) fn plugin_spec(docs: &[(String, Value)]) -> Value {
    let plugins = of_kind(docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "one WasmPlugin");
    plugins[0]["spec"].clone()
}

/// The `vm_config` of the upstream role's module in the generated `failover.yaml`.
pub(crate) fn upstream_vm_config() -> Value {
    let failover: Value = serde_yaml::from_str(&read(GEN_OUT)).unwrap();
    failover["spec"]["configPatches"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_at(p, &["applyTo"]) == Some("EXTENSION_CONFIG"))
        .expect("failover.yaml delivers the upstream module")["patch"]["value"]["typed_config"]
        ["config"]["vm_config"]
        .clone()
}
