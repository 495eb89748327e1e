//! The shared-data encoding of a [`Breaker`]: a version byte, then fixed-width
//! little-endian fields. Decoding checks every length and range, so bytes written by
//! another version or corrupted never panic; the caller resets such a key to closed.

use crate::breaker::{Breaker, Phase};
use crate::config::MAX_PERMITS;
use crate::window::{Bucket, Totals, Window, MAX_BUCKETS};
use layout::{PhaseParts, Reader, WindowParts, BUCKET_BYTES};
use std::fmt;

mod layout;

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

/// Encodes a breaker for shared data (the layout [`layout`] reads back).
pub fn encode(b: &Breaker) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.push(match &b.phase {
        Phase::Closed => 0,
        Phase::Open { .. } => 1,
        Phase::HalfOpen { .. } => 2,
        Phase::Isolated => 3,
    });
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
    encode_phase_data(&mut out, &b.phase);
    encode_window(&mut out, &b.window);
    out
}

/// The open period's end, or the half-open successes and permits (at most
/// [`MAX_PERMITS`]); nothing for the other phases.
fn encode_phase_data(out: &mut Vec<u8>, phase: &Phase) {
    match phase {
        Phase::Open { until_ms } => out.extend_from_slice(&until_ms.to_le_bytes()),
        Phase::HalfOpen { permits, successes } => {
            out.extend_from_slice(&successes.to_le_bytes());
            let n = permits.len().min(MAX_PERMITS);
            out.push(n as u8);
            for p in &permits[..n] {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        Phase::Closed | Phase::Isolated => {}
    }
}

/// The window kind (0 time, 1 count) and its fields.
fn encode_window(out: &mut Vec<u8>, window: &Window) {
    match window {
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
}

/// What the fixed-size head of an encoding says, read without decoding the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Closed since `since_ms`, in this epoch, with this many consecutive failures.
    Closed {
        /// Breaker epoch.
        epoch: u32,
        /// Consecutive failures.
        consecutive: u32,
        /// When it closed (this epoch began).
        since_ms: u64,
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
/// else (half-open, isolated, another version, bytes that would not decode). The
/// whole encoding is checked by the same reader as [`decode`], but the window is not
/// copied, so `peek` answers `Some` only for bytes [`decode`] accepts.
pub fn peek(bytes: &[u8]) -> Option<Head> {
    let parts = layout::read(bytes).ok()?;
    match parts.phase {
        PhaseParts::Closed => Some(Head::Closed {
            epoch: parts.epoch,
            consecutive: parts.consecutive_failures,
            since_ms: parts.since_ms,
        }),
        PhaseParts::Open { until_ms } => Some(Head::Open {
            since_ms: parts.since_ms,
            until_ms,
        }),
        PhaseParts::HalfOpen { .. } | PhaseParts::Isolated => None,
    }
}

/// Decodes bytes written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Breaker, DecodeError> {
    let parts = layout::read(bytes)?;
    Ok(Breaker {
        phase: phase(parts.phase)?,
        epoch: parts.epoch,
        since_ms: parts.since_ms,
        consecutive_failures: parts.consecutive_failures,
        reopens: parts.reopens,
        times_opened: parts.times_opened,
        window: window(parts.window)?,
        last_failure: parts.last_failure,
    })
}

/// The owned phase of checked parts.
fn phase(p: PhaseParts<'_>) -> Result<Phase, DecodeError> {
    Ok(match p {
        PhaseParts::Closed => Phase::Closed,
        PhaseParts::Isolated => Phase::Isolated,
        PhaseParts::Open { until_ms } => Phase::Open { until_ms },
        PhaseParts::HalfOpen { successes, permits } => {
            let mut r = Reader::new(permits);
            let permits = (0..permits.len() / 8)
                .map(|_| r.u64())
                .collect::<Result<_, _>>()?;
            Phase::HalfOpen { permits, successes }
        }
    })
}

/// The owned window of checked parts.
fn window(w: WindowParts<'_>) -> Result<Window, DecodeError> {
    Ok(match w {
        WindowParts::Time { bucket_ms, buckets } => {
            let mut r = Reader::new(buckets);
            let buckets = (0..buckets.len() / BUCKET_BYTES)
                .map(|_| {
                    Ok(Bucket {
                        index: r.u64()?,
                        totals: Totals {
                            calls: r.u32()?,
                            failures: r.u32()?,
                            slow: r.u32()?,
                        },
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Window::Time { bucket_ms, buckets }
        }
        WindowParts::Count {
            capacity,
            len,
            next,
            failed,
            slow,
        } => Window::Count {
            capacity,
            len,
            next,
            failed: failed.to_vec(),
            slow: slow.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests;
