//! Breaker state in a shared key-value store with compare-and-swap (Envoy shared
//! data in production, [`MemoryStore`] in tests): one key per breaker cell, updated
//! through [`read_modify_cas`], the one bounded read-modify-CAS loop of the crate
//! (the history ring and the probe lease use it too), so every worker sees one count.

use crate::breaker::{Admission, Breaker, Step, Ticket, Transition};
use crate::codec::{self, DecodeError, Head};
use crate::config::BreakerConfig;
use std::fmt;

/// How many times an update re-reads and retries after losing a CAS race.
pub const MAX_ATTEMPTS: u32 = 64;

/// Errors of a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the key since it was read.
    CasMismatch,
    /// The host refused with this status code.
    Host(u32),
}

/// A key-value store with compare-and-swap, shared by all workers.
pub trait SharedStore {
    /// The value and its CAS token, or `None` if the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's token is still `cas` (0 = unconditional).
    /// Like Envoy, a key that does not exist yet is written whatever `cas` is.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// Why an update did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a CAS race.
    Contention,
    /// The host refused a read or write.
    Host(u32),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Contention => write!(f, "gave up after {MAX_ATTEMPTS} CAS conflicts"),
            UpdateError::Host(s) => write!(f, "shared data call failed with status {s}"),
        }
    }
}

/// The result of a successful update.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated<T> {
    /// What the applied function returned.
    pub value: T,
    /// The phase change it caused, if any.
    pub transition: Option<Transition>,
    /// Set when the stored bytes did not decode and the upstream was reset to closed.
    pub reset: Option<DecodeError>,
    /// The state after the update (or as read, if unchanged).
    pub state: Breaker,
}

/// Shared-data key of an upstream's breaker (built once per configuration: the
/// functions below take the key, so the request path doesn't format it again).
pub fn key(upstream: &str) -> String {
    format!("llm_breaker.v{}.{upstream}", codec::VERSION)
}

/// Shared-data key of a breaker cell: the upstream's, or for a model-scoped breaker
/// the upstream's with `|<model>` (`*` for models without their own).
pub fn cell_key(upstream: &str, model: Option<&str>) -> String {
    match model {
        None => key(upstream),
        Some(m) => format!("{}|{m}", key(upstream)),
    }
}

/// What one read-modify-CAS step decided: its answer, and the bytes to write
/// (`None`: leave the key as it is).
#[derive(Debug)]
pub struct Rewrite<T> {
    /// The step's answer, returned once its write (if any) lands.
    pub value: T,
    /// The new encoding, written with the token of the read it came from.
    pub bytes: Option<Vec<u8>>,
}

/// The one read-modify-CAS loop: reads `key`, lets `step` decode what is there
/// (`None`: never written), decide and encode, and writes the result with the read's
/// CAS token. A lost race re-reads and runs `step` again, at most `attempts` times
/// in all; a host error ends it at once.
pub fn read_modify_cas<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    attempts: u32,
    mut step: impl FnMut(Option<&[u8]>) -> Rewrite<T>,
) -> Result<T, UpdateError> {
    for _ in 0..attempts {
        let read = store.get(key).map_err(UpdateError::from)?;
        let (bytes, cas) = match &read {
            Some((bytes, cas)) => (Some(bytes.as_slice()), *cas),
            None => (None, 0),
        };
        let Rewrite { value, bytes } = step(bytes);
        let Some(bytes) = bytes else {
            return Ok(value);
        };
        match store.set(key, &bytes, cas) {
            Ok(()) => return Ok(value),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host(s)) => return Err(UpdateError::Host(s)),
        }
    }
    Err(UpdateError::Contention)
}

impl From<StoreError> for UpdateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CasMismatch => UpdateError::Contention,
            StoreError::Host(s) => UpdateError::Host(s),
        }
    }
}

/// Reads the upstream's state, applies `f`, and writes it back if `f` changed it
/// (or the stored bytes were absent, undecodable or of another window shape),
/// through [`read_modify_cas`].
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
    mut f: impl FnMut(&mut Breaker) -> Step<T>,
) -> Result<Updated<T>, UpdateError> {
    read_modify_cas(store, key, MAX_ATTEMPTS, |read| {
        let (mut state, reset) = decode_or_new(read, cfg, now_ms);
        let conformed = state.conform(cfg);
        let step = f(&mut state);
        let write = step.changed || conformed || reset.is_some() || read.is_none();
        Rewrite {
            bytes: write.then(|| codec::encode(&state)),
            value: Updated {
                value: step.value,
                transition: step.transition,
                reset,
                state,
            },
        }
    })
}

/// The result of [`admit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The breaker's answer.
    pub admission: Admission,
    /// The breaker was closed with no failure streak when read.
    pub quiet: bool,
    /// A phase change the admission caused (open → half-open).
    pub transition: Option<Transition>,
    /// Set when the stored bytes did not decode and were reset.
    pub reset: Option<DecodeError>,
}

/// Asks the upstream's breaker whether a request may go there now. A closed
/// breaker, or one still inside its open period, is answered from the head of its
/// encoding (one read, no decode, no write); the rest goes through [`update`].
pub fn admit<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> Result<Admitted, UpdateError> {
    if let Ok(Some((bytes, _))) = store.get(key) {
        let admission = match codec::peek(&bytes) {
            Some(Head::Closed {
                epoch, consecutive, ..
            }) => Some((
                Admission::Admitted(Ticket {
                    epoch,
                    permit: None,
                }),
                consecutive == 0,
            )),
            Some(Head::Open { since_ms, until_ms })
                if now_ms < until_ms
                    && crate::breaker::open_end_plausible(cfg, since_ms, until_ms, now_ms) =>
            {
                Some((
                    Admission::Denied {
                        retry_at_ms: until_ms,
                    },
                    false,
                ))
            }
            _ => None,
        };
        if let Some((admission, quiet)) = admission {
            return Ok(Admitted {
                admission,
                quiet,
                transition: None,
                reset: None,
            });
        }
    }
    update(store, key, cfg, now_ms, |b| b.admit(cfg, now_ms)).map(|u| Admitted {
        admission: u.value,
        quiet: u.state.is_quiet(),
        transition: u.transition,
        reset: u.reset,
    })
}

/// Whether the upstream's breaker is, right now, closed in `epoch` with no failure
/// streak: then a fast success changes nothing but the window's call count and may
/// be held and written later in a batch. One read, no decode.
pub fn quiet_now<S: SharedStore + ?Sized>(store: &S, key: &str, epoch: u32) -> bool {
    matches!(
        store.get(key).ok().flatten().and_then(|(b, _)| codec::peek(&b)),
        Some(Head::Closed { epoch: e, consecutive: 0, .. }) if e == epoch
    )
}

/// The epoch of the upstream's breaker and when it closed, if it is closed now
/// (streak or not). One read, no decode.
pub fn closed_since<S: SharedStore + ?Sized>(store: &S, key: &str) -> Option<(u32, u64)> {
    match store
        .get(key)
        .ok()
        .flatten()
        .and_then(|(b, _)| codec::peek(&b))
    {
        Some(Head::Closed {
            epoch, since_ms, ..
        }) => Some((epoch, since_ms)),
        _ => None,
    }
}

/// Reads the upstream's state without changing it (undecodable bytes read as closed).
pub fn peek<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> Result<Breaker, UpdateError> {
    let read = store.get(key)?;
    Ok(decode_or_new(read.as_ref().map(|(b, _)| b.as_slice()), cfg, now_ms).0)
}

/// Whether the breaker is open now: from the head of its encoding when that says
/// closed or open (one read, no decode), else from a full read.
pub fn is_open<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> bool {
    let head = store
        .get(key)
        .ok()
        .flatten()
        .and_then(|(b, _)| codec::peek(&b));
    match head {
        Some(Head::Closed { .. }) => false,
        Some(Head::Open { .. }) => true,
        None => peek(store, key, cfg, now_ms)
            .is_ok_and(|b| matches!(b.phase, crate::breaker::Phase::Open { .. })),
    }
}

/// Writes a closed state for the upstream if its key does not exist yet. Run at
/// configuration time, so the request path rarely meets an absent key (Envoy's
/// `set` on an absent key ignores the CAS token, so creation is not atomic).
pub fn seed<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> Result<bool, UpdateError> {
    read_modify_cas(store, key, 1, |read| {
        let absent = read.is_none();
        Rewrite {
            value: absent,
            bytes: absent.then(|| codec::encode(&Breaker::new(cfg, now_ms))),
        }
    })
}

/// The stored state, or a new closed one when the key is absent or its bytes do not
/// decode (with the reason, so the caller can report the reset).
fn decode_or_new(
    read: Option<&[u8]>,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> (Breaker, Option<DecodeError>) {
    match read.map(codec::decode) {
        Some(Ok(state)) => (state, None),
        Some(Err(e)) => (Breaker::new(cfg, now_ms), Some(e)),
        None => (Breaker::new(cfg, now_ms), None),
    }
}

mod memory;
pub use memory::MemoryStore;

#[cfg(test)]
mod tests;
