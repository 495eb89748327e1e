//! Failure classification: turns what Envoy tells the filter about a finished
//! request (status, response flags, whether the body ended, time to first byte)
//! into a provider success or failure, a client error, or nothing to count.
//!
//! Envoy answers connect failures, resets and timeouts with local 503/504 replies,
//! so the response flags, not the status, say which it was.
//!
//! Envoy's own limits are told apart from the provider's failures too: a stream
//! whose 2xx headers came from the provider and that a total-duration limit of the
//! operator's (route `timeout`, `max_stream_duration`) cut while it flowed is the
//! proxy's doing, not the provider's ([`Verdict::ProxyLimit`]). A stall (stream
//! idle timeout), a first byte later than a limit (Envoy's local 504) and a reset
//! stay provider failures.

use crate::config::FailurePolicy;
use crate::inband::InBand;

/// Envoy response flags (`response.flags` bitmask) that matter here.
pub mod flags {
    /// LH: Envoy's health-check filter failed the request locally.
    pub const FAILED_LOCAL_HEALTH_CHECK: u64 = 0x1;
    /// UH: no healthy upstream host.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// UT: upstream request timeout.
    pub const UPSTREAM_TIMEOUT: u64 = 0x4;
    /// LR: connection reset locally.
    pub const LOCAL_RESET: u64 = 0x8;
    /// UR: upstream remote reset.
    pub const UPSTREAM_RESET: u64 = 0x10;
    /// UF: upstream connection failure.
    pub const CONNECT_FAILURE: u64 = 0x20;
    /// UC: upstream connection termination.
    pub const UPSTREAM_TERMINATION: u64 = 0x40;
    /// UO: Envoy's own cluster circuit breaker overflowed.
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// NR: no route.
    pub const NO_ROUTE: u64 = 0x100;
    /// FI: fault injected.
    pub const FAULT_INJECTED: u64 = 0x400;
    /// RL: rate limited by Envoy.
    pub const RATE_LIMITED: u64 = 0x800;
    /// UAEX: the external authorization service denied the request.
    pub const UNAUTHORIZED_EXTERNAL: u64 = 0x1000;
    /// RLSE: the rate limit service could not be called.
    pub const RATE_LIMIT_SERVICE_ERROR: u64 = 0x2000;
    /// DC: the downstream (client) connection went away.
    pub const DOWNSTREAM_TERMINATION: u64 = 0x4000;
    /// URX: the retry limit was reached (the last attempt's flags say why).
    pub const RETRY_LIMIT_EXCEEDED: u64 = 0x8000;
    /// SI: stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    /// IH: the request's `x-envoy-*` headers were invalid.
    pub const INVALID_REQUEST_HEADERS: u64 = 0x2_0000;
    /// DPE: the client's request broke HTTP.
    pub const DOWNSTREAM_PROTOCOL_ERROR: u64 = 0x4_0000;
    /// UMSDR: the cluster's `max_stream_duration` ended the upstream stream.
    pub const UPSTREAM_MAX_STREAM_DURATION: u64 = 0x8_0000;
    /// RFCF: answered from Envoy's cache (the provider was not asked).
    pub const FROM_CACHE: u64 = 0x10_0000;
    /// NFCF: a filter's configuration never arrived.
    pub const NO_FILTER_CONFIG: u64 = 0x20_0000;
    /// DT: the downstream stream or connection reached its maximum duration.
    pub const DURATION_TIMEOUT: u64 = 0x40_0000;
    /// UPE: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    /// NC: the route's cluster does not exist.
    pub const NO_CLUSTER: u64 = 0x100_0000;
    /// OM: overload manager.
    pub const OVERLOAD: u64 = 0x200_0000;
    /// DF: the provider's name did not resolve (dynamic forward proxy).
    pub const DNS_RESOLUTION_FAILED: u64 = 0x400_0000;
    /// DO: drop overload.
    pub const DROP_OVERLOAD: u64 = 0x800_0000;
    /// DR: the client reset the stream (HTTP/2 or HTTP/3).
    pub const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;
    /// UDO: unconditional drop overload.
    pub const UNCONDITIONAL_DROP_OVERLOAD: u64 = 0x2000_0000;

    /// Local replies caused by Envoy itself or the client, not by the provider.
    pub const NOT_PROVIDER: u64 = FAILED_LOCAL_HEALTH_CHECK
        | UPSTREAM_OVERFLOW
        | NO_ROUTE
        | FAULT_INJECTED
        | RATE_LIMITED
        | UNAUTHORIZED_EXTERNAL
        | RATE_LIMIT_SERVICE_ERROR
        | INVALID_REQUEST_HEADERS
        | DOWNSTREAM_PROTOCOL_ERROR
        | FROM_CACHE
        | NO_FILTER_CONFIG
        | NO_CLUSTER
        | OVERLOAD
        | DROP_OVERLOAD
        | UNCONDITIONAL_DROP_OVERLOAD;

    /// Total-duration limits an operator sets: they end a stream however well it
    /// flows.
    pub const TOTAL_LIMIT: u64 = UPSTREAM_MAX_STREAM_DURATION | DURATION_TIMEOUT;

    /// Flags that name the cause on their own: `response.code_details` adds nothing.
    pub const DECISIVE: u64 = NOT_PROVIDER
        | TOTAL_LIMIT
        | DOWNSTREAM_TERMINATION
        | DOWNSTREAM_REMOTE_RESET
        | NO_HEALTHY_UPSTREAM
        | CONNECT_FAILURE
        | DNS_RESOLUTION_FAILED
        | STREAM_IDLE_TIMEOUT
        | UPSTREAM_RESET
        | UPSTREAM_TERMINATION
        | UPSTREAM_PROTOCOL_ERROR;
}

/// What Envoy's `response.code_details` says ended a stream, as far as it matters
/// here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndedBy {
    /// Not read, or anything else (`via_upstream`, resets, per-try timeouts, ...).
    #[default]
    Other,
    /// A total-duration limit: the route `timeout` (`response_timeout`, flag UT), a
    /// route or connection-manager `max_stream_duration` (`max_duration_timeout`,
    /// no flag at all in Envoy 1.40), or a cluster's
    /// (`upstream_max_stream_duration_reached`, flag UMSDR).
    TotalLimit,
}

/// Reads `response.code_details` (untrusted bytes from the host).
pub fn ended_by(details: &[u8]) -> EndedBy {
    match details {
        b"response_timeout" | b"max_duration_timeout" | b"upstream_max_stream_duration_reached" => {
            EndedBy::TotalLimit
        }
        _ => EndedBy::Other,
    }
}

/// Whether `response.code_details` (a host call) could change the verdict: for a
/// stream cut short, or a 504 (Envoy's local timeout reply), when no flag already
/// names the cause.
pub fn needs_details(facts: &ResponseFacts) -> bool {
    (!facts.completed || facts.status == Some(504)) && facts.flags & flags::DECISIVE == 0
}

/// Kinds of provider failure, as counted in metrics. The discriminant is the
/// position in [`FailureClass::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// A configured failure status from the upstream (5xx, 529).
    Status = 0,
    /// A configured rate-limit status (429).
    RateLimited = 1,
    /// Envoy could not connect.
    ConnectFailure = 2,
    /// The upstream reset the stream, before or during the response.
    Reset = 3,
    /// Envoy's upstream timeout fired.
    Timeout = 4,
    /// An error inside a 200 response (SSE error event, JSON error body).
    InBandError = 5,
    /// An SSE stream that ended without its terminal event.
    StreamTruncated = 6,
}

impl FailureClass {
    /// All classes, in metric order.
    pub const ALL: [FailureClass; 7] = [
        FailureClass::Status,
        FailureClass::RateLimited,
        FailureClass::ConnectFailure,
        FailureClass::Reset,
        FailureClass::Timeout,
        FailureClass::InBandError,
        FailureClass::StreamTruncated,
    ];

    /// Name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Status => "status",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ConnectFailure => "connect_failure",
            FailureClass::Reset => "reset",
            FailureClass::Timeout => "timeout",
            FailureClass::InBandError => "in_band_error",
            FailureClass::StreamTruncated => "stream_truncated",
        }
    }
}

/// An outcome that feeds the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The failure, if it was one.
    pub failure: Option<FailureClass>,
    /// The first byte came later than the slow-call threshold.
    pub slow: bool,
    /// For a rate-limited failure: when the provider said the limit resets (ms from
    /// the response).
    pub reset_in_ms: Option<u64>,
}

/// What a finished request means for its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counts in the breaker.
    Counted(Outcome),
    /// The client's own 4xx (the status): never a provider failure, but shown in
    /// metrics.
    ClientError(u16),
    /// Says nothing about the provider (client went away, Envoy's own limit, a
    /// failure class that is turned off).
    Ignored,
    /// Ignored too: a healthy stream that an operator's total-duration limit (route
    /// `timeout`, `max_stream_duration`) cut after the provider's 2xx headers.
    ProxyLimit,
    /// A 401 or 403 answering the gateway's own key (the upstream role put it in):
    /// the operator's key is wrong, the provider is not down. See [`gateway_key`].
    CredentialRejected(u16),
}

/// An attempt that carried the gateway's key: its 401 or 403 is a
/// [`Verdict::CredentialRejected`] rather than the client's error.
pub fn gateway_key(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::ClientError(s @ (401 | 403)) => Verdict::CredentialRejected(s),
        v => v,
    }
}

/// What the filter saw of a request's response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// `:status` of the response headers, if any reached the filter.
    pub status: Option<u16>,
    /// The response ended normally (end of stream seen).
    pub completed: bool,
    /// Envoy's response flags (0 when not read).
    pub flags: u64,
    /// Time from the end of the request (headers, body or trailers) to the first
    /// response byte.
    pub ttfb_ms: Option<u64>,
    /// What scanning the response body found (`Unknown` when it was not scanned).
    pub in_band: InBand,
    /// For a rate-limited status: the provider's reset hint in ms.
    pub reset_in_ms: Option<u64>,
    /// What `response.code_details` says ended the stream (read only when
    /// [`needs_details`]).
    pub ended_by: EndedBy,
}

/// Whether the classification needs Envoy's response flags (a host call); for a
/// completed response below 500 (429 aside: Envoy's own rate limiter sends it too)
/// it does not.
pub fn needs_flags(status: Option<u16>, completed: bool) -> bool {
    !completed || status.map_or(true, |s| s >= 500 || s == 429)
}

/// Classifies a finished request.
pub fn classify(policy: &FailurePolicy, slow_ttfb_ms: u64, facts: &ResponseFacts) -> Verdict {
    use flags::*;
    let slow = facts.ttfb_ms.is_some_and(|t| t > slow_ttfb_ms);
    let f = facts.flags;
    if f & NOT_PROVIDER != 0 {
        return Verdict::Ignored;
    }
    if f & TOTAL_LIMIT != 0 || facts.ended_by == EndedBy::TotalLimit {
        return match total_limit(policy, slow, facts) {
            Some(v) => v,
            // The provider's own non-2xx answer, cut: its status decides.
            None => classify(
                policy,
                slow_ttfb_ms,
                &ResponseFacts {
                    flags: 0,
                    completed: true,
                    ended_by: EndedBy::Other,
                    ..*facts
                },
            ),
        };
    }
    let class = if f & (CONNECT_FAILURE | NO_HEALTHY_UPSTREAM | DNS_RESOLUTION_FAILED) != 0 {
        Some((FailureClass::ConnectFailure, policy.connect_failure))
    } else if f & (UPSTREAM_TIMEOUT | STREAM_IDLE_TIMEOUT) != 0 {
        Some((FailureClass::Timeout, policy.timeout))
    } else if f & (UPSTREAM_RESET | UPSTREAM_TERMINATION | UPSTREAM_PROTOCOL_ERROR) != 0 {
        Some((FailureClass::Reset, policy.reset))
    } else {
        None
    };
    if let Some((class, enabled)) = class {
        return if enabled {
            failure(class, slow)
        } else {
            Verdict::Ignored
        };
    }
    let Some(status) = facts.status else {
        return Verdict::Ignored;
    };
    if policy.status.contains(&status) || policy.client_errors_as_failures.contains(&status) {
        return failure(FailureClass::Status, slow);
    }
    if policy.rate_limited.contains(&status) {
        return Verdict::Counted(Outcome {
            failure: Some(FailureClass::RateLimited),
            slow,
            reset_in_ms: facts.reset_in_ms,
        });
    }
    if (400..500).contains(&status) {
        return Verdict::ClientError(status);
    }
    match facts.in_band {
        InBand::Error(_) if policy.in_band_error => {
            return failure(FailureClass::InBandError, slow)
        }
        InBand::Truncated if policy.stream_truncated && facts.completed => {
            return failure(FailureClass::StreamTruncated, slow)
        }
        _ => {}
    }
    if !facts.completed {
        // Cut short without an upstream flag: the client left, or Envoy reset it.
        let client_or_envoy = DOWNSTREAM_TERMINATION | DOWNSTREAM_REMOTE_RESET | LOCAL_RESET;
        return if f & client_or_envoy != 0 || !policy.reset {
            Verdict::Ignored
        } else {
            failure(FailureClass::Reset, slow)
        };
    }
    Verdict::Counted(Outcome {
        failure: None,
        slow,
        reset_in_ms: None,
    })
}

/// A stream that an operator's total-duration limit ended. After the provider's
/// 2xx headers the provider was answering: the proxy cut it ([`Verdict::ProxyLimit`]),
/// unless an in-band error had already shown. Another status is the provider's own
/// answer (`None`: the status rules decide, as if it had ended). With no headers from the provider
/// (Envoy's local 504, or nothing) its first byte was later than the limit: a
/// timeout.
fn total_limit(policy: &FailurePolicy, slow: bool, facts: &ResponseFacts) -> Option<Verdict> {
    let from_provider = facts.status.filter(|_| !facts.completed);
    match from_provider {
        Some(200..=299) => Some(match facts.in_band {
            InBand::Error(_) if policy.in_band_error => failure(FailureClass::InBandError, slow),
            _ => Verdict::ProxyLimit,
        }),
        Some(_) => None,
        None if policy.timeout => Some(failure(FailureClass::Timeout, slow)),
        None => Some(Verdict::Ignored),
    }
}

fn failure(class: FailureClass, slow: bool) -> Verdict {
    Verdict::Counted(Outcome {
        failure: Some(class),
        slow,
        reset_in_ms: None,
    })
}

#[cfg(test)]
mod tests;
