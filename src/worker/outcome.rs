//! Recording a finished request: classify what the host saw, then either hold a
//! fast success on a quiet breaker (written later in a batch) or write the outcome
//! now, with anything held for the cell in the same update; record its latency
//! (time to first byte and duration histograms) and count it last, so that a
//! visible count implies the breaker saw the outcome.

use super::batch::Batch;
use super::request::Routed;
use super::{accounting, Metrics, Worker};
use crate::backoff::{fnv1a, splitmix64};
use crate::breaker::{Step, Ticket};
use crate::classify::{self, Outcome, ResponseFacts, Verdict};
use crate::config::{Upstream, WindowSpec};
use crate::ids::{CellId, UpstreamId};
use crate::store::{self, SharedStore};

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Records the outcome of a routed request that ended at `now_ms`.
    pub fn finish(&self, routed: &Routed, facts: &ResponseFacts, now_ms: u64) {
        self.finish_with(routed, facts, now_ms, false);
    }

    /// [`Worker::finish`] for an attempt that carried the gateway's key
    /// (`gateway_key`): its 401 or 403 is the operator's wrong key, counted in
    /// `outcomes_ignored.credential_rejected` and warned about, never a failure.
    pub fn finish_with(
        &self,
        routed: &Routed,
        facts: &ResponseFacts,
        now_ms: u64,
        gateway_key: bool,
    ) {
        let Some(up) = self.config.upstream(routed.upstream) else {
            return;
        };
        let mut verdict =
            classify::classify(&up.breaker.failure, up.breaker.slow_ttfb_ms.get(), facts);
        if gateway_key {
            verdict = classify::gateway_key(verdict);
            if let Verdict::CredentialRejected(status) = verdict {
                self.warn_credential(routed.upstream, now_ms, || {
                    format!("answered {status} to the gateway's key: check its credential secret (not counted as a provider failure)")
                });
            }
        }
        let cell = routed.cell;
        match routed.ticket {
            // A fast success on a breaker that is closed with no failure streak right
            // now changes nothing but the window's call count: hold it and write a
            // batch later (saves a CAS write per request).
            Some(t)
                if self.holdable(up, &verdict)
                    && t.permit.is_none()
                    && self.quiet(cell, t.epoch, now_ms) =>
            {
                let flush_ms = self.config.success_flush_ms.get();
                if let Some(b) = self
                    .cell(cell)
                    .and_then(|r| r.hold(t.epoch, now_ms, flush_ms))
                {
                    self.write_successes(cell, b, now_ms);
                }
            }
            Some(t) if matches!(verdict, Verdict::Counted(_)) || t.permit.is_some() => {
                self.record(cell, up, t, verdict, now_ms);
            }
            _ => {}
        }
        let duration = routed.since_start(now_ms);
        accounting::latency(&self.metrics, routed.upstream, facts.ttfb_ms, duration);
        accounting::outcome(&self.metrics, routed.upstream, &verdict);
    }

    /// Whether an outcome may be held: a fast success, with batching on, on a time
    /// window (in a count window a late batch would push out failures that came
    /// after it).
    fn holdable(&self, up: &Upstream, verdict: &Verdict) -> bool {
        self.config.success_flush_ms.get() > 0
            && matches!(up.breaker.window, WindowSpec::Seconds(_))
            && matches!(
                verdict,
                Verdict::Counted(Outcome {
                    failure: None,
                    slow: false,
                    ..
                })
            )
    }

    /// Whether `cell` is closed in `epoch` with no failure streak now. Under load
    /// this worker read the breaker moments ago for another request, and that read
    /// answers; otherwise it reads again. (A streak another worker started within
    /// the last [`super::cache::SEEN_FRESH_MS`] can thus miss being ended by this
    /// success.)
    pub fn quiet(&self, cell: CellId, epoch: u32, now_ms: u64) -> bool {
        let Some(rec) = self.cell(cell) else {
            return false;
        };
        match rec.seen().and_then(|s| s.quiet(epoch, now_ms)) {
            Some(q) => q,
            None => {
                // Kept like an admission's read: a role that admits nothing then
                // reads shared data once per `SEEN_FRESH_MS`, not per request.
                let quiet = store::quiet_now(&self.store, &rec.key, epoch);
                if quiet {
                    rec.saw(epoch, true, now_ms);
                }
                quiet
            }
        }
    }

    /// Writes one outcome (and what is held for the cell) to shared data.
    fn record(&self, cell: CellId, up: &Upstream, t: Ticket, verdict: Verdict, now_ms: u64) {
        let Some(rec) = self.cell(cell) else {
            return;
        };
        let held = rec.take();
        let seed = splitmix64(now_ms ^ fnv1a(&up.name));
        let result = store::update(&self.store, &rec.key, &up.breaker, now_ms, |b| {
            let first = held.map(|p| b.record_successes(now_ms, p.epoch, p.count));
            let step = match verdict {
                Verdict::Counted(outcome) => b.record(&up.breaker, now_ms, t, outcome, seed),
                // A probe that says nothing about the provider gives its permit back.
                _ => b.release(t),
            };
            Step {
                changed: step.changed || first.is_some_and(|f| f.changed),
                ..step
            }
        });
        match &result {
            Ok(r) => rec.saw(r.state.epoch, r.state.is_quiet(), now_ms),
            Err(_) => {
                if let Some(p) = held {
                    rec.restore(p, now_ms);
                }
            }
        }
        self.report_update(cell, &result, now_ms);
    }

    /// Writes a batch of successes to shared data (putting it back if that fails).
    pub fn write_successes(&self, cell: CellId, b: Batch, now_ms: u64) {
        let (Some((_, up)), Some(rec)) = (self.upstream_of(cell), self.cell(cell)) else {
            return;
        };
        let r = store::update(&self.store, &rec.key, &up.breaker, now_ms, |s| {
            s.record_successes(now_ms, b.epoch, b.count)
        });
        if r.is_err() {
            rec.restore(b, now_ms);
        }
        self.report_update(cell, &r, now_ms);
    }

    /// Writes every batch held at least `success_flush_ms`.
    pub fn flush_due(&self, now_ms: u64) {
        let flush_ms = self.config.success_flush_ms.get();
        for (cell, rec) in CellId::all(self.cells.len()).zip(&self.cells) {
            if let Some(b) = rec.take_due(now_ms, flush_ms) {
                self.write_successes(cell, b, now_ms);
            }
        }
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Logs a warning about `upstream`'s credential, at most once a minute per
    /// upstream and worker. The message never holds the key.
    pub fn warn_credential(
        &self,
        upstream: UpstreamId,
        now_ms: u64,
        what: impl FnOnce() -> String,
    ) {
        let Some(last) = self.warned.get(upstream.index()) else {
            return;
        };
        if last.get() != 0 && now_ms.saturating_sub(last.get()) < 60_000 {
            return;
        }
        last.set(now_ms.max(1));
        let name = self
            .config
            .upstream(upstream)
            .map_or("?", |u| u.name.as_str());
        log::warn!("llm-breaker: upstream={name} {}", what());
    }
}
