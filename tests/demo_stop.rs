//! Clean stops of `make demo`: SIGTERM or SIGHUP, to the demo binary or to the
//! `make` that runs it, stops the demo's Envoy and mock providers, so ports 10000,
//! 9901 and 18001–18004 are free again for the next `make demo`.
//!
//! Uses the demo's fixed ports: `make demo-check` runs it right after the
//! walkthrough, and the demo itself takes a lock file so that two demos never
//! overlap. The cases run one after another in a single test.

// Native only: proptest, signals and processes have no wasm32 counterpart (`make lint`
// builds the test targets for wasm32-unknown-unknown too).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::envoy::{envoy_bin, require_prerequisites, workspace_root};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PORTS: [u16; 6] = [10000, 9901, 18001, 18002, 18003, 18004];

fn demo_bin() -> PathBuf {
    std::env::var_os("DEMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/demo"))
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether `pid` is a live process (a zombie counts as gone: it holds no ports).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Parent pid of `pid`, from /proc.
fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

fn signal(pid: &str, sig: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(pid)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Kills what a failed case left behind, so the next case and the next demo can run.
struct Cleanup(Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// Where a signal goes.
#[derive(Clone, Copy)]
enum Target {
    /// The process we started (the demo, or `make`).
    Process,
    /// Its process group, as a terminal's hangup or Ctrl-C would.
    Group,
}

/// Waits for the demo that `child` runs (itself, or through `make`) to bring up
/// Envoy, sends `sig` to `target`, and checks that Envoy, the demo and `child` are
/// gone and the demo's ports free.
fn stop_case(label: &str, mut child: Child, sig: i32, make: bool, target: Target) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut cleanup = Cleanup(vec![child.id()]);
    // `make demo` may first build the filter: allow for it.
    let deadline = Instant::now() + Duration::from_secs(240);
    let envoy_pid = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{label}: the demo never said Envoy is up"));
        if let Some(rest) = line.strip_prefix("Envoy is up (pid ") {
            break rest
                .split(')')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{label}: no pid in {line:?}"));
        }
    };
    cleanup.0.push(envoy_pid);
    let demo_pid = ppid(envoy_pid).expect("Envoy's parent");
    cleanup.0.push(demo_pid);
    if make {
        assert_ne!(
            demo_pid,
            child.id(),
            "{label}: expected make between us and the demo"
        );
    }
    assert!(alive(envoy_pid), "{label}: Envoy {envoy_pid} not running");
    let t0 = Instant::now();
    match target {
        Target::Process => signal(&child.id().to_string(), sig),
        // What a terminal does on hangup or Ctrl-C: the whole foreground group.
        Target::Group => signal(&format!("-{}", child.id()), sig),
    }

    let limit = Duration::from_secs(15);
    let gone = llm_breaker_harness::poll(limit, || {
        !alive(envoy_pid) && !alive(demo_pid) && PORTS.iter().all(|p| port_free(*p))
    });
    let mut status = None;
    llm_breaker_harness::poll(Duration::from_secs(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let status = status.map_or_else(|| "<still running>".to_string(), |s| s.to_string());
    let busy: Vec<u16> = PORTS.iter().copied().filter(|p| !port_free(*p)).collect();
    assert!(
        gone.is_some(),
        "{label}: {limit:?} after the signal: Envoy {envoy_pid} alive: {}, demo {demo_pid} alive: {}, ports still in use: {busy:?}",
        alive(envoy_pid),
        alive(demo_pid),
    );
    println!(
        "{label}: Envoy {envoy_pid} and the demo {demo_pid} gone, ports {PORTS:?} free {:?} after the signal; {} exited with {status}",
        t0.elapsed(),
        if make { "make" } else { "the demo" },
    );
    assert!(
        !status.starts_with('<'),
        "{label}: {} still running 10 s after the demo stopped",
        if make { "make" } else { "the demo" }
    );
    cleanup.0.clear();
}

fn demo() -> Child {
    Command::new(demo_bin())
        .current_dir(workspace_root())
        .env("ENVOY_BIN", envoy_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it: make demo-check)",
                demo_bin().display()
            )
        })
}

fn make_demo() -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("make")
        .process_group(0)
        .args(["--no-print-directory", "demo"])
        .current_dir(workspace_root())
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .env_remove("MFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run make")
}

#[test]
fn the_demo_stops_its_envoy_and_providers_on_sigterm_and_sighup() {
    require_prerequisites();
    assert!(
        demo_bin().exists(),
        "{} not built: run `make demo-check`",
        demo_bin().display()
    );
    let (hup, int, term) = (1, 2, 15);
    stop_case("demo binary, SIGTERM", demo(), term, false, Target::Process);
    stop_case("demo binary, SIGHUP", demo(), hup, false, Target::Process);
    // No handler runs on SIGKILL: Envoy goes through PR_SET_PDEATHSIG.
    stop_case("demo binary, SIGKILL", demo(), 9, false, Target::Process);
    stop_case(
        "make demo, SIGTERM to make",
        make_demo(),
        term,
        true,
        Target::Process,
    );
    // GNU make forwards only SIGTERM to its recipe; on SIGHUP or SIGINT it waits
    // for the recipe, which a terminal signals too: its whole process group.
    stop_case(
        "make demo, SIGHUP to its process group",
        make_demo(),
        hup,
        true,
        Target::Group,
    );
    stop_case(
        "make demo, SIGINT to its process group",
        make_demo(),
        int,
        true,
        Target::Group,
    );
}
