//! Soak test: steady load through the real Envoy (2 workers) and the filter while
//! three mock providers flap, at random (seeded), through every failure mode the
//! mock has; then the providers heal. Run by `make soak` (`SOAK_SECONDS`, default
//! 600) and `make soak-short` (120 s); ignored by plain `cargo test`.
//!
//! It prints a table and fails unless:
//! - every request got an answer (a status line within the client's bounded
//!   timeout; a body cut after the status line is an answer: the provider cut it);
//! - Envoy's log shows no wasm VM failure or panic;
//! - Envoy's RSS (VmRSS) in the last minute is within 10 % of the second minute
//!   (runs under 3 minutes: the last third against the second third);
//! - the shared-data key set stays bounded: the proxy-wasm ABI cannot list keys,
//!   so this reads what the filter writes them for: every breaker key is one entry
//!   of the status endpoint (`/_llm_breaker/status`, one per configured cell), the
//!   history ring (one key) holds at most its capacity, and no random model name
//!   the clients send shows up in a breaker or a metric series;
//! - `update_errors` is 0 for every upstream;
//! - after the providers heal, every breaker is closed within the longest open
//!   period (+ the route timeout and slack).
//!
//! Knobs: `SOAK_SECONDS`, `SOAK_SEED`, `SOAK_CLIENTS`.

// Native only: proptest, signals and processes have no wasm32 counterpart (`make lint`
// builds the test targets for wasm32-unknown-unknown too).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::envoy::{Envoy, Options};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream, ResetForm};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const UPSTREAMS: [&str; 3] = ["openai", "azure-openai", "vllm"];
/// Longest open period the config allows: `open.max_ms` plus its jitter, and the
/// rate-limit cap.
const LONGEST_OPEN: Duration = Duration::from_millis(4_400);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a status line: the route timeout and then some.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
const HISTORY: usize = 50;
/// Breaker cells: openai per model (`gpt-4o` and `*`), the others per upstream.
const CELLS: usize = 4;

/// Every upstream is the primary of one route, so each gets traffic once healed
/// and every breaker can close; openai keeps a breaker per model, and random model
/// names must share its `*` breaker.
const CONFIG: &str = r#"{
  "models": ["gpt-4o"],
  "admin": {"enabled": true, "history": 50},
  "routes": [
    {"name": "llama", "match": {"path_prefix": "/v1/", "models": ["llama-*"]},
     "upstreams": ["vllm", "openai", "azure-openai"]},
    {"name": "messages", "match": {"path_prefix": "/v1/messages"},
     "upstreams": ["azure-openai", "vllm", "openai"]},
    {"name": "chat", "match": {"path_prefix": "/v1/"},
     "upstreams": ["openai", "azure-openai", "vllm"]}
  ],
  "breaker": {
    "consecutive_failures": 5,
    "failure_rate": {"threshold": 0.5, "minimum_calls": 20, "window": {"seconds": 10}},
    "slow_call": {"ttfb_ms": 1500, "rate_threshold": 0.8},
    "open": {"base_ms": 1000, "max_ms": 4000, "multiplier": 2.0, "jitter": 0.1},
    "half_open": {"permitted_calls": 3, "success_threshold": 2, "permit_timeout_ms": 5000},
    "rate_limit": {"trip_on_reset_hint": true, "max_open_ms": 3000}
  },
  "upstreams": {"openai": {"breaker": {"scope": "upstream_and_model"}}}
}"#;

/// xorshift64*: the soak's only randomness, from `SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Modes [`behaviour`] knows: 15 names, ok dealt four times a round.
const MODES: u64 = 18;

/// The flaps, in seeded rounds: each round deals every mode once in a shuffled
/// order, so even a short run goes through all of them.
struct Deck(Vec<u64>);

impl Deck {
    fn draw(&mut self, rng: &mut Rng) -> u64 {
        if self.0.is_empty() {
            self.0 = (0..MODES).collect();
            for i in (1..self.0.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.0.swap(i, j);
            }
        }
        self.0.pop().unwrap_or(0)
    }
}

/// Failure mode number `mode`, with random parameters, named for the table.
fn behaviour(mode: u64, rng: &mut Rng) -> (&'static str, Behaviour) {
    let chunks = 1 + rng.below(3) as usize;
    let forms = ResetForm::ALL;
    match mode {
        0..=3 => ("ok", Behaviour::Ok),
        4 => (
            "status 5xx",
            Behaviour::Status([500, 502, 503][rng.below(3) as usize]),
        ),
        5 => ("status 529", Behaviour::Status(529)),
        6 => (
            "429 + hint",
            Behaviour::RateLimited {
                status: 429,
                reset: forms[rng.below(forms.len() as u64) as usize],
                after: Duration::from_millis(500 + rng.below(2500)),
            },
        ),
        7 => ("close", Behaviour::Close),
        8 => ("hang", Behaviour::Hang),
        9 => (
            "delay",
            Behaviour::Delay(Duration::from_millis(100 + rng.below(1700))),
        ),
        10 => ("cut body", Behaviour::CutMidBody),
        11 => ("json error", Behaviour::JsonError(529)),
        12 => ("sse error", Behaviour::SseError { chunks }),
        13 => ("sse cut", Behaviour::SseCut { chunks }),
        14 => ("sse no terminal", Behaviour::SseNoTerminal { chunks }),
        15 => ("sse stall", Behaviour::SseStall { chunks }),
        16 => (
            "per-model 503",
            Behaviour::ByModel(
                vec![("gpt-4o".into(), Behaviour::Status(503))],
                Box::new(Behaviour::Ok),
            ),
        ),
        _ => (
            "mixed sequence",
            Behaviour::Sequence(vec![
                Behaviour::Ok,
                Behaviour::Status(503),
                Behaviour::SseCut { chunks: 1 },
                Behaviour::Ok,
                Behaviour::Close,
                Behaviour::FailEvery {
                    n: 2,
                    behaviour: Box::new(Behaviour::Status(502)),
                },
            ]),
        ),
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A status line; whether the body then ended cleanly.
    Status(u16, bool),
    /// No status line within [`CLIENT_TIMEOUT`], or the connection failed.
    None,
}

/// One request on its own connection (`connection: close`), bounded in time.
fn request(addr: SocketAddr, path: &str, body: &str) -> (Answer, Duration) {
    let t0 = Instant::now();
    let deadline = t0 + CLIENT_TIMEOUT;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (Answer::None, t0.elapsed());
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (Answer::None, t0.elapsed());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut status = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => {
                let clean = status.is_some() && body_complete(&buf);
                return (
                    status.map_or(Answer::None, |c| Answer::Status(c, clean)),
                    t0.elapsed(),
                );
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if status.is_none() {
                    status = parse_status(&buf);
                }
            }
            Err(_) => break,
        }
    }
    (
        status.map_or(Answer::None, |c| Answer::Status(c, false)),
        t0.elapsed(),
    )
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// Whether a `connection: close` response ended where its framing says.
fn body_complete(buf: &[u8]) -> bool {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    if head.contains("transfer-encoding: chunked") {
        body.ends_with(b"0\r\n\r\n")
    } else if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.len() == len
    } else {
        true
    }
}

#[derive(Default)]
struct Tally {
    sent: u64,
    by_class: [u64; 6], // 2xx, 429, other 4xx, 503, other 5xx, unanswered
    cut: u64,
    latencies: Vec<Duration>,
    slowest_unanswered: Vec<String>,
}

impl Tally {
    fn add(&mut self, what: &str, answer: Answer, took: Duration) {
        self.sent += 1;
        self.latencies.push(took);
        let class = match answer {
            Answer::Status(200..=299, clean) => {
                self.cut += u64::from(!clean);
                0
            }
            Answer::Status(429, _) => 1,
            Answer::Status(400..=499, _) => 2,
            Answer::Status(503, _) => 3,
            Answer::Status(_, _) => 4,
            Answer::None => {
                if self.slowest_unanswered.len() < 5 {
                    self.slowest_unanswered
                        .push(format!("{what} after {took:?}"));
                }
                5
            }
        };
        self.by_class[class] += 1;
    }
}

/// What the clients send: each route, JSON and streams, known and random models.
fn pick_request(rng: &mut Rng) -> (&'static str, String) {
    let stream = rng.below(2) == 0;
    let model = match rng.below(6) {
        0 | 1 => "gpt-4o".to_string(),
        2 => "llama-3.1-70b".to_string(),
        3 => "claude-sonnet-4-5".to_string(),
        // Random names: they must all share openai's `*` breaker.
        _ => format!("rnd-{:x}", rng.next() % 1_000_000),
    };
    let path = if model.starts_with("claude") {
        "/v1/messages"
    } else {
        "/v1/chat/completions"
    };
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"max_tokens":16,"messages":[{{"role":"user","content":"soak"}}]}}"#
    );
    (path, body)
}

fn status_doc(envoy: &Envoy) -> Option<serde_json::Value> {
    let r = llm_breaker_harness::client::get(envoy.listener, "/_llm_breaker/status").ok()?;
    (r.status == 200)
        .then(|| serde_json::from_str(&r.text()).ok())
        .flatten()
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

#[test]
#[ignore = "minutes long: run by `make soak` / `make soak-short`"]
fn soak_under_flapping_providers() {
    let total = Duration::from_secs(env_u64("SOAK_SECONDS", 600).max(45));
    let seed = env_u64("SOAK_SEED", 0x5eed_1234);
    let clients = env_u64("SOAK_CLIENTS", 6) as usize;
    // The last stretch is healed: long enough for the longest open period, the
    // route timeout of requests in flight, and slack.
    let heal_budget = LONGEST_OPEN + ROUTE_TIMEOUT + Duration::from_secs(6);
    let heal_at = total - heal_budget - Duration::from_secs(5);
    println!("soak: {total:?}, seed {seed:#x}, {clients} clients, providers heal at {heal_at:?}");

    let ups: Vec<MockUpstream> = UPSTREAMS.iter().map(|n| MockUpstream::start(n)).collect();
    let refs: Vec<&MockUpstream> = ups.iter().collect();
    let mut opts = Options::breaker_for(CONFIG, &refs);
    opts.route_timeout = ROUTE_TIMEOUT;
    opts.concurrency = 2;
    let envoy = Envoy::start(&opts);
    let pid = envoy.pid();
    let addr = envoy.listener;

    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..clients).map(|_| Arc::default()).collect();
    let start = Instant::now();
    let workers: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, tally)| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)));
                while !stop.load(Ordering::Relaxed) {
                    let (path, body) = pick_request(&mut rng);
                    let (answer, took) = request(addr, path, &body);
                    tally.lock().unwrap().add(path, answer, took);
                    std::thread::sleep(Duration::from_millis(10 + rng.below(20)));
                }
            })
        })
        .collect();

    // The chaos loop on this thread; samples once a second.
    let mut rng = Rng(seed);
    let mut flaps: Vec<(&str, u64)> = Vec::new();
    let mut next_flap = Duration::ZERO;
    let mut deck = Deck(Vec::new());
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let mut cells_seen = std::collections::BTreeSet::new();
    let mut max_history = 0;
    let mut status_misses = 0;
    let mut healed_at: Option<Instant> = None;
    let mut all_closed_after: Option<Duration> = None;
    let mut next_sample = Duration::ZERO;
    while start.elapsed() < total {
        let now = start.elapsed();
        if now >= heal_at && healed_at.is_none() {
            for u in &ups {
                u.set(Behaviour::Ok);
            }
            healed_at = Some(Instant::now());
        }
        if healed_at.is_none() && now >= next_flap {
            let mode = deck.draw(&mut rng);
            let (name, b) = behaviour(mode, &mut rng);
            let u = &ups[rng.below(ups.len() as u64) as usize];
            u.set(b);
            match flaps.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => flaps.push((name, 1)),
            }
            next_flap = now + Duration::from_millis(500 + rng.below(2500));
        }
        if now >= next_sample {
            next_sample = now + Duration::from_secs(1);
            if let Some(kb) = vm_rss_kb(pid) {
                rss.push((now, kb));
            }
            match status_doc(&envoy) {
                Some(doc) => {
                    let ups = doc["upstreams"].as_array().cloned().unwrap_or_default();
                    for u in &ups {
                        cells_seen.insert(format!("{}/{}", u["upstream"], u["model"]));
                    }
                    max_history =
                        max_history.max(doc["transitions"].as_array().map_or(0, Vec::len));
                    if let (Some(h), None) = (healed_at, all_closed_after) {
                        if ups.len() == CELLS && ups.iter().all(|u| u["state"] == "closed") {
                            all_closed_after = Some(h.elapsed());
                        }
                    }
                }
                None => status_misses += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let final_doc = status_doc(&envoy);
    let prom = envoy.prometheus();
    let log = envoy.log();

    // ---- the table -------------------------------------------------------------
    let mut t = Tally::default();
    for tally in &tallies {
        let x = tally.lock().unwrap();
        t.sent += x.sent;
        for i in 0..6 {
            t.by_class[i] += x.by_class[i];
        }
        t.cut += x.cut;
        t.latencies.extend_from_slice(&x.latencies);
        t.slowest_unanswered
            .extend(x.slowest_unanswered.iter().cloned());
    }
    t.latencies.sort_unstable();
    let pct = |p: f64| {
        t.latencies
            .get(((t.latencies.len() as f64 * p) as usize).min(t.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };

    let secs = total.as_secs();
    let (second, last, windows) = if secs >= 180 {
        ((60, 120), (secs - 60, secs), "2nd minute vs last minute")
    } else {
        (
            (secs / 3, 2 * secs / 3),
            (2 * secs / 3, secs),
            "run < 3 min: 2nd third vs last third",
        )
    };
    let in_window = |(a, b): (u64, u64)| -> Vec<u64> {
        rss.iter()
            .filter(|(at, _)| at.as_secs() >= a && at.as_secs() < b)
            .map(|(_, kb)| *kb)
            .collect()
    };
    let (rss_second, rss_last) = (mean(&in_window(second)), mean(&in_window(last)));
    let rss_change = (rss_last - rss_second) / rss_second.max(1.0);

    let update_errors: u64 = prom
        .lines()
        .filter(|l| l.starts_with("llm_breaker_upstream_update_errors"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    let series = prom
        .lines()
        .filter(|l| l.starts_with("llm_breaker"))
        .count();
    let random_in_series = prom
        .lines()
        .filter(|l| l.starts_with("llm_breaker") && l.contains("rnd-"))
        .count();
    let random_in_cells = cells_seen.iter().filter(|c| c.contains("rnd-")).count();
    let bad_log: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("panicked")
                || l.contains("panic")
                || l.contains("[critical]")
                || l.contains("wasm_fail")
                || l.contains("vm failed")
                || l.contains("failed to start")
                || (l.contains("wasm") && l.contains("[error]") && !l.contains("llm-breaker:"))
        })
        .take(5)
        .collect();
    let final_states: Vec<String> = final_doc
        .as_ref()
        .and_then(|d| d["upstreams"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|u| {
            format!(
                "{}/{}={}",
                u["upstream"].as_str().unwrap_or("?"),
                u["model"].as_str().unwrap_or("-"),
                u["state"].as_str().unwrap_or("?")
            )
        })
        .collect();

    println!("\n| soak ({secs} s, seed {seed:#x}, {clients} clients, 2 workers) | value |");
    println!("|---|---:|");
    println!("| requests sent | {} |", t.sent);
    println!(
        "| 2xx (of which body cut by the provider) | {} ({}) |",
        t.by_class[0], t.cut
    );
    println!(
        "| 429 passed through / other 4xx | {} / {} |",
        t.by_class[1], t.by_class[2]
    );
    println!(
        "| 503 / other 5xx | {} / {} |",
        t.by_class[3], t.by_class[4]
    );
    println!("| **unanswered** | {} |", t.by_class[5]);
    println!(
        "| latency p50 / p99 / max | {:?} / {:?} / {:?} |",
        pct(0.5),
        pct(0.99),
        t.latencies.last().copied().unwrap_or_default()
    );
    println!(
        "| provider flaps | {} ({}) |",
        flaps.iter().map(|f| f.1).sum::<u64>(),
        flaps
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| Envoy RSS {windows} | {:.1} MiB → {:.1} MiB ({:+.1} %) |",
        rss_second / 1024.0,
        rss_last / 1024.0,
        rss_change * 100.0
    );
    println!(
        "| breakers in status (expected {CELLS}) / history max (cap {HISTORY}) | {} / {} |",
        cells_seen.len(),
        max_history
    );
    println!("| random model names in breakers / metric series | {random_in_cells} / {random_in_series} (llm_breaker series: {series}) |");
    println!("| update_errors (all upstreams) | {update_errors} |");
    println!(
        "| wasm failures / panics in Envoy's log | {} |",
        bad_log.len()
    );
    println!(
        "| all breakers closed after healing | {} |",
        all_closed_after.map_or("never".into(), |d| format!("{d:?} (limit {heal_budget:?})"))
    );
    println!("| status endpoint misses | {status_misses} |");
    println!("| final states | {} |", final_states.join(" "));

    // ---- the verdict -------------------------------------------------------------
    let mut failures = Vec::new();
    if t.by_class[5] > 0 {
        failures.push(format!(
            "{} requests unanswered, e.g. {:?}",
            t.by_class[5], t.slowest_unanswered
        ));
    }
    // 15 names (ok included); a round of 18 flaps takes at most 18 × 3 s.
    if flaps.len() < 15 && heal_at >= Duration::from_secs(60) {
        failures.push(format!("not every failure mode was used: {flaps:?}"));
    }
    if t.sent < total.as_secs() * 10 {
        failures.push(format!(
            "only {} requests in {secs} s: the load did not run",
            t.sent
        ));
    }
    if !bad_log.is_empty() {
        failures.push(format!("Envoy's log: {bad_log:?}"));
    }
    if rss_change.abs() > 0.10 {
        failures.push(format!(
            "RSS moved {:+.1} % ({windows})",
            rss_change * 100.0
        ));
    }
    if cells_seen.len() != CELLS || max_history > HISTORY || random_in_cells + random_in_series > 0
    {
        failures.push(format!("key set not bounded: breakers {cells_seen:?}, history {max_history}, random names in series {random_in_series}"));
    }
    if update_errors > 0 {
        failures.push(format!("update_errors = {update_errors}"));
    }
    match all_closed_after {
        Some(d) if d <= heal_budget => {}
        other => failures.push(format!("breakers not all closed within {heal_budget:?} of healing: {other:?}; final {final_states:?}")),
    }
    if final_states.len() != CELLS || !final_states.iter().all(|s| s.ends_with("=closed")) {
        failures.push(format!("not all closed at the end: {final_states:?}"));
    }
    if status_misses > secs / 10 {
        failures.push(format!("status endpoint failed {status_misses} times"));
    }
    assert!(
        failures.is_empty(),
        "soak failed:\n- {}",
        failures.join("\n- ")
    );
}
