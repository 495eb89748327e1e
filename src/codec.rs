//! The shared-data encoding of a [`Breaker`]: a version byte, then fixed-width
//! little-endian fields. Decoding checks every length and range, so bytes written by
//! another version or corrupted never panic; the caller resets such a key to closed.

use crate::breaker::{Breaker, Phase, MAX_PERMITS};
use crate::classify::FailureClass;
use crate::window::{Bucket, Totals, Window, MAX_BUCKETS, MAX_CALLS};
use std::fmt;

/// Version byte of the current encoding.
pub const VERSION: u8 = 2;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// First byte is not [`VERSION`].
    Version(u8),
    /// The bytes ended early.
    Truncated,
    /// Bytes left over after the state.
    Trailing(usize),
    /// A field holds an impossible value.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Version(v) => write!(f, "unknown encoding version {v}"),
            DecodeError::Truncated => write!(f, "truncated"),
            DecodeError::Trailing(n) => write!(f, "{n} trailing bytes"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

/// Encodes a breaker for shared data.
pub fn encode(b: &Breaker) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    let (tag, extra): (u8, Option<&Phase>) = match &b.phase {
        Phase::Closed => (0, None),
        p @ Phase::Open { .. } => (1, Some(p)),
        p @ Phase::HalfOpen { .. } => (2, Some(p)),
        Phase::Isolated => (3, None),
    };
    out.push(tag);
    out.extend_from_slice(&b.epoch.to_le_bytes());
    out.extend_from_slice(&b.since_ms.to_le_bytes());
    out.extend_from_slice(&b.consecutive_failures.to_le_bytes());
    out.extend_from_slice(&b.reopens.to_le_bytes());
    out.extend_from_slice(&b.times_opened.to_le_bytes());
    let (class, at) = b
        .last_failure
        .map_or((0u8, 0u64), |(c, at)| (c as u8 + 1, at));
    out.push(class);
    out.extend_from_slice(&at.to_le_bytes());
    match extra {
        Some(Phase::Open { until_ms }) => out.extend_from_slice(&until_ms.to_le_bytes()),
        Some(Phase::HalfOpen { permits, successes }) => {
            out.extend_from_slice(&successes.to_le_bytes());
            let n = permits.len().min(MAX_PERMITS);
            out.push(n as u8);
            for p in &permits[..n] {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        _ => {}
    }
    match &b.window {
        Window::Time { bucket_ms, buckets } => {
            out.push(0);
            out.extend_from_slice(&bucket_ms.to_le_bytes());
            let n = buckets.len().min(MAX_BUCKETS as usize);
            out.push(n as u8);
            for bk in &buckets[..n] {
                out.extend_from_slice(&bk.index.to_le_bytes());
                out.extend_from_slice(&bk.totals.calls.to_le_bytes());
                out.extend_from_slice(&bk.totals.failures.to_le_bytes());
                out.extend_from_slice(&bk.totals.slow.to_le_bytes());
            }
        }
        Window::Count {
            capacity,
            len,
            next,
            failed,
            slow,
        } => {
            out.push(1);
            out.extend_from_slice(&capacity.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(failed);
            out.extend_from_slice(slow);
        }
    }
    out
}

/// What the fixed-size head of an encoding says, read without decoding the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Closed, in this epoch, with this many consecutive failures.
    Closed {
        /// Breaker epoch.
        epoch: u32,
        /// Consecutive failures.
        consecutive: u32,
    },
    /// Open since `since_ms` until `until_ms`.
    Open {
        /// When it opened.
        since_ms: u64,
        /// End of the open period.
        until_ms: u64,
    },
}

/// Reads the head of a closed or open breaker of this version; `None` for anything
/// else (half-open, another version, bytes that would not decode): decode those
/// fully. The window is checked for shape but not copied, so `peek` answers `Some`
/// only for bytes [`decode`] accepts.
pub fn peek(bytes: &[u8]) -> Option<Head> {
    let mut r = Reader { bytes, at: 0 };
    if r.u8().ok()? != VERSION {
        return None;
    }
    let tag = r.u8().ok()?;
    let epoch = r.u32().ok()?;
    let since_ms = r.u64().ok()?;
    let consecutive = r.u32().ok()?;
    r.take(8).ok()?; // reopens, times_opened
    if usize::from(r.u8().ok()?) > FailureClass::ALL.len() {
        return None;
    }
    r.take(8).ok()?; // last failure time
    let head = match tag {
        0 => Head::Closed { epoch, consecutive },
        1 => Head::Open {
            since_ms,
            until_ms: r.u64().ok()?,
        },
        _ => return None,
    };
    skip_window(&mut r).ok()?;
    (r.at == bytes.len()).then_some(head)
}

/// Checks a window's layout, as [`decode`] does, without copying it.
fn skip_window(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8()? {
        0 => {
            let bucket_ms = r.u64()?;
            let n = r.u8()?;
            if bucket_ms == 0 || n == 0 || u32::from(n) > MAX_BUCKETS {
                return Err(DecodeError::Invalid("time window"));
            }
            r.take(usize::from(n) * 20).map(|_| ())
        }
        1 => {
            let (capacity, len, next) = (r.u16()?, r.u16()?, r.u16()?);
            if capacity == 0 || capacity > MAX_CALLS || len > capacity || next >= capacity {
                return Err(DecodeError::Invalid("count window"));
            }
            r.take(usize::from(capacity).div_ceil(8) * 2).map(|_| ())
        }
        _ => Err(DecodeError::Invalid("window kind")),
    }
}

/// Decodes bytes written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Breaker, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let tag = r.u8()?;
    let epoch = r.u32()?;
    let since_ms = r.u64()?;
    let consecutive_failures = r.u32()?;
    let reopens = r.u32()?;
    let times_opened = r.u32()?;
    let last_failure = match (r.u8()?, r.u64()?) {
        (0, _) => None,
        (c, at) => Some((
            *FailureClass::ALL
                .get(usize::from(c) - 1)
                .ok_or(DecodeError::Invalid("failure class"))?,
            at,
        )),
    };
    let phase = match tag {
        0 => Phase::Closed,
        3 => Phase::Isolated,
        1 => Phase::Open { until_ms: r.u64()? },
        2 => {
            let successes = r.u32()?;
            let n = usize::from(r.u8()?);
            if n > MAX_PERMITS {
                return Err(DecodeError::Invalid("permit count"));
            }
            let mut permits = Vec::with_capacity(n);
            for _ in 0..n {
                permits.push(r.u64()?);
            }
            Phase::HalfOpen { permits, successes }
        }
        _ => return Err(DecodeError::Invalid("phase")),
    };
    let window = match r.u8()? {
        0 => {
            let bucket_ms = r.u64()?;
            let n = r.u8()?;
            if bucket_ms == 0 || n == 0 || u32::from(n) > MAX_BUCKETS {
                return Err(DecodeError::Invalid("time window"));
            }
            let mut buckets = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                buckets.push(Bucket {
                    index: r.u64()?,
                    totals: Totals {
                        calls: r.u32()?,
                        failures: r.u32()?,
                        slow: r.u32()?,
                    },
                });
            }
            Window::Time { bucket_ms, buckets }
        }
        1 => {
            let capacity = r.u16()?;
            let len = r.u16()?;
            let next = r.u16()?;
            if capacity == 0 || capacity > MAX_CALLS || len > capacity || next >= capacity {
                return Err(DecodeError::Invalid("count window"));
            }
            let n = usize::from(capacity).div_ceil(8);
            let failed = r.take(n)?.to_vec();
            let slow = r.take(n)?.to_vec();
            Window::Count {
                capacity,
                len,
                next,
                failed,
                slow,
            }
        }
        _ => return Err(DecodeError::Invalid("window kind")),
    };
    let left = bytes.len() - r.at;
    if left != 0 {
        return Err(DecodeError::Trailing(left));
    }
    Ok(Breaker {
        phase,
        epoch,
        since_ms,
        consecutive_failures,
        reopens,
        times_opened,
        window,
        last_failure,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WindowSpec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sample(phase: Phase, spec: WindowSpec) -> Breaker {
        let mut window = Window::new(spec);
        window.record(5_000, true, false);
        window.record(6_000, false, true);
        Breaker {
            phase,
            epoch: 7,
            since_ms: 1_700_000_000_000,
            consecutive_failures: 3,
            reopens: 2,
            times_opened: 9,
            window,
            last_failure: Some((FailureClass::InBandError, 1_700_000_000_123)),
        }
    }

    #[test]
    fn every_phase_and_window_round_trips() {
        let phases = [
            Phase::Closed,
            Phase::Open { until_ms: 42 },
            Phase::HalfOpen {
                permits: vec![1, 2, 3],
                successes: 1,
            },
            Phase::Isolated,
        ];
        for phase in phases {
            for spec in [
                WindowSpec::Seconds(60),
                WindowSpec::Calls(100),
                WindowSpec::Calls(1),
            ] {
                let b = sample(phase.clone(), spec);
                assert_eq!(decode(&encode(&b)), Ok(b));
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_is_reported() {
        let good = encode(&sample(Phase::Closed, WindowSpec::Calls(16)));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::Version(9)));
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
        // Every single-byte corruption either decodes or errs, never panics.
        for i in 0..good.len() {
            for v in [0u8, 1, 2, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = decode(&bad);
            }
        }
        // Pseudo-random byte strings.
        let mut x = 1u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = crate::backoff::splitmix64(x);
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
            let mut v = vec![VERSION];
            v.extend_from_slice(&bytes);
            let _ = decode(&v);
        }
    }

    #[test]
    fn peek_reads_the_head_of_closed_and_open_breakers() {
        let b = sample(Phase::Closed, WindowSpec::Seconds(60));
        assert_eq!(
            peek(&encode(&b)),
            Some(Head::Closed {
                epoch: 7,
                consecutive: 3
            })
        );
        let open = sample(Phase::Open { until_ms: 99 }, WindowSpec::Calls(4));
        assert_eq!(
            peek(&encode(&open)),
            Some(Head::Open {
                since_ms: 1_700_000_000_000,
                until_ms: 99
            })
        );
        let half = sample(
            Phase::HalfOpen {
                permits: vec![],
                successes: 0,
            },
            WindowSpec::Calls(4),
        );
        assert_eq!(peek(&encode(&half)), None);
        assert_eq!(peek(&[VERSION, 0, 1]), None);
        assert_eq!(peek(&[VERSION, 1]), None);
        assert_eq!(peek(&[]), None);
        let mut bad = encode(&open);
        bad[0] = 9;
        assert_eq!(peek(&bad), None);
    }

    #[test]
    fn peek_answers_only_for_bytes_that_decode_and_agrees_with_them() {
        let mut x = 7u64;
        let mut rand = move || {
            x = crate::backoff::splitmix64(x);
            x
        };
        let goods = [
            encode(&sample(Phase::Closed, WindowSpec::Seconds(60))),
            encode(&sample(Phase::Open { until_ms: 5 }, WindowSpec::Calls(16))),
            encode(&sample(Phase::Closed, WindowSpec::Calls(3))),
        ];
        for good in &goods {
            for _ in 0..3000 {
                let mut b = good.clone();
                match rand() % 4 {
                    0 => {
                        let i = rand() as usize % b.len();
                        b[i] = rand() as u8;
                    }
                    1 => b.truncate(rand() as usize % b.len()),
                    2 => b.push(rand() as u8),
                    _ => {
                        let i = 35 + rand() as usize % (b.len() - 35);
                        b[i] = rand() as u8;
                    }
                }
                if let Some(head) = peek(&b) {
                    let d = decode(&b).unwrap_or_else(|e| panic!("peek Some, decode {e}"));
                    match (head, d.phase) {
                        (Head::Closed { epoch, consecutive }, Phase::Closed) => {
                            assert_eq!((epoch, consecutive), (d.epoch, d.consecutive_failures))
                        }
                        (Head::Open { since_ms, until_ms }, Phase::Open { until_ms: u }) => {
                            assert_eq!((since_ms, until_ms), (d.since_ms, u))
                        }
                        other => panic!("peek and decode disagree: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn impossible_values_are_rejected() {
        let mut b = sample(Phase::Closed, WindowSpec::Calls(16));
        if let Window::Count { len, .. } = &mut b.window {
            *len = 17;
        }
        assert_eq!(
            decode(&encode(&b)),
            Err(DecodeError::Invalid("count window"))
        );
    }
}
