//! Breaker state in a shared key-value store with compare-and-swap (Envoy shared
//! data in production, [`MemoryStore`] in tests): one key per upstream, updated
//! through a bounded read-modify-CAS loop so every worker sees one count.

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

/// Reads the upstream's state, applies `f`, and writes it back if `f` changed it,
/// retrying from a fresh read on CAS conflicts.
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
    mut f: impl FnMut(&mut Breaker) -> Step<T>,
) -> Result<Updated<T>, UpdateError> {
    for _ in 0..MAX_ATTEMPTS {
        let (mut state, cas, reset) = load(store, key, cfg, now_ms)?;
        let conformed = state.conform(cfg);
        let step = f(&mut state);
        if !(step.changed || conformed || reset.is_some() || cas.is_none()) {
            return Ok(Updated {
                value: step.value,
                transition: step.transition,
                reset,
                state,
            });
        }
        match store.set(key, &codec::encode(&state), cas.unwrap_or(0)) {
            Ok(()) => {
                return Ok(Updated {
                    value: step.value,
                    transition: step.transition,
                    reset,
                    state,
                })
            }
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host(s)) => return Err(UpdateError::Host(s)),
        }
    }
    Err(UpdateError::Contention)
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
            Some(Head::Closed { epoch, consecutive }) => Some((
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
        Some(Head::Closed { epoch: e, consecutive: 0 }) if e == epoch
    )
}

/// Reads the upstream's state without changing it (undecodable bytes read as closed).
pub fn peek<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> Result<Breaker, UpdateError> {
    load(store, key, cfg, now_ms).map(|(s, _, _)| s)
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
    match store.get(key) {
        Ok(Some(_)) => Ok(false),
        Ok(None) => store
            .set(key, &codec::encode(&Breaker::new(cfg, now_ms)), 0)
            .map(|()| true)
            .map_err(|e| match e {
                StoreError::CasMismatch => UpdateError::Contention,
                StoreError::Host(s) => UpdateError::Host(s),
            }),
        Err(StoreError::Host(s)) => Err(UpdateError::Host(s)),
        Err(StoreError::CasMismatch) => Err(UpdateError::Contention),
    }
}

type Loaded = (Breaker, Option<u32>, Option<DecodeError>);

fn load<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    cfg: &BreakerConfig,
    now_ms: u64,
) -> Result<Loaded, UpdateError> {
    match store.get(key) {
        Ok(Some((bytes, cas))) => match codec::decode(&bytes) {
            Ok(state) => Ok((state, Some(cas), None)),
            Err(e) => Ok((Breaker::new(cfg, now_ms), Some(cas), Some(e))),
        },
        Ok(None) => Ok((Breaker::new(cfg, now_ms), None, None)),
        Err(StoreError::Host(s)) => Err(UpdateError::Host(s)),
        Err(StoreError::CasMismatch) => Err(UpdateError::Contention),
    }
}

/// An in-memory [`SharedStore`] with Envoy's semantics, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_cas: u32,
    map: std::collections::HashMap<String, (Vec<u8>, u32)>,
}

impl MemoryStore {
    /// Overwrites a key with arbitrary bytes (to simulate corruption).
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        let _ = self.set(key, bytes, 0);
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let m = self.inner.lock().map_err(|_| StoreError::Host(10))?;
        Ok(m.map.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut m = self.inner.lock().map_err(|_| StoreError::Host(10))?;
        if let Some((_, current)) = m.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        m.next_cas = m.next_cas.wrapping_add(1).max(1);
        let token = m.next_cas;
        m.map.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
