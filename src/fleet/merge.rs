//! The merge rules between a local breaker and its fleet record, and the prober
//! election's local side. Pure: state in, decision out.
//!
//! - A fleet record newer than the one this Envoy last saw is applied locally,
//!   unless the local breaker changed since the last sync *and* its change is
//!   later (wall clock `since_ms`): then the local state is written over it.
//! - A local change (a trip, probes that closed it, an operator action) with no
//!   newer fleet record is written to the fleet. Half-open is never written: the
//!   fleet stays open until the prober's result (closed or open again) arrives.
//! - Once the fleet's open period is over, exactly one Envoy holds the prober key
//!   (an etcd key on a lease): it lets its breaker go half-open; the others hold
//!   theirs open until the prober reports. A prober with no traffic to probe with
//!   hands the key over ([`crate::worker::fleet`]).

use super::record::{FleetRecord, FleetState, VERSION};
use crate::breaker::PhaseKind;
use serde::{Deserialize, Serialize};

/// The local breaker as the sync sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Phase.
    pub kind: PhaseKind,
    /// Epoch (bumped on every transition).
    pub epoch: u32,
    /// When the phase began (unix ms).
    pub since_ms: u64,
    /// End of the open period, when open.
    pub until_ms: Option<u64>,
}

/// What this Envoy last knew of one breaker's fleet record, kept in shared data so
/// every worker (and `status`) sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct View {
    /// etcd `mod_revision` of the record last applied or written (0: none).
    pub rev: u64,
    /// That record.
    pub record: Option<FleetRecord>,
    /// The local epoch that matches the record (`None`: never synced).
    pub synced_epoch: Option<u32>,
    /// Reason of the last local transition not caused by the fleet.
    pub reason: Option<String>,
    /// Instance holding the prober key, as last read.
    pub prober: Option<String>,
    /// Generation of the record whose prober key this Envoy handed over (it had no
    /// traffic to probe with): it does not claim again for that record.
    pub handed: Option<u64>,
    /// The other instances' fresh failure streaks, summed, as of the last round.
    pub failures_elsewhere: u32,
}

impl View {
    /// Reads a view from shared data; garbage reads as empty.
    pub fn decode(bytes: &[u8]) -> View {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// The bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What to do with one breaker after a fleet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed on either side.
    Nothing,
    /// The local change needs no write (the fleet already says so): note it synced.
    Synced,
    /// Apply the fleet's record (at revision `rev`) to the local breaker.
    Apply(FleetRecord, u64),
    /// Write this record to the fleet if its revision is still `rev`.
    Push(FleetRecord, u64),
}

fn state_of(kind: PhaseKind) -> Option<FleetState> {
    match kind {
        PhaseKind::Closed => Some(FleetState::Closed),
        PhaseKind::Open => Some(FleetState::Open),
        PhaseKind::Isolated => Some(FleetState::Isolated),
        PhaseKind::HalfOpen => None,
    }
}

/// The record that says what `local` says.
fn record_of(
    local: &Local,
    state: FleetState,
    view: &View,
    generation: u64,
    me: &str,
) -> FleetRecord {
    FleetRecord {
        v: VERSION,
        state,
        until_ms: if state == FleetState::Open {
            local.until_ms.unwrap_or(0)
        } else {
            0
        },
        since_ms: local.since_ms,
        reason: view
            .reason
            .clone()
            .unwrap_or_else(|| state.as_str().to_string()),
        instance: me.to_string(),
        generation: generation.saturating_add(1),
    }
}

/// Whether the fleet record already says what the local breaker says.
fn agrees(local: &Local, state: FleetState, fleet: Option<&FleetRecord>) -> bool {
    match fleet {
        None => state == FleetState::Closed,
        Some(r) => {
            r.state == state && (state != FleetState::Open || local.until_ms == Some(r.until_ms))
        }
    }
}

/// Decides one breaker: `fetched` is its record as just read (with its
/// `mod_revision`), `None` if etcd has none (or only garbage).
pub fn decide(
    local: &Local,
    view: &View,
    fetched: Option<(&FleetRecord, u64)>,
    me: &str,
) -> Decision {
    let fleet_rev = fetched.map_or(0, |(_, rev)| rev);
    let fleet_changed = fleet_rev > view.rev;
    let local_changed = match view.synced_epoch {
        Some(e) => e != local.epoch,
        // Never synced: only a breaker that is not closed has something to say.
        None => local.kind != PhaseKind::Closed,
    };
    let pushable = state_of(local.kind);
    let generation = fetched.map_or(0, |(r, _)| r.generation);
    if let (true, Some((record, rev))) = (fleet_changed, fetched) {
        return match pushable {
            Some(state) if local_changed && local.since_ms > record.since_ms => {
                Decision::Push(record_of(local, state, view, generation, me), rev)
            }
            _ => Decision::Apply(record.clone(), rev),
        };
    }
    if !local_changed {
        return Decision::Nothing;
    }
    let current = fetched.map(|(r, _)| r).or(view.record.as_ref());
    match pushable {
        None => Decision::Nothing,
        Some(state) if agrees(local, state, current) => Decision::Synced,
        Some(state) => Decision::Push(record_of(local, state, view, generation, me), fleet_rev),
    }
}

/// The prober election's local side, for a breaker whose fleet record is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prober {
    /// The open period is not over: hold the breaker open until its end (plus the
    /// hold margin).
    Wait,
    /// This Envoy is the prober: let the breaker go half-open now.
    Probe,
    /// Another Envoy probes: keep the breaker open.
    Hold,
    /// Nobody probes yet: try to take the prober key.
    Claim,
}

/// Who probes a breaker whose fleet record is `record`, given the prober key's
/// holder as read.
pub fn prober(record: &FleetRecord, holder: Option<&str>, me: &str, now_ms: u64) -> Option<Prober> {
    if record.state != FleetState::Open {
        return None;
    }
    Some(match holder {
        _ if now_ms < record.until_ms => Prober::Wait,
        Some(h) if h == me => Prober::Probe,
        Some(_) => Prober::Hold,
        None => Prober::Claim,
    })
}

#[cfg(test)]
mod tests;
