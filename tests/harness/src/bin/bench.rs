//! `make bench`: throughput and latency of Envoy with no filter, with a no-op wasm
//! filter, and with llm-breaker on its closed path and on its failed-over path, in
//! one run, interleaved over several rounds; prints medians and ratios.
//!
//! BENCH_PAYLOAD=llm sends a 4 KB chat request and answers with a 2 KB completion,
//! closer to real LLM traffic than the default 60-byte request and 80-byte answer.
//!
//! Knobs (environment): BENCH_SECONDS (per slice, default 3), BENCH_ROUNDS
//! (default 8), BENCH_CONNECTIONS (default 16), BENCH_CONCURRENCY (Envoy workers,
//! default 1).

use llm_breaker_harness::envoy::{
    filter_wasm, free_port, loopback_providers, workspace_root, Envoy, Filter, Options, Within,
};
use llm_breaker_harness::load;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::net::SocketAddr;
use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const PATH: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const WITHIN: &str = "within_request, closed path";
const WITHIN_SHAPED: &str = "within_request, shaped";
const FLEET: &str = "closed path, fleet on (etcd)";
const NEXT_AGG: &str = "next_request over aggregates";

/// Envoy's side of `within_request` under the `next_request` filter: the generator's
/// clusters with the two-member aggregate renamed `openai` (and the one-member one
/// `azure`), the providers `p-…`, so the `next_request` filter's cluster name reaches
/// the aggregate, its retry policy, its `header_mutation` and the upstream log.
fn next_over_aggregates(w: &Within) -> Within {
    let mut out = w.clone();
    out.clusters = w
        .clusters
        .iter()
        .filter_map(|c| {
            let mut v: serde_json::Value = serde_json::from_str(c).ok()?;
            let name = v["name"].as_str()?.to_string();
            match name.strip_prefix("llmb|") {
                Some(members @ ("openai|azure" | "azure")) => {
                    v["name"] = members.split('|').next()?.into();
                    let subs = &mut v["cluster_type"]["typed_config"]["clusters"];
                    let renamed: Vec<serde_json::Value> = subs
                        .as_array()?
                        .iter()
                        .filter_map(|s| Some(format!("p-{}", s.as_str()?).into()))
                        .collect();
                    *subs = renamed.into();
                }
                Some(_) => return None,
                None => {
                    v["name"] = format!("p-{name}").into();
                    v["load_assignment"]["cluster_name"] = format!("p-{name}").into();
                }
            }
            Some(v.to_string())
        })
        .collect();
    out
}

/// A one-member etcd on loopback for the `fleet` variant (`etcd` on PATH, or
/// `ETCD_BIN`), killed when dropped; `None` (the variant is left out) without one.
struct Etcd(std::process::Child, std::path::PathBuf, u16);

impl Etcd {
    fn start() -> Option<Etcd> {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let (client, peer) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("llm-breaker-bench-etcd-{client}"));
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let child = std::process::Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &url(client)])
            .args(["--advertise-client-urls", &url(client)])
            .args(["--listen-peer-urls", &url(peer)])
            .args(["--initial-advertise-peer-urls", &url(peer)])
            .args(["--initial-cluster", &format!("bench={}", url(peer))])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let e = Etcd(child, dir, client);
        let addr: SocketAddr = ([127, 0, 0, 1], client).into();
        for _ in 0..100 {
            if llm_breaker_harness::client::get(addr, "/health").is_ok_and(|r| r.status == 200) {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The Envoy cluster reaching it (flow YAML).
    fn cluster(&self) -> String {
        format!(
            "{{name: etcd, type: STATIC, connect_timeout: 0.25s, load_assignment: {{cluster_name: etcd, \
             endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}}}",
            self.2
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}
const CLOSED: usize = 3;

/// Counting Envoy's instructions with callgrind (BENCH_IR=1).
struct Callgrind {
    dir: std::path::PathBuf,
}

impl Callgrind {
    /// Points the harness's Envoy at a wrapper that runs the real binary (not the
    /// venv's Python launcher) under callgrind, and gives it time to start.
    fn setup() -> Callgrind {
        let lib = workspace_root().join(".venv/lib");
        let real = std::env::var("ENVOY_REAL_BIN")
            .map(Into::into)
            .unwrap_or_else(|_| {
                std::fs::read_dir(&lib)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| {
                        panic!(
                            "no Envoy binary under {} (make envoy), or set ENVOY_REAL_BIN",
                            lib.display()
                        )
                    })
            });
        let dir = std::env::temp_dir().join(format!("llm-breaker-bench-ir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let wrapper = dir.join("envoy");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={}/cg.%p {} \"$@\"\n",
                dir.display(),
                std::path::Path::new(&real).display()
            ),
        )
        .expect("write wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::env::set_var("ENVOY_BIN", &wrapper);
        std::env::set_var("ENVOY_START_S", "300");
        Callgrind { dir }
    }

    fn control(&self, args: &[&str], pid: u32) {
        let ok = std::process::Command::new("callgrind_control")
            .args(args)
            .arg(pid.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "callgrind_control {args:?} {pid} failed (is valgrind installed?)"
        );
    }

    /// Zeroes Envoy's counters.
    fn zero(&self, pid: u32) {
        self.control(&["-z"], pid);
    }

    /// Instructions since the last zero (a dump's `totals:` line).
    fn dump(&self, pid: u32) -> u64 {
        self.control(&["-d"], pid);
        let prefix = format!("cg.{pid}.");
        let newest = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|d| {
                d.file_name().to_string_lossy()[prefix.len()..]
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .expect("a callgrind dump");
        let text = std::fs::read_to_string(newest.path()).unwrap_or_default();
        let total = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a totals line");
        // BENCH_IR_KEEP=dir keeps each dump for callgrind_annotate (where the instructions go).
        match std::env::var("BENCH_IR_KEEP") {
            Ok(keep) => {
                let _ = std::fs::create_dir_all(&keep);
                let _ = std::fs::rename(
                    newest.path(),
                    std::path::Path::new(&keep).join(newest.file_name()),
                );
            }
            Err(_) => {
                let _ = std::fs::remove_file(newest.path());
            }
        }
        total
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The generator's clusters (provider clusters with metadata, aggregates with the
/// upstream role `upstream_wasm`) for `config` and these providers.
fn within_clusters(
    config: &str,
    providers: &[(String, SocketAddr)],
    upstream_wasm: &std::path::Path,
) -> Within {
    let named: Vec<(&str, SocketAddr)> = providers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let wasm = format!("{{filename: {}}}", upstream_wasm.display());
    Within::from_provider_file(
        config,
        &loopback_providers(&named, &wasm),
        Duration::from_secs(5),
    )
}

fn main() {
    let secs = env("BENCH_SECONDS", 3);
    let rounds = env("BENCH_ROUNDS", 8) as usize;
    let conns = env("BENCH_CONNECTIONS", 16) as usize;
    let workers = env("BENCH_CONCURRENCY", 1) as u32;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let callgrind = (env("BENCH_IR", 0) == 1).then(Callgrind::setup);
    // (Counted instructions don't depend on the CPU: under valgrind, Envoys spread.)
    let pin = cores >= 2 && workers == 1 && env("BENCH_PIN", 1) == 1 && callgrind.is_none();
    if pin {
        let _ = std::process::Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &format!("1-{}", cores - 1),
                &std::process::id().to_string(),
            ])
            .output();
    }
    let openai = MockUpstream::start("openai");
    let azure = MockUpstream::start("azure");
    let llm_payload = std::env::var("BENCH_PAYLOAD").is_ok_and(|v| v == "llm");
    let body = if llm_payload {
        openai.set(Behaviour::OkSized(2048));
        azure.set(Behaviour::OkSized(2048));
        format!(
            r#"{{"model":"gpt-4o","messages":[{{"role":"system","content":"{}"}},{{"role":"user","content":"hi"}}]}}"#,
            "s".repeat(4000)
        )
    } else {
        BODY.to_string()
    };
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let noop = workspace_root().join("target/wasm32-wasip1/release/llm_breaker_noop.wasm");
    assert!(
        noop.exists(),
        "build the no-op filter first (make bench does)"
    );
    let route_only =
        workspace_root().join("target/wasm32-wasip1/release/llm_breaker_route_only.wasm");
    assert!(
        route_only.exists(),
        "build the route-only filter first (make bench does)"
    );
    let clusters = vec![
        ("openai".to_string(), openai.addr()),
        ("azure".to_string(), azure.addr()),
        ("down".to_string(), dead),
    ];
    let breaker = |chain: &str| Filter::Breaker {
        wasm: None,
        config: format!(
            r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":[{chain}]}}],
                "breaker":{{"consecutive_failures":1,"open":{{"base_ms":86400000,"max_ms":86400000}}}}}}"#
        ),
    };
    let breaker_fleet = |chain: &str| match breaker(chain) {
        Filter::Breaker { config, wasm } => Filter::Breaker {
            config: config.replacen(
                '{',
                r#"{"fleet":{"etcd_cluster":"etcd","sync_ms":1000},"#,
                1,
            ),
            wasm,
        },
        other => other,
    };
    // Another module in the closed path's place (same Envoy config and plugin config).
    let build_of = |path: std::path::PathBuf, chain: &str| match breaker(chain) {
        Filter::Breaker { config, .. } => Filter::Breaker {
            wasm: Some(path),
            config,
        },
        other => other,
    };
    let closed_path_of = |path: std::path::PathBuf| build_of(path, r#""openai","azure""#);
    let within_config = r#"{"failover":"within_request","routes":[{"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai","azure"]}],
        "breaker":{"consecutive_failures":1,"open":{"base_ms":86400000,"max_ms":86400000}}}"#;
    let within = within_clusters(within_config, &clusters[..2], &filter_wasm());
    // The same with openai's requests shaped (an extra header): its aggregates run the
    // upstream role on every attempt.
    let within_shaped = {
        let named: Vec<(&str, SocketAddr)> = clusters[..2]
            .iter()
            .map(|(n, a)| (n.as_str(), *a))
            .collect();
        let wasm = format!("{{filename: {}}}", filter_wasm().display());
        let file = loopback_providers(&named, &wasm).replacen(
            "connect_timeout_ms: 500}",
            "connect_timeout_ms: 500, headers: {x-shaped: '1'}}",
            1,
        );
        Within::from_provider_file(within_config, &file, Duration::from_secs(5))
    };
    let variants: Vec<(&str, Filter)> = vec![
        (
            "no filter",
            Filter::None {
                cluster: "openai".into(),
            },
        ),
        (
            "no-op wasm filter",
            Filter::Noop {
                wasm: noop,
                cluster: "openai".into(),
            },
        ),
        ("route-only floor filter", closed_path_of(route_only)),
        ("llm-breaker, closed path", breaker(r#""openai","azure""#)),
        // The primary's cluster refuses connections: the first request trips it,
        // every later one skips it and goes to the fallback.
        ("llm-breaker, failed over", breaker(r#""down","azure""#)),
        // The downstream filter picks the aggregate and records the answer; the
        // upstream log would record a failed attempt (generator's clusters and router
        // upstream log, as in envoy/envoy.yaml).
        (
            WITHIN,
            Filter::Breaker {
                config: within_config.to_string(),
                wasm: None,
            },
        ),
        // Plus the upstream role, shaping every attempt to openai.
        (
            WITHIN_SHAPED,
            Filter::Breaker {
                config: within_config.to_string(),
                wasm: None,
            },
        ),
        // Envoy's side of within_request alone, under the next_request filter.
        (NEXT_AGG, breaker(r#""openai","azure""#)),
        // The closed path with fleet-wide breakers on: etcd is on the timer only.
        (FLEET, breaker_fleet(r#""openai","azure""#)),
    ];
    // BENCH_EXTRA_WASM=label=path,... adds the closed path of other builds of the
    // filter, for experiments; BENCH_EXTRA_FAILOVER=1 their failed-over path too.
    let failover_too = env("BENCH_EXTRA_FAILOVER", 0) == 1;
    let extra: Vec<(String, Filter)> = std::env::var("BENCH_EXTRA_WASM")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .flat_map(|(label, path)| {
            let closed = (format!("closed path, {label}"), closed_path_of(path.into()));
            let failed = (
                format!("failed over, {label}"),
                build_of(path.into(), r#""down","azure""#),
            );
            std::iter::once(closed).chain(failover_too.then_some(failed))
        })
        .collect();
    // BENCH_EXTRA_WITHIN=label=path,... adds the within_request closed path with
    // another build in both roles.
    let extra_within: Vec<(String, Filter, Within)> = std::env::var("BENCH_EXTRA_WITHIN")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(label, path)| {
            let filter = Filter::Breaker {
                config: within_config.to_string(),
                wasm: Some(path.into()),
            };
            let w = within_clusters(within_config, &clusters[..2], std::path::Path::new(path));
            (format!("within, {label}"), filter, w)
        })
        .collect();
    // BENCH_EXTRA_EDIT=label=n:command,... adds variant n (an index into the table)
    // again, with its Envoy bootstrap filtered through `command` (stdin to stdout,
    // e.g. a sed script): what one piece of Envoy config costs.
    let extra_edit: Vec<(String, usize, String)> = std::env::var("BENCH_EXTRA_EDIT")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(label, rest)| {
            let (n, cmd) = rest.split_once(':')?;
            Some((
                format!("{label} (edit of {n})"),
                n.trim().parse().ok()?,
                cmd.to_string(),
            ))
        })
        .collect();
    let base = variants.len();
    let edit_of = |i: usize| {
        let k = i.checked_sub(base + extra.len() + extra_within.len())?;
        extra_edit.get(k)
    };
    let variants: Vec<(&str, Filter)> = variants
        .into_iter()
        .chain(extra.iter().map(|(l, f)| (l.as_str(), f.clone())))
        .chain(extra_within.iter().map(|(l, f, _)| (l.as_str(), f.clone())))
        .collect();
    let edited: Vec<(&str, Filter)> = extra_edit
        .iter()
        .map(|(l, n, _)| (l.as_str(), variants[*n].1.clone()))
        .collect();
    let variants: Vec<(&str, Filter)> = variants.into_iter().chain(edited).collect();
    println!(
        "{} payload, Envoy --concurrency {workers}{}, {conns} keep-alive connections, {secs} s slices x {rounds} rounds, variants alternating, {cores} cores",
        if llm_payload { "LLM-sized (4 KB request, 2 KB response)" } else { "Tiny (60 B request, 80 B response)" },
        if pin { " pinned to CPU 0 (load generator and upstreams on the rest)" } else { "" }
    );
    // BENCH_ONLY=1,2 runs a subset (indices into the table), for quick experiments.
    let only: Option<Vec<usize>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let wants_fleet = (0..variants.len())
        .any(|i| variants[i].0 == FLEET && only.as_ref().is_none_or(|o| o.contains(&i)));
    let etcd = if wants_fleet { Etcd::start() } else { None };
    if wants_fleet && etcd.is_none() {
        println!("(no etcd on PATH or in ETCD_BIN: the fleet variant is left out; `make etcd` installs it)");
    }
    let chosen: Vec<usize> = (0..variants.len())
        .filter(|i| only.as_ref().is_none_or(|o| o.contains(i)))
        .filter(|&i| variants[i].0 != FLEET || etcd.is_some())
        .collect();
    // All Envoys start first and stay up; the rounds then alternate between them in
    // short slices, so a slow spell of the machine hits every variant alike, and
    // each round yields paired ratios.
    // BENCH_REPLICAS=n starts n Envoys per variant: one Envoy process can run a few
    // percent faster or slower than another with the same config for its whole life,
    // so ratios between single processes carry that bias; with replicas every pair of
    // them is compared.
    let replicas = env("BENCH_REPLICAS", 1).max(1) as usize;
    let envoys: Vec<(usize, Envoy)> = chosen
        .iter()
        .flat_map(|&i| std::iter::repeat_n(i, replicas))
        .map(|i| {
            // An edited variant runs its base variant's options.
            let (i, edit) = match edit_of(i) {
                Some((_, n, cmd)) => (*n, Some((i, cmd))),
                None => (i, None),
            };
            let opts = Options {
                filter: variants[i].1.clone(),
                clusters: clusters.clone(),
                route_timeout: Duration::from_secs(5),
                per_try_timeout: None,
                idle_timeout: None,
                max_stream_duration: None,
                retry_on: None,
                concurrency: workers,
                route_header: "x-llm-breaker-upstream".into(),
                before: None,
                env: Vec::new(),
                within: match variants[i].0 {
                    WITHIN => Some(within.clone()),
                    WITHIN_SHAPED => Some(within_shaped.clone()),
                    NEXT_AGG => Some(next_over_aggregates(&within)),
                    label => extra_within
                        .iter()
                        .find(|(l, _, _)| l == label)
                        .map(|(_, _, w)| w.clone()),
                },
                stop_iteration: true,
                extra_clusters: match (variants[i].0, &etcd) {
                    (FLEET, Some(e)) => vec![e.cluster()],
                    _ => Vec::new(),
                },
            };
            if let Some((_, cmd)) = edit {
                std::env::set_var("ENVOY_BOOTSTRAP_EDIT", cmd);
            }
            let e = Envoy::start(&opts);
            std::env::remove_var("ENVOY_BOOTSTRAP_EDIT");
            let i = edit.map_or(i, |(own, _)| own);
            if pin {
                // Envoy on CPU 0, the load generator and upstreams on the others.
                let _ = std::process::Command::new("taskset")
                    .args(["-a", "-p", "-c", "0", &e.pid().to_string()])
                    .output();
            }
            // Warm up (and, for the failed-over variant, trip the primary); under
            // valgrind long enough for V8 to finish compiling the module.
            let warm = if callgrind.is_some() { 10 } else { 2 };
            load::run(e.listener, PATH, &body, conns, Duration::from_secs(warm));
            (i, e)
        })
        .collect();
    let mut results: Vec<Vec<load::LoadResult>> = vec![Vec::new(); variants.len()];
    let mut irs: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (i, e) in &envoys {
            let cpu0 = e.cpu_time();
            if let Some(c) = &callgrind {
                c.zero(e.pid());
            }
            let mut r = load::run(e.listener, PATH, &body, conns, Duration::from_secs(secs));
            r.envoy_cpu = e.cpu_time().saturating_sub(cpu0);
            if let Some(c) = &callgrind {
                let ir = c.dump(e.pid()) as f64 / r.responses.max(1) as f64;
                eprintln!(
                    "round {}: {:<26} {:>9.0} instructions/req",
                    round + 1,
                    variants[*i].0,
                    ir
                );
                irs[*i].push(ir);
            }
            eprintln!(
                "round {}: {:<26} {:>9.0} req/s  Envoy CPU {:>5.1} us/req  p50 {:>6.0} us  p99 {:>6.0} us  non-200 {} errors {}",
                round + 1,
                variants[*i].0,
                r.rps(),
                r.cpu_per_request_us(),
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.non_200,
                r.errors
            );
            results[*i].push(r);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // Median over rounds of this variant's value divided by the reference's in the
    // same round.
    // Each round holds `replicas` slices per variant: every replica of one against
    // every replica of the other, in the same round.
    let paired = |i: usize, reference: usize, f: &dyn Fn(&load::LoadResult) -> f64| {
        let (a, b) = (&results[i], &results[reference]);
        let mut ratios = Vec::new();
        for (ra, rb) in a.chunks(replicas).zip(b.chunks(replicas)) {
            for x in ra {
                for y in rb {
                    ratios.push(f(x) / f(y));
                }
            }
        }
        median(ratios)
    };
    let rps = |r: &load::LoadResult| r.rps();
    let cpu = |r: &load::LoadResult| r.cpu_per_request_us();
    println!();
    println!("| variant | req/s | Envoy CPU µs/req | p50 µs | p99 µs | throughput vs no filter | throughput vs no-op wasm | CPU/req vs no-op wasm | throughput vs route-only floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &i in &chosen {
        let rs = &results[i];
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            variants[i].0,
            median(rs.iter().map(rps).collect()),
            median(rs.iter().map(cpu).collect()),
            median(rs.iter().map(|r| r.p50.as_secs_f64() * 1e6).collect()),
            median(rs.iter().map(|r| r.p99.as_secs_f64() * 1e6).collect()),
            paired(i, 0, &rps),
            paired(i, 1, &rps),
            paired(i, 1, &cpu),
            paired(i, 2, &rps),
        );
    }
    println!("(ratios: median over rounds of the ratio within each round)");
    if callgrind.is_some() {
        let pair = |i: usize, reference: usize| {
            median(
                irs[i]
                    .iter()
                    .zip(&irs[reference])
                    .map(|(a, b)| a / b)
                    .collect(),
            )
        };
        println!();
        println!("Envoy instructions per request (callgrind), median over rounds:");
        println!("| variant | instructions/req | vs no filter | vs no-op wasm | vs route-only floor | vs closed path |");
        println!("|---|---:|---:|---:|---:|---:|");
        for &i in &chosen {
            let at = |v: usize| {
                if irs[v].is_empty() {
                    f64::NAN
                } else {
                    pair(i, v)
                }
            };
            println!(
                "| {} | {:.0} | {:.3}x | {:.3}x | {:.3}x | {:.3}x |",
                variants[i].0,
                median(irs[i].clone()),
                at(0),
                at(1),
                at(2),
                at(CLOSED),
            );
        }
    }
    for label in [WITHIN, WITHIN_SHAPED, NEXT_AGG, FLEET] {
        let at = (0..variants.len()).find(|&i| variants[i].0 == label);
        if let Some(w) = at.filter(|w| chosen.contains(w) && chosen.contains(&CLOSED)) {
            println!(
                "{label} vs next_request closed path (same rounds): Envoy CPU/req {:.2}x, throughput {:.2}x",
                paired(w, CLOSED, &cpu),
                paired(w, CLOSED, &rps)
            );
        }
    }
}
