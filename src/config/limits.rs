//! The limits the configuration checks, owned here so that the config is a leaf:
//! the breaker, the window and the codec import them from this module.

/// Largest count-based window, in calls.
pub const MAX_CALLS: u16 = 1000;

/// Most half-open permits an upstream can hand out at once.
pub const MAX_PERMITS: usize = 32;

/// Most models with breakers of their own (bounds shared-data keys per upstream).
pub const MAX_MODELS: usize = 64;
