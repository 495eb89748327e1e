//! The transition history shown by the status endpoint and the dashboard: the last
//! N transitions of every breaker, kept as one bounded ring in shared data so that
//! all workers append to, and read, the same list. Pure: [`append`] works through
//! [`SharedStore`] through the same read-modify-CAS helper as the breaker state.

use crate::breaker::{PhaseKind, Reason, Transition};
use crate::ids::CellId;
use crate::store::{self, Rewrite, SharedStore};

/// Version byte of the ring's encoding.
const VERSION: u8 = 1;
/// Bytes per entry: time (8), cell (2), from, to, reason.
const ENTRY: usize = 13;

/// Shared-data key of the ring.
pub const KEY: &str = "llm_breaker.history.v1";

/// One recorded transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// When (unix ms).
    pub at_ms: u64,
    /// The breaker cell (index into the config's cells).
    pub cell: u16,
    /// Phase before.
    pub from: PhaseKind,
    /// Phase after.
    pub to: PhaseKind,
    /// Why.
    pub reason: Reason,
}

impl Entry {
    /// The entry for `t` of `cell` at `at_ms`.
    pub fn of(cell: CellId, t: &Transition, at_ms: u64) -> Entry {
        Entry {
            at_ms,
            cell: u16::try_from(cell.index()).unwrap_or(u16::MAX),
            from: t.from,
            to: t.to,
            reason: t.reason,
        }
    }
}

fn code<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter()
        .position(|x| x == v)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// Encodes entries, oldest first.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + entries.len() * ENTRY);
    out.push(VERSION);
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap_or(0).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.at_ms.to_le_bytes());
        out.extend_from_slice(&e.cell.to_le_bytes());
        out.push(code(&PhaseKind::ALL, &e.from));
        out.push(code(&PhaseKind::ALL, &e.to));
        out.push(code(&Reason::ALL, &e.reason));
    }
    out
}

/// Decodes a ring, oldest first; anything that does not decode is an empty ring
/// (the history is informational: garbage is dropped, never trusted).
pub fn decode(bytes: &[u8]) -> Vec<Entry> {
    let (Some(&VERSION), Some(n)) = (bytes.first(), bytes.get(1..3)) else {
        return Vec::new();
    };
    let n = usize::from(u16::from_le_bytes([n[0], n[1]]));
    let body = &bytes[3..];
    if body.len() != n * ENTRY {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    for c in body.chunks_exact(ENTRY) {
        let mut at = [0u8; 8];
        at.copy_from_slice(&c[..8]);
        let entry = (|| {
            Some(Entry {
                at_ms: u64::from_le_bytes(at),
                cell: u16::from_le_bytes([c[8], c[9]]),
                from: *PhaseKind::ALL.get(usize::from(c[10]))?,
                to: *PhaseKind::ALL.get(usize::from(c[11]))?,
                reason: *Reason::ALL.get(usize::from(c[12]))?,
            })
        })();
        match entry {
            Some(e) => out.push(e),
            None => return Vec::new(),
        }
    }
    out
}

/// Appends `entry`, keeping the newest `capacity`, through
/// [`store::read_modify_cas`]. Returns whether it was written (gives up after
/// contention or a host error: the history is informational and never blocks a
/// request).
pub fn append<S: SharedStore + ?Sized>(store: &S, entry: Entry, capacity: usize) -> bool {
    store::read_modify_cas(store, KEY, store::MAX_ATTEMPTS, |read| {
        let mut entries = read.map(decode).unwrap_or_default();
        entries.push(entry);
        let excess = entries.len().saturating_sub(capacity.max(1));
        entries.drain(..excess);
        Rewrite {
            value: (),
            bytes: Some(encode(&entries)),
        }
    })
    .is_ok()
}

/// The ring, newest first.
pub fn read<S: SharedStore + ?Sized>(store: &S) -> Vec<Entry> {
    let mut v = match store.get(KEY) {
        Ok(Some((bytes, _))) => decode(&bytes),
        _ => Vec::new(),
    };
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn entry(at_ms: u64, cell: u16) -> Entry {
        Entry {
            at_ms,
            cell,
            from: PhaseKind::Closed,
            to: PhaseKind::Isolated,
            reason: Reason::OperatorIsolate,
        }
    }

    #[test]
    fn keeps_the_newest_entries_newest_first() {
        let s = MemoryStore::default();
        for i in 0..7 {
            assert!(append(&s, entry(i, 1), 5));
        }
        let got: Vec<u64> = read(&s).iter().map(|e| e.at_ms).collect();
        assert_eq!(got, [6, 5, 4, 3, 2]);
    }

    #[test]
    fn every_phase_and_reason_round_trips() {
        let entries: Vec<Entry> = Reason::ALL
            .iter()
            .zip(PhaseKind::ALL.iter().cycle())
            .enumerate()
            .map(|(i, (&reason, &to))| Entry {
                at_ms: i as u64,
                cell: i as u16,
                from: PhaseKind::HalfOpen,
                to,
                reason,
            })
            .collect();
        assert_eq!(decode(&encode(&entries)), entries);
    }

    #[test]
    fn garbage_reads_as_empty_and_is_replaced_by_the_next_append() {
        let s = MemoryStore::default();
        for bad in [
            &b""[..],
            b"\x01",
            b"\x09\x01\x00",
            b"\x01\x01\x00abc",
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9][..],
        ] {
            assert_eq!(decode(bad), vec![], "{bad:?}");
            s.put_raw(KEY, bad);
            assert!(append(&s, entry(1, 0), 10));
            assert_eq!(read(&s), vec![entry(1, 0)]);
        }
    }

    #[test]
    fn random_bytes_never_panic_and_decode_only_as_what_they_encode() {
        let mut x = 3u64;
        let mut rand = move || {
            x = crate::backoff::splitmix64(x);
            x
        };
        for len in 0..600 {
            let mut bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // Half of them with a plausible head: the version and the right count.
            if len % 2 == 0 && len >= 3 {
                let n = u16::try_from((len - 3) / ENTRY).unwrap();
                bytes[0] = VERSION;
                bytes[1..3].copy_from_slice(&n.to_le_bytes());
                for c in bytes[3..].chunks_exact_mut(ENTRY) {
                    c[10] %= 5;
                    c[11] %= 5;
                    c[12] = (rand() % Reason::ALL.len() as u64) as u8;
                }
            }
            let entries = decode(&bytes);
            if !entries.is_empty() {
                assert_eq!(encode(&entries), bytes);
            }
        }
    }
}
