//! Sliding windows of outcomes for the failure-rate and slow-call-rate rules: a
//! time window of fixed buckets, or a ring of the last N calls. Both are small and
//! fixed-size so they encode into a few hundred bytes of shared data.

use crate::config::WindowSpec;
pub use crate::config::MAX_CALLS;

/// Most buckets a time window is split into.
pub const MAX_BUCKETS: u32 = 20;

/// Totals over the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Outcomes recorded.
    pub calls: u32,
    /// Of which failures.
    pub failures: u32,
    /// Of which slow.
    pub slow: u32,
}

/// One time bucket: the absolute bucket number it holds counts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// `now_ms / bucket_ms` at the time these counts were taken.
    pub index: u64,
    /// Totals in this bucket.
    pub totals: Totals,
}

/// A sliding window of outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The last `buckets.len() * bucket_ms` milliseconds.
    Time {
        /// Width of one bucket.
        bucket_ms: u64,
        /// Ring of buckets, slot = index % len.
        buckets: Vec<Bucket>,
    },
    /// The last `capacity` outcomes, as two bit rings.
    Count {
        /// Window length.
        capacity: u16,
        /// Outcomes held (≤ capacity).
        len: u16,
        /// Slot the next outcome goes into.
        next: u16,
        /// Failure bit per slot.
        failed: Vec<u8>,
        /// Slow bit per slot.
        slow: Vec<u8>,
    },
}

impl Window {
    /// An empty window of the configured shape.
    pub fn new(spec: WindowSpec) -> Window {
        match spec {
            WindowSpec::Seconds(s) => {
                let (n, bucket_ms) = time_shape(s);
                Window::Time {
                    bucket_ms,
                    buckets: vec![Bucket::default(); n as usize],
                }
            }
            WindowSpec::Calls(c) => {
                let capacity = count_shape(c);
                let bytes = usize::from(capacity).div_ceil(8);
                Window::Count {
                    capacity,
                    len: 0,
                    next: 0,
                    failed: vec![0; bytes],
                    slow: vec![0; bytes],
                }
            }
        }
    }

    /// Whether this window has the shape `spec` asks for (it may not after a config change).
    pub fn fits(&self, spec: WindowSpec) -> bool {
        match (self, spec) {
            (Window::Time { bucket_ms, buckets }, WindowSpec::Seconds(s)) => {
                let (n, ms) = time_shape(s);
                *bucket_ms == ms && buckets.len() == n as usize
            }
            (Window::Count { capacity, .. }, WindowSpec::Calls(c)) => *capacity == count_shape(c),
            _ => false,
        }
    }

    /// Forgets every outcome, keeping the shape.
    pub fn clear(&mut self) {
        match self {
            Window::Time { buckets, .. } => buckets.fill(Bucket::default()),
            Window::Count {
                len,
                next,
                failed,
                slow,
                ..
            } => {
                *len = 0;
                *next = 0;
                failed.fill(0);
                slow.fill(0);
            }
        }
    }

    /// Adds `n` fast successes at time `now_ms`.
    pub fn record_successes(&mut self, now_ms: u64, n: u32) {
        match self {
            Window::Time { bucket_ms, buckets } => add_to_bucket(
                *bucket_ms,
                buckets,
                now_ms,
                Totals {
                    calls: n,
                    failures: 0,
                    slow: 0,
                },
            ),
            Window::Count { capacity, .. } => {
                // More than a full window of successes leaves only successes.
                for _ in 0..n.min(u32::from(*capacity)) {
                    self.record(now_ms, false, false);
                }
            }
        }
    }

    /// Adds one outcome at time `now_ms`.
    pub fn record(&mut self, now_ms: u64, failed: bool, slow: bool) {
        match self {
            Window::Time { bucket_ms, buckets } => add_to_bucket(
                *bucket_ms,
                buckets,
                now_ms,
                Totals {
                    calls: 1,
                    failures: u32::from(failed),
                    slow: u32::from(slow),
                },
            ),
            Window::Count {
                capacity,
                len,
                next,
                failed: fbits,
                slow: sbits,
            } => {
                if *capacity == 0 {
                    return;
                }
                let i = usize::from(*next);
                set_bit(fbits, i, failed);
                set_bit(sbits, i, slow);
                *next = (*next + 1) % *capacity;
                *len = (*len + 1).min(*capacity);
            }
        }
    }

    /// Totals of the outcomes inside the window at `now_ms`.
    pub fn totals(&self, now_ms: u64) -> Totals {
        match self {
            Window::Time { bucket_ms, buckets } => {
                let n = buckets.len() as u64;
                if n == 0 || *bucket_ms == 0 {
                    return Totals::default();
                }
                let current = now_ms / *bucket_ms;
                let oldest = current.saturating_sub(n - 1);
                buckets
                    .iter()
                    .filter(|b| b.index >= oldest && b.index <= current && b.totals.calls > 0)
                    .fold(Totals::default(), |acc, b| Totals {
                        calls: acc.calls.saturating_add(b.totals.calls),
                        failures: acc.failures.saturating_add(b.totals.failures),
                        slow: acc.slow.saturating_add(b.totals.slow),
                    })
            }
            Window::Count {
                capacity,
                len,
                next,
                failed,
                slow,
            } => {
                let mut t = Totals {
                    calls: u32::from(*len),
                    ..Totals::default()
                };
                for k in 0..*len {
                    // The `len` most recent slots end just before `next`.
                    let i = usize::from((*next + *capacity - 1 - k) % (*capacity).max(1));
                    t.failures += u32::from(get_bit(failed, i));
                    t.slow += u32::from(get_bit(slow, i));
                }
                t
            }
        }
    }
}

/// Adds `t` to the bucket of `now_ms`, starting that bucket afresh if it still
/// holds an older period.
fn add_to_bucket(bucket_ms: u64, buckets: &mut [Bucket], now_ms: u64, t: Totals) {
    let n = buckets.len() as u64;
    if n == 0 || bucket_ms == 0 || t.calls == 0 {
        return;
    }
    let index = now_ms / bucket_ms;
    let Some(slot) = buckets.get_mut((index % n) as usize) else {
        return;
    };
    if slot.index != index {
        *slot = Bucket {
            index,
            totals: Totals::default(),
        };
    }
    let s = &mut slot.totals;
    s.calls = s.calls.saturating_add(t.calls);
    s.failures = s.failures.saturating_add(t.failures);
    s.slow = s.slow.saturating_add(t.slow);
}

/// Bucket count and width of a time window of `s` seconds.
fn time_shape(s: u32) -> (u32, u64) {
    let n = s.clamp(1, MAX_BUCKETS);
    (n, (u64::from(s.max(1)) * 1000).div_ceil(u64::from(n)))
}

/// Capacity of a count window of `c` calls.
fn count_shape(c: u32) -> u16 {
    c.clamp(1, u32::from(MAX_CALLS)) as u16
}

fn set_bit(bits: &mut [u8], i: usize, on: bool) {
    if let Some(byte) = bits.get_mut(i / 8) {
        let mask = 1u8 << (i % 8);
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

fn get_bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn time_window_counts_within_its_span_and_forgets_older_outcomes() {
        let mut w = Window::new(WindowSpec::Seconds(10));
        w.record(1_000, true, false);
        w.record(5_000, false, true);
        w.record(9_999, false, false);
        assert_eq!(
            w.totals(9_999),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // 11 s later the first bucket has slid out.
        assert_eq!(w.totals(11_000).calls, 2);
        assert_eq!(w.totals(30_000), Totals::default());
    }

    #[test]
    fn time_window_reuses_a_slot_for_a_new_period() {
        let mut w = Window::new(WindowSpec::Seconds(2));
        w.record(0, true, false);
        w.record(2_000, false, false); // same slot (index 2 % 2 == 0), new period
        assert_eq!(
            w.totals(2_000),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn long_time_windows_are_split_into_at_most_twenty_buckets() {
        match Window::new(WindowSpec::Seconds(60)) {
            Window::Time { bucket_ms, buckets } => {
                assert_eq!(buckets.len(), 20);
                assert_eq!(bucket_ms, 3_000);
            }
            w => panic!("unexpected {w:?}"),
        }
    }

    #[test]
    fn count_window_keeps_only_the_last_n_calls() {
        let mut w = Window::new(WindowSpec::Calls(4));
        for failed in [true, true, false, false, false, true] {
            w.record(0, failed, false);
        }
        // Last four: false, false, false, true.
        assert_eq!(
            w.totals(0),
            Totals {
                calls: 4,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn count_window_partly_filled() {
        let mut w = Window::new(WindowSpec::Calls(10));
        w.record(0, true, true);
        w.record(0, false, false);
        assert_eq!(
            w.totals(123),
            Totals {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn batched_successes_count_like_single_ones() {
        for spec in [WindowSpec::Seconds(10), WindowSpec::Calls(8)] {
            let (mut one, mut many) = (Window::new(spec), Window::new(spec));
            for w in [&mut one, &mut many] {
                w.record(1_000, true, false);
            }
            for _ in 0..5 {
                one.record(2_000, false, false);
            }
            many.record_successes(2_000, 5);
            many.record_successes(2_000, 0);
            assert_eq!(one.totals(2_000), many.totals(2_000), "{spec:?}");
        }
        let mut w = Window::new(WindowSpec::Calls(4));
        w.record(0, true, true);
        w.record_successes(0, 100);
        assert_eq!(
            w.totals(0),
            Totals {
                calls: 4,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn fits_detects_shape_changes() {
        let w = Window::new(WindowSpec::Calls(10));
        assert!(w.fits(WindowSpec::Calls(10)));
        assert!(!w.fits(WindowSpec::Calls(11)));
        assert!(!w.fits(WindowSpec::Seconds(10)));
        let t = Window::new(WindowSpec::Seconds(60));
        assert!(t.fits(WindowSpec::Seconds(60)));
        assert!(!t.fits(WindowSpec::Seconds(61)));
    }
}
