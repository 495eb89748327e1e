//! Fleet-wide failure counting, the worker's side: a round reads the other
//! instances' failure streaks ([`crate::fleet::streak`]) with the records, trips a
//! closed breaker when this Envoy's streak plus their fresh ones reach
//! `consecutive_failures` (reason `fleet_failures`; the merge then writes the open
//! record as for any local trip), and publishes this Envoy's streaks that changed.
//! The request path is untouched: the streak is the breaker's own
//! `consecutive_failures`, read here from shared data.

use crate::backoff::{fnv1a, splitmix64};
use crate::breaker::{Breaker, Phase};
use crate::fleet::etcd::Kv;
use crate::fleet::record::VERSION;
use crate::fleet::streak::{self, StreakValue, MAX_STREAK};
use crate::fleet::{FleetRecord, FleetState};
use crate::ids::CellId;
use crate::store::{self, SharedStore};
use crate::worker::{Metrics, Worker};
use std::collections::HashMap;

/// Most other instances' streaks kept per breaker from one read.
const MAX_PER_BREAKER: usize = 64;

/// The streaks of one range read, by breaker name.
#[derive(Debug, Default)]
pub(super) struct Streaks {
    /// This Envoy's, as published.
    mine: HashMap<String, StreakValue>,
    /// The other instances'.
    others: HashMap<String, Vec<StreakValue>>,
}

impl Streaks {
    /// Adds the value of a key under `<prefix>streaks/`; an error says why it is
    /// not a streak this version reads.
    pub(super) fn add(&mut self, kv: &Kv, prefix: &str, me: &str) -> Result<(), String> {
        let s = StreakValue::decode(&kv.value, prefix, &kv.key)?;
        if s.instance == me {
            self.mine.insert(s.breaker.clone(), s);
        } else {
            let v = self.others.entry(s.breaker.clone()).or_default();
            if v.len() < MAX_PER_BREAKER {
                v.push(s);
            }
        }
        Ok(())
    }
}

/// One write of a streak: the key and its value (`None`: delete).
pub(super) type StreakOp = (String, Option<Vec<u8>>);

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// The local breaker of a cell.
    fn fleet_peek(&self, cell: CellId, now_ms: u64) -> Option<Breaker> {
        let (_, up) = self.upstream_of(cell)?;
        let rec = self.cell(cell)?;
        store::peek(&self.store, &rec.key, &up.breaker, now_ms).ok()
    }

    /// Trips a closed breaker whose fleet streak (the local one plus the other
    /// instances' fresh ones) reached `consecutive_failures`. Not when a newer open
    /// or isolated record is there: the merge applies that instead.
    pub(super) fn fleet_count(
        &self,
        cell: CellId,
        name: &str,
        streaks: &Streaks,
        fetched: Option<(&FleetRecord, u64)>,
        now_ms: u64,
    ) {
        let (Some(f), Some((_, up))) = (self.config.fleet.as_ref(), self.upstream_of(cell)) else {
            return;
        };
        let threshold = up.breaker.consecutive_failures;
        let others = streaks.others.get(name).map_or(&[][..], Vec::as_slice);
        let ttl = f.streak_ttl_ms.get();
        let view = self.fleet_view(cell);
        let elsewhere = streak::fleet_streak(0, others, now_ms, ttl);
        if view.failures_elsewhere != elsewhere {
            self.fleet_edit_view(cell, |v| v.failures_elsewhere = elsewhere);
        }
        let newer = fetched.is_some_and(|(r, rev)| rev > view.rev && r.state != FleetState::Closed);
        let Some(b) = self.fleet_peek(cell, now_ms) else {
            return;
        };
        if threshold == 0 || newer || b.phase != Phase::Closed {
            return;
        }
        let local = b.consecutive_failures;
        let sum = local.saturating_add(elsewhere);
        if !streak::trips(threshold, local, sum) {
            return;
        }
        log::info!(
            "llm-breaker: fleet: {name} failed {sum} times in a row across the fleet ({local} here)"
        );
        let cfg = up.breaker.clone();
        let seed = splitmix64(now_ms ^ fnv1a(name));
        self.fleet_update(cell, now_ms, |b| b.fleet_trip(&cfg, now_ms, seed));
    }

    /// The write that makes this Envoy's published streak for a cell match its
    /// breaker's, if they differ.
    pub(super) fn fleet_streak_op(
        &self,
        cell: CellId,
        name: &str,
        streaks: &Streaks,
        me: &str,
        now_ms: u64,
    ) -> Option<StreakOp> {
        let f = self.config.fleet.as_ref()?;
        let b = self.fleet_peek(cell, now_ms)?;
        let mine = match (b.consecutive_failures, b.last_failure) {
            (n, Some((_, ms))) if n > 0 => (n.min(MAX_STREAK), ms),
            _ => (0, 0),
        };
        if !streak::needs_publish(mine, streaks.mine.get(name)) {
            return None;
        }
        let value = (mine.0 > 0).then(|| {
            StreakValue {
                v: VERSION,
                breaker: name.to_string(),
                instance: me.to_string(),
                streak: mine.0,
                last_ms: mine.1,
            }
            .encode()
        });
        Some((streak::streak_key(&f.key_prefix, name, me), value))
    }
}
