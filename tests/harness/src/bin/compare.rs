//! `make compare`: llm-breaker against the alternatives a platform team has, on the
//! same failures, measured. Prints a table; nothing passes or fails.
//!
//! Each scenario: a primary mock provider failing one way, a healthy fallback mock,
//! 50 sequential chat requests through the contender. Contenders (Envoy 1.40 from
//! `.venv/bin/envoy`, two workers):
//! - **Envoy only**, the best setup we found (`/work/shared/ENVOY_NOTES.md`): an
//!   aggregate cluster [primary, fallback], a route retry policy (`5xx,reset,
//!   connect-failure`, 429 retriable, one retry, `previous_priorities`), outlier
//!   detection on the primary (`consecutive_5xx: 3`, `max_ejection_percent: 100`) and
//!   `healthy_panic_threshold: 0`. Its bootstrap is written here.
//! - **llm-breaker, `next_request`** (plain provider clusters) and **`within_request`**
//!   (the generator's clusters), `consecutive_failures: 3`.
//! - **LiteLLM proxy** with `COMPARE_LITELLM=1` (needs `.venv-litellm`, see
//!   docs/testing.md): router fallbacks, `allowed_fails: 3`, `cooldown_time: 30`.
//!
//! Columns: client errors (a non-200, a broken connection, or a 200 whose JSON body
//! or SSE stream carried an error or no terminal event), requests that reached the
//! primary (its mock's count, plus refused connections as Envoy counts them), requests
//! the fallback mock received, client latency p50 / p99 (whole response read).
//!
//! Knobs: COMPARE_REQUESTS (default 50), COMPARE_SCENARIOS (`503`, `429`, `refused`,
//! `sse`, `json`, `slow`) and COMPARE_CONTENDERS (`envoy`, `next_request`,
//! `within_request`, `litellm`): comma-separated substrings of the names, to run a
//! subset; COMPARE_BUDGET_SECS
//! (default 300: a contender's scenario stops sending after this long).

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{self, free_port, workspace_root, Envoy, Options, Within};
use llm_breaker_harness::sse;
use llm_breaker_harness::stop;
use llm_breaker_harness::upstream::MockUpstream;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
/// Every contender's first-byte bound per attempt (Envoy's `per_try_timeout`).
const PER_TRY: Duration = Duration::from_secs(5);
/// How long the client waits for an answer before it counts as an error.
const CLIENT_WAIT: Duration = Duration::from_secs(120);

/// How the primary fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Status503,
    RateLimited,
    Refused,
    SseError,
    JsonError,
    Slow,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Status503,
        Scenario::RateLimited,
        Scenario::Refused,
        Scenario::SseError,
        Scenario::JsonError,
        Scenario::Slow,
    ];

    /// The name COMPARE_SCENARIOS matches, besides the label.
    fn key(self) -> &'static str {
        match self {
            Scenario::Status503 => "503",
            Scenario::RateLimited => "429",
            Scenario::Refused => "refused",
            Scenario::SseError => "sse",
            Scenario::JsonError => "json",
            Scenario::Slow => "slow",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Status503 => "503",
            Scenario::RateLimited => "429 + retry-after: 30",
            Scenario::Refused => "connection refused",
            Scenario::SseError => "200 SSE, error event",
            Scenario::JsonError => "200 JSON error body",
            Scenario::Slow => "first byte after 2 s",
        }
    }

    /// The primary mock's control query; `None` when nothing listens there.
    fn query(self) -> Option<&'static str> {
        match self {
            Scenario::Status503 => Some("mode=status&status=503"),
            Scenario::RateLimited => Some("mode=ratelimit&form=retry-after&seconds=30"),
            Scenario::Refused => None,
            Scenario::SseError => Some("mode=sse-error&chunks=3"),
            Scenario::JsonError => Some("mode=json-error"),
            Scenario::Slow => Some("mode=delay&ms=2000"),
        }
    }

    fn body(self) -> &'static str {
        if self == Scenario::SseError {
            STREAM
        } else {
            BODY
        }
    }
}

/// What sits between the client and the two mocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    EnvoyOnly,
    NextRequest,
    WithinRequest,
    LiteLlm,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::EnvoyOnly => "Envoy only (aggregate + retry + outlier detection)",
            Contender::NextRequest => "llm-breaker, next_request",
            Contender::WithinRequest => "llm-breaker, within_request",
            Contender::LiteLlm => "LiteLLM proxy (fallbacks, allowed_fails 3, cooldown 30 s)",
        }
    }
}

/// One measured cell of the table.
struct Row {
    sent: usize,
    client_errors: usize,
    primary: Option<usize>,
    fallback: usize,
    p50: Duration,
    p99: Duration,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `label` is selected by the comma-separated substrings in `$var` (all if unset).
fn selected(var: &str, label: &str) -> bool {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .any(|s| label.to_lowercase().contains(&s.trim().to_lowercase())),
        _ => true,
    }
}

fn main() {
    envoy::require_prerequisites();
    let mut contenders = vec![
        Contender::EnvoyOnly,
        Contender::NextRequest,
        Contender::WithinRequest,
    ];
    if std::env::var("COMPARE_LITELLM").is_ok_and(|v| v == "1") {
        assert!(
            litellm_bin().exists(),
            "COMPARE_LITELLM=1 needs LiteLLM at {} (docs/testing.md, section Comparison)",
            litellm_bin().display()
        );
        contenders.push(Contender::LiteLlm);
    }
    contenders.retain(|c| selected("COMPARE_CONTENDERS", c.label()));
    let n = env_u64("COMPARE_REQUESTS", 50) as usize;
    let budget = Duration::from_secs(env_u64("COMPARE_BUDGET_SECS", 300));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "{n} sequential requests per scenario; primary failing, fallback healthy; Envoy {} with 2 workers; {cores} cores",
        envoy::envoy_bin().display()
    );
    println!();
    println!("| primary | contender | client errors | reached the primary | served by the fallback | p50 | p99 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for s in Scenario::ALL
        .into_iter()
        .filter(|s| selected("COMPARE_SCENARIOS", &format!("{} {}", s.key(), s.label())))
    {
        for &c in &contenders {
            let row = run(c, s, n, budget);
            print_row(s, c, n, &row);
        }
    }
}

fn print_row(s: Scenario, c: Contender, n: usize, r: &Row) {
    let ms = |d: Duration| {
        let v = d.as_secs_f64() * 1000.0;
        if v >= 100.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v:.1} ms")
        }
    };
    let partial = if r.sent < n {
        format!(" ({} of {n} sent within the budget)", r.sent)
    } else {
        String::new()
    };
    println!(
        "| {} | {}{partial} | {} | {} | {} | {} | {} |",
        s.label(),
        c.label(),
        r.client_errors,
        r.primary.map_or("n/a".to_string(), |p| p.to_string()),
        r.fallback,
        ms(r.p50),
        ms(r.p99),
    );
}

/// One contender in one scenario, on fresh mocks and a fresh proxy.
fn run(c: Contender, s: Scenario, n: usize, budget: Duration) -> Row {
    let primary = MockUpstream::start("openai");
    let fallback = MockUpstream::start("azure");
    let primary_addr = match s.query() {
        Some(q) => {
            if let Err(e) = primary.apply(q) {
                panic!("mock query {q}: {e}");
            }
            primary.addr()
        }
        None => SocketAddr::from(([127, 0, 0, 1], free_port())),
    };
    let proxy = Proxy::start(c, primary_addr, fallback.addr());
    let t0 = Instant::now();
    let (mut latencies, mut errors) = (Vec::with_capacity(n), 0);
    while latencies.len() < n && t0.elapsed() < budget {
        let start = Instant::now();
        let r = post(proxy.listener(), s.body());
        latencies.push(start.elapsed());
        if client_error(&r) {
            errors += 1;
        }
        // The same pause for everyone: lets an outcome reach shared data.
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused = proxy.primary_connect_failures();
    latencies.sort();
    Row {
        sent: latencies.len(),
        client_errors: errors,
        primary: match s {
            Scenario::Refused => refused,
            _ => Some(primary.requests() + refused.unwrap_or(0)),
        },
        fallback: fallback.requests(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

/// One chat request on its own connection, waiting up to [`CLIENT_WAIT`] for the
/// answer (the harness client gives up after 30 s, and LiteLLM may wait out a
/// `retry-after: 30` before answering).
fn post(addr: SocketAddr, body: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(CLIENT_WAIT))?;
    let _ = s.set_nodelay(true);
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: compare\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        master_key(),
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    client::read_response(&mut BufReader::new(s))
}

/// The `q` quantile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether the client got something other than a good answer: no response, a
/// non-200, or a 200 whose JSON body is an error object or whose SSE stream carries
/// an error event or ends without its terminal event.
fn client_error(r: &std::io::Result<Response>) -> bool {
    let Ok(r) = r else { return true };
    if r.status != 200 {
        return true;
    }
    let text = r.text();
    let is_sse = r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        return sse_error(&text);
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .map_or(true, |v| v.get("error").is_some_and(|e| !e.is_null()))
}

/// An SSE body with an error event, or without OpenAI's `[DONE]` / Anthropic's
/// `message_stop`.
fn sse_error(text: &str) -> bool {
    let events = sse::parse(text);
    let has_error = events.iter().any(|e| {
        e.event.as_deref() == Some("error")
            || serde_json::from_str::<serde_json::Value>(&e.data)
                .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
    });
    let terminal = events
        .iter()
        .any(|e| e.data == "[DONE]" || e.event.as_deref() == Some("message_stop"));
    has_error || !terminal
}

/// A running contender.
enum Proxy {
    Breaker(Envoy),
    Raw(Process),
    LiteLlm(Process),
}

impl Proxy {
    fn start(c: Contender, primary: SocketAddr, fallback: SocketAddr) -> Proxy {
        let providers = [("openai", primary), ("azure", fallback)];
        match c {
            Contender::EnvoyOnly => Proxy::Raw(Process::envoy(&envoy_only(primary, fallback))),
            Contender::NextRequest => {
                let mut opts = Options::breaker(&breaker_config("next_request"), &providers);
                opts.per_try_timeout = Some(PER_TRY);
                opts.idle_timeout = Some(Duration::from_secs(30));
                Proxy::Breaker(Envoy::start(&opts))
            }
            Contender::WithinRequest => {
                // The generator's clusters, as `envoy/envoy.yaml` has them.
                let config = breaker_config("within_request");
                let mut opts = Options::breaker(&config, &providers);
                opts.within = Some(Within::generated(&config, &providers, PER_TRY));
                opts.idle_timeout = Some(Duration::from_secs(30));
                Proxy::Breaker(Envoy::start(&opts))
            }
            Contender::LiteLlm => Proxy::LiteLlm(Process::litellm(primary, fallback)),
        }
    }

    fn listener(&self) -> SocketAddr {
        match self {
            Proxy::Breaker(e) => e.listener,
            Proxy::Raw(p) | Proxy::LiteLlm(p) => p.listener,
        }
    }

    /// Connections to the primary that failed, as Envoy counts them on its cluster
    /// (`openai`); `None` for LiteLLM, which has no such count.
    fn primary_connect_failures(&self) -> Option<usize> {
        let admin = match self {
            Proxy::Breaker(e) => e.admin,
            Proxy::Raw(p) => p.admin?,
            Proxy::LiteLlm(_) => return None,
        };
        let got = envoy::stat(admin, "cluster.openai.upstream_cx_connect_fail").unwrap_or(0);
        Some(got as usize)
    }
}

/// llm-breaker's filter config: openai → azure, three consecutive failures trip, open
/// 30 s (LiteLLM's cooldown, Envoy's base ejection time); slow calls: first byte after
/// 1 s, tripping at 80 % of at least 3 calls in a minute.
fn breaker_config(failover: &str) -> String {
    format!(
        r#"{{"failover":"{failover}",
            "routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure"]}}],
            "breaker":{{"consecutive_failures":3,
              "failure_rate":{{"threshold":1.0,"minimum_calls":3,"window":{{"seconds":60}}}},
              "slow_call":{{"ttfb_ms":1000,"rate_threshold":0.8}},
              "open":{{"base_ms":30000}}}}}}"#
    )
}

/// One STATIC cluster with a single endpoint (YAML, indented for `clusters:`).
fn static_cluster(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
{extra}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = addr.ip(),
        port = addr.port()
    )
}

/// A bootstrap's `static_resources`: one listener (port `{listen}`, filled in at
/// start) whose route is `route` (YAML lines indented for `route:`) behind
/// `filters` (entries before the router, indented for `http_filters:`), and
/// `clusters` (entries indented for `clusters:`).
fn resources(route: &str, filters: &str, clusters: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {{listen}} }}
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
              - match: {{ prefix: "/" }}
                route:
                  timeout: 0s
                  idle_timeout: 30s
{route}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#
    )
}

/// The Envoy-only setup of ENVOY_NOTES.md: aggregate [openai, azure], a route retry
/// policy moving the retry to the next priority, outlier detection on the primary.
fn envoy_only(primary: SocketAddr, fallback: SocketAddr) -> String {
    let route = format!(
        r#"                  cluster: providers
                  retry_policy:
                    retry_on: 5xx,reset,connect-failure,retriable-status-codes
                    retriable_status_codes: [429]
                    num_retries: 1
                    per_try_timeout: {}s
                    retry_back_off: {{ base_interval: 0.001s, max_interval: 0.004s }}
                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
                        update_frequency: 1
"#,
        PER_TRY.as_secs()
    );
    let outlier = "    outlier_detection: { consecutive_5xx: 3, max_ejection_percent: 100 }\n    common_lb_config: { healthy_panic_threshold: { value: 0 } }\n";
    let clusters = format!(
        r#"  - name: providers
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: [openai, azure]
{}{}"#,
        static_cluster("openai", primary, outlier),
        static_cluster("azure", fallback, "")
    );
    resources(&route, "", &clusters)
}

/// LiteLLM's proxy in `.venv-litellm` (`COMPARE_LITELLM_BIN` overrides).
fn litellm_bin() -> PathBuf {
    std::env::var_os("COMPARE_LITELLM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-litellm/bin/litellm"))
}

/// The LiteLLM proxy's master key (it refuses to start without one), random per run;
/// every contender's requests carry it (the Envoys pass it on to the mocks, which ignore it).
fn master_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("sk-{:032x}{:08x}", nanos, std::process::id())
    })
}

/// LiteLLM's config, as in issue 10: two OpenAI-compatible deployments (the mocks),
/// router fallbacks primary → fallback, `allowed_fails: 3`, `cooldown_time: 30`.
fn litellm_config(primary: SocketAddr, fallback: SocketAddr) -> String {
    format!(
        r#"model_list:
  - model_name: gpt-4o
    litellm_params: {{ model: openai/gpt-4o, api_base: "http://{primary}/v1", api_key: sk-mock }}
  - model_name: gpt-4o-fallback
    litellm_params: {{ model: openai/gpt-4o, api_base: "http://{fallback}/v1", api_key: sk-mock }}
router_settings:
  fallbacks: [{{ "gpt-4o": ["gpt-4o-fallback"] }}]
  allowed_fails: 3
  cooldown_time: 30
litellm_settings:
  telemetry: false
"#
    )
}

/// A process this binary started (Envoy with a bootstrap written here, or LiteLLM),
/// in its own temp dir; stopped by its pid when dropped.
struct Process {
    child: Child,
    listener: SocketAddr,
    admin: Option<SocketAddr>,
    dir: PathBuf,
}

impl Process {
    fn dir(kind: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "llm-breaker-compare-{kind}-{}-{seq}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        dir
    }

    fn spawn(mut cmd: Command, dir: PathBuf, listener: u16, admin: Option<u16>) -> Process {
        let log = std::fs::File::create(dir.join("log"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        stop::die_with_parent(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("log: {e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Process {
            child,
            listener: at(listener),
            admin: admin.map(at),
            dir,
        }
    }

    /// Envoy with these `static_resources` (see [`resources`]), two workers; waits for
    /// `/ready`.
    fn envoy(resources: &str) -> Process {
        let dir = Self::dir("envoy");
        let (listen, admin) = (free_port(), free_port());
        let yaml = format!(
            "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}\n{}",
            resources.replace("{listen}", &listen.to_string())
        );
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, yaml).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        let mut cmd = Command::new(envoy::envoy_bin());
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "2", "--disable-hot-restart"]);
        let mut p = Self::spawn(cmd, dir, listen, Some(admin));
        p.wait_ready(Duration::from_secs(30), "/ready", admin);
        p
    }

    /// LiteLLM's proxy for these two mocks; waits for its liveness endpoint.
    fn litellm(primary: SocketAddr, fallback: SocketAddr) -> Process {
        let dir = Self::dir("litellm");
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, litellm_config(primary, fallback))
            .unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        let port = free_port();
        let mut cmd = Command::new(litellm_bin());
        cmd.arg("--config")
            .arg(&cfg)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            // No network here: don't fetch the model price map, send no telemetry.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_MASTER_KEY", master_key())
            .env("LITELLM_TELEMETRY", "False");
        let mut p = Self::spawn(cmd, dir, port, None);
        p.wait_ready(Duration::from_secs(180), "/health/liveliness", port);
        p
    }

    fn wait_ready(&mut self, limit: Duration, path: &str, port: u16) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{:?} exited ({status}). Its log:\n{}", self.dir, self.log());
            }
            if client::get(addr, path).is_ok_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() > deadline {
                panic!("not ready after {limit:?}. Its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        stop::terminate(self.child.id(), Duration::from_secs(5));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: &str, body: &str) -> std::io::Result<Response> {
        Ok(Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn classifies_what_a_client_got() {
        let json = "application/json";
        let sse = "text/event-stream";
        let cases = [
            (response(200, json, r#"{"choices":[]}"#), false),
            (response(503, json, r#"{"choices":[]}"#), true),
            (response(200, json, r#"{"error":{"message":"x"}}"#), true),
            (response(200, json, "not json"), true),
            (
                response(200, sse, "data: {\"x\":1}\n\ndata: [DONE]\n\n"),
                false,
            ),
            (response(200, sse, "data: {\"x\":1}\n\n"), true),
            (
                response(200, sse, "data: {\"error\":{}}\n\ndata: [DONE]\n\n"),
                true,
            ),
            (
                response(
                    200,
                    sse,
                    "event: error\ndata: {}\n\nevent: message_stop\ndata: {}\n\n",
                ),
                true,
            ),
            (Err(std::io::ErrorKind::UnexpectedEof.into()), true),
        ];
        for (i, (r, want)) in cases.iter().enumerate() {
            assert_eq!(client_error(r), *want, "case {i}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=50).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(25));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(50));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
