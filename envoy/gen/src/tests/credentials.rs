//! Credentials, paths and headers per provider: the injectors and the staging-header
//! removal around the upstream role in each aggregate, the request blocks in its
//! configuration (never a key), the route's header removals, refusals by field.

use super::*;

const SHAPED: &str = "providers:\n\
- {name: openai, address: api.openai.com, port: 443, tls: true,\n   credential: {sds_file: /etc/llmb/openai.yaml, header: authorization, prefix: 'Bearer '}}\n\
- {name: azure-openai, address: res.openai.azure.com, port: 443, tls: true,\n   credential: {sds_file: /etc/llmb/azure.yaml, header: api-key, watched_directory: /etc/llmb},\n   path: {strip_prefix: /v1, prefix: /openai/deployments/gpt-4o, query: api-version=2024-10-21}}\n\
- {name: vllm, address: 10.0.0.7, port: 8000, headers: {x-tenant: a}}\n";

fn shaped_doc(filter: &str) -> Value {
    serde_yaml::from_str(&generate(filter.as_bytes(), SHAPED, Format::Envoy).unwrap()).unwrap()
}

fn filter_names(doc: &Value, cluster_name: &str) -> Vec<String> {
    options(cluster(doc, cluster_name))["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_aggregate_injects_its_members_keys_before_the_upstream_role_and_strips_them_after() {
    let doc = shaped_doc(FILTER);
    assert_eq!(
        filter_names(&doc, "llmb|openai|azure-openai|vllm"),
        [
            "llm-breaker-credential-openai",
            "llm-breaker-credential-azure-openai",
            "llm-breaker-attempt-upstream",
            "llm-breaker-upstream",
            "llm-breaker-strip-staging",
            "envoy.filters.http.upstream_codec"
        ]
    );
    assert_eq!(
        filter_names(&doc, "llmb|vllm"),
        [
            "llm-breaker-attempt-upstream",
            "llm-breaker-upstream",
            "llm-breaker-strip-staging",
            "envoy.filters.http.upstream_codec"
        ],
        "no member with a key: no injector"
    );
    let filters = &options(cluster(&doc, "llmb|azure-openai"))["http_filters"];
    let generic = &filters[0]["typed_config"]["credential"]["typed_config"];
    assert_eq!(generic["header"], "x-llm-breaker-credential-azure-openai");
    assert_eq!(generic["credential"]["name"], "azure-openai");
    let source = &generic["credential"]["sds_config"]["path_config_source"];
    assert_eq!(source["path"], "/etc/llmb/azure.yaml");
    assert_eq!(source["watched_directory"]["path"], "/etc/llmb");
    assert_eq!(filters[0]["typed_config"]["overwrite"], true);
    let strip = &filters[3]["typed_config"]["mutations"]["request_mutations"];
    let removed: Vec<&str> = strip
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["remove"].as_str().unwrap())
        .collect();
    assert_eq!(
        removed,
        [
            "x-llm-breaker-credential-openai",
            "x-llm-breaker-credential-azure-openai",
            "x-llm-breaker-client-authorization",
            "x-llm-breaker-client-api-key",
            "x-llm-breaker-client-x-api-key",
            "x-llm-breaker-attempt-upstream"
        ]
    );
}

#[test]
fn the_upstream_role_gets_the_request_blocks_and_no_secret() {
    let doc = shaped_doc(FILTER);
    let filters = &options(cluster(&doc, "llmb|vllm"))["http_filters"];
    let value = filters[1]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(value).unwrap();
    let ups = &json["upstreams"];
    assert_eq!(
        ups["openai"]["request"]["credential"],
        serde_json::json!({"header": "authorization", "prefix": "Bearer "})
    );
    assert_eq!(
        ups["azure-openai"]["request"]["path"]["prefix"],
        "/openai/deployments/gpt-4o"
    );
    assert_eq!(ups["vllm"]["request"]["headers"]["x-tenant"], "a");
    assert!(!value.contains("/etc/llmb"), "not even the secret's path");
}

#[test]
fn the_route_always_removes_client_credentials_and_istio_too() {
    let want: Value =
        serde_yaml::from_str("[x-llm-breaker-original-path, authorization, api-key, x-api-key]")
            .unwrap();
    assert_eq!(shaped_doc(FILTER)["request_headers_to_remove"], want);
    // A passthrough route does not change it: the downstream role copies the client's
    // headers first, and the copies are stripped after the upstream role.
    let passing = FILTER.replacen(
        r#""name":"chat","#,
        r#""name":"chat","pass_client_credentials":true,"#,
        1,
    );
    let doc = shaped_doc(&passing);
    assert_eq!(doc["request_headers_to_remove"], want);
    let strip = &options(cluster(&doc, "llmb|vllm"))["http_filters"][2];
    let removed = serde_yaml::to_string(&strip["typed_config"]["mutations"]).unwrap();
    assert!(
        removed.contains("x-llm-breaker-client-authorization"),
        "{removed}"
    );
    let istio: Value =
        serde_yaml::from_str(&generate(FILTER.as_bytes(), SHAPED, Format::Istio).unwrap()).unwrap();
    let patches = istio["spec"]["configPatches"].as_sequence().unwrap();
    let route = patches.last().unwrap();
    assert_eq!(route["patch"]["value"]["request_headers_to_remove"], want);
}

#[test]
fn bad_shaping_is_refused_naming_the_provider_field() {
    let bad = SHAPED.replace("/etc/llmb/openai.yaml", "\"\"");
    let err = generate(FILTER.as_bytes(), &bad, Format::Envoy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`providers[0].credential.sds_file`"), "{err}");
    let bad = SHAPED.replace("header: api-key", "header: Api-Key");
    let err = generate(FILTER.as_bytes(), &bad, Format::Envoy)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upstreams.azure-openai.request.credential.header"),
        "{err}"
    );
    let bad = SHAPED.replace("sds_file: /etc/llmb/openai.yaml", "file: /k");
    let err = generate(FILTER.as_bytes(), &bad, Format::Envoy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `file`"), "{err}");
}
