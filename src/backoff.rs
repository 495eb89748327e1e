//! How long an open breaker stays open: exponential growth per re-open, capped, with
//! deterministic jitter derived from a seed (no randomness source needed in wasm).

use crate::config::OpenPolicy;

/// Open duration in ms for the `reopens`-th open since the last full close
/// (0 = first trip). `seed` spreads breakers that trip at the same moment.
pub fn open_duration_ms(policy: &OpenPolicy, reopens: u32, seed: u64) -> u64 {
    let base = policy.base_ms.get() as f64;
    let grown = base * policy.multiplier.powi(reopens.min(1000) as i32);
    let capped = grown.min(policy.max_ms.get() as f64);
    // r in [-1, 1]
    let r = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let jittered = capped * (1.0 + policy.jitter * r);
    let ms = jittered.min(policy.max_ms.get() as f64).max(1.0);
    if ms.is_finite() {
        ms as u64
    } else {
        policy.max_ms.get()
    }
}

/// A well-mixed 64-bit hash step.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Reproducible noise for tests: numbers below `n`, from [`splitmix64`] over a
/// counter starting at `seed`.
#[cfg(test)]
pub(crate) fn noise(seed: u64) -> impl FnMut(usize) -> usize {
    let mut counter = seed;
    move |n| {
        counter = counter.wrapping_add(1);
        (splitmix64(counter) % n.max(1) as u64) as usize
    }
}

/// FNV-1a of a string, to fold names into seeds.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Millis;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn policy(jitter: f64) -> OpenPolicy {
        OpenPolicy {
            base_ms: Millis(30_000),
            max_ms: Millis(300_000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_by_the_multiplier_per_reopen_and_stops_at_the_cap() {
        let p = policy(0.0);
        let got: Vec<u64> = (0..6).map(|k| open_duration_ms(&p, k, 7)).collect();
        assert_eq!(
            got,
            vec![30_000, 60_000, 120_000, 240_000, 300_000, 300_000]
        );
        assert_eq!(open_duration_ms(&p, u32::MAX, 7), 300_000);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_varies_with_the_seed() {
        let p = policy(0.1);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let d = open_duration_ms(&p, 0, seed);
            assert!((27_000..=33_000).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 100);
        // The cap holds even with jitter.
        for seed in 0..100 {
            assert!(open_duration_ms(&p, 10, seed) <= 300_000);
        }
    }
}
