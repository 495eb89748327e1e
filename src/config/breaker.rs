//! The `breaker` block, validated section by section: each `TryFrom<Raw…>` checks
//! its own fields with paths relative to the section, and [`BreakerConfig`]'s puts
//! the section's name in front.

use super::checks::{range, unit_interval};
use super::error::{invalid, typed};
use super::raw::{
    RawBreaker, RawFailure, RawFailureRate, RawHalfOpen, RawOpen, RawRateLimit, RawSlowCall,
    RawWindow,
};
use super::{
    BreakerConfig, ConfigError, FailurePolicy, HalfOpenPolicy, Millis, OpenPolicy, RateLimitPolicy,
    WindowSpec, MAX_CALLS, MAX_PERMITS,
};

/// Longest open period, permit lifetime or reset-hint cap: one day.
const MAX_DAY_MS: u64 = 86_400_000;

/// Statuses that are the client's own mistake, never a provider failure.
const CLIENT_ERRORS: [u16; 6] = [400, 401, 403, 404, 413, 422];

/// Types a (merged) breaker block and validates it; errors are named under `at`
/// (`breaker` or `upstreams.<name>.breaker`).
pub(super) fn breaker_config(v: serde_json::Value, at: &str) -> Result<BreakerConfig, ConfigError> {
    let raw: RawBreaker = typed(v, at)?;
    BreakerConfig::try_from(raw).map_err(|e| e.under(at))
}

impl TryFrom<RawBreaker> for BreakerConfig {
    type Error = ConfigError;

    fn try_from(b: RawBreaker) -> Result<Self, ConfigError> {
        range(
            "consecutive_failures",
            b.consecutive_failures.into(),
            0,
            1_000_000,
        )?;
        let rate = FailureRate::try_from(b.failure_rate).map_err(|e| e.under("failure_rate"))?;
        let slow = SlowCall::try_from(b.slow_call).map_err(|e| e.under("slow_call"))?;
        Ok(BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            failure_rate_threshold: rate.threshold,
            minimum_calls: rate.minimum_calls,
            window: rate.window,
            slow_ttfb_ms: slow.ttfb_ms,
            slow_rate_threshold: slow.rate_threshold,
            open: OpenPolicy::try_from(b.open).map_err(|e| e.under("open"))?,
            half_open: HalfOpenPolicy::try_from(b.half_open).map_err(|e| e.under("half_open"))?,
            failure: FailurePolicy::try_from(b.failure).map_err(|e| e.under("failure"))?,
            rate_limit: RateLimitPolicy::try_from(b.rate_limit)
                .map_err(|e| e.under("rate_limit"))?,
            scope: b.scope,
        })
    }
}

/// The failure-rate rule: threshold, minimum calls and the window they count in.
struct FailureRate {
    threshold: f64,
    minimum_calls: u32,
    window: WindowSpec,
}

impl TryFrom<RawFailureRate> for FailureRate {
    type Error = ConfigError;

    fn try_from(fr: RawFailureRate) -> Result<Self, ConfigError> {
        unit_interval("threshold", fr.threshold)?;
        range("minimum_calls", fr.minimum_calls.into(), 1, 1_000_000)?;
        let window = WindowSpec::try_from(fr.window).map_err(|e| e.under("window"))?;
        if let WindowSpec::Calls(c) = window {
            if fr.minimum_calls > c {
                return Err(invalid(
                    "minimum_calls",
                    format!(
                        "must not exceed the window's {c} calls, got {}",
                        fr.minimum_calls
                    ),
                ));
            }
        }
        Ok(FailureRate {
            threshold: fr.threshold,
            minimum_calls: fr.minimum_calls,
            window,
        })
    }
}

impl TryFrom<RawWindow> for WindowSpec {
    type Error = ConfigError;

    fn try_from(w: RawWindow) -> Result<Self, ConfigError> {
        match (w.seconds, w.calls) {
            (Some(s), None) => {
                range("seconds", s.into(), 1, 3600)?;
                Ok(WindowSpec::Seconds(s))
            }
            (None, Some(c)) => {
                range("calls", c.into(), 1, MAX_CALLS.into())?;
                Ok(WindowSpec::Calls(c))
            }
            _ => Err(invalid(
                "",
                "must be exactly one of {\"seconds\": N} or {\"calls\": N}",
            )),
        }
    }
}

/// The slow-call rule.
struct SlowCall {
    ttfb_ms: Millis,
    rate_threshold: f64,
}

impl TryFrom<RawSlowCall> for SlowCall {
    type Error = ConfigError;

    fn try_from(s: RawSlowCall) -> Result<Self, ConfigError> {
        unit_interval("rate_threshold", s.rate_threshold)?;
        Ok(SlowCall {
            ttfb_ms: s.ttfb_ms.within("ttfb_ms", 1, 3_600_000)?,
            rate_threshold: s.rate_threshold,
        })
    }
}

impl TryFrom<RawOpen> for OpenPolicy {
    type Error = ConfigError;

    fn try_from(o: RawOpen) -> Result<Self, ConfigError> {
        let base_ms = o.base_ms.within("base_ms", 1, MAX_DAY_MS)?;
        let max_ms = o
            .max_ms
            .within("max_ms", base_ms.get(), MAX_DAY_MS)
            .map_err(|_| {
                invalid(
                    "max_ms",
                    format!(
                        "must be between base_ms ({base_ms}) and {MAX_DAY_MS}, got {}",
                        o.max_ms.get()
                    ),
                )
            })?;
        if !(o.multiplier.is_finite() && (1.0..=100.0).contains(&o.multiplier)) {
            return Err(invalid(
                "multiplier",
                format!("must be between 1.0 and 100.0, got {}", o.multiplier),
            ));
        }
        if !(o.jitter.is_finite() && (0.0..1.0).contains(&o.jitter)) {
            return Err(invalid(
                "jitter",
                format!("must be at least 0 and below 1, got {}", o.jitter),
            ));
        }
        Ok(OpenPolicy {
            base_ms,
            max_ms,
            multiplier: o.multiplier,
            jitter: o.jitter,
        })
    }
}

impl TryFrom<RawHalfOpen> for HalfOpenPolicy {
    type Error = ConfigError;

    fn try_from(h: RawHalfOpen) -> Result<Self, ConfigError> {
        range(
            "permitted_calls",
            h.permitted_calls.into(),
            1,
            MAX_PERMITS as u64,
        )?;
        range(
            "success_threshold",
            h.success_threshold.into(),
            1,
            u64::from(u16::MAX),
        )?;
        Ok(HalfOpenPolicy {
            permitted_calls: h.permitted_calls,
            success_threshold: h.success_threshold,
            permit_timeout_ms: h
                .permit_timeout_ms
                .within("permit_timeout_ms", 1, MAX_DAY_MS)?,
        })
    }
}

impl TryFrom<RawFailure> for FailurePolicy {
    type Error = ConfigError;

    fn try_from(f: RawFailure) -> Result<Self, ConfigError> {
        provider_statuses("status", &f.status)?;
        provider_statuses("rate_limited", &f.rate_limited)?;
        for (i, s) in f.client_errors_as_failures.iter().enumerate() {
            if !(400..500).contains(s) {
                return Err(invalid(
                    format!("client_errors_as_failures[{i}]"),
                    format!("must be a 4xx status, got {s}"),
                ));
            }
        }
        if let Some(s) = f.status.iter().find(|s| f.rate_limited.contains(s)) {
            return Err(invalid(
                "rate_limited",
                format!("status {s} is also listed in `failure.status`"),
            ));
        }
        Ok(FailurePolicy {
            status: f.status,
            rate_limited: f.rate_limited,
            connect_failure: f.connect_failure,
            reset: f.reset,
            timeout: f.timeout,
            in_band_error: f.in_band_error,
            stream_truncated: f.stream_truncated,
            client_errors_as_failures: f.client_errors_as_failures,
        })
    }
}

/// Statuses a provider failure may have: HTTP statuses, none of them the client's
/// own mistake.
fn provider_statuses(name: &str, list: &[u16]) -> Result<(), ConfigError> {
    for (i, s) in list.iter().enumerate() {
        let field = format!("{name}[{i}]");
        range(&field, (*s).into(), 100, 599)?;
        if CLIENT_ERRORS.contains(s) {
            return Err(invalid(
                field,
                format!("{s} is the client's own error and never counts as a provider failure"),
            ));
        }
    }
    Ok(())
}

impl TryFrom<RawRateLimit> for RateLimitPolicy {
    type Error = ConfigError;

    fn try_from(r: RawRateLimit) -> Result<Self, ConfigError> {
        Ok(RateLimitPolicy {
            trip_on_reset_hint: r.trip_on_reset_hint,
            max_open_ms: r.max_open_ms.within("max_open_ms", 1, MAX_DAY_MS)?,
        })
    }
}
