//! One runtime record per breaker cell: its shared-data key and log label, built
//! once per configuration, and this worker's own state of it (held successes, last
//! read). The state sits in `Cell`s of `Copy` values: every change is a get, a pure
//! step and a set, with no borrow to hold across a call, so nothing can re-enter
//! and no update is ever dropped.

use super::batch::{self, Batch};
use super::cache::{Read, Seen};
use crate::config::Config;
use crate::ids::CellId;
use crate::store;
use std::cell::Cell;

/// A breaker cell as this worker knows it.
#[derive(Debug)]
pub struct CellRecord {
    /// Its shared-data key.
    pub key: String,
    /// Its name in logs (`openai`, or `openai model=gpt-4o`).
    pub label: String,
    /// Fast successes not yet written to shared data.
    held: Cell<Option<Batch>>,
    /// This worker's last read of the breaker.
    seen: Cell<Option<Seen>>,
}

impl CellRecord {
    /// The records of every cell of `config`, indexed by [`CellId`] (each
    /// upstream's cells are contiguous and in upstream order).
    pub fn all(config: &Config) -> Vec<CellRecord> {
        let model = |cell: CellId| {
            config
                .cells
                .get(cell.index())
                .and_then(|c| c.model.as_deref())
        };
        config
            .upstream_ids()
            .flat_map(|(u, up)| {
                config
                    .cells_of(u)
                    .map(move |cell| (up.name.as_str(), model(cell)))
            })
            .map(|(name, model)| CellRecord {
                key: store::cell_key(name, model),
                label: match model {
                    None => name.to_string(),
                    Some(m) => format!("{name} model={m}"),
                },
                held: Cell::new(None),
                seen: Cell::new(None),
            })
            .collect()
    }

    /// This worker's last read, if any.
    pub fn seen(&self) -> Option<Seen> {
        self.seen.get()
    }

    /// Notes a read or write admitting in `epoch` at `at_ms`.
    pub fn saw(&self, epoch: u32, quiet: bool, at_ms: u64) {
        self.seen.set(Some(Seen::admitting(epoch, quiet, at_ms)));
    }

    /// Notes a read denying admission until `until_ms`.
    pub fn saw_denied(&self, until_ms: u64, at_ms: u64) {
        let read = Read::Denied { until_ms };
        self.seen.set(Some(Seen { read, at_ms }));
    }

    /// Holds one fast success; returns a batch to write now if one is due.
    pub fn hold(&self, epoch: u32, now_ms: u64, flush_ms: u64) -> Option<Batch> {
        let mut held = self.held.get();
        let due = batch::hold(&mut held, epoch, now_ms, flush_ms);
        self.held.set(held);
        due
    }

    /// Takes the held successes (to write them, or to drop them).
    pub fn take(&self) -> Option<Batch> {
        self.held.take()
    }

    /// Takes the held successes if they have waited `flush_ms`.
    pub fn take_due(&self, now_ms: u64, flush_ms: u64) -> Option<Batch> {
        let held = self.held.get()?;
        held.is_due(now_ms, flush_ms).then(|| self.held.take())?
    }

    /// Puts back a batch whose write failed.
    pub fn restore(&self, b: Batch, now_ms: u64) {
        let mut held = self.held.get();
        batch::restore(&mut held, b, now_ms);
        self.held.set(held);
    }
}

/// The record of `cell`, if the configuration has it.
pub fn get(records: &[CellRecord], cell: CellId) -> Option<&CellRecord> {
    records.get(cell.index())
}
