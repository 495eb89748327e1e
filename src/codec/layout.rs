//! The byte layout of an encoded breaker, read and checked in one place: [`read`]
//! walks the bytes field by field, checks every length and range, and returns the
//! [`Parts`] borrowing the variable-length pieces. [`super::decode`] copies them
//! into a `Breaker`; [`super::peek`] looks only at the head, so both accept exactly
//! the same bytes.

use super::{DecodeError, VERSION};
use crate::classify::FailureClass;
use crate::config::{MAX_CALLS, MAX_PERMITS};
use crate::window::MAX_BUCKETS;

/// Bytes of one time bucket: index (8), calls, failures, slow (4 each).
pub(super) const BUCKET_BYTES: usize = 20;

/// An encoding, checked but not copied.
pub(super) struct Parts<'a> {
    pub epoch: u32,
    pub since_ms: u64,
    pub consecutive_failures: u32,
    pub reopens: u32,
    pub times_opened: u32,
    pub last_failure: Option<(FailureClass, u64)>,
    pub phase: PhaseParts<'a>,
    pub window: WindowParts<'a>,
}

/// The phase and its data; half-open permits as raw little-endian `u64`s.
pub(super) enum PhaseParts<'a> {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { successes: u32, permits: &'a [u8] },
    Isolated,
}

/// The window; time buckets as raw [`BUCKET_BYTES`]-byte records.
pub(super) enum WindowParts<'a> {
    Time {
        bucket_ms: u64,
        buckets: &'a [u8],
    },
    Count {
        capacity: u16,
        len: u16,
        next: u16,
        failed: &'a [u8],
        slow: &'a [u8],
    },
}

/// Reads a whole encoding: version, head, phase data, window, and nothing after.
pub(super) fn read(bytes: &[u8]) -> Result<Parts<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
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
    let last_failure = read_last_failure(&mut r)?;
    let phase = read_phase(&mut r, tag)?;
    let window = read_window(&mut r)?;
    r.finish()?;
    Ok(Parts {
        epoch,
        since_ms,
        consecutive_failures,
        reopens,
        times_opened,
        last_failure,
        phase,
        window,
    })
}

/// Class (0 = none, else its position in [`FailureClass::ALL`] plus one) and time.
fn read_last_failure(r: &mut Reader<'_>) -> Result<Option<(FailureClass, u64)>, DecodeError> {
    match (r.u8()?, r.u64()?) {
        (0, _) => Ok(None),
        (c, at) => FailureClass::ALL
            .get(usize::from(c) - 1)
            .map(|&class| Some((class, at)))
            .ok_or(DecodeError::Invalid("failure class")),
    }
}

/// The data of the phase `tag` names.
fn read_phase<'a>(r: &mut Reader<'a>, tag: u8) -> Result<PhaseParts<'a>, DecodeError> {
    Ok(match tag {
        0 => PhaseParts::Closed,
        3 => PhaseParts::Isolated,
        1 => PhaseParts::Open { until_ms: r.u64()? },
        2 => {
            let successes = r.u32()?;
            let n = usize::from(r.u8()?);
            if n > MAX_PERMITS {
                return Err(DecodeError::Invalid("permit count"));
            }
            PhaseParts::HalfOpen {
                successes,
                permits: r.take(n * 8)?,
            }
        }
        _ => return Err(DecodeError::Invalid("phase")),
    })
}

/// A time window (kind 0) or a count window (kind 1).
fn read_window<'a>(r: &mut Reader<'a>) -> Result<WindowParts<'a>, DecodeError> {
    match r.u8()? {
        0 => {
            let bucket_ms = r.u64()?;
            let n = r.u8()?;
            if bucket_ms == 0 || n == 0 || u32::from(n) > MAX_BUCKETS {
                return Err(DecodeError::Invalid("time window"));
            }
            let buckets = r.take(usize::from(n) * BUCKET_BYTES)?;
            Ok(WindowParts::Time { bucket_ms, buckets })
        }
        1 => {
            let (capacity, len, next) = (r.u16()?, r.u16()?, r.u16()?);
            if capacity == 0 || capacity > MAX_CALLS || len > capacity || next >= capacity {
                return Err(DecodeError::Invalid("count window"));
            }
            let n = usize::from(capacity).div_ceil(8);
            let (failed, slow) = (r.take(n)?, r.take(n)?);
            Ok(WindowParts::Count {
                capacity,
                len,
                next,
                failed,
                slow,
            })
        }
        _ => Err(DecodeError::Invalid("window kind")),
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(s)
    }

    /// Fails with [`DecodeError::Trailing`] unless every byte was read.
    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len().saturating_sub(self.at) {
            0 => Ok(()),
            left => Err(DecodeError::Trailing(left)),
        }
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

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
