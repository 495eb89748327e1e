//! Applying one fleet read: per breaker cell, the merge decision
//! ([`crate::fleet::merge::decide`]) carried out on the local breaker, the prober
//! election's local side, and the writes queued for the rest of the round.

use super::streaks::Streaks;
use super::{Round, Step};
use crate::breaker::{Breaker, Phase};
use crate::fleet::etcd::{self, Kv};
use crate::fleet::{merge, Decision, FleetRecord, FleetState, Local, Prober};
use crate::ids::CellId;
use crate::store::{self, SharedStore};
use crate::worker::{Metrics, Worker};
use std::collections::HashMap;

/// Bad records remembered so each is warned about once.
const MAX_WARNED: usize = 256;

/// What a range read holds, by breaker name.
#[derive(Default)]
struct Read {
    records: HashMap<String, (FleetRecord, u64)>,
    probers: HashMap<String, String>,
    /// Revisions of values that are not records: a write replaces them by CAS.
    bad: HashMap<String, u64>,
    /// Failure streaks, this Envoy's and the others'.
    streaks: Streaks,
}

/// Logs `what` once per (key, revision) of a bad value (bounded memory).
fn warn_once(round: &mut Round, kv: &Kv, what: &str) {
    let seen = (kv.key.clone(), kv.mod_revision);
    if round.warned.contains(&seen) {
        return;
    }
    log::warn!("llm-breaker: fleet: ignoring {what}");
    if round.warned.len() >= MAX_WARNED {
        round.warned.remove(0);
    }
    round.warned.push(seen);
}

fn local_of(b: &Breaker) -> Local {
    Local {
        kind: b.kind(),
        epoch: b.epoch,
        since_ms: b.since_ms,
        until_ms: match b.phase {
            Phase::Open { until_ms } => Some(until_ms),
            _ => None,
        },
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// How long a breaker is held open past the fleet's open period, for the
    /// prober election to happen (two syncs and a round's calls).
    pub fn fleet_hold_ms(&self) -> u64 {
        self.config
            .fleet
            .as_ref()
            .map_or(0, |f| 2 * f.sync_ms.get() + 3 * f.timeout_ms.get())
    }

    /// Sorts a range read into records, prober keys and failure streaks; warns once
    /// about each value that is not a record (or streak) of this version.
    fn fleet_read(&self, round: &mut Round, kvs: &[Kv], prefix: &str, me: &str) -> Read {
        let mut read = Read::default();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let rest = String::from_utf8_lossy(rest);
            if let Some(name) = rest.strip_prefix("probers/") {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                read.probers.insert(name.to_string(), holder);
                continue;
            }
            if rest.starts_with("streaks/") {
                if let Err(e) = read.streaks.add(kv, prefix, me) {
                    warn_once(round, kv, &format!("{prefix}{rest}: {e}"));
                }
                continue;
            }
            let Some(name) = rest.strip_prefix("breakers/") else {
                continue;
            };
            match FleetRecord::decode(&kv.value) {
                Ok(r) => {
                    read.records.insert(name.to_string(), (r, kv.mod_revision));
                }
                Err(e) => {
                    read.bad.insert(name.to_string(), kv.mod_revision);
                    warn_once(round, kv, &format!("{prefix}{rest}: {e}"));
                }
            }
        }
        read
    }

    /// Applies a range read to every breaker cell and queues the round's writes.
    pub(super) fn fleet_merge(&self, round: &mut Round, kvs: &[Kv], now_ms: u64) {
        let Some(f) = self.config.fleet.as_ref() else {
            return;
        };
        let me = self.fleet_instance();
        let read = self.fleet_read(round, kvs, &f.key_prefix, &me);
        let mut publish = Vec::new();
        for cell in CellId::all(self.config.cells.len()) {
            let Some(name) = self.fleet_name(cell) else {
                continue;
            };
            let fetched = read.records.get(&name).map(|(r, rev)| (r, *rev));
            let holder = read.probers.get(&name).map(String::as_str);
            let bad = read.bad.get(&name).copied().unwrap_or(0);
            self.fleet_count(cell, &name, &read.streaks, fetched, now_ms);
            self.fleet_cell(round, cell, (fetched, bad), holder, &me, now_ms);
            publish.extend(self.fleet_streak_op(cell, &name, &read.streaks, &me, now_ms));
        }
        publish.truncate(etcd::MAX_TXN_OPS);
        if !publish.is_empty() {
            round.queue.push_front(Step::Streaks { ops: publish });
        }
    }

    /// One cell of a range read: decide, carry out, then the prober election.
    /// `bad_rev` is the revision of a value at the record's key that is not a
    /// record (0: none), which a write must replace.
    fn fleet_cell(
        &self,
        round: &mut Round,
        cell: CellId,
        (fetched, bad_rev): (Option<(&FleetRecord, u64)>, u64),
        holder: Option<&str>,
        me: &str,
        now_ms: u64,
    ) {
        let Some(local) = self.fleet_local(cell, now_ms) else {
            return;
        };
        let view = self.fleet_view(cell);
        let decision = merge::decide(&local, &view, fetched, me);
        let current = match &decision {
            Decision::Push(record, rev) => {
                round.push(Step::Push {
                    cell,
                    record: record.clone(),
                    rev: if fetched.is_none() { bad_rev } else { *rev },
                    epoch: local.epoch,
                });
                None
            }
            Decision::Apply(record, rev) => {
                let epoch = self.fleet_apply(cell, record, now_ms);
                let (record, rev) = (record.clone(), *rev);
                self.fleet_edit_view(cell, |v| {
                    v.rev = rev;
                    v.record = Some(record.clone());
                    v.synced_epoch = epoch.or(v.synced_epoch);
                });
                Some(record)
            }
            Decision::Synced => {
                self.fleet_edit_view(cell, |v| v.synced_epoch = Some(local.epoch));
                fetched.map(|(r, _)| r.clone()).or(view.record.clone())
            }
            Decision::Nothing => fetched.map(|(r, _)| r.clone()).or(view.record.clone()),
        };
        let holder_owned = holder.map(str::to_string);
        if view.prober != holder_owned {
            self.fleet_edit_view(cell, |v| v.prober = holder_owned.clone());
        }
        if let Some(record) = current {
            self.fleet_elect(round, cell, &record, holder, me, now_ms);
        }
    }

    /// The local breaker of a cell, as the merge sees it.
    fn fleet_local(&self, cell: CellId, now_ms: u64) -> Option<Local> {
        let (_, up) = self.upstream_of(cell)?;
        let rec = self.cell(cell)?;
        let b = store::peek(&self.store, &rec.key, &up.breaker, now_ms).ok()?;
        Some(local_of(&b))
    }

    /// Changes the local breaker by `f`; returns its epoch after (None: failed).
    pub(super) fn fleet_update(
        &self,
        cell: CellId,
        now_ms: u64,
        f: impl Fn(&mut Breaker) -> crate::breaker::Step<()>,
    ) -> Option<u32> {
        let (_, up) = self.upstream_of(cell)?;
        let rec = self.cell(cell)?;
        let r = store::update(&self.store, &rec.key, &up.breaker, now_ms, f);
        self.report_update(cell, &r, now_ms);
        let _ = rec.take();
        let state = r.ok()?.state;
        rec.saw(state.epoch, state.is_quiet(), now_ms);
        Some(state.epoch)
    }

    /// Makes the local breaker say what the fleet record says.
    fn fleet_apply(&self, cell: CellId, record: &FleetRecord, now_ms: u64) -> Option<u32> {
        let (_, up) = self.upstream_of(cell)?;
        let cfg = up.breaker.clone();
        let hold = self.fleet_hold_ms();
        let until = record.until_ms.max(now_ms).saturating_add(hold);
        if record.instance != self.fleet_instance() {
            log::info!(
                "llm-breaker: fleet: {} is {} (reason {} on {}, generation {})",
                self.fleet_name(cell).unwrap_or_default(),
                record.state.as_str(),
                record.reason,
                record.instance,
                record.generation
            );
        }
        self.fleet_update(cell, now_ms, |b| match record.state {
            FleetState::Open => b.fleet_open(&cfg, until, now_ms),
            FleetState::Closed => b.fleet_close(now_ms),
            FleetState::Isolated => b.fleet_isolate(now_ms),
        })
    }

    /// The prober election for a cell whose fleet record is open: the prober lets
    /// its breaker go half-open (and hands the key over if no request came to probe
    /// with for two syncs); the others hold theirs open; with no prober, claim.
    fn fleet_elect(
        &self,
        round: &mut Round,
        cell: CellId,
        record: &FleetRecord,
        holder: Option<&str>,
        me: &str,
        now_ms: u64,
    ) {
        let Some(p) = merge::prober(record, holder, me, now_ms) else {
            return;
        };
        let Some(local) = self.fleet_local(cell, now_ms) else {
            return;
        };
        let sync = self.config.fleet.as_ref().map_or(0, |f| f.sync_ms.get());
        let hold_until = now_ms.saturating_add(self.fleet_hold_ms());
        let handed = self.fleet_view(cell).handed == Some(record.generation);
        match (p, local.until_ms) {
            (Prober::Wait, _) | (Prober::Claim, _) if handed => {}
            (Prober::Wait, _) => {}
            (Prober::Probe, Some(u)) if u > now_ms => self.fleet_set_until(cell, now_ms, now_ms),
            (Prober::Probe, Some(u)) if u.saturating_add(2 * sync) <= now_ms => {
                round.push(Step::Handover {
                    cell,
                    generation: record.generation,
                });
            }
            (Prober::Probe, _) => {}
            (Prober::Claim | Prober::Hold, until) => {
                if p == Prober::Claim {
                    round.push(Step::Grant { cell });
                }
                if until.is_some_and(|u| u < hold_until) {
                    self.fleet_set_until(cell, hold_until, now_ms);
                }
            }
        }
    }

    /// Moves the local open period's end (no transition; only while open).
    fn fleet_set_until(&self, cell: CellId, until_ms: u64, now_ms: u64) {
        let Some((_, up)) = self.upstream_of(cell) else {
            return;
        };
        let cfg = up.breaker.clone();
        self.fleet_update(cell, now_ms, |b| b.fleet_until(&cfg, until_ms));
    }

    /// A prober key handed over (deleted while it still named this Envoy): no claim
    /// again from here for this record; the local breaker runs its own course.
    pub(super) fn fleet_handed_over(&self, cell: CellId, generation: u64, done: bool) {
        if !done {
            return;
        }
        log::info!(
            "llm-breaker: fleet: no traffic to probe {} with here; prober key handed over",
            self.fleet_name(cell).unwrap_or_default()
        );
        self.fleet_edit_view(cell, |v| {
            v.prober = None;
            v.handed = Some(generation);
        });
    }

    /// A record write answered: `rev` is the new revision if its compare held.
    /// The writer holds its own breaker open past the open period too, so the
    /// prober election decides who probes, not who tripped.
    pub(super) fn fleet_pushed(
        &self,
        cell: CellId,
        record: FleetRecord,
        epoch: u32,
        rev: Option<u64>,
        now_ms: u64,
    ) {
        let Some(rev) = rev else {
            return;
        };
        if record.state == FleetState::Open {
            if let Some((_, up)) = self.upstream_of(cell) {
                let cfg = up.breaker.clone();
                let until = record.until_ms.saturating_add(self.fleet_hold_ms());
                self.fleet_update(cell, now_ms, |b| b.fleet_until(&cfg, until));
            }
        }
        self.fleet_edit_view(cell, |v| {
            v.rev = rev;
            v.record = Some(record.clone());
            v.synced_epoch = Some(epoch);
            v.prober = None;
        });
    }

    /// A prober claim answered: if won, this Envoy probes at once.
    pub(super) fn fleet_claimed(&self, cell: CellId, won: bool, now_ms: u64) {
        if !won {
            return;
        }
        let me = self.fleet_instance();
        log::info!(
            "llm-breaker: fleet: {} is probed from this Envoy ({me})",
            self.fleet_name(cell).unwrap_or_default()
        );
        let Some((_, up)) = self.upstream_of(cell) else {
            return;
        };
        let cfg = up.breaker.clone();
        self.fleet_update(cell, now_ms, |b| b.fleet_until(&cfg, now_ms));
        self.fleet_edit_view(cell, |v| v.prober = Some(me.clone()));
    }
}
