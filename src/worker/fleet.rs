//! The worker's side of fleet sync ([`crate::fleet`]): one sync round at a time per
//! Envoy (a lease in shared data, like the active probes'), each a bounded sequence
//! of etcd calls that the host sends from the root context's timer. A round reads
//! every record under the prefix, applies what the fleet says to the local
//! breakers (and trips them when the fleet's failure streak reaches
//! `consecutive_failures`), and queues the writes (local transitions, the prober
//! claim, this Envoy's changed failure streaks). Failures
//! back off; the request path only ever reads local shared data.

mod apply;
mod status;
mod streaks;

use super::{Metrics, Worker};
use crate::fleet::{self, etcd, etcd::Call, View};
use crate::ids::CellId;
use crate::probe;
use crate::store::{read_modify_cas, Rewrite, SharedStore};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Shared-data key of the sync lease (when the next round is due).
pub const LEASE_KEY: &str = "llm_breaker.fleet.v1.lease";
/// Shared-data key of the link state (connected, failure streak).
pub const LINK_KEY: &str = "llm_breaker.fleet.v1.link";
/// Shared-data key of this Envoy's instance id.
pub const INSTANCE_KEY: &str = "llm_breaker.fleet.v1.instance";
/// Most calls queued in one round (writes beyond it wait for the next round).
pub const MAX_QUEUE: usize = 16;

/// Shared-data key of a breaker's fleet view.
pub fn view_key(cell_key: &str) -> String {
    format!("llm_breaker.fleet.v1.view.{cell_key}")
}

/// One etcd call of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Read every key under the prefix.
    Range,
    /// Write a breaker's record (CAS on `rev`); `epoch` is the local epoch it says.
    Push {
        cell: CellId,
        record: fleet::FleetRecord,
        rev: u64,
        epoch: u32,
    },
    /// Grant the lease for a prober claim.
    Grant { cell: CellId },
    /// Create the prober key on `lease`.
    Claim { cell: CellId, lease: u64 },
    /// Delete the prober key if it still names this Envoy (no traffic to probe).
    Handover { cell: CellId, generation: u64 },
    /// Publish this Envoy's changed failure streaks (put, or delete for 0).
    Streaks { ops: Vec<(String, Option<Vec<u8>>)> },
}

/// This VM's sync round: the call in flight and the ones queued after it.
#[derive(Debug, Default)]
pub struct Round {
    in_flight: Option<(u32, Step)>,
    unsent: Option<Step>,
    queue: VecDeque<Step>,
    started_ms: u64,
    /// The failed call was sent again once already (to another etcd member, with
    /// the cluster's load balancing).
    retried: bool,
    /// (key, mod_revision) of bad records already warned about (bounded).
    warned: Vec<(Vec<u8>, u64)>,
}

impl Round {
    /// Whether `token` is one of this round's calls.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, _)| *t == token)
    }

    fn push(&mut self, step: Step) {
        if self.queue.len() < MAX_QUEUE {
            self.queue.push_back(step);
        }
    }
}

/// The link to etcd as every worker of this Envoy sees it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The last round succeeded.
    pub connected: bool,
    /// Failed rounds in a row.
    pub streak: u32,
}

/// What an answer changed that the host reports (metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// A call failed (`fleet_errors`).
    pub error: bool,
    /// The link changed to this (`fleet_connected`).
    pub connected: Option<bool>,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Configure-time setup: the sync lease (due now, so the first round runs at
    /// once: a restart starts informed) and this Envoy's instance id, `explicit`
    /// (the config's, or Envoy's node id) or else `random` unless one is stored.
    pub fn fleet_seed(&self, explicit: Option<&str>, random: u64) {
        if self.config.fleet.is_none() {
            return;
        }
        probe::seed(&self.store, LEASE_KEY);
        let _ = read_modify_cas(&self.store, INSTANCE_KEY, 1, |read| Rewrite {
            value: (),
            bytes: match (explicit, read) {
                (Some(i), _) => Some(i.as_bytes().to_vec()),
                (None, None) => Some(format!("envoy-{random:016x}").into_bytes()),
                (None, Some(_)) => None,
            },
        });
    }

    /// This Envoy's instance id in the fleet.
    pub fn fleet_instance(&self) -> String {
        match self.store.get(INSTANCE_KEY) {
            Ok(Some((b, _))) => String::from_utf8_lossy(&b).into_owned(),
            _ => "unknown".to_string(),
        }
    }

    /// The link state.
    pub fn fleet_link(&self) -> Link {
        match self.store.get(LINK_KEY) {
            Ok(Some((b, _))) => serde_json::from_slice(&b).unwrap_or_default(),
            _ => Link::default(),
        }
    }

    /// The timer fired: starts a round if none is in flight here and this worker
    /// wins the sync lease. Returns the first call to send.
    pub fn fleet_start(&self, round: &mut Round, now_ms: u64) -> Option<Call> {
        let f = self.config.fleet.as_ref()?;
        // Held for a whole round's calls; shortened again when the round ends.
        let budget = f.sync_ms.get() + 4 * f.timeout_ms.get();
        let busy = round.in_flight.is_some() || round.unsent.is_some();
        if busy && now_ms < round.started_ms.saturating_add(budget) {
            return None;
        }
        // A round whose answer never came is abandoned (the host always answers or
        // times out a call; this only guards against a lost callback).
        round.in_flight = None;
        round.unsent = None;
        if !probe::claim(&self.store, LEASE_KEY, now_ms, budget) {
            return None;
        }
        round.queue.clear();
        round.started_ms = now_ms;
        round.retried = false;
        round.push(Step::Range);
        self.fleet_next(round)
    }

    /// The next queued call of the round, if any (then [`Worker::fleet_sent`]).
    fn fleet_next(&self, round: &mut Round) -> Option<Call> {
        let f = self.config.fleet.as_ref()?;
        let step = round.queue.pop_front()?;
        let name = |cell: CellId| self.fleet_name(cell);
        let call = match &step {
            Step::Range => etcd::range(&f.key_prefix),
            Step::Push {
                cell, record, rev, ..
            } => {
                let n = name(*cell)?;
                etcd::put_if(
                    &fleet::record_key(&f.key_prefix, &n),
                    &record.encode(),
                    *rev,
                    &fleet::prober_key(&f.key_prefix, &n),
                )
            }
            Step::Grant { .. } => etcd::grant(f.prober_ttl_s),
            Step::Claim { cell, lease } => etcd::create_with_lease(
                &fleet::prober_key(&f.key_prefix, &name(*cell)?),
                &self.fleet_instance(),
                *lease,
            ),
            Step::Handover { cell, .. } => etcd::delete_if_value(
                &fleet::prober_key(&f.key_prefix, &name(*cell)?),
                &self.fleet_instance(),
            ),
            Step::Streaks { ops } => etcd::write_many(ops),
        };
        round.unsent = Some(step);
        Some(call)
    }

    /// The host sent the call from [`Worker::fleet_start`] or
    /// [`Worker::fleet_answered`] (`Some(token)`), or could not.
    pub fn fleet_sent(&self, round: &mut Round, token: Option<u32>, now_ms: u64) -> Report {
        let Some(step) = round.unsent.take() else {
            return Report::default();
        };
        match token {
            Some(t) => {
                round.in_flight = Some((t, step));
                Report::default()
            }
            None => self.fleet_failed(round, "the call could not be sent", now_ms),
        }
    }

    /// An answer to call `token` (`status` `None`: timeout or no connection).
    /// Returns the next call of the round to send, if any, and what to report.
    pub fn fleet_answered(
        &self,
        round: &mut Round,
        token: u32,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> (Option<Call>, Report) {
        let Some((_, step)) = round.in_flight.take_if(|(t, _)| *t == token) else {
            return (None, Report::default());
        };
        let again = step.clone();
        let ok = match step {
            Step::Range => {
                etcd::read_range(status, body).map(|kvs| self.fleet_merge(round, &kvs, now_ms))
            }
            Step::Push {
                cell,
                record,
                epoch,
                ..
            } => etcd::read_txn(status, body).map(|(won, rev)| {
                self.fleet_pushed(cell, record, epoch, won.then_some(rev), now_ms)
            }),
            Step::Grant { cell } => etcd::read_grant(status, body).map(|lease| {
                round.queue.push_front(Step::Claim { cell, lease });
            }),
            Step::Claim { cell, .. } => {
                etcd::read_txn(status, body).map(|(won, _)| self.fleet_claimed(cell, won, now_ms))
            }
            Step::Handover { cell, generation } => etcd::read_txn(status, body)
                .map(|(done, _)| self.fleet_handed_over(cell, generation, done)),
            // The next range read shows them.
            Step::Streaks { .. } => etcd::read_txn(status, body).map(|_| ()),
        };
        match ok {
            // Once per round, a call that got no answer goes out again: the next
            // member of the cluster usually answers (one member down changes nothing).
            Err(etcd::AnswerError::Status(None | Some(503))) if !round.retried => {
                round.retried = true;
                round.queue.push_front(again);
                return (self.fleet_next(round), Report::default());
            }
            Err(e) => return (None, self.fleet_failed(round, &e.to_string(), now_ms)),
            Ok(()) => {}
        }
        if let Some(call) = self.fleet_next(round) {
            return (Some(call), Report::default());
        }
        (None, self.fleet_done(round, now_ms))
    }

    /// The round ended well: the next one is due one `sync_ms` after it started.
    fn fleet_done(&self, round: &mut Round, now_ms: u64) -> Report {
        let sync = self.config.fleet.as_ref().map_or(0, |f| f.sync_ms.get());
        let due = round.started_ms.saturating_add(sync);
        let _ = now_ms;
        let _ = self.store.set(LEASE_KEY, &probe::encode(due), 0);
        self.fleet_set_link(Link {
            connected: true,
            streak: 0,
        })
    }

    /// A call failed: the round ends, the next one waits out the backoff.
    fn fleet_failed(&self, round: &mut Round, why: &str, now_ms: u64) -> Report {
        round.queue.clear();
        round.in_flight = None;
        round.unsent = None;
        let sync = self.config.fleet.as_ref().map_or(0, |f| f.sync_ms.get());
        let old = self.fleet_link();
        let streak = old.streak.saturating_add(1);
        let wait = fleet::backoff_ms(sync, old.streak);
        let _ = self
            .store
            .set(LEASE_KEY, &probe::encode(now_ms.saturating_add(wait)), 0);
        if old.connected || old.streak == 0 {
            log::warn!(
                "llm-breaker: fleet: etcd unreachable ({why}); local breakers only, retrying with backoff"
            );
        }
        let mut r = self.fleet_set_link(Link {
            connected: false,
            streak,
        });
        r.error = true;
        r
    }

    /// Stores the link; reports (and logs) a change.
    fn fleet_set_link(&self, link: Link) -> Report {
        let old = self.fleet_link();
        let bytes = serde_json::to_vec(&link).unwrap_or_default();
        let _ = self.store.set(LINK_KEY, &bytes, 0);
        if link.connected && !old.connected {
            log::info!("llm-breaker: fleet: etcd reachable, fleet sync on");
        }
        let changed =
            old.connected != link.connected || (old == Link::default() && !link.connected);
        Report {
            error: false,
            connected: changed.then_some(link.connected),
        }
    }

    /// The etcd name of a breaker cell: `upstream` or `upstream|model`.
    pub fn fleet_name(&self, cell: CellId) -> Option<String> {
        let c = self.config.cells.get(cell.index())?;
        let up = self.config.upstream(c.upstream)?;
        Some(match &c.model {
            None => up.name.clone(),
            Some(m) => format!("{}|{m}", up.name),
        })
    }

    /// A cell's fleet view.
    pub fn fleet_view(&self, cell: CellId) -> View {
        let Some(rec) = self.cell(cell) else {
            return View::default();
        };
        match self.store.get(&view_key(&rec.key)) {
            Ok(Some((b, _))) => View::decode(&b),
            _ => View::default(),
        }
    }

    /// Changes a cell's fleet view in shared data.
    fn fleet_edit_view(&self, cell: CellId, f: impl Fn(&mut View)) {
        let Some(rec) = self.cell(cell) else {
            return;
        };
        let _ = read_modify_cas(&self.store, &view_key(&rec.key), 8, |read| {
            let mut v = read.map(View::decode).unwrap_or_default();
            f(&mut v);
            Rewrite {
                value: (),
                bytes: Some(v.encode()),
            }
        });
    }

    /// Notes the reason of a local transition (not one applied from the fleet), for
    /// the record the next round writes, and brings that round forward to the next
    /// tick: the sync lease, when idle (due within one `sync_ms`), becomes due now.
    /// A round in flight holds it further ahead and is left alone.
    pub fn fleet_note(&self, cell: CellId, reason: crate::breaker::Reason, now_ms: u64) {
        let Some(f) = self.config.fleet.as_ref() else {
            return;
        };
        if reason == crate::breaker::Reason::Fleet {
            return;
        }
        self.fleet_edit_view(cell, |v| v.reason = Some(reason.as_str().to_string()));
        let idle_until = now_ms.saturating_add(f.sync_ms.get());
        let _ = read_modify_cas(&self.store, LEASE_KEY, 1, |read| {
            let idle = read.is_some_and(|b| probe::due_ms(b) <= idle_until);
            Rewrite {
                value: (),
                bytes: idle.then(|| probe::encode(now_ms)),
            }
        });
    }
}
