//! A small validator for Kubernetes structural schemas (a CRD's `openAPIV3Schema`), enough
//! for Istio's CRDs: `type`, `properties`, `additionalProperties`, `required`, `enum`,
//! `nullable`, `oneOf` / `anyOf` / `allOf` / `not`, `x-kubernetes-preserve-unknown-fields`,
//! `minimum` / `maximum`, `format: int32|uint32|int64|double|binary`, `minLength` /
//! `maxLength`, `minItems` / `maxItems`, and `pattern` (only the patterns in
//! [`check_pattern`]; any other pattern is a failure, never a silent pass).
//!
//! **Unknown fields are errors.** The API server prunes a field that its schema does not
//! declare (unless `x-kubernetes-preserve-unknown-fields`), so a misspelt or misplaced
//! field would be dropped silently; here it fails.
//!
//! CEL rules (`x-kubernetes-validations`) can't be evaluated here: every rule met on a
//! present value is returned in [`Report::cel`], so the caller must check each by hand or
//! fail.

use serde_yaml::Value;
use std::collections::BTreeMap;

/// The schemas of one CRD file, by (`group/version`, `kind`).
pub struct Crds {
    schemas: BTreeMap<(String, String), Value>,
}

/// What [`Crds::validate`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per violation: `path: what`.
    pub errors: Vec<String>,
    /// (path, CEL rule message) for every `x-kubernetes-validations` rule on a present value.
    pub cel: Vec<(String, String)>,
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))?
        .as_str()
        .map(str::to_string)
}

impl Crds {
    /// Parses a multi-document CRD file (`crd-all.gen.yaml`).
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let mut schemas = BTreeMap::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let doc = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
            let doc: Value = doc;
            if text(&doc, &["kind"]).as_deref() != Some("CustomResourceDefinition") {
                continue;
            }
            let group = text(&doc, &["spec", "group"]).ok_or("CRD without spec.group")?;
            let kind = text(&doc, &["spec", "names", "kind"]).ok_or("CRD without kind")?;
            for v in doc["spec"]["versions"].as_sequence().into_iter().flatten() {
                let name = text(v, &["name"]).ok_or("CRD version without name")?;
                let schema = v["schema"]["openAPIV3Schema"].clone();
                if schema.is_null() {
                    return Err(format!("{kind} {name}: no openAPIV3Schema"));
                }
                schemas.insert((format!("{group}/{name}"), kind.clone()), schema);
            }
        }
        Ok(Crds { schemas })
    }

    /// Every (apiVersion, kind) the file defines.
    pub fn kinds(&self) -> impl Iterator<Item = &(String, String)> {
        self.schemas.keys()
    }

    /// Validates one manifest against the schema of its `apiVersion` and `kind`.
    pub fn validate(&self, doc: &Value) -> Report {
        let mut r = Report::default();
        let (Some(api), Some(kind)) = (text(doc, &["apiVersion"]), text(doc, &["kind"])) else {
            r.errors.push("$: apiVersion and kind are required".into());
            return r;
        };
        let Some(schema) = self.schemas.get(&(api.clone(), kind.clone())) else {
            r.errors
                .push(format!("$: no CRD for apiVersion {api} kind {kind}"));
            return r;
        };
        let Some(root) = doc.as_mapping() else {
            r.errors.push("$: not an object".into());
            return r;
        };
        // The API server handles these itself; the schema declares spec and status.
        let mut rest = serde_yaml::Mapping::new();
        for (k, v) in root {
            match k.as_str() {
                Some("apiVersion" | "kind") => {}
                Some("metadata") => check_metadata(v, &mut r),
                _ => {
                    rest.insert(k.clone(), v.clone());
                }
            }
        }
        check(schema, &Value::Mapping(rest), "$", true, &mut r);
        r
    }
}

/// `metadata`: the ObjectMeta fields a manifest sets (others are refused, to stay strict).
fn check_metadata(v: &Value, r: &mut Report) {
    let Some(m) = v.as_mapping() else {
        r.errors.push("$.metadata: not an object".into());
        return;
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or("?");
        match key {
            "name" | "namespace" => {
                if !v.as_str().is_some_and(|s| !s.is_empty()) {
                    r.errors
                        .push(format!("$.metadata.{key}: must be a non-empty string"));
                }
            }
            "labels" | "annotations" => {
                let ok = v
                    .as_mapping()
                    .is_some_and(|m| m.iter().all(|(k, v)| k.is_string() && v.is_string()));
                if !ok {
                    r.errors
                        .push(format!("$.metadata.{key}: must map strings to strings"));
                }
            }
            _ => r.errors.push(format!(
                "$.metadata.{key}: unknown field (not checked here)"
            )),
        }
    }
    if !m.contains_key("name") {
        r.errors.push("$.metadata.name: required".into());
    }
}

/// Whether `v` satisfies `schema` (used for `oneOf` / `anyOf` / `allOf` / `not` branches,
/// which in a structural schema hold value validations only: no pruning there).
fn matches(schema: &Value, v: &Value, path: &str) -> bool {
    let mut r = Report::default();
    check(schema, v, path, false, &mut r);
    r.errors.is_empty()
}

fn check(schema: &Value, v: &Value, path: &str, prune: bool, r: &mut Report) {
    if v.is_null() {
        if schema["nullable"].as_bool() != Some(true) {
            r.errors.push(format!("{path}: null (not nullable)"));
        }
        return;
    }
    check_type(schema, v, path, prune, r);
    if let Some(allowed) = schema["enum"].as_sequence() {
        if !allowed.contains(v) {
            r.errors.push(format!(
                "{path}: {} is not one of {}",
                show(v),
                allowed.iter().map(show).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    check_combinators(schema, v, path, r);
    for rule in schema["x-kubernetes-validations"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let msg = text(rule, &["message"]).unwrap_or_else(|| show(&rule["rule"]));
        r.cel.push((path.to_string(), msg));
    }
}

fn check_combinators(schema: &Value, v: &Value, path: &str, r: &mut Report) {
    let branches = |key: &str| schema[key].as_sequence().cloned().unwrap_or_default();
    let one_of = branches("oneOf");
    if !one_of.is_empty() {
        let n = one_of.iter().filter(|b| matches(b, v, path)).count();
        if n != 1 {
            r.errors
                .push(format!("{path}: matches {n} of the oneOf alternatives, not 1 (fields that exclude each other?)"));
        }
    }
    let any_of = branches("anyOf");
    if !any_of.is_empty() && !any_of.iter().any(|b| matches(b, v, path)) {
        r.errors
            .push(format!("{path}: matches none of the anyOf alternatives"));
    }
    for b in branches("allOf") {
        check(&b, v, path, false, r);
    }
    if schema.get("not").is_some() && matches(&schema["not"], v, path) {
        r.errors.push(format!("{path}: matches a `not` schema"));
    }
}

fn show(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

fn check_type(schema: &Value, v: &Value, path: &str, prune: bool, r: &mut Report) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
    match schema["type"].as_str() {
        Some("object") => check_object(schema, v, path, prune, r),
        Some("array") => check_array(schema, v, path, prune, r),
        Some("string") => check_string(schema, v, path, r),
        Some("integer") => match (v.as_i64(), v.as_u64()) {
            (Some(n), _) => check_number(schema, n as f64, path, r),
            (None, Some(n)) => check_number(schema, n as f64, path, r),
            _ => r
                .errors
                .push(format!("{path}: {} is not an integer", show(v))),
        },
        Some("number") => match v.as_f64() {
            Some(n) => check_number(schema, n, path, r),
            None => r
                .errors
                .push(format!("{path}: {} is not a number", show(v))),
        },
        Some("boolean") if !v.is_bool() => {
            r.errors
                .push(format!("{path}: {} is not a boolean", show(v)));
        }
        Some("boolean") => {}
        Some(other) => r
            .errors
            .push(format!("{path}: schema type {other} unsupported")),
        // No type: anything, when unknown fields are preserved; a combinator branch
        // (value validations only) checks its object's fields.
        None if preserve => {}
        None if v.is_mapping() => check_object(schema, v, path, false, r),
        None => {}
    }
}

fn check_object(schema: &Value, v: &Value, path: &str, prune: bool, r: &mut Report) {
    let Some(m) = v.as_mapping() else {
        r.errors
            .push(format!("{path}: {} is not an object", show(v)));
        return;
    };
    let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
    let props = schema["properties"].as_mapping();
    let extra = &schema["additionalProperties"];
    for (k, fv) in m {
        let Some(key) = k.as_str() else {
            r.errors
                .push(format!("{path}: a non-string key {}", show(k)));
            continue;
        };
        let at = format!("{path}.{key}");
        if let Some(s) = props.and_then(|p| p.get(key)) {
            check(s, fv, &at, prune, r);
        } else if extra.is_mapping() {
            check(extra, fv, &at, prune, r);
        } else if extra.as_bool() == Some(true) || preserve || !prune {
            // kept as it is (or a combinator branch, which does not prune)
        } else {
            r.errors.push(format!(
                "{at}: unknown field (the API server would prune it)"
            ));
        }
    }
    for req in schema["required"].as_sequence().into_iter().flatten() {
        if let Some(req) = req.as_str() {
            if !m.contains_key(req) {
                r.errors.push(format!("{path}.{req}: required"));
            }
        }
    }
}

fn check_array(schema: &Value, v: &Value, path: &str, prune: bool, r: &mut Report) {
    let Some(items) = v.as_sequence() else {
        r.errors
            .push(format!("{path}: {} is not an array", show(v)));
        return;
    };
    if let Some(max) = schema["maxItems"].as_u64() {
        if items.len() as u64 > max {
            r.errors.push(format!("{path}: more than {max} items"));
        }
    }
    if let Some(min) = schema["minItems"].as_u64() {
        if (items.len() as u64) < min {
            r.errors.push(format!("{path}: fewer than {min} items"));
        }
    }
    let item_schema = &schema["items"];
    for (i, item) in items.iter().enumerate() {
        check(item_schema, item, &format!("{path}[{i}]"), prune, r);
    }
}

fn check_string(schema: &Value, v: &Value, path: &str, r: &mut Report) {
    let Some(s) = v.as_str() else {
        r.errors
            .push(format!("{path}: {} is not a string", show(v)));
        return;
    };
    let len = s.chars().count() as u64;
    if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
        r.errors.push(format!("{path}: longer than maxLength"));
    }
    if schema["minLength"].as_u64().is_some_and(|min| len < min) {
        r.errors.push(format!("{path}: shorter than minLength"));
    }
    if let Some(p) = schema["pattern"].as_str() {
        if let Err(e) = check_pattern(p, s) {
            r.errors.push(format!("{path}: {e}"));
        }
    }
}

/// The `pattern`s of Istio's CRDs, by hand (no regex engine in the workspace). An
/// unknown pattern fails, so a new CRD can't pass unchecked.
fn check_pattern(pattern: &str, s: &str) -> Result<(), String> {
    match pattern {
        "(^$|^[a-f0-9]{64}$)" => {
            let hex = s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if s.is_empty() || hex {
                Ok(())
            } else {
                Err(format!(
                    "{s:?} does not match {pattern} (64 lower-case hex digits)"
                ))
            }
        }
        other => Err(format!(
            "pattern {other} is not supported by this validator"
        )),
    }
}

fn check_number(schema: &Value, n: f64, path: &str, r: &mut Report) {
    let (lo, hi) = match schema["format"].as_str() {
        Some("int32") => (i32::MIN as f64, i32::MAX as f64),
        Some("uint32") => (0.0, u32::MAX as f64),
        _ => (f64::MIN, f64::MAX),
    };
    let lo = schema["minimum"].as_f64().map_or(lo, |m| m.max(lo));
    let hi = schema["maximum"].as_f64().map_or(hi, |m| m.min(hi));
    if n < lo || n > hi {
        r.errors
            .push(format!("{path}: {n} is outside [{lo}, {hi}]"));
    }
}
