//! Fleet-wide breakers: several Envoys share one view of each breaker through etcd
//! (issue 11). Pure: the record codec ([`record`]), etcd's JSON gateway requests and
//! answers ([`etcd`], [`base64`]), the merge rules and the prober election
//! ([`merge`]), fleet-wide failure streaks ([`streak`]), and the sync backoff. The worker applies decisions to its breakers
//! ([`crate::worker::fleet`]); the host only sends the calls from the root
//! context's timer, so etcd is never on the request path.

pub mod base64;
pub mod etcd;
pub mod merge;
pub mod record;
pub mod streak;

pub use merge::{Decision, Local, Prober, View};
pub use record::{FleetRecord, FleetState, RecordError};

/// Longest wait between sync attempts while etcd fails.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// The wait before the next sync after `streak` failed syncs in a row: `sync_ms`
/// doubled per failure, capped at [`MAX_BACKOFF_MS`] (never below `sync_ms`).
pub fn backoff_ms(sync_ms: u64, streak: u32) -> u64 {
    let factor = 1u64 << streak.min(16);
    sync_ms
        .saturating_mul(factor)
        .min(MAX_BACKOFF_MS.max(sync_ms))
}

/// The etcd key of a breaker's record: `<prefix>breakers/<upstream>` or
/// `<prefix>breakers/<upstream>|<model>`.
pub fn record_key(prefix: &str, name: &str) -> String {
    format!("{prefix}breakers/{name}")
}

/// The etcd key naming a breaker's prober (on a lease).
pub fn prober_key(prefix: &str, name: &str) -> String {
    format!("{prefix}probers/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(500, 0), 500);
        assert_eq!(backoff_ms(500, 1), 1_000);
        assert_eq!(backoff_ms(500, 3), 4_000);
        assert_eq!(backoff_ms(500, 40), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(60_000, 2), 60_000);
    }
}
