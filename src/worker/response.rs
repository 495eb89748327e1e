//! What to watch in a routed request's response, decided from its status: the
//! rate-limit reset hint (read only when it can set the open time), or the body
//! (scanned only when the failure policy counts what a scan finds).

use super::request::Routed;
use super::{Metrics, Worker};
use crate::inband::{BodyKind, Scanner};
use crate::store::SharedStore;

/// What the response headers ask the host to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing more.
    Nothing,
    /// The rate-limit reset headers, for the open time.
    ResetHint,
    /// The body: the host reads its `content-type` and asks [`Worker::scanner`].
    Body,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// What to watch in a response of `status` (`eos`: it has no body).
    pub fn watch(&self, routed: &Routed, status: Option<u16>, eos: bool) -> Watch {
        let Some(up) = self.config.upstream(routed.upstream) else {
            return Watch::Nothing;
        };
        let policy = &up.breaker.failure;
        match status {
            // The hint only sets an open time: read its headers only when the
            // outcome will be recorded and hints are used.
            Some(s)
                if policy.rate_limited.contains(&s)
                    && routed.ticket.is_some()
                    && up.breaker.rate_limit.trip_on_reset_hint =>
            {
                Watch::ResetHint
            }
            Some(200..=299) if !eos && policy.scans_bodies() => Watch::Body,
            _ => Watch::Nothing,
        }
    }

    /// The in-band error scanner for a body of `kind`, when scanning it is worth it:
    /// a JSON body can only hold an error object, not worth scanning when in-band
    /// errors do not count.
    pub fn scanner(&self, routed: &Routed, kind: BodyKind) -> Option<Scanner> {
        let policy = &self.config.upstream(routed.upstream)?.breaker.failure;
        let useful = match kind {
            BodyKind::Sse => true,
            BodyKind::Json => policy.in_band_error,
            BodyKind::Other => false,
        };
        useful.then(|| Scanner::new(kind, self.config.max_scan_bytes))
    }
}
