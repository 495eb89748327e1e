//! The manifests against Istio 1.22's CRD schemas (the Secret and the Helm values file
//! against the explicit checks of `core.rs`), and the validator against broken ones.

use super::schema::Crds;
use super::{
    all_yaml, core_kinds, is_helm_values, istio_dir, manifests, named, read, str_at, yaml_docs,
};
use serde_yaml::Value;
use std::collections::BTreeSet;

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
    let docs = all_yaml();
    assert!(docs.len() >= 9, "manifests in {}", istio_dir().display());
    for file in ["failover.yaml", "credentials.yaml", "gateway-values.yaml"] {
        assert!(
            docs.iter().any(|(f, _)| f == file),
            "{file} is validated too"
        );
    }
    let mut failures = Vec::new();
    // The generator's own example output too (envoy/gen/example/, `make gen`).
    let example = "envoy/gen/example/istio-failover.yaml";
    let mut docs = docs;
    docs.extend(yaml_docs(example, &read(example)));
    let values_schema = core_kinds::values_schema();
    let (mut by_crd, mut core, mut values) = (0, 0, 0);
    for (file, doc) in &docs {
        let name = str_at(doc, &["metadata", "name"]).unwrap_or("?");
        // No CRD for these: checked explicitly (tests/istio/core.rs). Any other kind
        // without a CRD fails in `schema_errors` ("no CRD for apiVersion …").
        let errors = if is_helm_values(file) {
            values += 1;
            core_kinds::gateway_values_errors(doc, &values_schema)
        } else if core_kinds::is_secret(doc) {
            core += 1;
            core_kinds::secret_errors(doc)
        } else {
            by_crd += 1;
            schema_errors(&crds, doc)
        };
        for e in errors {
            failures.push(format!("{file} ({name}): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "schema violations:\n{}",
        failures.join("\n")
    );
    eprintln!(
        "{by_crd} manifests pass Istio 1.22's CRD schemas; {core} Secret(s) and {values} \
         Helm values file(s) pass their explicit checks"
    );
}

/// A copy of `doc` with `edit` applied must fail with an error containing `expect`.
fn assert_refused(crds: &Crds, doc: &Value, what: &str, expect: &str, edit: Edit) {
    let mut broken = doc.clone();
    edit(&mut broken);
    let errors = schema_errors(crds, &broken);
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "{what}: expected an error containing {expect:?}, got {errors:?}"
    );
}

fn set(v: &mut Value, path: &[&str], value: &str) {
    let (last, parents) = path.split_last().unwrap();
    let parent = parents.iter().fold(v, |v, k| &mut v[*k]);
    let value = serde_yaml::from_str(value).unwrap();
    parent
        .as_mapping_mut()
        .unwrap()
        .insert(Value::from(*last), value);
}

type Edit = fn(&mut Value);

/// (kind, name) of a shipped manifest, what is broken, the expected error, the edit.
#[allow(clippy::type_complexity)]
fn broken_cases() -> Vec<(
    (&'static str, &'static str),
    &'static str,
    &'static str,
    Edit,
)> {
    let plugin = ("WasmPlugin", "llm-breaker");
    let vs = ("VirtualService", "llm");
    let filter = ("EnvoyFilter", "llm-idle-timeout");
    let entry = ("ServiceEntry", "openai");
    vec![
        (
            plugin,
            "a misspelt field",
            "$.spec.failStratgy: unknown field",
            |v| set(v, &["spec", "failStratgy"], "FAIL_OPEN"),
        ),
        (plugin, "a wrong type", "$.spec.priority: ", |v| {
            set(v, &["spec", "priority"], "high")
        }),
        (
            plugin,
            "an enum value 1.22 lacks",
            "FAIL_RELOAD is not one of",
            |v| set(v, &["spec", "failStrategy"], "FAIL_RELOAD"),
        ),
        (
            plugin,
            "a checksum that is no hex digest",
            "does not match",
            |v| set(v, &["spec", "sha256"], "sha256:abc"),
        ),
        (
            plugin,
            "a scheme Istio does not fetch",
            "url must have schema",
            |v| set(v, &["spec", "url"], "ftp://registry.example.com/x"),
        ),
        (
            plugin,
            "an unknown metadata field",
            "$.metadata.nmae",
            |v| set(v, &["metadata", "nmae"], "x"),
        ),
        (
            vs,
            "a nested unknown field",
            "$.spec.http[0].retries.perTryTimout: unknown field",
            |v| {
                set(
                    &mut v["spec"]["http"][0],
                    &["retries", "perTryTimout"],
                    "1s",
                )
            },
        ),
        (
            vs,
            "a string where a list belongs",
            "$.spec.gateways: ",
            |v| set(v, &["spec", "gateways"], "llm-gateway"),
        ),
        (
            vs,
            "a negative port",
            "$.spec.http[0].route[0].destination.port.number: -1 is outside",
            |v| {
                set(
                    &mut v["spec"]["http"][0]["route"][0],
                    &["destination", "port", "number"],
                    "-1",
                )
            },
        ),
        (filter, "two exclusive match fields (oneOf)", "oneOf", |v| {
            set(
                &mut v["spec"]["configPatches"][0],
                &["match", "cluster"],
                "{name: x}",
            )
        }),
        (
            filter,
            "a patch operation that does not exist",
            "$.spec.configPatches[0].patch.operation",
            |v| {
                set(
                    &mut v["spec"]["configPatches"][0],
                    &["patch", "operation"],
                    "UPSERT",
                )
            },
        ),
        (
            entry,
            "a missing required field",
            "$.spec.hosts: required",
            |v| {
                v["spec"].as_mapping_mut().unwrap().remove("hosts");
            },
        ),
        (
            entry,
            "an apiVersion without a CRD",
            "no CRD for apiVersion",
            |v| set(v, &["apiVersion"], "networking.istio.io/v2"),
        ),
    ]
}

#[test]
fn the_schema_check_refuses_broken_manifests() {
    let crds = crds();
    let docs = manifests();
    let cases = broken_cases();
    for ((kind, name), what, expect, edit) in &cases {
        let doc = named(&docs, kind, name);
        assert_eq!(
            schema_errors(&crds, doc),
            Vec::<String>::new(),
            "{kind} {name}"
        );
        assert_refused(&crds, doc, what, expect, *edit);
    }
    // An EnvoyFilter patch `value` keeps unknown fields (x-kubernetes-preserve-unknown-fields):
    // Envoy, not the API server, checks it.
    let mut value = named(&docs, "EnvoyFilter", "llm-idle-timeout").clone();
    set(
        &mut value["spec"]["configPatches"][0]["patch"],
        &["value", "anything"],
        "1",
    );
    assert_eq!(schema_errors(&crds, &value), Vec::<String>::new());
    eprintln!("{} broken manifests refused", cases.len());
}

/// Words YAML 1.1 reads as booleans; the API server's YAML parser (go-yaml v2, via
/// sigs.k8s.io/yaml) is YAML 1.1, serde_yaml and the schema check above are YAML 1.2.
const YAML11_BOOLS: [&str; 18] = [
    "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off",
    "OFF", "true", "false",
];

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Sequence(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

/// A string that YAML 1.1 would read as a boolean (`host: n`, an `on:` key) must be
/// quoted, or the API server gets a boolean where the schema wants a string.
#[test]
fn no_unquoted_string_is_a_yaml_1_1_boolean() {
    for entry in std::fs::read_dir(istio_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = yaml_docs("", &text);
        let mut found = Vec::new();
        for (_, doc) in &docs {
            strings(doc, &mut found);
        }
        for s in found.into_iter().filter(|s| YAML11_BOOLS.contains(s)) {
            assert!(
                text.contains(&format!("'{s}'")) || text.contains(&format!("\"{s}\"")),
                "{}: the string {s} is not quoted: YAML 1.1 reads a boolean",
                path.display()
            );
        }
    }
}
