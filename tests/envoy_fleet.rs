//! Fleet-wide breakers end to end (issue 11): a real 3-member etcd cluster on
//! loopback (Debian's `etcd-server`, `make etcd`), several real Envoys (two workers
//! each) with the built filter, `fleet` pointing at etcd through an Envoy cluster with
//! the three members, and mock providers. Every process is stopped by a guard.
//!
//! etcd or Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client;
use llm_breaker_harness::envoy::{free_port, Envoy, Options};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const SYNC_MS: u64 = 100;
const TOKEN: &str = "fleet-test-token";
/// Time between two requests of the outage (three syncs).
const GAP: Duration = Duration::from_millis(3 * SYNC_MS);
/// Open time: longer than the 60 requests of the outage.
const OPEN_MS: u64 = 25_000;

/// The etcd binary (`make etcd` installs Debian's `etcd-server`).
fn etcd_bin() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("etcd"))
            .find(|f| f.exists())
    });
    found.unwrap_or_else(|| {
        panic!("etcd not found on PATH — run `make etcd` (apt-get install -y etcd-server)")
    })
}

/// One etcd member: its own ports and data dir; killed when dropped.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    cluster: String,
    token: String,
    child: Option<Child>,
    /// Serve clients over TLS with these certificates, requiring a client certificate.
    tls: Option<PathBuf>,
}

impl Member {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client))
    }

    fn start(&mut self) {
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let client_url = match &self.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.client),
            None => url(self.client),
        };
        let mut tls: Vec<std::ffi::OsString> = Vec::new();
        if let Some(dir) = &self.tls {
            tls.push("--cert-file".into());
            tls.push(dir.join("server.crt").into());
            tls.push("--key-file".into());
            tls.push(dir.join("server.key").into());
            tls.push("--client-cert-auth".into());
            tls.push("--trusted-ca-file".into());
            tls.push(dir.join("ca.crt").into());
        }
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new(etcd_bin())
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(&tls)
            .args(["--listen-peer-urls", &url(self.peer)])
            .args(["--initial-advertise-peer-urls", &url(self.peer)])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn healthy(&self) -> bool {
        client::get(self.addr(), "/health")
            .is_ok_and(|r| r.status == 200 && r.text().contains("true"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-member etcd cluster on loopback.
struct Etcd {
    members: Vec<Member>,
    base: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.stop();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Etcd {
    fn start() -> Etcd {
        let base = std::env::temp_dir().join(format!(
            "llm-breaker-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&base).unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| Member {
                name: format!("m{i}"),
                client,
                peer,
                dir: base.join(format!("m{i}")),
                cluster: cluster.clone(),
                token: format!("llm-breaker-{}", ports[0].0),
                child: None,
                tls: None,
            })
            .collect();
        for m in &mut members {
            m.start();
        }
        let e = Etcd { members, base };
        e.wait_healthy(&[0, 1, 2]);
        e
    }

    fn wait_healthy(&self, which: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !which.iter().all(|&i| self.members[i].healthy()) {
            assert!(
                Instant::now() < deadline,
                "etcd members not healthy within 60 s"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// The Envoy cluster reaching all members, with active health checks so a
    /// stopped member is taken out of the rotation.
    fn cluster(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}",
                    m.client
                )
            })
            .collect();
        format!(
            "{{name: etcd, type: STATIC, connect_timeout: 0.25s, \
             load_assignment: {{cluster_name: etcd, endpoints: [{{lb_endpoints: [{}]}}]}}, \
             health_checks: [{{timeout: 0.5s, interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, \
             http_health_check: {{path: /health}}}}]}}",
            eps.join(", ")
        )
    }

    /// Writes raw bytes at `key` (through any healthy member).
    fn put(&self, key: &str, value: &[u8]) {
        let b64 = |b: &[u8]| llm_breaker::fleet::base64::encode(b);
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(key.as_bytes()),
            b64(value)
        );
        let m = self
            .members
            .iter()
            .find(|m| m.healthy())
            .expect("a healthy member");
        let r = client::request(m.addr(), "POST", "/v3/kv/put", &[], body.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// The filter config of one Envoy of the fleet (or without `fleet`).
fn config(instance: Option<&str>, open_ms: u64) -> String {
    let fleet = instance
        .map(|i| {
            format!(
                r#","fleet":{{"etcd_cluster":"etcd","sync_ms":{SYNC_MS},"timeout_ms":500,"instance":"{i}","prober_ttl_s":5}}"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure"]}}],
            "breaker":{{"consecutive_failures":3,"failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
              "open":{{"base_ms":{open_ms},"max_ms":600000,"multiplier":1.0,"jitter":0}},
              "half_open":{{"permitted_calls":1,"success_threshold":2}}}},
            "admin":{{"enabled":true}}{fleet}}}"#
    )
}

fn start_envoy(etcd: Option<&Etcd>, cfg: &str, a: SocketAddr, b: SocketAddr) -> Envoy {
    start_envoy_with(etcd.map(Etcd::cluster), cfg, a, b)
}

/// An Envoy with `etcd_cluster` (one line of flow YAML) as its `etcd` cluster.
fn start_envoy_with(
    etcd_cluster: Option<String>,
    cfg: &str,
    a: SocketAddr,
    b: SocketAddr,
) -> Envoy {
    let mut opts = Options::breaker(cfg, &[("openai", a), ("azure", b)]);
    opts.extra_clusters.extend(etcd_cluster);
    opts.env = vec![("LLM_BREAKER_ADMIN_TOKEN".into(), TOKEN.into())];
    Envoy::start(&opts)
}

fn chat(e: &Envoy) -> client::Response {
    e.send_recorded(CHAT, &[], BODY.as_bytes())
}

/// The local and fleet state of `openai` in an Envoy's status.
fn states(e: &Envoy) -> (String, Option<String>) {
    let s = e.status();
    let u = &s["upstreams"][0];
    (
        u["state"].as_str().unwrap_or("?").to_string(),
        u["fleet"]["state"].as_str().map(str::to_string),
    )
}

fn connected(e: &Envoy) -> bool {
    e.stat("wasmcustom.llm_breaker.fleet.connected") == Some(1)
}

/// Waits up to `secs` for `ok` (panics naming `what` otherwise); how long it took.
fn wait_until(what: &str, secs: u64, ok: impl FnMut() -> bool) -> Duration {
    llm_breaker_harness::wait_for(what, Duration::from_secs(secs), ok)
}

/// Requests the Envoys sent to the primary (admitted by its breaker).
fn to_primary(envoys: &[&Envoy]) -> u64 {
    envoys
        .iter()
        .map(|e| e.upstream_stat("openai", "requests_admitted"))
        .sum()
}

/// The most request starts within any `sync_ms` (the issue's "requests in one
/// `sync_ms`").
fn most_in_one_sync(starts: &[Instant]) -> usize {
    let sync = Duration::from_millis(SYNC_MS);
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| t.duration_since(starts[i]) < sync)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// What an outage cost: the requests the primary got (all failures), its
/// address, and the most requests sent within one `sync_ms`.
struct Outage {
    failures: u64,
    addr: SocketAddr,
    per_sync: usize,
}

/// `n` requests round-robin over the Envoys, one every `gap`; the primary answers
/// 503 for the first half, then is gone (connections refused).
fn outage(envoys: &[&Envoy], primary: MockUpstream, n: usize, gap: Duration) -> Outage {
    primary.set(Behaviour::Status(503));
    let addr = primary.addr();
    let mut primary = Some(primary);
    let before = to_primary(envoys);
    let mut starts = Vec::with_capacity(n);
    for i in 0..n {
        if i == n / 2 {
            drop(primary.take());
        }
        starts.push(Instant::now());
        let r = chat(envoys[i % envoys.len()]);
        assert!(r.status == 200 || r.status == 503, "status {}", r.status);
        sleep(gap);
    }
    Outage {
        failures: to_primary(envoys) - before,
        addr,
        per_sync: most_in_one_sync(&starts),
    }
}

/// Failures that may race the sync on top of the issue's bound: the Envoy after
/// the one that tripped may send one request before its next round reads the
/// open record (on a loaded machine a timer tick can be late).
const RACE: u64 = 1;

#[test]
fn fleet_trip_probe_late_envoy_and_bad_records() {
    let etcd = Etcd::start();
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let envoys: Vec<Envoy> = (1..=3)
        .map(|i| {
            start_envoy(
                Some(&etcd),
                &config(Some(&format!("envoy-{i}")), OPEN_MS),
                a.addr(),
                b.addr(),
            )
        })
        .collect();
    for e in &envoys {
        wait_until("fleet connected", 30, || connected(e));
    }
    let refs: Vec<&Envoy> = envoys.iter().collect();

    // Fleet trip: 60 requests round-robin, one every 3 syncs. The failure streaks
    // are shared: the fleet trips after 3 failures in total, wherever they happened.
    let Outage {
        failures,
        addr,
        per_sync,
    } = outage(&refs, a, 60, GAP);
    let bound = 3 + per_sync as u64 + RACE;
    println!(
        "fleet on: the primary got {failures} failing requests of 60 (3 Envoys, consecutive_failures 3); \
         requests in one sync_ms: {per_sync}; bound 3 + {per_sync} + {RACE} (race) = {bound}"
    );
    assert!(
        failures <= bound,
        "fleet on: {failures} failures reached the primary (bound {bound})"
    );
    let how: Vec<&str> = envoys
        .iter()
        .map(|e| {
            if e.log().contains("reason=fleet_failures") {
                "fleet_failures"
            } else if e.log().contains("reason=consecutive_failures") {
                "consecutive_failures"
            } else {
                "fleet"
            }
        })
        .collect();
    println!("fleet on: how each Envoy opened: {how:?}");
    for e in &envoys {
        assert!(!e.log().contains("fleet: ignoring"), "{}", e.log());
    }
    for e in &envoys {
        let (local, fleet) = states(e);
        assert!(local == "open" || local == "half_open", "local {local}");
        assert_eq!(fleet.as_deref(), Some("open"));
    }

    // A late 4th Envoy, started during the outage, routes from the fleet record as
    // soon as it has read it: not one request to the primary.
    let late = start_envoy(
        Some(&etcd),
        &config(Some("envoy-4"), OPEN_MS),
        addr,
        b.addr(),
    );
    let informed = wait_until("late Envoy informed", 30, || connected(&late));
    for _ in 0..10 {
        assert_eq!(chat(&late).status, 200);
    }
    let sent = to_primary(&[&late]);
    println!("late Envoy: fleet read {informed:?} after ready; {sent} requests to the primary");
    assert_eq!(sent, 0, "the late Envoy sent requests to the primary");
    drop(late);

    // Bad records under the prefix: warned about, ignored, nothing crashes.
    etcd.put("/llm-breaker/breakers/azure", b"\xff\x00 not json");
    etcd.put("/llm-breaker/breakers/ghost", br#"{"v":99,"state":"open"}"#);
    etcd.put(
        "/llm-breaker/breakers/azure|x",
        br#"{"v":1,"state":"melted"}"#,
    );
    etcd.put("/llm-breaker/streaks/azure/ghost", b"\xff not a streak");
    etcd.put(
        "/llm-breaker/streaks/azure/old",
        br#"{"v":7,"breaker":"azure","instance":"old","streak":99,"last_ms":1}"#,
    );
    // Each Envoy warns within a few syncs (waited for, not slept: a busy machine).
    let warned = [
        "fleet: ignoring /llm-breaker/breakers/azure",
        "fleet record version 99",
        "fleet: ignoring /llm-breaker/streaks/azure/ghost",
        "streak version 7",
    ];
    wait_until("every Envoy's warnings about the bad records", 30, || {
        envoys
            .iter()
            .all(|e| warned.iter().all(|w| e.log().contains(w)))
    });
    for e in &envoys {
        assert!(connected(e));
        assert_eq!(chat(e).status, 200);
    }

    // One probe stream: the primary recovers; after the open period exactly one
    // Envoy probes, and its success closes every Envoy's breaker.
    let _primary = MockUpstream::start_on("openai", &addr.to_string()).expect("primary back");
    let t0 = Instant::now();
    let mut i = 0;
    let mut first_closed: Option<Instant> = None;
    wait_until("every Envoy closed", 60, || {
        let _ = chat(&envoys[i % 3]);
        i += 1;
        let closed = envoys.iter().filter(|e| states(e).0 == "closed").count();
        if closed > 0 && first_closed.is_none() {
            first_closed = Some(Instant::now());
        }
        closed == envoys.len()
    });
    // From the prober's close to every Envoy closed: about one sync plus a round
    // trip (printed, not asserted: the machine is shared).
    let spread = first_closed.map(|t| t.elapsed()).unwrap_or_default();
    println!("the prober's close reached every Envoy within {spread:?} (sync_ms {SYNC_MS})");
    let probing: Vec<u64> = envoys
        .iter()
        .map(|e| e.upstream_stat("openai", "requests_probe"))
        .collect();
    println!(
        "probe streams per Envoy {probing:?}; all closed {:?} after the primary recovered",
        t0.elapsed()
    );
    assert_eq!(
        probing.iter().filter(|&&p| p > 0).count(),
        1,
        "probes {probing:?}"
    );
    for e in &envoys {
        assert_eq!(states(e).1.as_deref(), Some("closed"));
        assert!(!e.log().contains("panic"), "{}", e.log());
    }
}

#[test]
fn without_fleet_each_envoy_learns_alone() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let envoys: Vec<Envoy> = (0..3)
        .map(|_| start_envoy(None, &config(None, OPEN_MS), a.addr(), b.addr()))
        .collect();
    let refs: Vec<&Envoy> = envoys.iter().collect();
    let failures = outage(&refs, a, 60, GAP).failures;
    println!("fleet off: the primary got {failures} failing requests of 60 (3 Envoys, consecutive_failures 3)");
    assert_eq!(failures, 9);
}

/// The p99 latency of `n` requests round-robin (all must be served).
fn p99(envoys: &[&Envoy], n: usize) -> Duration {
    let mut took: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let r = chat(envoys[i % envoys.len()]);
            assert_eq!(r.status, 200, "{}", r.text());
            t.elapsed()
        })
        .collect();
    took.sort();
    took[(n * 99 / 100).min(n - 1)]
}

fn all_states(envoys: &[&Envoy], local: &str, fleet: &str) -> bool {
    envoys.iter().all(|e| {
        let (l, f) = states(e);
        l == local && f.as_deref() == Some(fleet)
    })
}

#[test]
fn etcd_faults_fall_back_to_local_breakers_and_reconverge() {
    let mut etcd = Etcd::start();
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let envoys: Vec<Envoy> = (1..=3)
        .map(|i| {
            start_envoy(
                Some(&etcd),
                &config(Some(&format!("envoy-{i}")), OPEN_MS),
                a.addr(),
                b.addr(),
            )
        })
        .collect();
    let refs: Vec<&Envoy> = envoys.iter().collect();
    for e in &envoys {
        wait_until("fleet connected", 30, || connected(e));
    }

    // One member stopped: the fleet still trips together.
    etcd.members[0].stop();
    a.set(Behaviour::Status(503));
    let mut i = 0;
    let took = wait_until("fleet open everywhere with one member down", 60, || {
        let _ = chat(refs[i % 3]);
        i += 1;
        sleep(GAP);
        all_states(&refs, "open", "open")
    });
    println!("one etcd member down: every Envoy open (fleet) after {i} requests, {took:?}");
    let up = p99(&refs, 60);
    let unreachable = |e: &Envoy| e.log().matches("fleet: etcd unreachable").count();
    let flips: Vec<usize> = refs.iter().map(|e| unreachable(e)).collect();
    let errors: Vec<u64> = refs
        .iter()
        .map(|e| e.stat("wasmcustom.llm_breaker.fleet.errors").unwrap_or(0))
        .collect();
    println!("one member down: fleet_errors {errors:?}, unreachable log lines {flips:?}");
    for e in &envoys {
        wait_until("connected with one member down", 30, || connected(e));
    }

    // All stopped: each Envoy serves on its own breakers, etcd off the request path.
    etcd.members[1].stop();
    etcd.members[2].stop();
    for e in &envoys {
        wait_until("fleet disconnected", 60, || !connected(e));
    }
    let down = p99(&refs, 60);
    println!("request p99: etcd up {up:?}, etcd down {down:?} (60 requests each, same run)");
    for (e, before) in envoys.iter().zip(&flips) {
        let lines = unreachable(e) - before;
        assert_eq!(lines, 1, "one log line per change, got {lines}");
        assert!(e.stat("wasmcustom.llm_breaker.fleet.errors").unwrap_or(0) > 0);
    }
    // A local change while etcd is down: an operator reset on envoy-1.
    a.set(Behaviour::Ok);
    let auth = format!("Bearer {TOKEN}");
    let r = client::request(
        envoys[0].listener,
        "POST",
        "/_llm_breaker/upstreams/openai/reset",
        &[("authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // etcd back: everyone reconnects, and the later change (the reset) wins
    // everywhere.
    for m in &mut etcd.members {
        m.start();
    }
    etcd.wait_healthy(&[0, 1, 2]);
    for e in &envoys {
        wait_until("fleet reconnected", 90, || connected(e));
    }
    let took = wait_until("fleet converged to closed", 60, || {
        all_states(&refs, "closed", "closed")
    });
    println!("etcd back: reconnected, every Envoy closed from envoy-1's reset {took:?} later");
}

/// A temp dir removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway CA, an etcd server certificate (SANs `etcd.test` and `127.0.0.1`;
/// also `clientAuth`, since etcd 3.4's JSON gateway dials etcd's own gRPC port with
/// it) and a client certificate (`CN=llm-breaker`), made with `openssl` in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install openssl"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ext = [
        (
            "server",
            "etcd.test",
            "subjectAltName=DNS:etcd.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "llm-breaker", "extendedKeyUsage=clientAuth\n"),
    ];
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
    ca.extend(["-subj", "/CN=llm-breaker test CA"]);
    run(&ca);
    for (name, cn, extensions) in ext {
        let (key, csr, crt, extfile, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
            format!("/CN={cn}"),
        );
        std::fs::write(dir.join(&extfile), extensions).unwrap();
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&req);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ]);
    }
}

impl Etcd {
    /// One etcd member serving clients over TLS only (`https://`), with
    /// `--client-cert-auth`: a client without a certificate from `certs`' CA is
    /// refused.
    fn start_tls(certs: &Path) -> Etcd {
        // Removed by `Etcd`'s drop.
        let base = std::env::temp_dir().join(format!(
            "llm-breaker-etcd-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&base).unwrap();
        let (client, peer) = (free_port(), free_port());
        let mut m = Member {
            name: "m0".into(),
            client,
            peer,
            dir: base.join("m0"),
            cluster: format!("m0=http://127.0.0.1:{peer}"),
            token: format!("llm-breaker-tls-{client}"),
            child: None,
            tls: Some(certs.to_path_buf()),
        };
        m.start();
        Etcd {
            members: vec![m],
            base,
        }
    }

    /// [`Etcd::cluster`] with an `UpstreamTlsContext`: SNI `etcd.test`, the server's
    /// SAN checked against it, the test CA, and the client certificate when
    /// `client_cert`.
    fn tls_cluster(&self, certs: &Path, client_cert: bool) -> String {
        let f = |n: &str| certs.join(n).display().to_string();
        let identity = if client_cert {
            format!(
                "tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}], ",
                f("client.crt"),
                f("client.key")
            )
        } else {
            String::new()
        };
        let tls = format!(
            ", transport_socket: {{name: envoy.transport_sockets.tls, typed_config: \
             {{'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, \
             sni: etcd.test, common_tls_context: {{{identity}validation_context: \
             {{trusted_ca: {{filename: {}}}, \
             match_typed_subject_alt_names: [{{san_type: DNS, matcher: {{exact: etcd.test}}}}]}}}}}}}}",
            f("ca.crt")
        );
        let plain = self.cluster();
        format!("{}{tls}}}", plain.strip_suffix('}').unwrap_or(&plain))
    }
}

/// No certificate or key material in `text`: no PEM header, no key file path, no
/// line of the key.
fn assert_no_secrets(what: &str, text: &str, certs: &Path) {
    let key = certs.join("client.key");
    let pem = std::fs::read_to_string(&key).unwrap();
    let mut needles: Vec<String> = vec![
        "PRIVATE KEY".into(),
        "BEGIN CERTIFICATE".into(),
        key.display().to_string(),
        certs.display().to_string(),
    ];
    needles.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_string),
    );
    for n in &needles {
        assert!(!text.contains(n.as_str()), "{what} contains {n:?}");
    }
}

/// An Envoy whose etcd cluster has no client certificate: etcd refuses the TLS
/// handshake, the fleet stays disconnected (`fleet_errors` rises, one warning), and
/// its own breaker trips after 3 failures and serves from the fallback.
fn without_client_certificate(bare: &Envoy, etcd: &Etcd) {
    let errors = |e: &Envoy| e.stat("wasmcustom.llm_breaker.fleet.errors").unwrap_or(0);
    wait_until("fleet errors without a client certificate", 60, || {
        errors(bare) >= 2
    });
    assert!(!connected(bare), "connected without a client certificate");
    let log = bare.log();
    let why = log.lines().find(|l| l.contains("fleet: etcd unreachable"));
    println!("no client certificate: {}", why.unwrap_or("no warning"));
    assert!(why.is_some(), "{log}");
    let etcd_log =
        std::fs::read_to_string(etcd.members[0].dir.with_extension("log")).unwrap_or_default();
    let refused = etcd_log
        .lines()
        .filter(|l| l.contains("rejected connection") && l.contains("certificate"))
        .count();
    println!(
        "no client certificate: etcd refused {refused} handshakes; Envoy's ssl.connection_error {:?}",
        bare.stat("cluster.etcd.ssl.connection_error")
    );
    assert!(refused > 0, "etcd did not refuse a handshake:\n{etcd_log}");
    let served = (0..8)
        .filter(|_| {
            let ok = chat(bare).status == 200;
            sleep(GAP);
            ok
        })
        .count();
    let sent = to_primary(&[bare]);
    let (local, fleet) = states(bare);
    println!(
        "no client certificate: fleet_errors {}, connected 0; local breaker {local} after {sent} \
         failures, {served} of 8 requests served",
        errors(bare)
    );
    assert_eq!(sent, 3, "the local breaker should trip alone after 3");
    assert_eq!(local, "open");
    assert_eq!(
        fleet, None,
        "a fleet record read without a client certificate"
    );
    assert!(served >= 5, "{served} of 8 served");
    assert!(bare.log().contains("reason=consecutive_failures"));
    assert!(!connected(bare));
    assert_eq!(bare.status()["fleet"]["connected"], false);
}

#[test]
fn fleet_over_tls_with_client_certificates() {
    let certs = TempDir::new("llm-breaker-certs");
    make_certs(&certs.0);
    let etcd = Etcd::start_tls(&certs.0);
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let fleet_envoy = |name: &str, client_cert: bool| {
        start_envoy_with(
            Some(etcd.tls_cluster(&certs.0, client_cert)),
            &config(Some(name), OPEN_MS),
            a.addr(),
            b.addr(),
        )
    };
    let envoys = [fleet_envoy("envoy-1", true), fleet_envoy("envoy-2", true)];
    for e in &envoys {
        // Also waits for etcd itself (its /health needs a client certificate).
        wait_until("fleet connected over TLS", 90, || connected(e));
    }

    // A trip on envoy-1 reaches envoy-2 through etcd over mutual TLS.
    a.set(Behaviour::Status(503));
    wait_until("envoy-1 open", 60, || {
        let _ = chat(&envoys[0]);
        sleep(GAP);
        states(&envoys[0]).0 == "open"
    });
    let failures = to_primary(&[&envoys[0]]);
    let took = wait_until("envoy-2 open from the fleet record", 60, || {
        states(&envoys[1]) == ("open".to_string(), Some("open".to_string()))
    });
    for _ in 0..5 {
        assert_eq!(chat(&envoys[1]).status, 200);
    }
    let second = to_primary(&[&envoys[1]]);
    println!(
        "TLS fleet: envoy-1 opened after {failures} failures; envoy-2 open (fleet) {took:?} later, \
         then 5 requests: {second} to the primary"
    );
    assert!(failures <= 3, "envoy-1: {failures} failures");
    assert_eq!(second, 0, "envoy-2 sent requests to the primary");

    // An Envoy whose cluster has no client certificate: etcd refuses the handshake,
    // the fleet stays disconnected, and the local breakers serve.
    let bare = fleet_envoy("envoy-3", false);
    without_client_certificate(&bare, &etcd);

    // No certificate or key material in status or Envoy's log, on any Envoy.
    for e in envoys.iter().chain([&bare]) {
        let s = client::request(e.listener, "GET", "/_llm_breaker/status", &[], b"")
            .unwrap()
            .text();
        assert_no_secrets("status", &s, &certs.0);
        assert_no_secrets("Envoy's log", &e.log(), &certs.0);
        assert!(!e.log().contains("panic"), "{}", e.log());
    }
}
