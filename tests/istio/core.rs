//! Checks for what Istio's CRDs do not describe, explicit rather than skipped:
//! - a core `v1` `Secret` (the provider keys): the fields a Secret has, `stringData` /
//!   `data` mapping file names to strings, no `immutable: true` (it could never be
//!   rotated in place);
//! - a Helm values file for Istio's `istio/gateway` chart: every top-level key is a value
//!   of the chart's `values.schema.json` at Istio 1.22.0 (vendored unmodified:
//!   `tests/istio/gateway-values.schema.json`, `manifests/charts/gateway/`), of the type
//!   the schema gives, and every `volumes` / `volumeMounts` item has the fields a pod spec
//!   needs (the chart passes them through to the Deployment unchecked).
//!
//! A document that is neither a kind with a CRD nor one of these fails
//! ([`super::crd`]'s test dispatches).

use super::{read, str_at};
use serde_yaml::Value;

/// The chart's schema for its values at the minimum supported Istio, 1.22.0.
pub const VALUES_SCHEMA: &str = "tests/istio/gateway-values.schema.json";

/// The top-level fields of a core `v1` Secret.
const SECRET_FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "data",
    "stringData",
    "immutable",
];

/// Whether `doc` is a core Secret (checked by [`secret_errors`], not by a CRD).
pub fn is_secret(doc: &Value) -> bool {
    str_at(doc, &["apiVersion"]) == Some("v1") && str_at(doc, &["kind"]) == Some("Secret")
}

/// What is wrong with a core `v1` Secret.
pub fn secret_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(m) = doc.as_mapping() else {
        return vec!["$: not an object".into()];
    };
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !SECRET_FIELDS.contains(&k) {
            errors.push(format!("$.{k}: unknown field of a Secret"));
        }
    }
    for key in ["name", "namespace"] {
        if !str_at(doc, &["metadata", key]).is_some_and(|s| !s.is_empty()) {
            errors.push(format!("$.metadata.{key}: required"));
        }
    }
    if let Some(k) = doc["metadata"].as_mapping().and_then(|m| {
        m.keys().find(|k| {
            !matches!(
                k.as_str(),
                Some("name" | "namespace" | "labels" | "annotations")
            )
        })
    }) {
        errors.push(format!(
            "$.metadata.{}: not checked here",
            k.as_str().unwrap_or("?")
        ));
    }
    if str_at(doc, &["type"]).unwrap_or("Opaque") != "Opaque" {
        errors.push("$.type: the keys are an Opaque Secret".into());
    }
    if doc["immutable"].as_bool() == Some(true) {
        errors.push("$.immutable: true: the keys could never be rotated in place".into());
    }
    let mut files = 0;
    for field in ["data", "stringData"] {
        let v = &doc[field];
        if v.is_null() {
            continue;
        }
        let Some(entries) = v.as_mapping() else {
            errors.push(format!("$.{field}: not an object"));
            continue;
        };
        for (k, v) in entries {
            let key = k.as_str().unwrap_or("");
            // Kubernetes: a key is [-._a-zA-Z0-9]+ (it becomes a file name).
            let valid_key = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !valid_key {
                errors.push(format!("$.{field}: {key:?} is not a valid key"));
            }
            if !v.is_string() {
                errors.push(format!("$.{field}.{key}: not a string"));
            }
            files += 1;
        }
    }
    if files == 0 {
        errors.push("$.stringData: no keys".into());
    }
    errors
}

/// The chart's values schema (`$defs.values.properties`).
pub fn values_schema() -> serde_json::Value {
    let schema: serde_json::Value = serde_json::from_str(&read(VALUES_SCHEMA)).unwrap();
    schema["$defs"]["values"]["properties"].clone()
}

/// Whether `v` has one of the JSON-schema `types` (a string or a list of them).
fn has_type(types: &serde_json::Value, v: &Value) -> bool {
    let one = |t: &str| match t {
        "object" => v.is_mapping(),
        "array" => v.is_sequence(),
        "string" => v.is_string(),
        "boolean" => v.is_bool(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "null" => v.is_null(),
        _ => false,
    };
    match types {
        serde_json::Value::String(t) => one(t),
        serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).any(one),
        _ => true, // no type in the schema: any value
    }
}

/// What is wrong with a values file for the `istio/gateway` chart.
pub fn gateway_values_errors(doc: &Value, schema: &serde_json::Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(m) = doc.as_mapping() else {
        return vec!["$: not an object".into()];
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or("?");
        let Some(s) = schema.get(key) else {
            errors.push(format!(
                "$.{key}: not a value of the istio/gateway chart (1.22)"
            ));
            continue;
        };
        if !has_type(&s["type"], v) {
            errors.push(format!("$.{key}: not of type {}", s["type"]));
        }
        if let (Some(items), Some(t)) = (v.as_sequence(), s["items"].get("type")) {
            for (i, item) in items.iter().enumerate() {
                if !has_type(t, item) {
                    errors.push(format!("$.{key}[{i}]: not of type {t}"));
                }
            }
        }
    }
    errors.extend(pod_volume_errors(doc));
    errors
}

/// The chart copies `volumes` / `volumeMounts` into the pod spec unchecked: each volume
/// needs a name and one source, each mount a name of a volume and an absolute path.
fn pod_volume_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let volumes = doc["volumes"].as_sequence().cloned().unwrap_or_default();
    let mut names = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let Some(name) = str_at(v, &["name"]) else {
            errors.push(format!("$.volumes[{i}].name: required"));
            continue;
        };
        names.push(name.to_string());
        let sources = v.as_mapping().map_or(0, |m| m.len()).saturating_sub(1);
        if sources != 1 {
            errors.push(format!("$.volumes[{i}]: {sources} sources, not 1"));
        }
        if let Some(secret) = v.get("secret") {
            if str_at(secret, &["secretName"]).is_none() {
                errors.push(format!("$.volumes[{i}].secret.secretName: required"));
            }
        }
    }
    for (i, m) in doc["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match str_at(m, &["name"]) {
            Some(n) if names.iter().any(|x| x == n) => {}
            n => errors.push(format!("$.volumeMounts[{i}].name: {n:?} is no volume")),
        }
        if !str_at(m, &["mountPath"]).is_some_and(|p| p.starts_with('/')) {
            errors.push(format!(
                "$.volumeMounts[{i}].mountPath: an absolute path is required"
            ));
        }
        for k in m.as_mapping().into_iter().flat_map(|m| m.keys()) {
            let k = k.as_str().unwrap_or("?");
            if ![
                "name",
                "mountPath",
                "readOnly",
                "subPath",
                "subPathExpr",
                "mountPropagation",
            ]
            .contains(&k)
            {
                errors.push(format!("$.volumeMounts[{i}].{k}: unknown field"));
            }
        }
    }
    errors
}

#[test]
fn the_vendored_values_schema_is_the_gateway_charts_with_volumes() {
    let schema = values_schema();
    for key in ["labels", "volumes", "volumeMounts"] {
        assert!(schema.get(key).is_some(), "{VALUES_SCHEMA} has no {key}");
    }
    assert_eq!(schema["volumes"]["type"], "array");
}

type Edit = fn(&mut Value);

/// Broken copies of the shipped Secret and values file are refused.
#[test]
fn the_core_kind_checks_refuse_broken_documents() {
    let docs = super::manifests();
    let secret = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| is_secret(d))
        .expect("a Secret in envoy/istio/");
    assert_eq!(secret_errors(secret), Vec::<String>::new());
    let secret_cases: [(&str, Edit); 5] = [
        ("$.strngData: unknown field", |v| {
            v["strngData"] = Value::from("x");
        }),
        ("$.immutable: true", |v| v["immutable"] = Value::from(true)),
        ("$.metadata.namespace: required", |v| {
            v["metadata"].as_mapping_mut().unwrap().remove("namespace");
        }),
        ("not a valid key", |v| {
            v["stringData"]["a/b"] = Value::from("x");
        }),
        ("$.stringData.n: not a string", |v| {
            v["stringData"]["n"] = Value::from(1);
        }),
    ];
    for (expect, edit) in secret_cases {
        let mut broken = secret.clone();
        edit(&mut broken);
        let errors = secret_errors(&broken);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{expect}: {errors:?}"
        );
    }
    let schema = values_schema();
    let values = super::helm_values();
    assert_eq!(values.len(), 1, "one values file");
    let values = &values[0].1;
    assert_eq!(gateway_values_errors(values, &schema), Vec::<String>::new());
    let values_cases: [(&str, Edit); 5] = [
        ("$.volumeMount: not a value", |v| {
            v["volumeMount"] = Value::Sequence(vec![]);
        }),
        ("$.volumes: not of type", |v| {
            v["volumes"] = Value::from("x")
        }),
        ("is no volume", |v| {
            v["volumeMounts"][0]["name"] = Value::from("nope");
        }),
        ("an absolute path", |v| {
            v["volumeMounts"][0]["mountPath"] = Value::from("etc");
        }),
        ("$.volumeMounts[0].readonly: unknown field", |v| {
            v["volumeMounts"][0]["readonly"] = Value::from(true);
        }),
    ];
    for (expect, edit) in values_cases {
        let mut broken = values.clone();
        edit(&mut broken);
        let errors = gateway_values_errors(&broken, &schema);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{expect}: {errors:?}"
        );
    }
}
