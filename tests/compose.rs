//! Fault injection across containers: the docker-compose harness
//! (`envoy/docker-compose.yaml`: Envoy with the built filter, three mock providers on
//! an internal network) driven from the host through the published ports only.
//!
//! While client threads keep sending chat requests, the primary provider (`openai`)
//! is stopped, paused and cut off its network in turn. Each time the breaker must
//! open, traffic must move to the fallback (`azure-openai`), and once the fault is
//! undone half-open probes must close the breaker and traffic must return. Every
//! request must get an answer within the first-byte timeout — a success from some
//! provider, the failure Envoy reports for the broken primary (503 connect failure,
//! 504 timeout) or the filter's documented all-open 503 — and Envoy's and the
//! filter's counters must account for every request sent.
//!
//! One compose project for the three scenarios, torn down at the end, also on a
//! failure. Needs a Docker engine and the images `make images` builds (`make
//! compose-test` does both); without an engine this fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client;
use llm_breaker_harness::docker::{require_engine, Compose, Fault};
use llm_breaker_harness::envoy::{completed_total, filter_wasm};
use llm_breaker_harness::{poll, wait_for};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

const PRIMARY: &str = "openai";
const FALLBACK: &str = "azure-openai";
const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// From `envoy/envoy-compose.yaml`: the bound on the time to the response headers
/// (`per_try_timeout`; the route itself has no total bound).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
const CONSECUTIVE_FAILURES: usize = 3;
const OPEN: Duration = Duration::from_secs(2);
const PERMITTED_PROBES: usize = 2;
/// Client threads sending requests, each pausing this long between requests.
const CLIENTS: usize = 4;
const GAP: Duration = Duration::from_millis(20);
/// Slack over the first-byte timeout for the answer to reach the client.
const ANSWER_SLACK: Duration = Duration::from_millis(1500);

/// Which part of which scenario a request was sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the fault: everything goes to the primary.
    Healthy,
    /// The fault is in place.
    Faulted,
    /// The fault was undone; until the breaker closes.
    Recovering,
}

/// What one request got.
#[derive(Debug, Clone)]
struct Record {
    scenario: usize,
    stage: Stage,
    elapsed: Duration,
    answer: Result<Answer, String>,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// The mock provider's `x-upstream`.
    served_by: Option<String>,
    /// The filter's `x-llm-breaker`.
    breaker: String,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// `upstream=` and `reason=` of the filter's header.
    fn decision(&self) -> (&str, &str) {
        let field = |k: &str| {
            self.breaker
                .split("; ")
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or("")
        };
        (field("upstream="), field("reason="))
    }

    fn success_from(&self, upstream: &str, reason: &str) -> bool {
        self.status == 200
            && self.served_by.as_deref() == Some(upstream)
            && self.decision() == (upstream, reason)
    }
}

/// How an answer is classified; anything else fails the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 200 from the provider the filter chose.
    Success,
    /// Envoy's 503 (connect failure) or 504 (timeout) for a request the filter sent to
    /// the broken primary (`reason=primary` before the trip, `reason=probe` after).
    PrimaryFailure,
    /// The filter's local 503: every breaker open.
    Rejected,
}

fn classify(a: &Answer) -> Result<Kind, String> {
    let (upstream, reason) = a.decision();
    match a.status {
        200 if a.served_by.as_deref() == Some(upstream) && !upstream.is_empty() => {
            Ok(Kind::Success)
        }
        503 | 504
            if upstream == PRIMARY
                && (reason == "primary" || reason == "probe")
                && a.served_by.is_none() =>
        {
            Ok(Kind::PrimaryFailure)
        }
        503 if upstream == "none"
            && a.retry_after.is_some()
            && a.body.trim_start().starts_with('{')
            && a.body.contains("\"error\"") =>
        {
            Ok(Kind::Rejected)
        }
        _ => Err(format!("unexpected answer: {a:?}")),
    }
}

/// Client threads sending requests through the published listener until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// scenario * 3 + stage index.
    stage: Arc<AtomicUsize>,
    records: Arc<Mutex<Vec<Record>>>,
    threads: Vec<JoinHandle<()>>,
}

const STAGES: [Stage; 3] = [Stage::Healthy, Stage::Faulted, Stage::Recovering];

impl Load {
    fn start(compose: &Compose) -> Load {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            stage: Arc::new(AtomicUsize::new(0)),
            records: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for _ in 0..CLIENTS {
            let (stop, stage, records) =
                (load.stop.clone(), load.stage.clone(), load.records.clone());
            let listener = compose.listener;
            load.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let s = stage.load(Ordering::SeqCst);
                    let t0 = Instant::now();
                    let answer = client::post(listener, CHAT, BODY)
                        .map(|r| Answer {
                            status: r.status,
                            served_by: r.upstream().map(str::to_string),
                            breaker: r.header("x-llm-breaker").unwrap_or("").to_string(),
                            retry_after: r.header("retry-after").map(str::to_string),
                            body: r.text(),
                        })
                        .map_err(|e| e.to_string());
                    // A request in flight when the stage changed within a scenario
                    // (sent while healthy, answered after the fault) belongs to the
                    // later stage; a new scenario's stages start with the primary
                    // healthy again, so they never claim an older request.
                    let now = stage.load(Ordering::SeqCst);
                    let s = if now / 3 == s / 3 { s.max(now) } else { s };
                    records.lock().unwrap().push(Record {
                        scenario: s / 3,
                        stage: STAGES[s % 3],
                        elapsed: t0.elapsed(),
                        answer,
                    });
                    sleep(GAP);
                }
            }));
        }
        load
    }

    fn set(&self, scenario: usize, stage: Stage) {
        let i = STAGES.iter().position(|s| *s == stage).unwrap();
        self.stage.store(scenario * 3 + i, Ordering::SeqCst);
    }

    /// Answers so far in `scenario`/`stage` that satisfy `f`.
    fn count(&self, scenario: usize, stage: Stage, f: impl Fn(&Answer) -> bool) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.scenario == scenario && r.stage == stage)
            .filter(|r| r.answer.as_ref().is_ok_and(&f))
            .count()
    }

    /// Stops the clients and returns every record: one per request sent.
    fn finish(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("client thread");
        }
        let records = std::mem::take(&mut *self.records.lock().unwrap());
        records
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The primary's counters this test compares before and after a scenario.
#[derive(Debug, Clone, Copy)]
struct Counters {
    connect_failures: u64,
    timeouts: u64,
    resets: u64,
    closed_to_open: u64,
    half_open_to_closed: u64,
    fallback_successes: u64,
}

impl Counters {
    fn read(c: &Compose) -> Counters {
        Counters {
            connect_failures: c.upstream_stat(PRIMARY, "failures.connect_failure"),
            timeouts: c.upstream_stat(PRIMARY, "failures.timeout"),
            resets: c.upstream_stat(PRIMARY, "failures.reset"),
            closed_to_open: c.upstream_stat(PRIMARY, "transitions.closed_to_open"),
            half_open_to_closed: c.upstream_stat(PRIMARY, "transitions.half_open_to_closed"),
            fallback_successes: c.upstream_stat(FALLBACK, "successes"),
        }
    }
}

/// Timings of one scenario, for the summary line.
struct Timing {
    to_trip: Duration,
    to_failover: Duration,
    to_close: Duration,
    faulted_for: Duration,
}

/// One fault: healthy traffic to the primary, the fault, the trip and failover, the
/// repair, probes, and traffic back on the primary; then the primary's metrics.
fn scenario(c: &Compose, load: &Load, n: usize, fault: Fault) -> Timing {
    let before = Counters::read(c);
    load.set(n, Stage::Healthy);
    wait_for(
        &format!("{}: healthy traffic on {PRIMARY}", fault.name()),
        Duration::from_secs(15),
        || load.count(n, Stage::Healthy, |a| a.success_from(PRIMARY, "primary")) >= 10,
    );

    load.set(n, Stage::Faulted);
    let t_fault = Instant::now();
    c.inject(PRIMARY, fault);
    wait_for(
        &format!("{}: {PRIMARY}'s breaker to open", fault.name()),
        Duration::from_secs(20),
        || c.upstream_stat(PRIMARY, "transitions.closed_to_open") > before.closed_to_open,
    );
    let to_trip = t_fault.elapsed();
    wait_for(
        &format!("{}: traffic on {FALLBACK}", fault.name()),
        Duration::from_secs(15),
        || load.count(n, Stage::Faulted, |a| a.success_from(FALLBACK, "failover")) >= 10,
    );
    let to_failover = t_fault.elapsed();
    // Let at least one open period pass with the fault still there: the probes fail.
    sleep(OPEN + Duration::from_millis(500));

    load.set(n, Stage::Recovering);
    let faulted_for = t_fault.elapsed();
    let t_restore = Instant::now();
    c.restore(PRIMARY, fault);
    wait_for(
        &format!("{}: {PRIMARY}'s breaker to close again", fault.name()),
        Duration::from_secs(40),
        || c.upstream_stat(PRIMARY, "transitions.half_open_to_closed") > before.half_open_to_closed,
    );
    wait_for(
        &format!("{}: traffic back on {PRIMARY}", fault.name()),
        Duration::from_secs(15),
        || load.count(n, Stage::Recovering, |a| a.success_from(PRIMARY, "primary")) >= 10,
    );
    let to_close = t_restore.elapsed();

    let after = Counters::read(c);
    assert_eq!(c.upstream_stat(PRIMARY, "state"), 0, "{PRIMARY} closed");
    let failures = match fault {
        // The mock's process exits: requests in flight on pooled connections are reset,
        // new connections fail (or, once its name stops resolving, the cluster has no
        // host — also a connect failure). Which of the two trips the breaker depends on
        // how many pooled connections Envoy held at that moment; the probes sent while
        // the fault is held can only fail to connect.
        Fault::Stop => {
            assert!(
                after.connect_failures > before.connect_failures,
                "stop: no connect failure recorded while {PRIMARY} was stopped ({before:?} → {after:?})"
            );
            (after.connect_failures + after.resets) - (before.connect_failures + before.resets)
        }
        // The kernel still accepts connections for the frozen mock: the route times out.
        Fault::Pause => after.timeouts - before.timeouts,
        // Pooled connections time out, new ones fail to connect.
        Fault::Disconnect => {
            (after.connect_failures + after.timeouts + after.resets)
                - (before.connect_failures + before.timeouts + before.resets)
        }
    };
    assert!(
        failures >= CONSECUTIVE_FAILURES as u64,
        "{}: only {failures} failures of the expected class recorded ({before:?} → {after:?})",
        fault.name()
    );
    assert!(after.fallback_successes > before.fallback_successes);
    assert!(
        load.count(n, Stage::Recovering, |a| a.success_from(PRIMARY, "probe")) >= 1
            || load.count(n, Stage::Faulted, |a| a.success_from(PRIMARY, "probe")) >= 1,
        "{}: no successful probe seen by a client",
        fault.name()
    );
    Timing {
        to_trip,
        to_failover,
        to_close,
        faulted_for,
    }
}

/// Every request answered, in time, in one of the documented ways; failures only
/// while the primary was broken and bounded by what the breaker lets through.
fn check_answers(records: &[Record], timings: &[(Fault, Timing)]) {
    let mut problems = Vec::new();
    for r in records {
        match &r.answer {
            Err(e) => problems.push(format!("no answer ({:?}): {e}", r.stage)),
            Ok(a) => match classify(a) {
                Err(e) => problems.push(e),
                Ok(Kind::PrimaryFailure) if r.stage == Stage::Healthy => {
                    problems.push(format!("failure while healthy: {a:?}"))
                }
                Ok(_) => {}
            },
        }
        if r.elapsed > FIRST_BYTE_TIMEOUT + ANSWER_SLACK {
            problems.push(format!(
                "answered after {:?} (first-byte timeout {FIRST_BYTE_TIMEOUT:?}): {:?}",
                r.elapsed, r.answer
            ));
        }
    }
    for (n, (fault, t)) in timings.iter().enumerate() {
        let of = |k: Kind| {
            records
                .iter()
                .filter(|r| r.scenario == n)
                .filter(|r| r.answer.as_ref().is_ok_and(|a| classify(a) == Ok(k)))
                .count()
        };
        // Before the trip: the streak plus what was already in flight. Then per open
        // period (while broken, and until the restored primary is reachable again):
        // at most the permitted probes.
        let periods = (t.faulted_for + t.to_close).as_secs_f64() / OPEN.as_secs_f64();
        let bound =
            CONSECUTIVE_FAILURES + CLIENTS + PERMITTED_PROBES * (periods.ceil() as usize + 1);
        let failed = of(Kind::PrimaryFailure);
        if failed > bound {
            problems.push(format!(
                "{}: {failed} requests failed on {PRIMARY}, more than the breaker should let through ({bound})",
                fault.name()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} requests went wrong:\n{}",
        problems.len(),
        records.len(),
        problems[..problems.len().min(20)].join("\n")
    );
}

#[test]
fn breaker_trips_fails_over_and_recovers_across_containers() {
    if !require_engine("breaker_trips_fails_over_and_recovers_across_containers") {
        return;
    }
    let wasm = filter_wasm();
    assert!(
        wasm.exists(),
        "filter not built at {} — run `make build` (or `make compose-test`)",
        wasm.display()
    );
    let started = Instant::now();
    let mut compose = Compose::up(&wasm);
    let up_took = started.elapsed();
    eprintln!(
        "compose project {} up in {up_took:.1?} (Envoy image {})",
        compose.project(),
        compose.envoy_image
    );

    let load = Load::start(&compose);
    let mut timings = Vec::new();
    for (n, fault) in [Fault::Stop, Fault::Pause, Fault::Disconnect]
        .into_iter()
        .enumerate()
    {
        let t0 = Instant::now();
        let t = scenario(&compose, &load, n, fault);
        eprintln!(
            "{:<26} trip {:>5.1?}  failover {:>5.1?}  fault held {:>5.1?}  traffic back {:>5.1?} after repair  (scenario {:.1?})",
            fault.name(),
            t.to_trip,
            t.to_failover,
            t.faulted_for,
            t.to_close,
            t0.elapsed()
        );
        timings.push((fault, t));
    }
    let records = load.finish();
    let sent = records.len() as u64;

    let count = |k: Kind| {
        records
            .iter()
            .filter(|r| r.answer.as_ref().is_ok_and(|a| classify(a) == Ok(k)))
            .count()
    };
    eprintln!(
        "{sent} requests: {} successes, {} failed on the broken primary, {} rejected (all open), {} unanswered; slowest answer {:.2?}",
        count(Kind::Success),
        count(Kind::PrimaryFailure),
        count(Kind::Rejected),
        records.iter().filter(|r| r.answer.is_err()).count(),
        records.iter().map(|r| r.elapsed).max().unwrap_or_default()
    );
    check_answers(&records, &timings);

    // Envoy saw every request, and the filter accounted for each one: an outcome
    // recorded against some upstream, or a local reject.
    let envoy_total = compose.stat("http.llm_gateway.downstream_rq_total");
    assert_eq!(envoy_total, Some(sent), "Envoy's downstream request count");
    let accounted = || {
        completed_total(compose.admin)
            + compose
                .stat("wasmcustom.llm_breaker.route.chat.requests_rejected")
                .unwrap_or(0)
    };
    // Outcomes are recorded when Envoy logs each stream: give the last ones time,
    // then the count must be exact (not more either).
    poll(Duration::from_secs(5), || accounted() >= sent);
    assert_eq!(accounted(), sent, "requests the filter accounted for");

    compose.down().expect("compose down");
    let left = compose.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("whole run {:.1?}", started.elapsed());
}

/// The compose harness's `fleet` profile: etcd and two Envoys (envoy-a, envoy-b)
/// sharing their breakers ([docs/fleet.md](../docs/fleet.md)). The primary is
/// stopped; requests alternate between the two Envoys until both have opened, and the
/// requests the primary got from both together are counted: the first Envoy's 3,
/// plus what the other had sent before the fleet record reached it (6 without
/// `fleet`: 3 each).
#[test]
fn two_envoys_share_a_trip_through_etcd() {
    if !require_engine("two_envoys_share_a_trip_through_etcd") {
        return;
    }
    let wasm = filter_wasm();
    assert!(wasm.exists(), "filter not built at {}", wasm.display());
    let mut compose = Compose::up_fleet(&wasm);
    let envoys = compose.fleet.clone();
    let stat = |admin, name: &str| llm_breaker_harness::envoy::stat(admin, name);
    for &(_, admin) in &envoys {
        wait_for("fleet connected to etcd", Duration::from_secs(60), || {
            stat(admin, "wasmcustom.llm_breaker.fleet.connected") == Some(1)
        });
    }
    let admitted = || -> u64 {
        envoys
            .iter()
            .map(|&(_, a)| {
                llm_breaker_harness::envoy::upstream_stat(a, PRIMARY, "requests_admitted")
            })
            .sum()
    };
    let open = |a| llm_breaker_harness::envoy::upstream_stat(a, PRIMARY, "state") == 1;
    compose.inject(PRIMARY, Fault::Stop);
    let before = admitted();
    let mut sent = 0;
    while !envoys.iter().all(|&(_, a)| open(a)) {
        assert!(sent < 40, "both Envoys not open after {sent} requests");
        let (listener, _) = envoys[sent % 2];
        let r = client::request(listener, "POST", CHAT, &[], BODY.as_bytes()).unwrap();
        assert!([200, 503].contains(&r.status), "status {}", r.status);
        sent += 1;
        // Two syncs (sync_ms 250) between requests.
        sleep(Duration::from_millis(500));
    }
    let failures = admitted() - before;
    eprintln!(
        "compose fleet: the stopped primary got {failures} requests from two Envoys before both were open ({sent} sent; 6 without fleet)"
    );
    assert!(
        failures <= 5,
        "{failures} requests reached the stopped primary"
    );
    compose.restore(PRIMARY, Fault::Stop);
    compose.down().unwrap();
    assert_eq!(compose.leftovers(), Vec::<String>::new());
}
