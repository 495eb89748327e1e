//! `make demo`: three mock providers on loopback, the real Envoy with
//! `envoy/envoy.yaml` (within-request failover), and a short walkthrough: healthy →
//! primary fails, and each failed attempt is retried on the fallback inside the same
//! request (no client error) → the breaker opens and traffic goes straight to the
//! fallback → primary recovers → probes close the breaker.
//! Then it keeps running for your own curls until Ctrl-C (or exits with `--once`).
//!
//! However it is stopped — SIGINT, SIGTERM or SIGHUP to it, or to the `make` that
//! started it — it stops Envoy and the mock providers, freeing ports 10000, 9901 and
//! 18001–18004 for the next run; Envoy dies with it even on SIGKILL. Two demos (a
//! `make demo` and a `make demo-check`) take turns through a lock file.

use llm_breaker_harness::client;
use llm_breaker_harness::envoy::{
    completed_total, envoy_bin, require_prerequisites, workspace_root,
};
use llm_breaker_harness::stop;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

const LISTENER: ([u8; 4], u16) = ([127, 0, 0, 1], 10000);
const ADMIN: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Envoy's pid once it is spawned (0 before), for the stop watcher.
static ENVOY_PID: AtomicU32 = AtomicU32::new(0);

/// Acts on a stop signal wherever the demo is: stops Envoy (the mock providers
/// are threads of this process and go with it) and exits 128 + the signal.
fn watch_for_stop_signals() {
    std::thread::spawn(|| loop {
        if let Some(sig) = stop::received() {
            eprintln!(
                "\ndemo: {}: stopping Envoy and the mock providers",
                stop::name(sig)
            );
            let pid = ENVOY_PID.load(Ordering::SeqCst);
            if pid != 0 {
                stop::terminate(pid, Duration::from_secs(3));
            }
            std::process::exit(128 + sig);
        }
        sleep(Duration::from_millis(20));
    });
}

/// A key's first characters only (the demo's keys are fake, but keys are never printed).
fn mask(key: &str) -> String {
    format!("{}…", key.chars().take(8).collect::<String>())
}

fn main() {
    stop::catch_stop_signals();
    stop::stop_with_parent();
    watch_for_stop_signals();
    let once = std::env::args().any(|a| a == "--once");
    let lock_path = std::env::temp_dir().join("llm-breaker-demo.lock");
    let _lock = match stop::PortLock::acquire(&lock_path, || {
        eprintln!(
            "demo: another demo holds ports 10000/9901 ({}); waiting for it to stop",
            lock_path.display()
        );
    }) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("demo failed: lock {}: {e}", lock_path.display());
            std::process::exit(1);
        }
    };
    if let Err(e) = run(once) {
        if stop::received().is_some() {
            // Stopping: Envoy went because the watcher stopped it; let it finish.
            sleep(Duration::from_secs(30));
        }
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn run(once: bool) -> Result<(), String> {
    require_prerequisites();
    let root = workspace_root();
    let mut ups = Vec::new();
    // Each mock checks what its real provider checks: its own key (the demo keys in
    // envoy/credentials/, which Envoy injects; the client sends none) and its path.
    for (name, port, gate) in [
        ("openai", 18001, "expect=openai&key=sk-demo-openai"),
        (
            "azure-openai",
            18002,
            "expect=azure&key=sk-demo-azure-openai&deployment=gpt-4o",
        ),
        ("vllm", 18003, "expect=none"),
        ("anthropic", 18004, "expect=anthropic&key=sk-demo-anthropic"),
    ] {
        let up = MockUpstream::start_on(name, &format!("127.0.0.1:{port}"))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port} for {name}: {e}"))?;
        up.apply(gate).map_err(|e| format!("{name}: {e}"))?;
        ups.push(up);
    }
    let log_path = std::env::temp_dir().join("llm-breaker-demo-envoy.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(envoy_bin());
    stop::die_with_parent(&mut cmd);
    let envoy = cmd
        .current_dir(&root)
        .args(["-c", "envoy/envoy.yaml", "--concurrency", "2"])
        .arg("--disable-hot-restart")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start Envoy: {e}"))?;
    ENVOY_PID.store(envoy.id(), Ordering::SeqCst);
    let mut envoy = Kill(envoy);
    let admin = SocketAddr::from(ADMIN);
    let listener = SocketAddr::from(LISTENER);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client::get(admin, "/ready").is_ok_and(|r| r.status == 200) {
        if Instant::now() > deadline || envoy.0.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("Envoy did not become ready:\n{log}"));
        }
        sleep(Duration::from_millis(100));
    }
    println!(
        "Envoy is up (pid {}): listener http://127.0.0.1:10000, admin http://127.0.0.1:9901",
        envoy.0.id()
    );
    println!("Mock providers: openai :18001, azure-openai :18002, vllm :18003, anthropic :18004\n");

    let send = |label: &str| -> Result<String, String> {
        let before = completed_total(admin);
        let r = client::post(
            listener,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .map_err(|e| e.to_string())?;
        let line = format!(
            "{label:<28} HTTP {}  served by {:<13} x-llm-breaker: {}",
            r.status,
            r.upstream().unwrap_or("-"),
            r.header("x-llm-breaker").unwrap_or("-")
        );
        println!("{line}");
        // Let the filter record the outcome (it does so as Envoy logs the stream,
        // which can be just after we read the response) before the next request.
        let deadline = Instant::now() + Duration::from_secs(5);
        while completed_total(admin) <= before && Instant::now() < deadline {
            sleep(Duration::from_millis(5));
        }
        if r.status != 200 {
            return Err(format!("a client error: HTTP {}", r.status));
        }
        Ok(r.upstream().unwrap_or("-").to_string())
    };

    println!("1. All providers healthy: traffic goes to the primary.");
    send("  request")?;
    send("  request")?;
    println!(
        "\n2. openai starts answering 503. Each failed attempt is retried on azure-openai inside\n   the same request: the client gets 200, and 3 failed attempts trip openai's breaker."
    );
    ups[0].set(Behaviour::Status(503));
    let before = ups[0].requests();
    for _ in 0..3 {
        let r = send("  request (openai failing)")?;
        if r != "azure-openai" {
            return Err(format!("expected a retry on azure-openai, got {r}"));
        }
    }
    println!("\n3. Its breaker is open: requests go straight to azure-openai (openai gets none).");
    for _ in 0..3 {
        let r = send("  request")?;
        if r != "azure-openai" {
            return Err(format!("expected a failover to azure-openai, got {r}"));
        }
    }
    let hits = ups[0].requests() - before;
    println!("   openai received {hits} requests during the outage; clients saw 0 errors.");
    if let Some(r) = ups[1].last_request() {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "api-key")
            .map_or("none".to_string(), |(_, v)| mask(v));
        println!(
            "   azure-openai got its own key (api-key: {key}) and its own path: {} {}",
            r.method, r.target
        );
    }
    if hits != 3 {
        return Err(format!(
            "expected openai to receive exactly 3 attempts, got {hits}"
        ));
    }
    println!(
        "\n4. openai recovers; after the 5 s open time, probes test it and close the breaker."
    );
    ups[0].set(Behaviour::Ok);
    sleep(Duration::from_millis(5600));
    let mut served = String::new();
    for _ in 0..3 {
        served = send("  request")?;
    }
    if served != "openai" {
        return Err(format!("expected traffic back on openai, got {served}"));
    }
    let prom = client::get(admin, "/stats/prometheus")
        .map(|r| r.text())
        .unwrap_or_default();
    println!(
        "\nMetrics (curl -s 127.0.0.1:9901/stats/prometheus | grep llm_breaker_upstream_state):"
    );
    for l in prom
        .lines()
        .filter(|l| l.starts_with("llm_breaker_upstream_state{"))
    {
        println!("  {l}");
    }
    println!("\nTransitions in Envoy's log:");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("llm-breaker: upstream=")) {
        if let Some(i) = l.find("llm-breaker: ") {
            println!("  {}", &l[i..]);
        }
    }
    // The filter's own status endpoint says the same (and serves the dashboard).
    let status = client::get(listener, "/_llm_breaker/status")
        .map_err(|e| format!("status endpoint: {e}"))?;
    let text = status.text();
    if status.status != 200 || !text.contains(r#""to":"open""#) {
        return Err(format!("status endpoint: {} {text}", status.status));
    }
    println!(
        "\nStatus endpoint: curl -s 127.0.0.1:10000/_llm_breaker/status ({} bytes of JSON, history included);\ndashboard: http://127.0.0.1:10000/_llm_breaker/",
        text.len()
    );
    if once {
        return Ok(());
    }
    println!(
        r#"
Try it yourself (Ctrl-C, or SIGTERM/SIGHUP, to stop):
  curl -si 127.0.0.1:10000/v1/chat/completions -d '{{"model":"gpt-4o"}}'
  curl -s '127.0.0.1:18001/_mock/set?mode=status&status=503'   # openai fails (also: mode=ok|close|hang|cut|delay&ms=N)
  curl -s '127.0.0.1:18002/_mock/set?mode=status&status=529'   # azure-openai overloaded
  curl -s 127.0.0.1:9901/stats/prometheus | grep llm_breaker
  curl -s 127.0.0.1:10000/_llm_breaker/status                   # breaker status (JSON); dashboard: http://127.0.0.1:10000/_llm_breaker/
  curl -s -XPOST -H "authorization: Bearer $LLM_BREAKER_ADMIN_TOKEN" 127.0.0.1:10000/_llm_breaker/upstreams/openai/reset
Envoy's log: {}"#,
        log_path.display()
    );
    loop {
        if envoy.0.try_wait().ok().flatten().is_some() {
            return Err("Envoy exited".into());
        }
        sleep(Duration::from_secs(1));
    }
}
