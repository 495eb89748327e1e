//! The Envoy half of within-request failover, in a real Envoy (ENVOY_BIN, else the repo's
//! `.venv/bin/envoy`): the generator's clusters, with NO wasm filter, and a route that names
//! an aggregate through a fixed header. A failed attempt must go to the next sub-cluster,
//! each sub-cluster at most once, and 30 concurrent failing requests must all be retried.
//!
//! The Istio output's patch values too, with provider keys in SDS files: the Istio
//! example's own inputs and Secret, in a kubelet-style volume (`make istio-test` runs
//! the tests named `*istio*`).
//!
//! A missing Envoy fails the test (it never passes by skipping).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_gen::credentials::sds_doc;
use llm_breaker_gen::{generate, Format};
// The harness's: `free_port` never hands out a port twice, `envoy_bin` honours ENVOY_BIN.
use llm_breaker_harness::envoy::{envoy_bin, free_port};
use serde_yaml::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const HEADER: &str = "x-llmb-test";

/// What a mock provider does with each request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Status(u16),
    /// Answer this status after a delay in ms.
    Slow(u16, u64),
    /// Read the request, then close the connection (a reset before headers).
    Reset,
    /// Never answer (until the connection closes).
    Hang,
}

/// A mock provider on 127.0.0.1: counts requests, answers as its mode says.
struct Mock {
    port: u16,
    hits: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    /// Credential header lines received (`authorization`, `api-key`, staging headers).
    keys: Arc<Mutex<Vec<String>>>,
    /// Request targets received (path and query).
    targets: Arc<Mutex<Vec<String>>>,
}

impl Mock {
    fn start(name: &'static str, mode: Mode) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (h, m, k, t) = (hits.clone(), mode.clone(), keys.clone(), targets.clone());
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, m, k, t) = (h.clone(), m.clone(), k.clone(), t.clone());
                thread::spawn(move || serve(conn, name, &h, &m, &k, &t));
            }
        });
        Mock {
            port,
            hits,
            mode,
            keys,
            targets,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn reset_hits(&self) {
        self.hits.store(0, Ordering::SeqCst);
    }
}

fn serve(
    conn: TcpStream,
    name: &str,
    hits: &AtomicUsize,
    mode: &Mutex<Mode>,
    keys: &Mutex<Vec<String>>,
    targets: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(target) = line.split(' ').nth(1) {
            targets.lock().unwrap().push(target.to_string());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if ["authorization:", "api-key:", "x-llm-breaker-credential-"]
                .iter()
                .any(|p| lower.starts_with(p))
            {
                keys.lock().unwrap().push(line.trim().to_string());
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let m = *mode.lock().unwrap();
        let status = match m {
            Mode::Status(s) => s,
            Mode::Slow(s, ms) => {
                thread::sleep(Duration::from_millis(ms));
                s
            }
            Mode::Reset => return,
            Mode::Hang => {
                thread::sleep(Duration::from_secs(10));
                return;
            }
        };
        let body = format!("{{\"served_by\":\"{name}\"}}");
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Envoy, killed and reaped on drop.
struct Envoy {
    child: Child,
    port: u16,
    admin: u16,
    log: std::path::PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn start(tag: &str, clusters: Vec<Value>, route: Value) -> Envoy {
        Envoy::start_with(tag, clusters, route, Value::Null, Value::Null)
    }

    /// [`Envoy::start`] with the route's `response_headers_to_add` (`added`) and the
    /// router's `upstream_log` (`log`), each left out when null.
    fn start_with(
        tag: &str,
        clusters: Vec<Value>,
        route: Value,
        added: Value,
        log: Value,
    ) -> Envoy {
        let (port, admin) = (free_port(), free_port());
        let added = match added {
            Value::Null => String::new(),
            v => format!(
                "\n                response_headers_to_add: {}",
                serde_json::to_string(&v).unwrap()
            ),
        };
        let log = match log {
            Value::Null => String::new(),
            v => format!(", upstream_log: {}", serde_json::to_string(&v).unwrap()),
        };
        let bootstrap = serde_yaml::to_string(&serde_yaml::from_str::<Value>(&format!(
            r#"
node: {{ id: llmb-gen-test, cluster: llmb-gen-test }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {route}{added}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{log} }}
  clusters: {clusters}
"#,
            route = serde_json::to_string(&route).unwrap(),
            clusters = serde_json::to_string(&clusters).unwrap(),
        ))
        .unwrap())
        .unwrap();
        let dir = std::env::temp_dir().join(format!("llmb-gen-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, bootstrap).unwrap();
        let log = dir.join("envoy.log");
        let bin = envoy_bin();
        let child = Command::new(&bin)
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run Envoy at {} ({e}): run `make envoy` or set ENVOY_BIN",
                    bin.display()
                )
            });
        let mut envoy = Envoy {
            child,
            port,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "Envoy exited ({status}): {}",
                    std::fs::read_to_string(&envoy.log).unwrap_or_default()
                );
            }
            if get(envoy.admin, "/ready", None).0 == 200 {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready: {}",
                std::fs::read_to_string(&envoy.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn stat(&self, name: &str) -> u64 {
        let (_, body) = get(
            self.admin,
            &format!("/stats?filter=^{}$", name.replace('|', "\\|")),
            None,
        );
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stat {name} in {body:?}"))
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status, body). (0, "") if it fails.
fn get(port: u16, path: &str, cluster: Option<&str>) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra = cluster
        .map(|c| format!("{HEADER}: {c}\r\n"))
        .unwrap_or_default();
    let body = r#"{"model":"gpt-4o"}"#;
    let method = if cluster.is_some() { "POST" } else { "GET" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{extra}content-length: {}\r\n\r\n{}",
        if cluster.is_some() { body.len() } else { 0 },
        if cluster.is_some() { body } else { "" }
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

const FILTER: &str = r#"{"failover":"within_request","routes":[
  {"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai","azure-openai","vllm"]},
  {"name":"refused","match":{"path_prefix":"/r/"},"upstreams":["down","vllm"]}]}"#;

/// The generated clusters and route, for these mocks (nothing is shaped, so no aggregate
/// carries a wasm filter: this test is about Envoy alone), the route reading the test's
/// header.
fn generated(mocks: &[(&str, u16)], max_retries: u32) -> (Vec<Value>, Value) {
    let mut providers = String::from("providers:\n");
    for (name, port) in mocks {
        providers.push_str(&format!(
            "- {{name: {name}, address: 127.0.0.1, port: {port}, connect_timeout_ms: 500}}\n"
        ));
    }
    providers.push_str(&format!(
        "retry: {{max_retries: {max_retries}, per_try_timeout_ms: 1000}}\n"
    ));
    let doc: Value =
        serde_yaml::from_str(&generate(FILTER.as_bytes(), &providers, Format::Envoy).unwrap())
            .unwrap();
    let mut clusters = doc["clusters"].as_sequence().unwrap().clone();
    for c in &mut clusters {
        let filters = c
            .get_mut("typed_extension_protocol_options")
            .and_then(|o| o.get_mut("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"))
            .and_then(|o| o.get_mut("http_filters"))
            .and_then(Value::as_sequence_mut);
        if let Some(filters) = filters {
            assert!(
                filters.iter().all(|f| f["name"] != "llm-breaker-upstream"),
                "no upstream role without shaping"
            );
        }
    }
    let mut route = doc["route"].clone();
    route["cluster_header"] = Value::from(HEADER);
    (clusters, route)
}

struct Rig {
    openai: Mock,
    azure: Mock,
    vllm: Mock,
    envoy: Envoy,
}

fn rig(tag: &str, max_retries: u32) -> Rig {
    let openai = Mock::start("openai", Mode::Status(200));
    let azure = Mock::start("azure-openai", Mode::Status(200));
    let vllm = Mock::start("vllm", Mode::Status(200));
    let down = free_port(); // nothing listens there: connection refused
    let (clusters, route) = generated(
        &[
            ("openai", openai.port),
            ("azure-openai", azure.port),
            ("vllm", vllm.port),
            ("down", down),
        ],
        max_retries,
    );
    let envoy = Envoy::start(tag, clusters, route);
    Rig {
        openai,
        azure,
        vllm,
        envoy,
    }
}

impl Rig {
    fn hits(&self) -> [usize; 3] {
        [self.openai.hits(), self.azure.hits(), self.vllm.hits()]
    }
    fn reset(&self) {
        for m in [&self.openai, &self.azure, &self.vllm] {
            m.reset_hits();
            m.set(Mode::Status(200));
        }
    }
}

const ALL3: &str = "llmb|openai|azure-openai|vllm";

#[test]
fn each_failure_kind_is_retried_once_on_the_next_sub_cluster() {
    let r = rig("kinds", 1024);
    // Healthy: attempt 1 goes to the first sub-cluster, nothing else.
    for _ in 0..10 {
        assert_eq!(get(r.envoy.port, "/v1/chat", Some(ALL3)).0, 200);
    }
    assert_eq!(
        r.hits(),
        [10, 0, 0],
        "healthy sub-clusters: every request on the first one"
    );

    for (kind, mode) in [
        ("503", Mode::Status(503)),
        ("429", Mode::Status(429)),
        ("reset", Mode::Reset),
    ] {
        r.reset();
        r.openai.set(mode);
        for _ in 0..10 {
            let (status, body) = get(r.envoy.port, "/v1/chat", Some(ALL3));
            assert_eq!(
                (status, body.as_str()),
                (200, r#"{"served_by":"azure-openai"}"#),
                "{kind}"
            );
        }
        assert_eq!(
            r.hits(),
            [10, 10, 0],
            "{kind}: one attempt on openai, one on azure-openai"
        );
    }

    // Per-try timeout (the route's, 1 s): a hanging first sub-cluster costs one timeout.
    r.reset();
    r.openai.set(Mode::Hang);
    let t = Instant::now();
    let (status, body) = get(r.envoy.port, "/v1/chat", Some(ALL3));
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"served_by":"azure-openai"}"#)
    );
    // One attempt on the hanging openai (cut by the per-try timeout), then azure.
    assert_eq!(
        r.hits(),
        [1, 1, 0],
        "per-try timeout: took {:?}",
        t.elapsed()
    );

    // Connection refused: sub-cluster "down" has no listener.
    r.reset();
    let (status, body) = get(r.envoy.port, "/r/x", Some("llmb|down|vllm"));
    assert_eq!((status, body.as_str()), (200, r#"{"served_by":"vllm"}"#));

    // Two-member aggregates skip the upstream left out.
    r.reset();
    r.openai.set(Mode::Status(503));
    assert_eq!(
        get(r.envoy.port, "/v1/chat", Some("llmb|openai|vllm")).1,
        r#"{"served_by":"vllm"}"#
    );
    assert_eq!(r.hits(), [1, 0, 1]);
}

#[test]
fn all_failing_gives_the_last_answer_after_one_attempt_per_sub_cluster() {
    let r = rig("all", 1024);
    r.openai.set(Mode::Status(503));
    r.azure.set(Mode::Status(500));
    r.vllm.set(Mode::Status(502));
    for _ in 0..5 {
        assert_eq!(
            get(r.envoy.port, "/v1/chat", Some(ALL3)).0,
            502,
            "the last sub-cluster's answer"
        );
    }
    assert_eq!(r.hits(), [5, 5, 5]);
    // A one-member aggregate is not retried at all.
    r.reset();
    r.vllm.set(Mode::Status(503));
    assert_eq!(get(r.envoy.port, "/v1/chat", Some("llmb|vllm")).0, 503);
    assert_eq!(r.hits(), [0, 0, 1]);
}

fn thirty_concurrent(r: &Rig) -> (usize, u64) {
    r.reset();
    r.openai.set(Mode::Slow(503, 300));
    r.azure.set(Mode::Slow(200, 500));
    let port = r.envoy.port;
    let handles: Vec<_> = (0..30)
        .map(|_| thread::spawn(move || get(port, "/v1/chat", Some("llmb|openai|azure-openai")).0))
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|s| *s == 200)
        .count();
    (
        ok,
        r.envoy
            .stat("cluster.llmb|openai|azure-openai.upstream_rq_retry_overflow"),
    )
}

#[test]
fn thirty_concurrent_failing_requests_are_all_retried_with_the_raised_limit() {
    let r = rig("conc", 1024);
    assert_eq!(thirty_concurrent(&r), (30, 0));
    assert_eq!(r.hits(), [30, 30, 0]);
}

/// The control: with Envoy's default limit (3 retries in flight per cluster) most are not.
#[test]
fn with_the_default_retry_limit_concurrent_retries_overflow() {
    let r = rig("conc3", 3);
    let (ok, overflow) = thirty_concurrent(&r);
    assert!(ok <= 10 && overflow >= 20, "ok {ok}, overflow {overflow}");
}

/// The whole generated example (upstream wasm filter and upstream log included) loads in
/// Envoy's validate mode, `"role": "upstream"` and `"upstream_log"` included; needs
/// `make build`.
#[test]
fn the_generated_example_validates_in_envoy() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let wasm = format!("{root}/target/wasm32-wasip1/release/llm_breaker.wasm");
    assert!(
        std::path::Path::new(&wasm).exists(),
        "{wasm} is missing: run `make build`"
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/example");
    let filter = std::fs::read_to_string(format!("{dir}/filter.json")).unwrap();
    let providers = std::fs::read_to_string(format!("{dir}/providers.yaml")).unwrap();
    let template = "node: { id: gen, cluster: gen }\nstatic_resources:\n  listeners:\n  - address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: v\n          route_config:\n            virtual_hosts:\n            - name: v\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n                route: { cluster_header: x-llm-breaker-upstream }\n                # llm-breaker-gen: response_headers_to_add\n          http_filters:\n          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n              # llm-breaker-gen: upstream_log\n  clusters:\n  # llm-breaker-gen: clusters\n";
    let full = llm_breaker_gen::fill_template(template, filter.as_bytes(), &providers).unwrap();
    let full = full.replace("filename: target/", &format!("filename: {root}/target/"));
    // The example's SDS secret files are the demo's (envoy/credentials/, relative to the
    // repository root, where Envoy runs).
    let path = std::env::temp_dir().join(format!("llmb-gen-validate-{}.yaml", std::process::id()));
    std::fs::write(&path, full).unwrap();
    let out = Command::new(envoy_bin())
        .current_dir(root)
        .args([
            "--mode",
            "validate",
            "-c",
            path.to_str().unwrap(),
            "--disable-hot-restart",
        ])
        .output()
        .expect("run `make envoy` or set ENVOY_BIN");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("OK"), "{text}");
}

/// The built filter; needs `make build`.
fn built_wasm() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let wasm = format!("{root}/target/wasm32-wasip1/release/llm_breaker.wasm");
    assert!(
        std::path::Path::new(&wasm).exists(),
        "{wasm} is missing: run `make build`"
    );
    wasm
}

/// Envoy running the Istio output's patch values for `filter` and `providers`: its
/// CLUSTER ADD values as the clusters, its EXTENSION_CONFIG value served by file-based
/// ECDS from `dir` (istio-agent turns `code.remote` into a local file; here it is the
/// built module), its HTTP_ROUTE MERGE value as the route (reading [`HEADER`]), its
/// HTTP_FILTER MERGE of the router as the router's upstream log (the built module).
fn istio_patch_envoy(tag: &str, filter: &str, providers: &str, dir: &std::path::Path) -> Envoy {
    let wasm = built_wasm();
    let doc: Value =
        serde_yaml::from_str(&generate(filter.as_bytes(), providers, Format::Istio).unwrap())
            .unwrap();
    let ecds = dir.join("ecds.yaml");
    let (mut clusters, mut route) = (Vec::new(), Value::Null);
    let (mut added, mut log) = (Value::Null, Value::Null);
    for patch in doc["spec"]["configPatches"].as_sequence().unwrap() {
        let value = patch["patch"]["value"].clone();
        match patch["applyTo"].as_str().unwrap() {
            "EXTENSION_CONFIG" => {
                let mut ext = value;
                let config = &mut ext["typed_config"]["config"];
                config["vm_config"]["code"] =
                    serde_yaml::from_str(&format!("{{local: {{filename: {wasm}}}}}")).unwrap();
                let json: serde_json::Value =
                    serde_json::from_str(config["configuration"]["value"].as_str().unwrap())
                        .unwrap();
                assert_eq!(json["role"], "upstream");
                let mut resource = serde_yaml::Mapping::new();
                resource.insert(
                    "@type".into(),
                    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into(),
                );
                resource.insert("name".into(), ext["name"].clone());
                resource.insert("typed_config".into(), ext["typed_config"].clone());
                let file = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([(
                    Value::from("resources"),
                    Value::Sequence(vec![Value::Mapping(resource)]),
                )]))
                .unwrap();
                std::fs::write(&ecds, file).unwrap();
            }
            "CLUSTER" => clusters.push(value),
            "HTTP_ROUTE" => {
                route = value["route"].clone();
                added = value["response_headers_to_add"].clone();
            }
            // The router's upstream log, its module a file in the pod: the built one.
            "HTTP_FILTER" => {
                assert_eq!(
                    patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                    "envoy.filters.http.router"
                );
                log = value["typed_config"]["upstream_log"].clone();
                let config = &mut log[0]["typed_config"]["config"];
                assert_eq!(config["vm_config"]["vm_id"], "");
                config["vm_config"]["code"] =
                    serde_yaml::from_str(&format!("{{local: {{filename: {wasm}}}}}")).unwrap();
                let json: serde_json::Value =
                    serde_json::from_str(config["configuration"]["value"].as_str().unwrap())
                        .unwrap();
                assert_eq!(json["role"], "upstream_log");
            }
            other => panic!("unexpected patch {other}"),
        }
    }
    for c in &mut clusters {
        let source = c
            .get_mut("typed_extension_protocol_options")
            .and_then(|o| o.get_mut("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"))
            .and_then(|o| o.get_mut("http_filters"))
            .and_then(Value::as_sequence_mut)
            .and_then(|f| f.iter_mut().find(|x| x.get("config_discovery").is_some()))
            .and_then(|f| f.get_mut("config_discovery"));
        if let Some(source) = source {
            assert!(source["config_source"]["ads"].is_mapping(), "ECDS over ADS");
            source["config_source"] = serde_yaml::from_str(&format!(
                "{{path_config_source: {{path: {}}}, resource_api_version: V3}}",
                ecds.display()
            ))
            .unwrap();
        }
    }
    assert_eq!(route["cluster_header"], "x-llm-breaker-upstream");
    route["cluster_header"] = Value::from(HEADER);
    assert!(
        added.is_sequence(),
        "the route names the answering provider"
    );
    assert!(log.is_sequence(), "the router gets the upstream log");
    Envoy::start_with(tag, clusters, route, added, log)
}

/// The Istio EnvoyFilter's patch values are valid Envoy config and fail over: its CLUSTER ADD
/// values as the clusters, its EXTENSION_CONFIG value served by file-based ECDS (istio-agent
/// turns `code.remote` into a local file; here it is the built module), its HTTP_ROUTE MERGE
/// value as the route, with two providers' keys in SDS files (the credential_injectors
/// of the aggregates). Istio itself is not run. Needs `make build`.
#[test]
fn the_istio_patch_values_load_and_fail_over_in_envoy() {
    let openai = Mock::start("openai", Mode::Status(503));
    let azure = Mock::start("azure-openai", Mode::Status(200));
    let vllm = Mock::start("vllm", Mode::Status(200));
    let mut providers = String::from("providers:\n");
    let dir = std::env::temp_dir().join(format!("llmb-gen-{}-istio", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Keys in SDS files, as mounted into the gateway pod.
    for (name, key) in [("openai", "sk-o"), ("azure-openai", "az-k")] {
        std::fs::write(dir.join(format!("{name}.yaml")), sds_doc(name, key)).unwrap();
    }
    let d = dir.display();
    for (name, port, extra) in [
        (
            "openai",
            openai.port,
            format!(", credential: {{sds_file: {d}/openai.yaml, header: authorization, prefix: 'Bearer '}}"),
        ),
        (
            "azure-openai",
            azure.port,
            format!(", credential: {{sds_file: {d}/azure-openai.yaml, header: api-key}}"),
        ),
        ("vllm", vllm.port, String::new()),
        ("down", free_port(), String::new()),
    ] {
        providers.push_str(&format!(
            "- {{name: {name}, address: 127.0.0.1, port: {port}{extra}}}\n"
        ));
    }
    providers.push_str("retry: {per_try_timeout_ms: 1000}\n");
    let envoy = istio_patch_envoy("istio", FILTER, &providers, &dir);
    for _ in 0..2 {
        let (status, body) = get(envoy.port, "/v1/chat", Some("llmb|openai|azure-openai"));
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"served_by":"azure-openai"}"#)
        );
    }
    assert_eq!([openai.hits(), azure.hits(), vllm.hits()], [2, 2, 0]);
    // Each got its own key only, through the injectors and the upstream role.
    let seen = |m: &Mock| {
        let mut k = m.keys.lock().unwrap().clone();
        k.dedup();
        k
    };
    assert_eq!(seen(&openai), ["authorization: Bearer sk-o"]);
    assert_eq!(seen(&azure), ["api-key: az-k"]);
    let log = std::fs::read_to_string(&envoy.log).unwrap_or_default();
    assert!(!log.contains("critical"), "{log}");
}

// ---- the Istio example's keys, as Kubernetes mounts them ---------------------------------

/// What kubelet's atomic writer does to a Secret volume at `dir` (k8s.io/kubernetes
/// `pkg/volume/util/atomic_writer.go`): the files go into a new hidden directory, a
/// `..data_tmp` symlink to it is renamed over `..data` (the one atomic step, a move in
/// `dir`), and each key is a symlink `dir/<key>` -> `..data/<key>`, created once.
fn k8s_secret_volume(dir: &std::path::Path, generation: u32, files: &[(String, String)]) {
    let ts = format!("..2026_11_26_00_00_0{generation}.000000000");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    for (key, text) in files {
        std::fs::write(dir.join(&ts).join(key), text).unwrap();
    }
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (key, _) in files {
        let link = dir.join(key);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), link).unwrap();
        }
    }
}

/// The Istio example's SDS documents: `stringData` of the Secret in
/// `envoy/istio/credentials.yaml`, with `key (placeholder)` -> `key` replaced.
fn istio_secret_files(replace: &[(&str, &str)]) -> Vec<(String, String)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let text = std::fs::read_to_string(format!("{root}/envoy/istio/credentials.yaml")).unwrap();
    let secret: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(secret["kind"], "Secret");
    let data = secret["stringData"].as_mapping().unwrap();
    data.iter()
        .map(|(k, v)| {
            let mut doc = v.as_str().unwrap().to_string();
            for (from, to) in replace {
                doc = doc.replace(from, to);
            }
            (k.as_str().unwrap().to_string(), doc)
        })
        .collect()
}

/// `envoy/istio/gen/providers.yaml` with each provider at a local mock (`ports`, by
/// name) and the credential directory `/etc/llm-breaker/credentials` at `dir`.
fn istio_example_providers(ports: &[(&str, u16)], dir: &std::path::Path) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let text = std::fs::read_to_string(format!("{root}/envoy/istio/gen/providers.yaml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    for p in doc["providers"].as_sequence_mut().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let port = ports.iter().find(|(n, _)| *n == name).unwrap().1;
        p["address"] = Value::from("127.0.0.1");
        p["port"] = Value::from(port);
        p.as_mapping_mut().unwrap().remove("tls");
        if let Some(c) = p.get_mut("credential") {
            for field in ["sds_file", "watched_directory"] {
                let v = c[field].as_str().unwrap();
                let moved = v.replace("/etc/llm-breaker/credentials", &dir.display().to_string());
                assert_ne!(moved, v, "{name}: {field} {v} is not in the mount");
                c[field] = Value::from(moved);
            }
        }
    }
    doc["retry"]["per_try_timeout_ms"] = Value::from(2000);
    serde_yaml::to_string(&doc).unwrap()
}

/// The Istio example as shipped (`envoy/istio/gen/`, the Secret of
/// `envoy/istio/credentials.yaml`) with its keys in a directory laid out as kubelet lays
/// out a Secret volume: on a failover from openai to azure-openai each provider gets only
/// its own key (and Azure its deployment path); after a Secret update (the `..data` swap) the next requests carry the new
/// key, with no restart: the generated `watched_directory` sees the swap.
#[test]
fn the_istio_examples_secret_keys_reach_only_their_provider_and_rotate() {
    let openai = Mock::start("openai", Mode::Status(503));
    let azure = Mock::start("azure-openai", Mode::Status(200));
    let vllm = Mock::start("vllm", Mode::Status(200));
    let dir = std::env::temp_dir().join(format!("llmb-gen-{}-istio-keys", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mount = dir.join("credentials");
    std::fs::create_dir_all(&mount).unwrap();
    let keys = [
        ("PLACEHOLDER-replace-with-your-openai-key", "sk-o-1"),
        ("PLACEHOLDER-replace-with-your-azure-openai-key", "az-1"),
    ];
    let files = istio_secret_files(&keys);
    for (_, doc) in &files {
        assert!(
            !doc.contains("PLACEHOLDER"),
            "a placeholder not replaced: {doc}"
        );
    }
    k8s_secret_volume(&mount, 1, &files);
    let providers = istio_example_providers(
        &[
            ("openai", openai.port),
            ("azure-openai", azure.port),
            ("vllm", vllm.port),
        ],
        &mount,
    );
    let filter = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../envoy/istio/gen/filter.json"
    ))
    .unwrap();
    let envoy = istio_patch_envoy("istio-keys", &filter, &providers, &dir);
    let chain = "llmb|openai|azure-openai|vllm";
    for _ in 0..3 {
        let (status, body) = get(envoy.port, "/v1/chat/completions", Some(chain));
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"served_by":"azure-openai"}"#)
        );
    }
    let seen = |m: &Mock| {
        let mut k = m.keys.lock().unwrap().clone();
        k.dedup();
        k
    };
    assert_eq!([openai.hits(), azure.hits(), vllm.hits()], [3, 3, 0]);
    assert_eq!(seen(&openai), ["authorization: Bearer sk-o-1"]);
    assert_eq!(seen(&azure), ["api-key: az-1"]);
    // Azure's deployment path; OpenAI keeps the client's.
    let targets = |m: &Mock| {
        let mut t = m.targets.lock().unwrap().clone();
        t.dedup();
        t
    };
    assert_eq!(targets(&openai), ["/v1/chat/completions"]);
    assert_eq!(
        targets(&azure),
        ["/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"]
    );

    // A Secret update: kubelet swaps `..data`; Envoy re-reads the files it watches.
    let rotated = istio_secret_files(&[
        keys[0],
        ("PLACEHOLDER-replace-with-your-azure-openai-key", "az-2"),
    ]);
    k8s_secret_volume(&mount, 2, &rotated);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = 0;
    while !seen(&azure).contains(&"api-key: az-2".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the rotated key never arrived: azure saw {:?}",
            seen(&azure)
        );
        let (status, _) = get(envoy.port, "/v1/chat/completions", Some(chain));
        assert_eq!(status, 200);
        after += 1;
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "istio example keys: openai {:?}, azure {:?}; new key after {after} request(s)",
        seen(&openai),
        seen(&azure)
    );
    assert_eq!(seen(&azure), ["api-key: az-1", "api-key: az-2"]);
    assert_eq!(seen(&openai), ["authorization: Bearer sk-o-1"]);
    assert_eq!(vllm.hits(), 0);
    let log = std::fs::read_to_string(&envoy.log).unwrap_or_default();
    assert!(!log.contains("critical"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
