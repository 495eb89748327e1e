//! What the filter learns of a routed request's response, callback by callback:
//! status and time to first byte (for an event stream, the first body byte), the
//! rate-limit reset hint (read only when it can set the open time), and the body's
//! in-band errors (scanned only when the failure policy counts what a scan finds).
//! The host hands in what it read; reads it may skip are closures.

use super::request::Routed;
use super::{Metrics, Worker};
use crate::classify::{self, ResponseFacts};
use crate::inband::{self, BodyKind, Scanner};
use crate::ratelimit;
use crate::store::SharedStore;

/// What the response headers ask the host to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing more.
    Nothing,
    /// The rate-limit reset headers, for the open time.
    ResetHint,
    /// The body: its `content-type` says whether it is worth scanning.
    Body,
}

/// The response of one routed request, as seen so far.
#[derive(Debug, Default)]
pub struct Response {
    facts: ResponseFacts,
    /// In-band error scanner of the body, when it is worth scanning.
    scan: Option<Scanner>,
    /// An event stream whose first body byte has not come yet: its time to first
    /// byte is taken then (the first token, as users feel it).
    awaiting_first_event: bool,
}

impl Response {
    /// Response headers with `status` arrived at `now_ms` (`eos`: no body follows);
    /// `header` reads a response header, only if needed.
    pub fn headers<S: SharedStore, M: Metrics>(
        &mut self,
        worker: &Worker<S, M>,
        routed: &Routed,
        status: Option<u16>,
        eos: bool,
        now_ms: u64,
        header: impl Fn(&str) -> Option<Vec<u8>>,
    ) {
        self.facts.ttfb_ms = routed.since_start(now_ms);
        self.facts.status = status;
        self.facts.completed = eos;
        match worker.watch(routed, status, eos) {
            Watch::ResetHint => {
                self.facts.reset_in_ms = ratelimit::reset_hint_ms(header, now_ms);
            }
            Watch::Body => {
                let kind =
                    header("content-type").map_or(BodyKind::Other, |v| inband::body_kind(&v));
                self.awaiting_first_event = kind == BodyKind::Sse;
                self.scan = worker.scanner(routed, kind);
            }
            Watch::Nothing => {}
        }
    }

    /// A body chunk of `size` bytes arrived (`eos`: the last); `now` reads the
    /// clock and `read(offset, len)` the chunk, each only if needed.
    pub fn body(
        &mut self,
        routed: &Routed,
        size: usize,
        eos: bool,
        now: impl FnOnce() -> u64,
        read: impl FnOnce(usize, usize) -> Vec<u8>,
    ) {
        if self.awaiting_first_event && size > 0 {
            self.awaiting_first_event = false;
            self.facts.ttfb_ms = routed.since_start(now());
        }
        if let Some(scan) = &mut self.scan {
            let (offset, len) = scan.wants(size);
            if len > 0 {
                scan.feed(&read(offset, len));
            }
            if eos {
                self.facts.in_band = scan.finish(true);
                self.scan = None;
            }
        }
        if eos {
            self.facts.completed = true;
        }
    }

    /// Response trailers arrived: the body ended.
    pub fn trailers(&mut self) {
        if let Some(mut scan) = self.scan.take() {
            self.facts.in_band = scan.finish(true);
        }
        self.facts.completed = true;
    }

    /// The stream is over: the facts to classify. `flags` reads Envoy's response
    /// flags and `details` its `response.code_details`, each only when it can matter.
    pub fn end(
        &mut self,
        flags: impl FnOnce() -> u64,
        details: impl FnOnce() -> Option<Vec<u8>>,
    ) -> &ResponseFacts {
        if let Some(mut scan) = self.scan.take() {
            // The body never ended: only an error already seen says anything.
            self.facts.in_band = scan.finish(false);
        }
        if classify::needs_flags(self.facts.status, self.facts.completed) {
            self.facts.flags = flags();
        }
        if classify::needs_details(&self.facts) {
            self.facts.ended_by =
                details().map_or(classify::EndedBy::Other, |d| classify::ended_by(&d));
        }
        &self.facts
    }
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
