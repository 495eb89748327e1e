//! Reporting what a breaker update did, after its CAS write succeeded: the
//! transition log line, the metrics, the history entry; a reset of undecodable
//! bytes; and an update that could not be applied.

use super::{accounting, Metrics, Worker};
use crate::breaker::Transition;
use crate::codec::DecodeError;
use crate::history;
use crate::ids::CellId;
use crate::store::{SharedStore, UpdateError, Updated};

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Reports a breaker update of `cell` that was applied at `now_ms`.
    pub fn report(
        &self,
        cell: CellId,
        transition: Option<&Transition>,
        reset: Option<&DecodeError>,
        now_ms: u64,
    ) {
        let (Some((u, _)), Some(rec)) = (self.upstream_of(cell), self.cell(cell)) else {
            return;
        };
        if let Some(e) = reset {
            log::warn!(
                "llm-breaker: shared state of upstream {} did not decode ({e}); reset to closed",
                rec.label
            );
            self.metrics.increment(super::metrics::Metric::Upstream(
                u,
                super::metrics::UpstreamMetric::StateResets,
            ));
        }
        if let Some(t) = transition {
            log_transition(&rec.label, t);
            self.fleet_note(cell, t.reason, now_ms);
            accounting::transition(&self.metrics, u, t);
            if let Some(a) = &self.config.admin {
                let entry = history::Entry::of(cell, t, now_ms);
                history::append(&self.store, entry, usize::from(a.history));
            }
        }
    }

    /// Reports an update of `cell` that could not be applied.
    pub fn report_error(&self, cell: CellId, e: UpdateError) {
        let (Some((u, _)), Some(rec)) = (self.upstream_of(cell), self.cell(cell)) else {
            return;
        };
        log::warn!(
            "llm-breaker: breaker update for upstream {} not applied: {e}",
            rec.label
        );
        self.metrics.increment(super::metrics::Metric::Upstream(
            u,
            super::metrics::UpstreamMetric::UpdateErrors,
        ));
    }

    /// Reports the result of [`crate::store::update`] on `cell`.
    pub fn report_update<T>(&self, cell: CellId, r: &Result<Updated<T>, UpdateError>, now_ms: u64) {
        match r {
            Ok(u) => self.report(cell, u.transition.as_ref(), u.reset.as_ref(), now_ms),
            Err(e) => self.report_error(cell, *e),
        }
    }
}

/// The transition log line (operators and tests grep for its exact shape).
fn log_transition(label: &str, t: &Transition) {
    let open = t
        .open_ms
        .map(|ms| format!(" open_ms={ms}"))
        .unwrap_or_default();
    log::info!(
        "llm-breaker: upstream={label} from={} to={} reason={}{open}",
        t.from.as_str(),
        t.to.as_str(),
        t.reason.as_str()
    );
}
