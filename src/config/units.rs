//! Units of the values users write: [`Millis`] for every `*_ms` field, so a
//! duration is never mistaken for a count and its range check sits beside it.

use super::checks::range;
use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A duration in milliseconds, as written in the configuration (a JSON integer).
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The milliseconds.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The milliseconds, when between `lo` and `hi` (inclusive); else an error
    /// naming `field` and the value.
    pub fn within(self, field: &str, lo: u64, hi: u64) -> Result<Millis, ConfigError> {
        range(field, self.0, lo, hi).map(|()| self)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
