//! Coordination of active recovery probes: while an upstream is open, exactly one
//! worker at a time sends its health request. Every worker ticks; the one that
//! wins a CAS on the upstream's lease key (which says when the next probe is due)
//! probes, and the others see the new due time and wait. A holder that dies costs
//! nothing: the lease simply comes due again one interval later. Pure: works
//! through [`SharedStore`].

use crate::store::{read_modify_cas, Rewrite, SharedStore};

/// Version byte of the lease encoding.
const VERSION: u8 = 1;

/// Shared-data key of an upstream's probe lease.
pub fn key(upstream: &str) -> String {
    format!("llm_breaker.probe.v1.{upstream}")
}

/// Encodes "the next probe is due at `due_ms`".
pub fn encode(due_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(VERSION);
    out.extend_from_slice(&due_ms.to_le_bytes());
    out
}

/// The due time in a lease; garbage reads as due now (0).
pub fn due_ms(bytes: &[u8]) -> u64 {
    match (bytes.first(), bytes.get(1..9)) {
        (Some(&VERSION), Some(d)) if bytes.len() == 9 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(d);
            u64::from_le_bytes(a)
        }
        _ => 0,
    }
}

/// Creates the lease key (due now) if absent; run at configure time, since a `set`
/// on an absent key ignores the CAS token.
pub fn seed<S: SharedStore + ?Sized>(store: &S, key: &str) {
    let _ = read_modify_cas(store, key, 1, |read| Rewrite {
        value: (),
        bytes: read.is_none().then(|| encode(0)),
    });
}

/// Claims the probe due now, if any: one read-modify-CAS attempt, so among workers
/// ticking at once exactly one wins. On success the next probe is due `interval_ms`
/// later. An absent lease is never claimed (it is seeded at configure time).
pub fn claim<S: SharedStore + ?Sized>(store: &S, key: &str, now_ms: u64, interval_ms: u64) -> bool {
    let claimed = read_modify_cas(store, key, 1, |read| {
        let due = read.is_some_and(|b| due_ms(b) <= now_ms);
        Rewrite {
            value: due,
            bytes: due.then(|| encode(now_ms.saturating_add(interval_ms))),
        }
    });
    claimed == Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_claim_per_interval_whoever_asks() {
        let s = MemoryStore::default();
        let k = key("openai");
        seed(&s, &k);
        let mut wins = 0;
        // Two workers ticking every 250 ms for 10 s, interval 1 s.
        for t in (0..10_000).step_by(250) {
            for _worker in [1, 2] {
                if claim(&s, &k, t, 1000) {
                    wins += 1;
                }
            }
        }
        assert_eq!(wins, 10);
    }

    #[test]
    fn a_stale_read_loses_the_race() {
        let s = MemoryStore::default();
        let k = key("a");
        seed(&s, &k);
        let (_, cas) = s.get(&k).unwrap().unwrap();
        assert!(claim(&s, &k, 5, 1000));
        // Another worker that read before the claim cannot write over it.
        assert!(matches!(
            s.set(&k, &encode(1005), cas),
            Err(crate::store::StoreError::CasMismatch)
        ));
        assert!(!claim(&s, &k, 6, 1000));
    }

    #[test]
    fn garbage_is_due_now_and_is_replaced() {
        let s = MemoryStore::default();
        let k = key("a");
        for bad in [&b""[..], b"\x07", &[1; 8][..], &[1; 30][..]] {
            assert_eq!(due_ms(bad), 0);
            s.put_raw(&k, bad);
            assert!(claim(&s, &k, 100, 1000));
            assert_eq!(due_ms(&s.get(&k).unwrap().unwrap().0), 1100);
        }
    }
}
