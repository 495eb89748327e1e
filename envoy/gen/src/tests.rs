//! Generator tests: names, retry counts, determinism, refusals, and the checked-in example.

use super::*;
use serde_yaml::Value;

const FILTER: &str = r#"{"failover":"within_request","routes":[{"name":"chat","match":{"path_prefix":"/v1/"},
  "upstreams":["openai",{"upstream":"azure-openai","model":"gpt-4o"},"vllm"]}]}"#;
const PROVIDERS: &str = "providers:\n\
- {name: vllm, address: 10.0.0.7, port: 8000}\n\
- {name: openai, address: api.openai.com, port: 443, tls: true}\n\
- {name: azure-openai, address: res.openai.azure.com, port: 443, tls: true, sni: res.openai.azure.com}\n";

fn envoy_doc() -> Value {
    serde_yaml::from_str(&generate(FILTER.as_bytes(), PROVIDERS, Format::Envoy).unwrap()).unwrap()
}

fn clusters(doc: &Value) -> &Vec<Value> {
    doc["clusters"].as_sequence().unwrap()
}

fn cluster<'a>(doc: &'a Value, name: &str) -> &'a Value {
    clusters(doc)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn options(c: &Value) -> &Value {
    &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
}

#[test]
fn a_chain_of_three_gives_three_providers_and_seven_aggregates_sorted() {
    let doc = envoy_doc();
    let names: Vec<&str> = clusters(&doc)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "azure-openai",
            "openai",
            "vllm",
            "llmb|azure-openai",
            "llmb|azure-openai|vllm",
            "llmb|openai",
            "llmb|openai|azure-openai",
            "llmb|openai|azure-openai|vllm",
            "llmb|openai|vllm",
            "llmb|vllm",
        ]
    );
}

#[test]
fn aggregates_list_their_members_in_chain_order_and_retry_one_less_than_them() {
    let doc = envoy_doc();
    for (name, members) in [
        (
            "llmb|openai|azure-openai|vllm",
            vec!["openai", "azure-openai", "vllm"],
        ),
        ("llmb|openai|vllm", vec!["openai", "vllm"]),
        ("llmb|vllm", vec!["vllm"]),
    ] {
        let c = cluster(&doc, name);
        let got: Vec<&str> = c["cluster_type"]["typed_config"]["clusters"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, members, "{name}");
        let policy = &options(c)["retry_policy"];
        assert_eq!(
            policy["num_retries"].as_u64(),
            Some(members.len() as u64 - 1),
            "{name}"
        );
        assert_eq!(
            policy["retry_on"],
            "5xx,reset,connect-failure,retriable-status-codes"
        );
        assert_eq!(policy["retriable_status_codes"][0].as_u64(), Some(429));
        assert_eq!(
            policy["retry_priority"]["name"],
            "envoy.retry_priorities.previous_priorities"
        );
        assert_eq!(
            policy["retry_priority"]["typed_config"]["update_frequency"].as_u64(),
            Some(1)
        );
        assert_eq!(
            c["circuit_breakers"]["thresholds"][0]["max_retries"].as_u64(),
            Some(1024)
        );
        assert_eq!(c["lb_policy"], "CLUSTER_PROVIDED");
    }
}

#[test]
fn an_aggregate_without_shaping_runs_no_filter_and_the_route_names_the_answer() {
    let doc = envoy_doc();
    // openai and vllm: no credential, path, headers or model.
    let filters = options(cluster(&doc, "llmb|openai|vllm"))["http_filters"]
        .as_sequence()
        .unwrap();
    assert_eq!(filters.len(), 1, "the codec alone: {filters:?}");
    assert_eq!(filters[0]["name"], "envoy.filters.http.upstream_codec");
    // The route names the answering member, once per request, into the response
    // header the downstream role overwrites with its summary.
    let added = &doc["response_headers_to_add"][0];
    assert_eq!(added["header"]["key"], "x-llm-breaker");
    assert_eq!(
        added["header"]["value"],
        r#"%UPSTREAM_METADATA(["llm_breaker","served"])%"#
    );
    assert_eq!(added["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD");
    // With `response_header` off, the name goes into its own header.
    let quiet = FILTER.replacen('{', r#"{"response_header":"","#, 1);
    let doc: Value =
        serde_yaml::from_str(&generate(quiet.as_bytes(), PROVIDERS, Format::Envoy).unwrap())
            .unwrap();
    assert_eq!(
        doc["response_headers_to_add"][0]["header"]["key"],
        "x-llm-breaker-attempt"
    );
}

#[test]
fn a_passthrough_route_puts_the_upstream_role_on_every_aggregate() {
    let filter = r#"{"failover":"within_request","routes":[{"name":"chat","match":{"path_prefix":"/v1/"},
      "pass_client_credentials":true,"upstreams":["openai","vllm"]}]}"#;
    let doc: Value =
        serde_yaml::from_str(&generate(filter.as_bytes(), PROVIDERS, Format::Envoy).unwrap())
            .unwrap();
    for name in ["llmb|openai", "llmb|openai|vllm", "llmb|vllm"] {
        let filters = options(cluster(&doc, name))["http_filters"]
            .as_sequence()
            .unwrap();
        assert!(
            filters.iter().any(|f| f["name"] == "llm-breaker-upstream"),
            "{name}: the client's key goes back on every attempt"
        );
    }
}

#[test]
fn the_upstream_log_shares_the_vm_and_is_called_for_failed_attempts_only() {
    let doc = envoy_doc();
    let log = doc["upstream_log"].as_sequence().unwrap();
    assert_eq!(log.len(), 1);
    let filters = serde_json::to_string(&log[0]["filter"]).unwrap();
    for (op, v) in [("GE", 500), ("EQ", 429), ("EQ", 0)] {
        assert!(
            filters.contains(&format!(r#""op":"{op}","value":{{"default_value":{v}"#)),
            "{op} {v}: {filters}"
        );
    }
    // The rule the downstream role follows: exactly those are left to the log.
    use llm_breaker::worker::within::upstream_log_records;
    for (status, logged) in [
        (None, true),
        (Some(0), true),
        (Some(429), true),
        (Some(500), true),
        (Some(503), true),
        (Some(200), false),
        (Some(401), false),
        (Some(499), false),
    ] {
        assert_eq!(upstream_log_records(status), logged, "{status:?}");
    }
    let c = &log[0]["typed_config"];
    assert_eq!(
        c["@type"],
        "type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog"
    );
    assert_eq!(c["config"]["vm_config"]["vm_id"], "llm_breaker");
    let json: serde_json::Value =
        serde_json::from_str(c["config"]["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(json["role"], "upstream_log");
    assert!(json.get("attempt_upstream_header").is_none());
    assert_eq!(json["routes"][0]["name"], "chat");
}

#[test]
fn a_retried_status_the_upstream_log_would_not_see_is_refused() {
    let p = format!("{PROVIDERS}retry: {{retriable_status_codes: [429, 408]}}\n");
    let e = generate(FILTER.as_bytes(), &p, Format::Envoy).unwrap_err();
    assert!(
        e.to_string().contains("retry.retriable_status_codes"),
        "{e}"
    );
    let p = format!("{PROVIDERS}retry: {{retriable_status_codes: [429, 529]}}\n");
    assert!(generate(FILTER.as_bytes(), &p, Format::Envoy).is_ok());
}

#[test]
fn the_upstream_filter_shares_the_vm_id_and_comes_before_the_codec() {
    let doc = envoy_doc();
    // azure-openai's chain entry gives a model: its aggregates shape attempts.
    let filters = options(cluster(&doc, "llmb|openai|azure-openai"))["http_filters"]
        .as_sequence()
        .unwrap();
    assert_eq!(
        filters.len(),
        4,
        "the attempt's upstream name, the upstream role, the staging-header removal, the codec"
    );
    assert_eq!(filters[0]["name"], "llm-breaker-attempt-upstream");
    let mutations = serde_yaml::to_string(&filters[0]["typed_config"]["mutations"]).unwrap();
    assert!(
        mutations.contains(r#"%UPSTREAM_METADATA(["llm_breaker","upstream"])%"#)
            && mutations.find("remove") < mutations.find("append"),
        "a client's value removed, then the endpoint metadata: {mutations}"
    );
    assert_eq!(filters[2]["name"], "llm-breaker-strip-staging");
    let stripped = serde_yaml::to_string(&filters[2]["typed_config"]["mutations"]).unwrap();
    assert!(
        stripped.contains("x-llm-breaker-attempt-upstream"),
        "{stripped}"
    );
    assert_eq!(filters[1]["name"], "llm-breaker-upstream");
    let config = &filters[1]["typed_config"]["config"];
    assert_eq!(config["vm_config"]["vm_id"], "llm_breaker");
    let json: serde_json::Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        json["role"], "upstream",
        "the upstream role is told so in its configuration"
    );
    assert_eq!(
        json["attempt_upstream_header"], "x-llm-breaker-attempt-upstream",
        "and where the attempt's upstream is named"
    );
    assert_eq!(
        json["routes"][0]["name"], "chat",
        "and runs the same breakers as the downstream role"
    );
    assert_eq!(filters[3]["name"], "envoy.filters.http.upstream_codec");
}

#[test]
fn provider_clusters_name_their_upstream_in_endpoint_metadata_and_originate_tls() {
    let doc = envoy_doc();
    let openai = cluster(&doc, "openai");
    let ep = &openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(
        ep["metadata"]["filter_metadata"]["llm_breaker"]["upstream"],
        "openai"
    );
    // No key of the gateway's for it: the served name is the plain one.
    assert_eq!(
        ep["metadata"]["filter_metadata"]["llm_breaker"]["served"],
        "openai"
    );
    assert_eq!(openai["type"], "LOGICAL_DNS");
    assert_eq!(
        openai["transport_socket"]["typed_config"]["sni"],
        "api.openai.com"
    );
    let vllm = cluster(&doc, "vllm");
    assert_eq!(vllm["type"], "STATIC");
    assert!(vllm.get("transport_socket").is_none());
}

#[test]
fn the_route_names_the_routing_header_and_keeps_the_per_try_timeout() {
    let doc = envoy_doc();
    assert_eq!(doc["route"]["cluster_header"], "x-llm-breaker-upstream");
    assert_eq!(doc["route"]["retry_policy"]["per_try_timeout"], "300s");
    assert_eq!(doc["route"]["retry_policy"]["per_try_idle_timeout"], "300s");
    assert_eq!(
        doc["route"]["timeout"], "0s",
        "no total bound on a flowing stream"
    );
    assert_eq!(
        doc["route"]["auto_host_rewrite"], true,
        "each attempt's Host is its provider's (endpoint hostname)"
    );
}

#[test]
fn output_is_deterministic_and_independent_of_provider_order() {
    let a = generate(FILTER.as_bytes(), PROVIDERS, Format::Envoy).unwrap();
    let b = generate(FILTER.as_bytes(), PROVIDERS, Format::Envoy).unwrap();
    assert_eq!(a, b);
    let mut lines: Vec<&str> = PROVIDERS.lines().collect();
    lines[1..].reverse();
    let reordered = lines.join("\n");
    assert_eq!(
        a,
        generate(FILTER.as_bytes(), &reordered, Format::Envoy).unwrap()
    );
    let i1 = generate(FILTER.as_bytes(), PROVIDERS, Format::Istio).unwrap();
    assert_eq!(
        i1,
        generate(FILTER.as_bytes(), &reordered, Format::Istio).unwrap()
    );
}

#[test]
fn a_bad_filter_config_is_refused_with_the_filters_own_message() {
    let bad = r#"{"routes":[{"name":"chat","upstreams":["openai"]}],"breaker":{"failure_rate":{"threshold":1.5}}}"#;
    let want = llm_breaker::config::Config::parse(bad.as_bytes())
        .unwrap_err()
        .to_string();
    let err = generate(bad.as_bytes(), PROVIDERS, Format::Envoy).unwrap_err();
    assert_eq!(err, InputError::FilterConfig(want.clone()));
    assert!(err.to_string().contains("threshold"), "{err}");
    assert!(generate(b"not json", PROVIDERS, Format::Envoy).is_err());
}

#[test]
fn a_filter_config_without_within_request_is_refused() {
    let next = r#"{"routes":[{"name":"chat","upstreams":["openai"]}]}"#;
    let err = generate(next.as_bytes(), PROVIDERS, Format::Envoy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("within_request"), "{err}");
}

#[test]
fn an_upstream_without_a_provider_is_refused_by_name() {
    let err = generate(
        FILTER.as_bytes(),
        "providers:\n- {name: openai, address: 1.2.3.4, port: 80}\n",
        Format::Envoy,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider file: upstream \"azure-openai\" of route \"chat\" has no entry in `providers`"
    );
}

#[test]
fn bad_provider_fields_are_refused_by_field() {
    let cases = [
        ("providers:\n- {name: openai, address: a, port: 0}\n", "providers[0].port"),
        ("providers:\n- {name: openai, address: a, port: 1, sni: x}\n", "providers[0].sni"),
        ("providers:\n- {name: openai, address: a, port: 1}\n- {name: openai, address: b, port: 2}\n", "providers[1].name"),
        ("providers: []\nbogus: 1\n", "bogus"),
    ];
    let one = r#"{"failover":"within_request","routes":[{"name":"chat","upstreams":["openai"]}]}"#;
    for (text, field) in cases {
        let err = generate(one.as_bytes(), text, Format::Envoy)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn istio_output_adds_clusters_merges_the_route_and_delivers_the_module_by_ecds() {
    let doc: Value =
        serde_yaml::from_str(&generate(FILTER.as_bytes(), PROVIDERS, Format::Istio).unwrap())
            .unwrap();
    assert_eq!(doc["kind"], "EnvoyFilter");
    assert_eq!(
        doc["spec"]["workloadSelector"]["labels"]["istio"],
        "llm-gateway"
    );
    let patches = doc["spec"]["configPatches"].as_sequence().unwrap();
    let kinds: Vec<(&str, &str)> = patches
        .iter()
        .map(|p| {
            (
                p["applyTo"].as_str().unwrap(),
                p["patch"]["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("EXTENSION_CONFIG", "ADD"));
    assert_eq!(
        kinds.iter().filter(|k| **k == ("CLUSTER", "ADD")).count(),
        10
    );
    assert_eq!(kinds.last(), Some(&("HTTP_ROUTE", "MERGE")));
    // No virtual host patch: the gateway's other routes are left as they are.
    assert!(patches.iter().all(|p| p["applyTo"] != "VIRTUAL_HOST"));
    let ext = &patches[0]["patch"]["value"];
    assert_eq!(ext["name"], "llm-breaker-upstream");
    // The WasmPlugin's VM has no vm_id; the upstream role shares its (empty) one.
    assert_eq!(ext["typed_config"]["config"]["vm_config"]["vm_id"], "");
    assert_eq!(
        ext["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"]["uri"],
        "oci://registry.example.com/llm-breaker:0.1.0"
    );
    let agg = patches
        .iter()
        .find(|p| p["patch"]["value"]["name"] == "llmb|openai|azure-openai")
        .unwrap();
    let f = &options(&agg["patch"]["value"])["http_filters"][1];
    assert_eq!(f["name"], "llm-breaker-upstream");
    assert!(f["config_discovery"]["config_source"]["ads"].is_mapping());
    let route = &patches.last().unwrap();
    assert_eq!(
        route["match"]["routeConfiguration"]["vhost"]["route"]["name"],
        "llm-breaker"
    );
    assert_eq!(
        route["patch"]["value"]["route"]["cluster_header"],
        "x-llm-breaker-upstream"
    );
}

#[test]
fn a_template_gets_the_clusters_at_the_placeholder_indent() {
    let t = "v: |\n  # llm-breaker-gen: filter\nrouter:\n  # llm-breaker-gen: upstream_log\nroute:\n  # llm-breaker-gen: response_headers_to_add\nstatic_resources:\n  clusters:\n  # llm-breaker-gen: clusters\n";
    let out = fill_template(t, FILTER.as_bytes(), PROVIDERS).unwrap();
    let doc: Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(
        doc["static_resources"]["clusters"]
            .as_sequence()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(doc["v"].as_str().unwrap().trim_end(), FILTER);
    assert_eq!(
        doc["router"]["upstream_log"][0]["name"],
        "llm-breaker-upstream-log"
    );
    assert!(fill_template("x: 1\n", FILTER.as_bytes(), PROVIDERS).is_err());
    let no_log = "r:\n  # llm-breaker-gen: response_headers_to_add\nstatic_resources:\n  clusters:\n  # llm-breaker-gen: clusters\n";
    let e = fill_template(no_log, FILTER.as_bytes(), PROVIDERS).unwrap_err();
    assert!(e.to_string().contains("upstream_log"), "{e}");
}

/// `make gen` output is checked in; this fails when it is out of date.
#[test]
fn checked_in_example_output_is_up_to_date() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/example");
    let filter = std::fs::read(format!("{dir}/filter.json")).unwrap();
    let providers = std::fs::read_to_string(format!("{dir}/providers.yaml")).unwrap();
    for (file, format) in [
        ("envoy-clusters.yaml", Format::Envoy),
        ("istio-failover.yaml", Format::Istio),
    ] {
        let want = generate(&filter, &providers, format).unwrap();
        let got = std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_default();
        assert!(
            got == want,
            "envoy/gen/example/{file} is out of date: run `make gen`"
        );
    }
    for (inputs, out) in [("example", "envoy.yaml"), ("compose", "envoy-compose.yaml")] {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{inputs}/{f}")).unwrap();
        let want = fill_template(
            &read("envoy.template.yaml"),
            read("filter.json").as_bytes(),
            &read("providers.yaml"),
        )
        .unwrap();
        let got = std::fs::read_to_string(format!("{dir}../{out}")).unwrap_or_default();
        assert!(got == want, "envoy/{out} is out of date: run `make gen`");
    }
}

mod credentials;
