//! The admission cache: what this worker last read of a breaker cell, and how long
//! that read may answer instead of another shared-data read. Only real reads
//! refresh it, so an answer never outlives its window, and a denial never outlives
//! its end (the next request then reads, and may be the probe).

use crate::breaker::{Admission, Ticket};

/// How recent this worker's last read of a breaker must be to decide from it, without
/// another read, that a completing success may be held (see [`Seen::quiet`]).
pub const SEEN_FRESH_MS: u64 = 20;

/// What a read of a breaker cell said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Admitting in `epoch`, closed with no failure streak.
    Quiet {
        /// Breaker epoch.
        epoch: u32,
    },
    /// Admitting in `epoch`, but not quiet (a failure streak, or half-open).
    Busy {
        /// Breaker epoch.
        epoch: u32,
    },
    /// Denying admission until `until_ms` (open, isolated, or half-open with every
    /// permit taken).
    Denied {
        /// When it may admit again.
        until_ms: u64,
    },
}

/// This worker's last read of a breaker cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// What it said.
    pub read: Read,
    /// When it was read.
    pub at_ms: u64,
}

impl Seen {
    /// A read admitting in `epoch` (quiet or not) at `at_ms`.
    pub fn admitting(epoch: u32, quiet: bool, at_ms: u64) -> Seen {
        let read = if quiet {
            Read::Quiet { epoch }
        } else {
            Read::Busy { epoch }
        };
        Seen { read, at_ms }
    }

    /// Answers an admission from this read if it was made at most `ttl_ms` ago:
    /// admitted if it was quiet, denied if it denied until a time still ahead.
    pub fn admit(&self, ttl_ms: u64, now_ms: u64) -> Option<Admission> {
        self.admit_for(ttl_ms, ttl_ms, now_ms)
    }

    /// [`Seen::admit`], a quiet read answering for `quiet_ttl_ms` instead (at least
    /// `ttl_ms`; 0 keeps it off).
    pub fn admit_for(&self, ttl_ms: u64, quiet_ttl_ms: u64, now_ms: u64) -> Option<Admission> {
        let fresh = |ttl: u64| ttl != 0 && self.at_ms.saturating_add(ttl) >= now_ms;
        let quiet = matches!(self.read, Read::Quiet { .. });
        let answers = fresh(ttl_ms) || (ttl_ms != 0 && quiet && fresh(quiet_ttl_ms));
        if !answers {
            return None;
        }
        match self.read {
            Read::Quiet { epoch } => Some(Admission::Admitted(Ticket {
                epoch,
                permit: None,
            })),
            Read::Denied { until_ms } if now_ms < until_ms => Some(Admission::Denied {
                retry_at_ms: until_ms,
            }),
            _ => None,
        }
    }

    /// Whether the breaker is closed in `epoch` with no failure streak, if this read
    /// is fresh enough to tell ([`SEEN_FRESH_MS`]). A read of another epoch does not
    /// tell, except a denial: a breaker that denied left closed, and comes back only
    /// in a new epoch.
    pub fn quiet(&self, epoch: u32, now_ms: u64) -> Option<bool> {
        if self.at_ms.saturating_add(SEEN_FRESH_MS) < now_ms {
            return None;
        }
        match self.read {
            Read::Quiet { epoch: e } => (e == epoch).then_some(true),
            Read::Busy { epoch: e } => (e == epoch).then_some(false),
            Read::Denied { .. } => Some(false),
        }
    }
}
