//! In real Envoy:
//! - the downstream role and the upstream log (which records failed attempts) share
//!   breaker state only through one `vm_id`, and a WasmPlugin's VM has none;
//! - what `failure_policy` (Istio's `failStrategy`) does after a VM fails at runtime,
//!   with a module that crashes on the second request (`crash_filter.rs`).

use super::{str_at, upstream_vm_config};
use llm_breaker_harness::client;
use llm_breaker_harness::envoy::{
    bootstrap, envoy_bin, filter_wasm, free_port, loopback_providers, require_prerequisites, Envoy,
    Filter, Options, Within,
};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Within-request failover openai → azure in Envoy (clusters from the generator), the
/// downstream role with `vm_id: llm_breaker` (as the harness runs it) and the upstream
/// log with `upstream_vm_id`. The primary answers 503; returns how many of 20
/// sequential requests it received, and how many requests failed.
fn primary_attempts(upstream_vm_id: &str) -> (usize, usize) {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    a.set(Behaviour::Status(503));
    let filter = r#"{"failover":"within_request",
        "routes":[{"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai","azure"]}],
        "breaker":{"consecutive_failures":3,
          "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
          "open":{"base_ms":600000,"max_ms":600000,"jitter":0}}}"#;
    let addrs = [("openai", a.addr()), ("azure", b.addr())];
    let wasm = format!(
        "{{vm_id: {upstream_vm_id}, filename: {}}}",
        filter_wasm().display()
    );
    let file = loopback_providers(&addrs, &wasm);
    let mut opts = Options::breaker(filter, &addrs);
    opts.within = Some(Within::from_provider_file(
        filter,
        &file,
        Duration::from_secs(5),
    ));
    let e = Envoy::start(&opts);
    let mut errors = 0;
    let mut send = |n: usize| {
        for _ in 0..n {
            let r =
                client::post(e.listener, "/v1/chat/completions", r#"{"model":"gpt-4o"}"#).unwrap();
            errors += usize::from(r.status != 200);
        }
    };
    send(3);
    // Give the third failure time to reach the breaker the downstream role reads (a
    // condition with a deadline: with split state it never comes, and that is the point).
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.upstream_stat("openai", "state") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    send(17);
    (a.requests(), errors)
}

/// A WasmPlugin gives its VM no `vm_id` (Istio's `buildVMConfig` sets none), while the
/// generated EnvoyFilter's upstream log could have `wasm.vm_id` (`llm_breaker`). Envoy
/// keys shared data by `vm_id`, so different ids mean two sets of breakers: the
/// upstream log records the primary's failures where the downstream role never looks,
/// and every request still tries the failing primary first.
#[test]
fn the_downstream_role_and_the_upstream_log_share_breakers_only_with_one_vm_id() {
    let (same, same_errors) = primary_attempts("llm_breaker");
    let (split, split_errors) = primary_attempts("another_vm_id");
    eprintln!(
        "primary attempts for 20 requests: same vm_id {same}, different vm_ids {split}; \
         client errors {same_errors} / {split_errors}"
    );
    assert_eq!(
        (same_errors, split_errors),
        (0, 0),
        "failover works either way"
    );
    assert_eq!(same, 3, "one vm_id: the breaker opens after 3 failures");
    assert_eq!(
        split, 20,
        "different vm_ids: the breaker the downstream role reads never opens"
    );
}

/// The upstream role and the upstream log of failover.yaml must share the WasmPlugin's
/// `vm_id`, which is empty: Istio's `buildVMConfig` (pilot/pkg/model/extensions.go, 1.22
/// to today) sets none, and `WasmPlugin` has no field for it.
#[test]
fn the_upstream_role_and_log_share_the_wasmplugins_vm_id() {
    let module = upstream_vm_config();
    assert_eq!(
        str_at(&module, &["vm_id"]).unwrap_or(""),
        "",
        "the upstream role's vm_id must be the WasmPlugin's (none)"
    );
    let failover: serde_yaml::Value = serde_yaml::from_str(&super::read(super::GEN_OUT)).unwrap();
    let router = failover["spec"]["configPatches"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_at(p, &["applyTo"]) == Some("HTTP_FILTER"))
        .expect("failover.yaml adds the upstream log to the router");
    let log =
        &router["patch"]["value"]["typed_config"]["upstream_log"][0]["typed_config"]["config"];
    assert_eq!(str_at(&log["vm_config"], &["vm_id"]).unwrap_or(""), "");
    assert_eq!(
        str_at(&log["vm_config"], &["code", "local", "filename"]),
        Some("/etc/llm-breaker/module/llm_breaker.wasm"),
        "the module gateway-values.yaml mounts"
    );
    let values: serde_yaml::Value =
        serde_yaml::from_str(&super::read("envoy/istio/gateway-values.yaml")).unwrap();
    let mounted = values["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| str_at(m, &["mountPath"]) == Some("/etc/llm-breaker/module"));
    assert!(
        mounted,
        "gateway-values.yaml mounts the upstream log's module"
    );
}

// ---- failure_policy after a VM crash --------------------------------------------------

/// Builds `crash_filter.rs` into `dir` with rustc (wasm32-wasip1, which `make build` adds).
fn crash_module(dir: &Path) -> PathBuf {
    let src = llm_breaker_harness::envoy::workspace_root().join("tests/istio/crash_filter.rs");
    let out = dir.join("crash.wasm");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "cdylib",
            "--target",
            "wasm32-wasip1",
        ])
        .args(["-O", "-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(status.success(), "building {}", src.display());
    out
}

/// An Envoy (one worker) with the crash module under `failure_policy: policy`.
struct Crashy {
    child: Child,
    listener: SocketAddr,
    dir: PathBuf,
}

impl Drop for Crashy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_crashy(policy: &str, upstream: SocketAddr) -> Crashy {
    require_prerequisites(); // Envoy missing is a failure, never a skip
    let dir =
        std::env::temp_dir().join(format!("llm-breaker-crash-{}-{policy}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = crash_module(&dir);
    let mut opts = Options::breaker("{}", &[("openai", upstream)]);
    opts.filter = Filter::Noop {
        wasm,
        cluster: "openai".into(),
    };
    opts.concurrency = 1;
    let (listen, admin) = (free_port(), free_port());
    let yaml = bootstrap(&opts, listen, admin).replace(
        "root_id: noop\n",
        &format!("root_id: noop\n                failure_policy: {policy}\n"),
    );
    assert!(yaml.contains(policy), "failure_policy inserted");
    let cfg = dir.join("envoy.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&cfg)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("envoy.log")).unwrap())
        .spawn()
        .unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client::get(admin, "/ready").is_ok_and(|r| r.status == 200) {
        assert!(
            Instant::now() < deadline,
            "Envoy not ready: {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Crashy {
        child,
        listener: SocketAddr::from(([127, 0, 0, 1], listen)),
        dir,
    }
}

/// Statuses of four requests (before the crash, the crashing one, two after it), and
/// for how long after the crash requests were refused, if one passed again within 10 s.
fn statuses_around_a_crash(policy: &str) -> (Vec<u16>, Option<Duration>) {
    let a = MockUpstream::start("openai");
    let e = start_crashy(policy, a.addr());
    let get = || client::get(e.listener, "/v1/models").map_or(0, |r| r.status);
    let statuses: Vec<u16> = (0..4).map(|_| get()).collect();
    let crashed = Instant::now();
    let recovered = loop {
        if statuses[2] == 200 || get() == 200 {
            break Some(crashed.elapsed());
        }
        if crashed.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (statuses, recovered)
}

/// Istio's `FAIL_OPEN` / `FAIL_CLOSE` / `FAIL_RELOAD` become Envoy's `failure_policy`
/// (for Istio >= 1.25 proxies; the older `fail_open` before). After the VM crashes, the
/// crashing request gets a 503 under every policy; then FAIL_OPEN passes requests without
/// the filter, FAIL_CLOSED refuses every one, FAIL_RELOAD serves again once a new VM is up
/// (after a back-off: 1 s by default).
#[test]
fn after_a_vm_crash_fail_open_bypasses_the_filter_and_fail_closed_refuses() {
    let (open, open_back) = statuses_around_a_crash("FAIL_OPEN");
    let (closed, closed_back) = statuses_around_a_crash("FAIL_CLOSED");
    let (reload, reload_back) = statuses_around_a_crash("FAIL_RELOAD");
    eprintln!(
        "statuses (before, crash, after, after): FAIL_OPEN {open:?}, FAIL_CLOSED {closed:?} \
         (a 200 again within 10 s: {closed_back:?}), FAIL_RELOAD {reload:?} (a 200 again after \
         {reload_back:?})"
    );
    for s in [&open, &closed, &reload] {
        assert_eq!(s[..2], [200, 503], "the crashing request itself fails");
    }
    assert_eq!(
        open[2..],
        [200, 200],
        "FAIL_OPEN: requests pass without the filter"
    );
    assert!(open_back.is_some());
    assert_eq!(
        closed[2..],
        [503, 503],
        "FAIL_CLOSED: every request refused"
    );
    assert_eq!(closed_back, None, "FAIL_CLOSED: refused for good");
    assert!(reload_back.is_some(), "FAIL_RELOAD: a new VM serves again");
}
