//! Starts the real Envoy binary with a generated bootstrap, waits for `/ready`, and
//! kills it when dropped. Each instance gets free ports and its own temp dir, and
//! runs with `--disable-hot-restart`, so tests can run Envoys in parallel.

use crate::client;
use crate::upstream::MockUpstream;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Envoy binary: `$ENVOY_BIN`, else the project venv's.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"))
}

/// The built filter: `$LLM_BREAKER_WASM`, else the release build.
pub fn filter_wasm() -> PathBuf {
    std::env::var_os("LLM_BREAKER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm32-wasip1/release/llm_breaker.wasm"))
}

/// Fails loudly (never skips) when Envoy or the filter is missing.
pub fn require_prerequisites() {
    let envoy = envoy_bin();
    assert!(
        envoy.exists(),
        "Envoy not found at {} — run `make envoy` (or `make test`, which installs it), or set ENVOY_BIN",
        envoy.display()
    );
    let wasm = filter_wasm();
    assert!(
        wasm.exists(),
        "filter not built at {} — run `make build` (or `make test`)",
        wasm.display()
    );
}

/// A free loopback port (bound and released), never one this process handed out
/// before. Something else may still bind it before its user does (a mock upstream
/// of a parallel test, another process): [`Envoy::try_start`] retries for that.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Value of one stat (counter or gauge) by exact name from the admin endpoint at
/// `admin`, if Envoy has it.
pub fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    let r = client::get(admin, &format!("/stats?filter=^{name}$")).ok()?;
    r.text().lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// One of llm-breaker's per-upstream metrics from the admin endpoint at `admin`,
/// e.g. `upstream_stat(admin, "openai", "state")`; 0 if Envoy does not have it.
pub fn upstream_stat(admin: SocketAddr, upstream: &str, metric: &str) -> u64 {
    stat(
        admin,
        &format!("wasmcustom.llm_breaker.upstream.{upstream}.{metric}"),
    )
    .unwrap_or(0)
}

/// Outcomes llm-breaker has processed (successes, failures, client errors, ignored),
/// over all upstreams, read from the admin endpoint at `admin`. The filter updates
/// these counters after the breaker, so a count seen here is a state seen there.
pub fn completed_total(admin: SocketAddr) -> u64 {
    client::get(
        admin,
        "/stats?filter=llm_breaker\\.upstream\\.[^.]*\\.(successes|failures\\.[a-z_]*|client_errors|outcomes_ignored)$",
    )
    .map(|r| {
        r.text()
            .lines()
            .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
            .sum()
    })
    .unwrap_or(0)
}

/// Which HTTP filter the listener runs.
#[derive(Debug, Clone)]
pub enum Filter {
    /// No wasm filter; routes go straight to `cluster`.
    None {
        /// Target cluster.
        cluster: String,
    },
    /// A wasm module with no configuration; routes go straight to `cluster`.
    Noop {
        /// Module path.
        wasm: PathBuf,
        /// Target cluster.
        cluster: String,
    },
    /// llm-breaker with this JSON configuration; routes use `cluster_header`.
    Breaker {
        /// Filter configuration JSON.
        config: String,
        /// Another build of the filter than [`filter_wasm`] (benchmark experiments).
        wasm: Option<PathBuf>,
    },
}

/// How to start Envoy.
#[derive(Debug, Clone)]
pub struct Options {
    /// The HTTP filter.
    pub filter: Filter,
    /// Clusters: name and address.
    pub clusters: Vec<(String, SocketAddr)>,
    /// Route `timeout`: a bound on the whole response, streaming included; zero
    /// means none (the LLM shape of `envoy/envoy.yaml`).
    pub route_timeout: Duration,
    /// Retry policy `per_try_timeout`: a bound on the time to the response headers
    /// (it stops counting once they arrive). With `num_retries: 0` unless
    /// [`Options::retry_on`] is set.
    pub per_try_timeout: Option<Duration>,
    /// Route `idle_timeout`: a bound on silence in either direction (a stalled
    /// stream, but also the wait for the headers).
    pub idle_timeout: Option<Duration>,
    /// Route `max_stream_duration`: another total bound (tests of the proxy's own
    /// limits).
    pub max_stream_duration: Option<Duration>,
    /// A retry policy with `num_retries: 1` and this `retry_on` (how Istio
    /// translates `retries: {attempts: 1, retryOn: ...}`), instead of none.
    pub retry_on: Option<String>,
    /// Worker threads.
    pub concurrency: u32,
    /// The route header name (for `cluster_header`).
    pub route_header: String,
    /// Another wasm module to run before the main filter, in the same `vm_id`
    /// (so it shares llm-breaker's shared data); tests use it to corrupt state.
    pub before: Option<PathBuf>,
    /// Environment variables of the wasm VMs (`vm_config.environment_variables`),
    /// e.g. the admin API's token.
    pub env: Vec<(String, String)>,
    /// Within-request failover: the generator's clusters and the route's per-try
    /// timeout (see [`Within`]).
    pub within: Option<Within>,
    /// `allow_on_headers_stop_iteration` on the wasm filters (and, for
    /// [`Options::within`], on the generator's upstream filters): `true` in the shipped
    /// examples; `false` is how Istio's `WasmPlugin` runs the filter.
    pub stop_iteration: bool,
    /// More clusters, each as one line of flow YAML (e.g. the fleet tests' etcd
    /// cluster with three members and health checks), added to the others.
    pub extra_clusters: Vec<String>,
}

/// The Envoy side of `failover: "within_request"`, built from `llm-breaker-gen`'s
/// output: its clusters (provider clusters with endpoint metadata, the aggregates with
/// their retry policies and, where attempts are shaped, the upstream role) replace
/// [`Options::clusters`] in the bootstrap; the router gets the upstream log, the `/v1/`
/// route the per-try timeout and the served name's `response_headers_to_add`.
#[derive(Debug, Clone)]
pub struct Within {
    /// Each cluster as one line of flow YAML (JSON works).
    pub clusters: Vec<String>,
    /// The route's `retry_policy.per_try_timeout`.
    pub per_try_timeout: Duration,
    /// The generator's `request_headers_to_remove` for the `/v1/` route (the client's
    /// credential headers); empty: none.
    pub remove_headers: Vec<String>,
    /// The `/v1/` route's `per_request_buffer_limit_bytes` (Envoy's default: none).
    pub buffer_limit: Option<u32>,
    /// The router's `upstream_log` list (the upstream-log role), as flow YAML (JSON).
    pub upstream_log: String,
    /// The `/v1/` route's `response_headers_to_add` (the answering upstream's name for
    /// the downstream role), as flow YAML (JSON); empty: none.
    pub response_headers: String,
}

impl Within {
    /// The generator's clusters (and the route's header removals) for `filter` and the
    /// provider file `provider_file`, with this per-try timeout.
    pub fn from_provider_file(
        filter: &str,
        provider_file: &str,
        per_try_timeout: Duration,
    ) -> Within {
        let out = llm_breaker_gen::generate(
            filter.as_bytes(),
            provider_file,
            llm_breaker_gen::Format::Envoy,
        )
        .unwrap_or_else(|e| panic!("llm-breaker-gen: {e}"));
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&out).unwrap_or_else(|e| panic!("generator output: {e}"));
        let strings = |v: &serde_yaml::Value, json: bool| -> Vec<String> {
            v.as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| match json {
                            true => serde_json::to_string(x).ok(),
                            false => x.as_str().map(String::from),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Within {
            clusters: strings(&doc["clusters"], true),
            per_try_timeout,
            remove_headers: strings(&doc["request_headers_to_remove"], false),
            buffer_limit: None,
            upstream_log: serde_json::to_string(&doc["upstream_log"])
                .unwrap_or_else(|e| panic!("generator output's upstream_log: {e}")),
            response_headers: serde_json::to_string(&doc["response_headers_to_add"])
                .unwrap_or_else(|e| panic!("generator output's response_headers_to_add: {e}")),
        }
    }

    /// [`Within::from_provider_file`] for providers on these addresses (connect timeout
    /// 500 ms), the upstream role's and upstream log's module being [`filter_wasm`].
    pub fn generated(
        filter: &str,
        providers: &[(&str, SocketAddr)],
        per_try_timeout: Duration,
    ) -> Within {
        let wasm = format!("{{filename: {}}}", filter_wasm().display());
        let file = loopback_providers(providers, &wasm);
        Within::from_provider_file(filter, &file, per_try_timeout)
    }
}

/// A generator provider file for providers on these addresses (connect timeout 500 ms)
/// and this `wasm:` section (flow YAML).
pub fn loopback_providers(providers: &[(&str, SocketAddr)], wasm: &str) -> String {
    let mut yaml = String::from("providers:\n");
    for (name, a) in providers {
        yaml.push_str(&format!(
            "- {{name: {name}, address: {}, port: {}, connect_timeout_ms: 500}}\n",
            a.ip(),
            a.port()
        ));
    }
    yaml.push_str(&format!("wasm: {wasm}\n"));
    yaml
}

impl Options {
    /// llm-breaker with `config`, two workers, and the example's timeout shape with
    /// test values: no total bound, 5 s to the response headers, 5 s idle.
    pub fn breaker(config: &str, clusters: &[(&str, SocketAddr)]) -> Options {
        Options {
            filter: Filter::Breaker {
                config: config.to_string(),
                wasm: None,
            },
            clusters: clusters.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            route_timeout: Duration::ZERO,
            per_try_timeout: Some(Duration::from_secs(5)),
            idle_timeout: Some(Duration::from_secs(5)),
            max_stream_duration: None,
            retry_on: None,
            concurrency: 2,
            route_header: "x-llm-breaker-upstream".into(),
            before: None,
            env: Vec::new(),
            within: None,
            stop_iteration: true,
            extra_clusters: Vec::new(),
        }
    }

    /// [`Options::breaker`] with one cluster per mock upstream, named as it is.
    pub fn breaker_for(config: &str, upstreams: &[&MockUpstream]) -> Options {
        let clusters: Vec<(&str, SocketAddr)> =
            upstreams.iter().map(|u| (u.name(), u.addr())).collect();
        Options::breaker(config, &clusters)
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// Listener address.
    pub listener: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    dir: PathBuf,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The bootstrap YAML for `opts`.
pub fn bootstrap(opts: &Options, listen_port: u16, admin_port: u16) -> String {
    let before = opts
        .before
        .as_ref()
        .map(|w| wasm_filter("test_before", "llm_breaker", w, None, opts))
        .unwrap_or_default();
    let (filter, route_action) = match &opts.filter {
        Filter::None { cluster } => (String::new(), format!("cluster: {cluster}")),
        Filter::Noop { wasm, cluster } => (
            wasm_filter("noop", "noop", wasm, None, opts),
            format!("cluster: {cluster}"),
        ),
        Filter::Breaker { config, wasm } => (
            wasm_filter(
                "llm_breaker",
                "llm_breaker",
                &wasm.clone().unwrap_or_else(filter_wasm),
                Some(config),
                opts,
            ),
            format!("cluster_header: {}", opts.route_header),
        ),
    };
    let mut clusters = String::new();
    let mut router = String::new();
    // File-based SDS secrets (the generator's credential_injectors) need a node id.
    let mut node = String::new();
    if let Some(w) = &opts.within {
        for c in &w.clusters {
            let c = if opts.stop_iteration {
                c.clone()
            } else {
                c.replace(
                    r#""allow_on_headers_stop_iteration":true"#,
                    r#""allow_on_headers_stop_iteration":false"#,
                )
            };
            clusters.push_str(&format!("  - {c}\n"));
        }
        router = format!("\n              upstream_log: {}", w.upstream_log);
        node = "node: { id: llm-breaker-test, cluster: llm-breaker-test }\n".into();
    }
    for c in &opts.extra_clusters {
        clusters.push_str(&format!("  - {c}\n"));
    }
    for (name, addr) in opts.clusters.iter().filter(|_| opts.within.is_none()) {
        clusters.push_str(&format!(
            r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
            ip = addr.ip(),
            port = addr.port()
        ));
    }
    format!(
        r#"{node}admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
stats_config:
  stats_tags:
  - tag_name: llm_breaker_upstream
    regex: '^wasmcustom\.llm_breaker\.upstream\.((.+?)\.)'
  - tag_name: llm_breaker_route
    regex: '^wasmcustom\.llm_breaker\.route\.((.+?)\.)'
static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen_port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/v1/" }}
                route:
                  {route_action}
{timeouts}{remove}              - match: {{ prefix: "/" }}
                route:
                  cluster: {first}
{timeouts}          http_filters:
{before}{filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{router}
  clusters:
{clusters}"#,
        timeouts = route_timeouts(opts),
        remove = remove_headers(opts),
        first = opts.clusters.first().map_or("none", |(n, _)| n.as_str()),
    )
}

/// The `/v1/` route's `request_headers_to_remove` and `response_headers_to_add` lines,
/// if any.
fn remove_headers(opts: &Options) -> String {
    let mut lines = String::new();
    if let Some(w) = &opts.within {
        if !w.remove_headers.is_empty() {
            let names: Vec<String> = w.remove_headers.iter().map(|h| yaml_quote(h)).collect();
            lines.push_str(&format!(
                "                request_headers_to_remove: [{}]\n",
                names.join(", ")
            ));
        }
        if !w.response_headers.is_empty() {
            lines.push_str(&format!(
                "                response_headers_to_add: {}\n",
                w.response_headers
            ));
        }
    }
    lines
}

/// The timeout lines of a route (as in `envoy/envoy.yaml`).
fn route_timeouts(opts: &Options) -> String {
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    let mut lines = format!("                  timeout: {}\n", secs(opts.route_timeout));
    if let Some(d) = opts.idle_timeout {
        lines.push_str(&format!("                  idle_timeout: {}\n", secs(d)));
    }
    if let Some(d) = opts.max_stream_duration {
        lines.push_str(&format!(
            "                  max_stream_duration: {{ max_stream_duration: {} }}\n",
            secs(d)
        ));
    }
    if let Some(w) = &opts.within {
        // The aggregate clusters' own retry policies set the retries; the route keeps
        // the per-attempt first-byte bound.
        lines.push_str(&format!(
            "                  retry_policy: {{ per_try_timeout: {} }}\n",
            secs(w.per_try_timeout)
        ));
        if let Some(b) = w.buffer_limit {
            // A route field, beside `route:` (the line above is inside it).
            lines.push_str(&format!(
                "                per_request_buffer_limit_bytes: {b}\n"
            ));
        }
        return lines;
    }
    let retries = match &opts.retry_on {
        Some(on) => format!("num_retries: 1, retry_on: {}", yaml_quote(on)),
        None => "num_retries: 0".to_string(),
    };
    match opts.per_try_timeout {
        Some(d) => lines.push_str(&format!(
            "                  retry_policy: {{ {retries}, per_try_timeout: {} }}\n",
            secs(d)
        )),
        None if opts.retry_on.is_some() => lines.push_str(&format!(
            "                  retry_policy: {{ {retries} }}\n"
        )),
        None => {}
    }
    lines
}

fn wasm_filter(
    name: &str,
    vm_id: &str,
    wasm: &Path,
    config: Option<&str>,
    opts: &Options,
) -> String {
    let env = &opts.env;
    let configuration = config
        .map(|c| {
            format!(
                r#"                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{}'
"#,
                c.replace('\'', "''").replace('\n', " ")
            )
        })
        .unwrap_or_default();
    let environment = if env.is_empty() {
        String::new()
    } else {
        let pairs: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}: {}", yaml_quote(k), yaml_quote(v)))
            .collect();
        format!(
            "                  environment_variables: {{ key_values: {{ {} }} }}\n",
            pairs.join(", ")
        )
    };
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                allow_on_headers_stop_iteration: {stop}
                vm_config:
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}
{environment}{configuration}"#,
        wasm = wasm.display(),
        stop = opts.stop_iteration,
    )
}

/// The bootstrap filtered through the command in `ENVOY_BOOTSTRAP_EDIT` (stdin to
/// stdout), if set: `make bench`'s `BENCH_EXTRA_EDIT` experiments (what a piece of
/// Envoy config costs) set it around one Envoy's start; tests never do.
fn edited(yaml: String) -> Result<String, String> {
    let Ok(cmd) = std::env::var("ENVOY_BOOTSTRAP_EDIT") else {
        return Ok(yaml);
    };
    let mut child = Command::new("sh")
        .args(["-c", &cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ENVOY_BOOTSTRAP_EDIT {cmd}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(yaml.as_bytes())
            .map_err(|e| format!("ENVOY_BOOTSTRAP_EDIT {cmd}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ENVOY_BOOTSTRAP_EDIT {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("ENVOY_BOOTSTRAP_EDIT {cmd}: {}", out.status));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("ENVOY_BOOTSTRAP_EDIT {cmd}: {e}"))
}

/// A single-quoted YAML scalar.
fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics with Envoy's log if it is not.
    pub fn start(opts: &Options) -> Envoy {
        match Self::try_start(opts) {
            Ok(e) => e,
            Err(log) => panic!("Envoy did not become ready. Its log:\n{log}"),
        }
    }

    /// Starts llm-breaker with `config` in front of these mock upstreams (one
    /// cluster each, named as it is); see [`Options::breaker_for`].
    pub fn start_breaker(config: &str, upstreams: &[&MockUpstream]) -> Envoy {
        Self::start(&Options::breaker_for(config, upstreams))
    }

    /// Starts Envoy; `Err(log)` if it exits or is not ready within 30 s.
    pub fn try_start(opts: &Options) -> Result<Envoy, String> {
        require_prerequisites();
        let dir = std::env::temp_dir().join(format!(
            "llm-breaker-envoy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        // A port taken between choosing it and Envoy binding it: try other ports.
        let mut attempt = 0;
        loop {
            match Self::launch(opts, &dir) {
                Err(log) if log.contains("Address already in use") && attempt < 3 => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One start of Envoy on fresh ports, in `dir` (which a failed start removes).
    fn launch(opts: &Options, dir: &Path) -> Result<Envoy, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let (listen_port, admin_port) = (free_port(), free_port());
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, edited(bootstrap(opts, listen_port, admin_port))?)
            .map_err(|e| e.to_string())?;
        let log = dir.join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // stderr, unlike --log-path, is written through at once.
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", envoy_bin().display()))?;
        let mut envoy = Envoy {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], listen_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir: dir.to_path_buf(),
        };
        // ENVOY_START_S: more time to become ready (Envoy under valgrind, `make bench-ir`).
        let start_s = std::env::var("ENVOY_START_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let deadline = Instant::now() + Duration::from_secs(start_s);
        loop {
            if let Ok(Some(_)) = envoy.child.try_wait() {
                return Err(envoy.log());
            }
            if let Ok(r) = client::get(envoy.admin, "/ready") {
                if r.status == 200 {
                    return Ok(envoy);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {start_s} s\n{}", envoy.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) Envoy has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|x| x.parse().ok())
            .collect();
        let ticks = f.iter().sum::<u64>();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Envoy's admin `/config_dump`, as text.
    pub fn config_dump(&self) -> String {
        let r = client::get(self.admin, "/config_dump").expect("admin config_dump");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Value of one stat (counter or gauge) by exact name, if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        stat(self.admin, name)
    }

    /// A stat of llm-breaker's upstream metrics, e.g. `upstream_stat("openai", "state")`.
    pub fn upstream_stat(&self, upstream: &str, metric: &str) -> u64 {
        upstream_stat(self.admin, upstream, metric)
    }

    /// Requests whose outcome llm-breaker has processed, over all upstreams.
    pub fn completed_total(&self) -> u64 {
        completed_total(self.admin)
    }

    /// The filter's `status` document (admin endpoints at the default
    /// `/_llm_breaker` prefix).
    pub fn status(&self) -> serde_json::Value {
        client::get(self.listener, "/_llm_breaker/status")
            .expect("status through Envoy")
            .json()
    }

    /// Waits (up to 10 s) until the stat `name` reaches `n`; returns its value then
    /// (below `n` if it never did: the caller asserts).
    pub fn wait_stat(&self, name: &str, n: u64) -> u64 {
        let _ = crate::poll(Duration::from_secs(10), || {
            self.stat(name).unwrap_or(0) >= n
        });
        self.stat(name).unwrap_or(0)
    }

    /// [`Envoy::wait_stat`] for one of llm-breaker's per-upstream metrics.
    pub fn wait_upstream_stat(&self, upstream: &str, metric: &str, n: u64) -> u64 {
        let _ = crate::poll(Duration::from_secs(10), || {
            self.upstream_stat(upstream, metric) >= n
        });
        self.upstream_stat(upstream, metric)
    }

    /// Waits (up to 5 s) until at least `n` outcomes were processed: the filter
    /// records an outcome when Envoy logs the stream, which can be just after the
    /// client has read the response. Returns the count reached.
    pub fn wait_completed(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.completed_total();
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a request through Envoy and, unless the filter answered it locally
    /// (`x-llm-breaker: upstream=none…`), waits until the filter has recorded its
    /// outcome, so the next request sees the new breaker state. Panics if the
    /// request fails or the outcome never shows.
    pub fn send_recorded(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> client::Response {
        let before = self.completed_total();
        let r = client::request(self.listener, "POST", path, headers, body)
            .expect("request through Envoy");
        let local = r
            .header("x-llm-breaker")
            .is_some_and(|h| h.starts_with("upstream=none"));
        if !local {
            assert!(
                self.wait_completed(before + 1) > before,
                "outcome never recorded"
            );
        }
        r
    }

    /// The admin `/stats/prometheus` text.
    pub fn prometheus(&self) -> String {
        client::get(self.admin, "/stats/prometheus")
            .map(|r| r.text())
            .unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
