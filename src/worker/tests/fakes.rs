//! Test doubles for the worker's seams.

use crate::classify::ResponseFacts;
use crate::config::Config;
use crate::ids::{RouteId, UpstreamId};
use crate::store::{MemoryStore, SharedStore, StoreError};
use crate::worker::metrics::{Metric, Metrics, UpstreamMetric};
use crate::worker::request::{Routed, Routing};
use crate::worker::within::{LoggedAttempt, Plan, Served};
use crate::worker::Worker;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// A shared store: clones share one `MemoryStore` (like Envoy's workers share
/// shared data), count reads and writes, and fail writes while told to.
#[derive(Clone, Default)]
pub struct Store {
    inner: Rc<MemoryStore>,
    fail_writes: Rc<Cell<bool>>,
    reads: Rc<Cell<u32>>,
    writes: Rc<Cell<u32>>,
}

impl Store {
    /// Makes every write fail with a host error (or stops doing so).
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.set(on);
    }

    /// Reads so far.
    pub fn reads(&self) -> u32 {
        self.reads.get()
    }

    /// Writes so far (failed ones included).
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    /// Overwrites a key with arbitrary bytes.
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        self.inner.put_raw(key, bytes);
    }
}

impl SharedStore for Store {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.writes.set(self.writes.get() + 1);
        if self.fail_writes.get() {
            return Err(StoreError::Host(3));
        }
        self.inner.set(key, value, cas)
    }
}

/// Records every increment and gauge.
#[derive(Default)]
pub struct Recorder {
    counters: RefCell<Vec<Metric>>,
    gauges: RefCell<Vec<(Metric, u64)>>,
}

impl Recorder {
    /// How often `metric` was incremented.
    pub fn count(&self, metric: Metric) -> usize {
        self.counters
            .borrow()
            .iter()
            .filter(|&&m| m == metric)
            .count()
    }

    /// Of upstream `u`.
    pub fn up(&self, u: usize, metric: UpstreamMetric) -> usize {
        self.count(Metric::Upstream(UpstreamId::new(u), metric))
    }

    /// The last value set on a gauge.
    pub fn gauge(&self, u: usize, metric: UpstreamMetric) -> Option<u64> {
        let m = Metric::Upstream(UpstreamId::new(u), metric);
        self.gauges
            .borrow()
            .iter()
            .rev()
            .find(|(x, _)| *x == m)
            .map(|(_, v)| *v)
    }

    /// Every value recorded on a metric of upstream `u` (a histogram's samples),
    /// oldest first.
    pub fn recorded(&self, u: usize, metric: UpstreamMetric) -> Vec<u64> {
        let m = Metric::Upstream(UpstreamId::new(u), metric);
        self.gauges
            .borrow()
            .iter()
            .filter(|(x, _)| *x == m)
            .map(|(_, v)| *v)
            .collect()
    }

    /// Every increment so far, then forgets them.
    pub fn take(&self) -> Vec<Metric> {
        std::mem::take(&mut *self.counters.borrow_mut())
    }
}

impl Metrics for Recorder {
    fn increment(&self, metric: Metric) {
        self.counters.borrow_mut().push(metric);
    }

    fn record(&self, metric: Metric, value: u64) {
        self.gauges.borrow_mut().push((metric, value));
    }

    fn get(&self, metric: Metric) -> Option<u64> {
        Some(self.count(metric) as u64)
    }
}

/// Log lines of this thread, captured through the `log` facade.
struct Capture;

static CAPTURE: Capture = Capture;

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        LINES.with(|l| l.borrow_mut().push(record.args().to_string()));
    }

    fn flush(&self) {}
}

/// This thread's log lines so far (and forgets them).
pub fn logs() -> Vec<String> {
    LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A test worker.
pub type TestWorker = Worker<Store, Recorder>;

/// A worker for `json` over `store`, seeded at `now`.
pub fn worker(json: &str, store: &Store, now: u64) -> TestWorker {
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
    let config = Config::parse(json.as_bytes()).unwrap();
    let w = Worker::new(config, store.clone(), Recorder::default());
    w.seed(now);
    let _ = logs();
    w
}

/// One route `chat` over `chain`, with `breaker` settings and `extra` top-level fields.
pub fn config(chain: &[&str], breaker: &str, extra: &str) -> String {
    let ups: Vec<String> = chain.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"{{"routes":[{{"name":"chat","upstreams":[{}]}}],"breaker":{breaker}{extra}}}"#,
        ups.join(",")
    )
}

/// Breaker settings only the consecutive rule trips, fixed open time, as in the
/// Envoy tests.
pub fn consecutive(n: u32, open_ms: u64) -> String {
    format!(
        r#"{{"consecutive_failures":{n},"failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
            "open":{{"base_ms":{open_ms},"max_ms":600000,"multiplier":3.0,"jitter":0}},
            "half_open":{{"permitted_calls":1,"success_threshold":2}}}}"#
    )
}

/// A worker over openai then azure whose openai breaker opened at `now` for 1 s
/// (then 3 s after a failed probe).
pub fn tripped(store: &Store, now: u64) -> TestWorker {
    let w = worker(
        &config(&["openai", "azure"], &consecutive(1, 1000), ""),
        store,
        now,
    );
    exchange(&w, 503, now);
    w
}

/// Routes one request on route 0; `Ok` if sent (with the cluster), `Err(retry_after)`
/// if rejected.
pub fn route(w: &TestWorker, now: u64) -> Result<(Routed, String), String> {
    match w.route(RouteId::new(0), None, now).unwrap() {
        Routing::Send {
            routed, cluster, ..
        } => Ok((routed, cluster.to_string())),
        Routing::Reject(r) => Err(r.retry_after),
    }
}

/// Routes a request that must be sent; returns it and its cluster.
pub fn send(w: &TestWorker, now: u64) -> (Routed, String) {
    route(w, now).unwrap()
}

/// Facts of a complete response with `status` and a 1 ms first byte.
pub fn answered(status: u16) -> ResponseFacts {
    ResponseFacts {
        status: Some(status),
        completed: true,
        ttfb_ms: Some(1),
        ..ResponseFacts::default()
    }
}

/// Sends one request at `now`, answered `status` at once; returns the cluster.
pub fn exchange(w: &TestWorker, status: u16, now: u64) -> String {
    let (routed, cluster) = send(w, now);
    w.finish(&routed, &answered(status), now);
    cluster
}

/// The state of the first cell of upstream 0 as stored.
pub fn stored(w: &TestWorker, now: u64) -> crate::breaker::Breaker {
    w.states(now).swap_remove(0)
}

/// The downstream role at the response headers of a within-request `plan`, as the
/// host calls it: the served header says `served` (a name, with
/// [`crate::worker::within::GATEWAY_KEY_SUFFIX`] if the gateway injected its key)
/// answered with `status` (Envoy's attempt count not read, the request's size
/// unknown). When the answer is the downstream role's to record, records it as
/// complete at once, with the gateway's key as the header says.
pub fn answer_within<'w>(
    w: &'w TestWorker,
    plan: &Plan,
    served: &str,
    status: u16,
    now: u64,
) -> Served<'w> {
    let s = w.served_within(plan, Some(served.as_bytes()), None, Some(status), || None);
    if let Some(r) = &s.record {
        w.finish_with(r, &answered(status), now, s.gateway_key);
    }
    s
}

/// The upstream log at the end of one failed attempt to `name` with its request's
/// `tickets`: `status` (`None`: no response) and Envoy's response `flags`, at once.
pub fn log_failed(
    w: &TestWorker,
    name: &str,
    tickets: &str,
    status: Option<u16>,
    flags: u64,
    now: u64,
) {
    w.log_attempt(logged(name, tickets, status, flags, 0), now, |_| None);
}

/// What the upstream log hands over of an attempt to `name` with the request's
/// `tickets`, ended with `status` and Envoy's `flags` after `duration_ms`.
pub fn logged<'a>(
    name: &'a str,
    tickets: &'a str,
    status: Option<u16>,
    flags: u64,
    duration_ms: u64,
) -> LoggedAttempt<'a> {
    LoggedAttempt {
        name: name.as_bytes(),
        tickets: Some(tickets.as_bytes()),
        status,
        flags,
        duration_ms: Some(duration_ms),
    }
}
