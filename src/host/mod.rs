//! The proxy-wasm adapter: the only code that talks to Envoy. It reads the
//! configuration, keeps breaker state in shared data through [`EnvoyStore`], and
//! wires the pure core into the HTTP stream callbacks ([`http`]).

pub mod abi;
mod admin;
mod http;
pub mod metrics;
mod probe;

use crate::breaker::{Admission, Ticket, Transition};
use crate::config::Config;
use crate::store::{self, SharedStore, StoreError, Updated};
use abi::Level;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    std::panic::set_hook(Box::new(|info| {
        abi::log(Level::Critical, &format!("llm-breaker: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Envoy shared data as a [`SharedStore`].
pub struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::shared_get(key).map_err(|s| StoreError::Host(s.0))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        abi::shared_set(key, value, cas).map_err(|s| match s.0 {
            abi::status::CAS_MISMATCH => StoreError::CasMismatch,
            other => StoreError::Host(other),
        })
    }
}

/// Fast successes one worker holds for a breaker cell (an upstream, or an upstream
/// and model) before writing them at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pending {
    /// Breaker epoch the requests were admitted in.
    pub epoch: u32,
    /// How many.
    pub count: u32,
    /// When the first was added.
    pub since_ms: u64,
}

/// Most successes held before a write, whatever their age.
const MAX_PENDING: u32 = 256;

/// How recent this worker's last read of a breaker must be to decide from it, without
/// another read, that a completing success may be held (see [`Shared::quiet`]).
const SEEN_FRESH_MS: u64 = 20;

/// What this worker last read of a breaker cell.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Breaker epoch.
    pub epoch: u32,
    /// Closed with no failure streak.
    pub quiet: bool,
    /// When it was read.
    pub at_ms: u64,
    /// It denied admission until then (0: it did not deny).
    pub denied_until_ms: u64,
}

/// What every HTTP context of one configuration (in one VM) shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Metric ids.
    pub metrics: metrics::Metrics,
    /// Per breaker cell: fast successes not yet written to shared data.
    pending: RefCell<Vec<Pending>>,
    /// Per breaker cell: this worker's last read of the breaker.
    seen: RefCell<Vec<Seen>>,
    /// Per upstream: the response header value of the common case (primary, nothing
    /// skipped), built once.
    pub primary_header: Vec<String>,
    /// Per breaker cell: its shared-data key, built once.
    pub keys: Vec<String>,
    /// Per breaker cell: the name in logs (`openai`, or `openai model=gpt-4o`).
    labels: Vec<String>,
    /// Some route depends on the request's model ([`Config::uses_models`]).
    pub uses_models: bool,
    /// The admin bearer token, from the VM's environment.
    pub admin_token: Option<String>,
}

impl Shared {
    /// The upstream a breaker cell belongs to.
    pub fn upstream_of(&self, cell: usize) -> usize {
        self.config
            .cells
            .get(cell)
            .map_or(usize::MAX, |c| c.upstream)
    }

    /// Reports what a breaker update did: transition log line and metrics, reset warning.
    pub fn report(
        &self,
        cell: usize,
        transition: Option<&Transition>,
        reset: Option<&crate::codec::DecodeError>,
    ) {
        let upstream = self.upstream_of(cell);
        let name = self.labels.get(cell).map_or("?", String::as_str);
        if let Some(e) = reset {
            abi::log(
                Level::Warn,
                &format!("llm-breaker: shared state of upstream {name} did not decode ({e}); reset to closed"),
            );
            let m = self.metrics.upstream(upstream);
            abi::increment(m.and_then(|m| m.state_resets), 1);
        }
        if let Some(t) = transition {
            log_transition(name, t);
            self.metrics.transition(upstream, t);
            if let Some(a) = &self.config.admin {
                let entry = crate::history::Entry::of(cell, t, abi::now_ms());
                crate::history::append(&EnvoyStore, entry, usize::from(a.history));
            }
        }
    }

    /// Reports an update that could not be applied.
    pub fn report_error(&self, cell: usize, e: store::UpdateError) {
        abi::log(
            Level::Warn,
            &format!(
                "llm-breaker: breaker update for upstream {} not applied: {e}",
                self.labels.get(cell).map_or("?", String::as_str)
            ),
        );
        let m = self.metrics.upstream(self.upstream_of(cell));
        abi::increment(m.and_then(|m| m.update_errors), 1);
    }

    /// Reports the result of [`store::update`].
    pub fn report_update<T>(&self, cell: usize, r: &Result<Updated<T>, store::UpdateError>) {
        match r {
            Ok(u) => self.report(cell, u.transition.as_ref(), u.reset.as_ref()),
            Err(e) => self.report_error(cell, *e),
        }
    }

    /// The breaker cell's shared-data key.
    pub fn key(&self, cell: usize) -> &str {
        self.keys.get(cell).map_or("", String::as_str)
    }

    /// Notes what this worker just read or wrote of a breaker cell.
    pub fn saw(&self, cell: usize, epoch: u32, quiet: bool, at_ms: u64) {
        self.note_seen(cell, |s| {
            *s = Seen {
                epoch,
                quiet,
                at_ms,
                denied_until_ms: 0,
            }
        });
    }

    /// Notes that this worker just read a breaker cell denying admission until
    /// `until_ms` (open, isolated, or half-open with every permit taken).
    pub fn saw_denied(&self, cell: usize, until_ms: u64, at_ms: u64) {
        self.note_seen(cell, |s| {
            s.quiet = false;
            s.at_ms = at_ms;
            s.denied_until_ms = until_ms;
        });
    }

    fn note_seen(&self, cell: usize, f: impl FnOnce(&mut Seen)) {
        if let Some(s) = self
            .seen
            .try_borrow_mut()
            .ok()
            .as_deref_mut()
            .and_then(|v| v.get_mut(cell))
        {
            f(s);
        }
    }

    /// Whether the breaker is closed in `epoch` with no failure streak now, so that a
    /// completing fast success may be held. Under load this worker read the breaker
    /// moments ago for another request, and that read answers; otherwise it reads
    /// again. (A streak another worker started within the last `SEEN_FRESH_MS` can
    /// thus miss being ended by this success.)
    pub fn quiet(&self, cell: usize, epoch: u32, now_ms: u64) -> bool {
        let seen = self
            .seen
            .try_borrow()
            .ok()
            .and_then(|v| v.get(cell).copied())
            .filter(|s| s.epoch == epoch && s.at_ms.saturating_add(SEEN_FRESH_MS) >= now_ms);
        match seen {
            Some(s) => s.quiet,
            None => store::quiet_now(&EnvoyStore, self.key(cell), epoch),
        }
    }

    /// Answers an admission from this worker's own read of the breaker made at most
    /// `admission_cache_ms` ago, without reading shared data again: admitted if it
    /// was quiet (closed, no streak), denied if it denied admission until a time
    /// still ahead. Only real reads refresh that read, so it never outlives the
    /// window, and a denial never outlives its end (the next request then reads, and
    /// may be the probe).
    pub fn admit_cached(&self, cell: usize, now_ms: u64) -> Option<Admission> {
        let ttl = self.config.admission_cache_ms;
        if ttl == 0 {
            return None;
        }
        let s = self.seen.try_borrow().ok()?.get(cell).copied()?;
        if s.at_ms.saturating_add(ttl) < now_ms {
            return None;
        }
        if s.quiet {
            Some(Admission::Admitted(Ticket {
                epoch: s.epoch,
                permit: None,
            }))
        } else if now_ms < s.denied_until_ms {
            Some(Admission::Denied {
                retry_at_ms: s.denied_until_ms,
            })
        } else {
            None
        }
    }

    /// Holds one fast success; returns a batch to write now if one is due.
    pub fn hold_success(&self, cell: usize, epoch: u32, now_ms: u64) -> Option<Pending> {
        let flush_ms = self.config.success_flush_ms;
        let mut all = self.pending.try_borrow_mut().ok()?;
        let slot = all.get_mut(cell)?;
        let mut due = None;
        if slot.count > 0 && slot.epoch != epoch {
            due = Some(std::mem::take(slot));
        }
        if slot.count == 0 {
            *slot = Pending {
                epoch,
                count: 0,
                since_ms: now_ms,
            };
        }
        slot.count += 1;
        if slot.count >= MAX_PENDING || now_ms.saturating_sub(slot.since_ms) >= flush_ms {
            // An epoch change above already took one batch; that one is stale anyway.
            due = Some(std::mem::take(slot));
        }
        due
    }

    /// Takes the cell's held successes, to write them with another update.
    pub fn take_pending(&self, cell: usize) -> Option<Pending> {
        let mut all = self.pending.try_borrow_mut().ok()?;
        let p = std::mem::take(all.get_mut(cell)?);
        (p.count > 0).then_some(p)
    }

    /// Puts back a batch whose write failed, so its successes are not lost: it is
    /// retried one flush period from now (not on the next success), and a batch of
    /// an older epoch than the one held is dropped (the breaker would ignore it).
    pub fn restore_pending(&self, cell: usize, p: Pending, now_ms: u64) {
        let Ok(mut all) = self.pending.try_borrow_mut() else {
            return;
        };
        let Some(slot) = all.get_mut(cell) else {
            return;
        };
        if slot.count == 0 {
            *slot = Pending {
                since_ms: now_ms,
                ..p
            };
        } else if slot.epoch == p.epoch {
            slot.count = slot.count.saturating_add(p.count).min(MAX_PENDING);
            slot.since_ms = now_ms;
        }
    }

    /// Writes a batch of successes to shared data (keeping it if the write fails).
    pub fn write_successes(&self, cell: usize, p: Pending, now_ms: u64) {
        let Some(up) = self.config.upstreams.get(self.upstream_of(cell)) else {
            return;
        };
        let r = store::update(&EnvoyStore, self.key(cell), &up.breaker, now_ms, |b| {
            b.record_successes(now_ms, p.epoch, p.count)
        });
        if r.is_err() {
            self.restore_pending(cell, p, now_ms);
        }
        self.report_update(cell, &r);
    }

    /// Writes every batch held longer than `success_flush_ms`.
    pub fn flush_due(&self, now_ms: u64) {
        for i in 0..self.config.cells.len() {
            let due = self
                .pending
                .try_borrow()
                .ok()
                .and_then(|all| all.get(i).copied())
                .is_some_and(|p| {
                    p.count > 0 && now_ms.saturating_sub(p.since_ms) >= self.config.success_flush_ms
                });
            if due {
                if let Some(p) = self.take_pending(i) {
                    self.write_successes(i, p, now_ms);
                }
            }
        }
    }
}

fn log_transition(upstream: &str, t: &Transition) {
    let open = t
        .open_ms
        .map(|ms| format!(" open_ms={ms}"))
        .unwrap_or_default();
    abi::log(
        Level::Info,
        &format!(
            "llm-breaker: upstream={upstream} from={} to={} reason={}{open}",
            t.from.as_str(),
            t.to.as_str(),
            t.reason.as_str()
        ),
    );
}

/// How often probe leases are looked at.
const PROBE_TICK_MS: u64 = 250;

/// The root context: owns the configuration of one VM.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
    /// Active probes in flight from this VM.
    probes: probe::InFlight,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _h: usize, _b: usize, _t: usize) {
        if let Some(shared) = &self.shared {
            probe::answered(shared, &mut self.probes, token);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match abi::plugin_configuration() {
            Ok(b) => b,
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!(
                        "llm-breaker: cannot read the plugin configuration (status {})",
                        s.0
                    ),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                abi::log(Level::Error, &format!("llm-breaker: {e}"));
                return false;
            }
        };
        let now = abi::now_ms();
        let metrics = metrics::Metrics::define(&config);
        let name = |c: &crate::config::Cell| {
            config
                .upstreams
                .get(c.upstream)
                .map_or("", |u| u.name.as_str())
        };
        let keys: Vec<String> = config
            .cells
            .iter()
            .map(|c| store::cell_key(name(c), c.model.as_deref()))
            .collect();
        let labels: Vec<String> = config
            .cells
            .iter()
            .map(|c| match &c.model {
                None => name(c).to_string(),
                Some(m) => format!("{} model={m}", name(c)),
            })
            .collect();
        for ((c, key), label) in config.cells.iter().zip(&keys).zip(&labels) {
            let Some(u) = config.upstreams.get(c.upstream) else {
                continue;
            };
            // Creating keys here keeps the request path away from the non-atomic
            // "create if absent"; idempotent, so the canary VM may run it too.
            if let Err(e) = store::seed(&EnvoyStore, key, &u.breaker, now) {
                abi::log(
                    Level::Warn,
                    &format!("llm-breaker: cannot seed shared state of {label}: {e}"),
                );
            }
            if let Ok(state) = store::peek(&EnvoyStore, key, &u.breaker, now) {
                if c.model.is_none() || state.kind() != crate::breaker::PhaseKind::Closed {
                    abi::record(
                        metrics.upstream(c.upstream).and_then(|m| m.state),
                        state.kind().gauge(),
                    );
                    if state.kind() == crate::breaker::PhaseKind::Isolated {
                        abi::record(metrics.upstream(c.upstream).and_then(|m| m.isolated), 1);
                    }
                }
            }
        }
        abi::log(
            Level::Info,
            &format!(
                "llm-breaker: configured {} route(s), {} upstream(s)",
                config.routes.len(),
                config.upstreams.len()
            ),
        );
        for u in config.upstreams.iter().filter(|u| u.probe.is_some()) {
            crate::probe::seed(&EnvoyStore, &crate::probe::key(&u.name));
        }
        // Probes are looked at every 250 ms (or at the flush period, if shorter).
        let probing = config.upstreams.iter().any(|u| u.probe.is_some());
        let tick = match (config.success_flush_ms, probing) {
            (0, true) => PROBE_TICK_MS,
            (f, true) => f.min(PROBE_TICK_MS),
            (f, false) => f,
        };
        let tick = u32::try_from(tick).unwrap_or(u32::MAX);
        if let Err(s) = abi::set_tick_period_ms(tick) {
            abi::log(
                Level::Warn,
                &format!("llm-breaker: cannot arm the flush timer (status {})", s.0),
            );
        }
        let pending = RefCell::new(vec![Pending::default(); config.cells.len()]);
        let seen = RefCell::new(vec![Seen::default(); config.cells.len()]);
        let primary_header = config
            .upstreams
            .iter()
            .map(|u| crate::routing::describe(&u.name, crate::routing::Why::Primary, &[]))
            .collect();
        let uses_models = config.uses_models();
        let admin_token = config.admin.as_ref().and_then(|a| {
            let token = std::env::var(&a.token_env).ok().filter(|t| !t.is_empty());
            if token.is_none() {
                abi::log(
                    Level::Warn,
                    &format!(
                        "llm-breaker: admin endpoints enabled but the VM environment has no {} (vm_config.environment_variables): reset/isolate/release will answer 401",
                        a.token_env
                    ),
                );
            }
            token
        });
        self.shared = Some(Rc::new(Shared {
            uses_models,
            admin_token,
            config,
            metrics,
            pending,
            seen,
            primary_header,
            keys,
            labels,
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            let now = abi::now_ms();
            shared.flush_due(now);
            probe::tick(shared, &mut self.probes, now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration the filter passes everything through.
        Some(Box::new(http::Stream::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
