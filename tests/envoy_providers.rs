//! Per-provider credentials and paths on every attempt (issue 14), in the real Envoy,
//! two workers, clusters from the generator (`llm-breaker-gen`), provider keys in
//! file-based SDS secrets in a temp dir. The mock providers check what the real ones
//! check (`expect=`: the credential header and value, the path shape) and answer their
//! real 401 / 404 bodies otherwise.
//!
//! - A failover from `openai` to `azure` arrives with Azure's `api-key`, Azure's
//!   deployment path and the chain entry's model; neither provider ever receives the
//!   client's key or the other's.
//! - A provider answering 401 to a wrong gateway key is not an outage: not a breaker
//!   failure, not retried, counted in `outcomes_ignored.credential_rejected`, warned.
//! - A route with `pass_client_credentials` sends the client's own key, on every
//!   attempt; the others don't.
//! - A rotated secret file is picked up without a restart.
//! - Without the upstream role (its VM down, failing open) a provider gets no key at
//!   all: Envoy's header_mutation and the route's removals hold on their own.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_gen::credentials::sds_doc;
use llm_breaker_gen::{generate, Format};
use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{filter_wasm, Envoy, Options, Within};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const AZURE_PATH: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
const CLIENT_KEYS: [(&str, &str); 3] = [
    ("authorization", "Bearer sk-client"),
    ("api-key", "client-azure"),
    ("x-api-key", "client-anthropic"),
];

/// openai → azure (model `gpt-4o-azure`) for chat, anthropic for messages, vllm →
/// openai for the passthrough route `/v1/byok/`, azure → openai under `/v1/az/`; only
/// the consecutive rule trips, after 3.
const FILTER: &str = r#"{"failover":"within_request","admin":{"enabled":true},
  "routes":[
    {"name":"byok","match":{"path_prefix":"/v1/byok/"},"upstreams":["vllm","openai"],"pass_client_credentials":true},
    {"name":"messages","match":{"path":"/v1/messages"},"upstreams":["anthropic"]},
    {"name":"azure-first","match":{"path_prefix":"/v1/az/"},"upstreams":["azure","openai"]},
    {"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai",{"upstream":"azure","model":"gpt-4o-azure"}]}],
  "breaker":{"consecutive_failures":3,
    "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
    "open":{"base_ms":60000,"max_ms":600000,"jitter":0},
    "half_open":{"permitted_calls":1,"success_threshold":1}}}"#;

/// Writes `name`'s SDS file the way a rotation does: a new file moved into place.
fn write_secret(dir: &Path, name: &str, key: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, sds_doc(name, key)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.yaml"))).unwrap();
}

struct Rig {
    openai: MockUpstream,
    azure: MockUpstream,
    anthropic: MockUpstream,
    vllm: MockUpstream,
    envoy: Envoy,
    secrets: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets);
    }
}

/// The four mocks checking keys `sk-openai`, `az-key`, `ak-key` (vllm: none), the
/// secrets in a temp dir, Envoy with the generator's clusters and route removals.
fn rig(tag: &str) -> Rig {
    rig_with(tag, false)
}

/// [`rig`]; `without_role`: the aggregates lose the upstream role's filter, as if its
/// VM were down and the filter passed requests through (`FAIL_OPEN`).
fn rig_with(tag: &str, without_role: bool) -> Rig {
    let openai = MockUpstream::start("openai");
    let azure = MockUpstream::start("azure");
    let anthropic = MockUpstream::start("anthropic");
    let vllm = MockUpstream::start("vllm");
    openai.apply("expect=openai&key=sk-openai").unwrap();
    azure
        .apply("expect=azure&key=az-key&deployment=gpt-4o")
        .unwrap();
    anthropic.apply("expect=anthropic&key=ak-key").unwrap();
    let secrets = std::env::temp_dir().join(format!("llmb-providers-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&secrets).unwrap();
    for (name, key) in [
        ("openai", "sk-openai"),
        ("azure", "az-key"),
        ("anthropic", "ak-key"),
    ] {
        write_secret(&secrets, name, key);
    }
    let d = secrets.display();
    let mut yaml = String::from("providers:\n");
    let shaping = [
        (
            &openai,
            format!(r#"credential: {{sds_file: {d}/openai.yaml, header: authorization, prefix: "Bearer "}}"#),
        ),
        (
            &azure,
            format!("credential: {{sds_file: {d}/azure.yaml, header: api-key}}, path: {{strip_prefix: /v1, prefix: /openai/deployments/gpt-4o, query: api-version=2024-10-21}}"),
        ),
        (
            &anthropic,
            format!(r#"credential: {{sds_file: {d}/anthropic.yaml, header: x-api-key}}, headers: {{anthropic-version: "2023-06-01"}}"#),
        ),
        (&vllm, String::new()),
    ];
    for (m, extra) in &shaping {
        let sep = if extra.is_empty() { "" } else { ", " };
        yaml.push_str(&format!(
            "- {{name: {}, address: {}, port: {}, connect_timeout_ms: 500{sep}{extra}}}\n",
            m.name(),
            m.addr().ip(),
            m.addr().port()
        ));
    }
    yaml.push_str(&format!(
        "wasm: {{filename: {}}}\n",
        filter_wasm().display()
    ));
    let out = generate(FILTER.as_bytes(), &yaml, Format::Envoy).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    let mut clusters: Vec<serde_yaml::Value> = doc["clusters"].as_sequence().unwrap().clone();
    let mut removed = 0;
    for c in clusters.iter_mut().filter(|_| without_role) {
        let filters = c
            .get_mut("typed_extension_protocol_options")
            .and_then(|o| o.get_mut("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"))
            .and_then(|o| o.get_mut("http_filters"))
            .and_then(serde_yaml::Value::as_sequence_mut);
        // Provider clusters have no upstream filters; aggregates have the role.
        if let Some(f) = filters {
            let n = f.len();
            f.retain(|x| x["name"] != "llm-breaker-upstream");
            removed += n - f.len();
        }
    }
    assert!(
        !without_role || removed > 0,
        "no upstream role found to remove"
    );
    let clusters = clusters
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    let remove_headers = doc["request_headers_to_remove"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let providers: Vec<_> = shaping.iter().map(|(m, _)| (m.name(), m.addr())).collect();
    let mut opts = Options::breaker(FILTER, &providers);
    opts.within = Some(Within {
        clusters,
        per_try_timeout: Duration::from_secs(2),
        remove_headers,
        buffer_limit: None,
        upstream_log: serde_json::to_string(&doc["upstream_log"]).unwrap(),
        response_headers: serde_json::to_string(&doc["response_headers_to_add"]).unwrap(),
    });
    let envoy = Envoy::start(&opts);
    Rig {
        openai,
        azure,
        anthropic,
        vllm,
        envoy,
        secrets,
    }
}

fn post(e: &Envoy, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    client::request(e.listener, "POST", path, &h, body.as_bytes()).expect("request through Envoy")
}

fn creds(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_failover_to_azure_carries_azures_key_path_and_model_and_no_other_key() {
    let r = rig("failover");
    // Healthy: openai takes the client's request with the gateway's key only, even
    // when the client names another upstream in the header that carries each
    // attempt's endpoint metadata to the upstream role.
    let mut spoof = CLIENT_KEYS.to_vec();
    spoof.push(("x-llm-breaker-attempt-upstream", "azure"));
    let ok = post(&r.envoy, CHAT, &spoof, BODY);
    assert_eq!(
        (ok.status, ok.upstream()),
        (200, Some("openai")),
        "{}",
        ok.text()
    );
    let seen = r.openai.last_request().unwrap();
    assert_eq!(
        seen.header("x-llm-breaker-attempt-upstream"),
        None,
        "stripped"
    );
    // openai fails: every request fails over to azure within the request.
    r.openai.set(Behaviour::Status(503));
    for i in 0..5 {
        let resp = post(&r.envoy, CHAT, &CLIENT_KEYS, BODY);
        assert_eq!(
            (resp.status, resp.upstream()),
            (200, Some("azure")),
            "request {i}: {} {:?}",
            resp.text(),
            resp.header("x-llm-breaker")
        );
    }
    let last = r.azure.last_request().unwrap();
    assert_eq!(last.target, AZURE_PATH, "Azure's deployment path");
    assert_eq!(
        last.header("x-llm-breaker-attempt-upstream"),
        None,
        "stripped"
    );
    assert_eq!(last.header("api-key"), Some("az-key"));
    assert_eq!(
        r.azure.requests_for_model("gpt-4o-azure"),
        5,
        "the chain entry's model"
    );
    assert_eq!(
        r.azure.credentials_seen(),
        creds(&[("api-key", "az-key")]),
        "azure never saw the client's key nor openai's"
    );
    assert_eq!(
        r.openai.credentials_seen(),
        creds(&[("authorization", "Bearer sk-openai")]),
        "openai never saw the client's key nor azure's"
    );
    assert_eq!(r.openai.last_target().as_deref(), Some(CHAT));
    // The three 503 attempts tripped openai (a real outage still counts).
    assert_eq!(
        r.envoy.wait_upstream_stat("openai", "failures.status", 3),
        3
    );
    // Anthropic: x-api-key and anthropic-version, its own path.
    let msg = post(
        &r.envoy,
        "/v1/messages",
        &CLIENT_KEYS,
        r#"{"model":"claude-3-5-sonnet","max_tokens":8,"messages":[]}"#,
    );
    assert_eq!(
        (msg.status, msg.upstream()),
        (200, Some("anthropic")),
        "{}",
        msg.text()
    );
    assert_eq!(
        r.anthropic.credentials_seen(),
        creds(&[("x-api-key", "ak-key")])
    );
    let log = r.envoy.log();
    for secret in ["sk-openai", "az-key", "ak-key", "sk-client"] {
        assert!(!log.contains(secret), "{secret} in Envoy's log");
    }
}

#[test]
fn a_wrong_gateway_key_is_credential_rejected_not_an_outage() {
    let r = rig("wrong-key");
    r.openai
        .apply("expect=openai&key=sk-rotated-elsewhere")
        .unwrap();
    for i in 0..6 {
        let resp = post(&r.envoy, CHAT, &CLIENT_KEYS, BODY);
        assert_eq!(
            resp.status, 401,
            "request {i}: the provider's answer, not retried"
        );
        assert!(resp.text().contains("invalid_api_key"), "{}", resp.text());
    }
    assert_eq!(r.azure.requests(), 0, "a wrong key is not failed over");
    assert_eq!(
        r.envoy
            .wait_upstream_stat("openai", "outcomes_ignored.credential_rejected", 6),
        6
    );
    assert_eq!(r.envoy.upstream_stat("openai", "failures.status"), 0);
    assert_eq!(r.envoy.upstream_stat("openai", "client_errors"), 0);
    assert_eq!(r.envoy.upstream_stat("openai", "state"), 0, "still closed");
    // One warning per worker (rate-limited), naming the upstream, never the key.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.envoy.log().contains("answered 401 to the gateway's key") {
        assert!(Instant::now() < deadline, "no warning: {}", r.envoy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = r.envoy.log();
    let warnings = log.matches("answered 401 to the gateway's key").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings");
    assert!(!log.contains("sk-openai"), "the key is never logged");
}

#[test]
fn a_passthrough_route_sends_the_clients_key_on_every_attempt_and_the_others_do_not() {
    let r = rig("passthrough");
    // The client brings its own OpenAI key; vllm fails, so attempt 2 goes to openai.
    r.vllm.set(Behaviour::Status(503));
    let mine = [("authorization", "Bearer sk-mine")];
    r.openai.apply("expect=openai&key=sk-mine").unwrap();
    let resp = post(&r.envoy, "/v1/byok/chat/completions", &mine, BODY);
    assert_eq!(
        (resp.status, resp.upstream()),
        (200, Some("openai")),
        "{} {:?}",
        resp.text(),
        resp.header("x-llm-breaker")
    );
    for m in [&r.vllm, &r.openai] {
        assert_eq!(
            m.credentials_seen(),
            creds(&mine),
            "{}: the client's own key on both attempts, nothing injected",
            m.name()
        );
    }
    // The other routes still never forward the client's key.
    r.openai.apply("expect=openai&key=sk-openai").unwrap();
    let before = r.openai.credentials_seen().len();
    let chat = post(&r.envoy, CHAT, &CLIENT_KEYS, BODY);
    assert_eq!(
        (chat.status, chat.upstream()),
        (200, Some("openai")),
        "{}",
        chat.text()
    );
    // This route does not pass the client's key: openai gets the gateway's alone.
    assert_eq!(
        r.openai.credentials_seen()[before..],
        creds(&[("authorization", "Bearer sk-openai")])
    );
}

#[test]
fn a_rotated_secret_file_is_used_without_a_restart() {
    let r = rig("rotation");
    assert_eq!(post(&r.envoy, CHAT, &[], BODY).status, 200);
    r.openai.apply("expect=openai&key=sk-openai-2").unwrap();
    write_secret(&r.secrets, "openai", "sk-openai-2");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = post(&r.envoy, CHAT, &[], BODY);
        if resp.status == 200 {
            break;
        }
        assert_eq!(resp.status, 401);
        assert!(Instant::now() < deadline, "the new key never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(r.openai.credentials_seen().contains(&(
        "authorization".to_string(),
        "Bearer sk-openai-2".to_string()
    )));
}

#[test]
fn without_the_upstream_role_no_provider_gets_any_key() {
    let r = rig_with("no-role", true);
    // openai's gate refuses the keyless request; vllm (passthrough route) has none.
    for (path, status) in [(CHAT, 401), ("/v1/byok/chat/completions", 200)] {
        let resp = post(&r.envoy, path, &CLIENT_KEYS, BODY);
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
    }
    for m in [&r.openai, &r.vllm] {
        assert_eq!(
            m.credentials_seen(),
            vec![],
            "{}: no staging header (header_mutation), no client key (the route), no copy",
            m.name()
        );
    }
}

#[test]
fn an_attempt_after_azure_gets_the_clients_path_not_azures() {
    let r = rig("path-order");
    r.azure.set(Behaviour::Status(503));
    let resp = post(&r.envoy, "/v1/az/chat/completions?x=1", &CLIENT_KEYS, BODY);
    assert_eq!(
        (resp.status, resp.upstream()),
        (200, Some("openai")),
        "{} {:?}",
        resp.text(),
        resp.header("x-llm-breaker")
    );
    assert_eq!(
        r.azure.last_target().as_deref(),
        Some("/openai/deployments/gpt-4o/az/chat/completions?x=1&api-version=2024-10-21")
    );
    assert_eq!(
        r.openai.last_target().as_deref(),
        Some("/v1/az/chat/completions?x=1"),
        "attempt 2 starts from attempt 1's header map: the path comes from the original"
    );
    assert_eq!(
        r.openai.credentials_seen(),
        creds(&[("authorization", "Bearer sk-openai")])
    );
    assert_eq!(r.azure.credentials_seen(), creds(&[("api-key", "az-key")]));
}
