//! The `breaker` block as users write it (globally, and merged with an upstream's
//! override before it is typed): the trip rules, the open and half-open schedule,
//! what counts as a failure, and rate-limit handling.

use super::{Millis, Scope};
use serde::Deserialize;

/// Breaker settings (after merging overrides).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive failures that trip the breaker; 0 turns the rule off.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// Failure-rate rule.
    #[serde(default)]
    pub failure_rate: RawFailureRate,
    /// Slow-call rule.
    #[serde(default)]
    pub slow_call: RawSlowCall,
    /// How long the breaker stays open.
    #[serde(default)]
    pub open: RawOpen,
    /// Probing while half-open.
    #[serde(default)]
    pub half_open: RawHalfOpen,
    /// What counts as a failure.
    #[serde(default)]
    pub failure: RawFailure,
    /// Rate limits that say when they reset.
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// One breaker per upstream, or per upstream and model.
    #[serde(default)]
    pub scope: Scope,
}

/// Rate-limit handling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// A rate-limited response that says when the limit resets opens the breaker at
    /// once, for exactly that long; false counts it like any other failure.
    #[serde(default = "yes")]
    pub trip_on_reset_hint: bool,
    /// Cap on an open period taken from a provider's reset hint.
    #[serde(default = "default_max_ms")]
    pub max_open_ms: Millis,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            trip_on_reset_hint: true,
            max_open_ms: default_max_ms(),
        }
    }
}

fn default_consecutive() -> u32 {
    5
}

/// Failure-rate rule settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureRate {
    /// Trip when failures / calls in the window reach this (0 < t <= 1).
    #[serde(default = "default_rate_threshold")]
    pub threshold: f64,
    /// Calls the window must hold before the rate rules apply.
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    /// The sliding window.
    #[serde(default)]
    pub window: RawWindow,
}

impl Default for RawFailureRate {
    fn default() -> Self {
        Self {
            threshold: default_rate_threshold(),
            minimum_calls: default_minimum_calls(),
            window: RawWindow::default(),
        }
    }
}

fn default_rate_threshold() -> f64 {
    0.5
}

fn default_minimum_calls() -> u32 {
    20
}

/// A sliding window: time based (`seconds`) or count based (`calls`), exactly one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Window length in seconds.
    pub seconds: Option<u32>,
    /// Window length in calls.
    pub calls: Option<u32>,
}

impl Default for RawWindow {
    fn default() -> Self {
        Self {
            seconds: Some(60),
            calls: None,
        }
    }
}

/// Slow-call rule settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlowCall {
    /// A call is slow when its first response byte came later than this.
    #[serde(default = "default_ttfb_ms")]
    pub ttfb_ms: Millis,
    /// Trip when slow calls / calls in the window reach this (0 < t <= 1).
    #[serde(default = "default_slow_rate")]
    pub rate_threshold: f64,
}

impl Default for RawSlowCall {
    fn default() -> Self {
        Self {
            ttfb_ms: default_ttfb_ms(),
            rate_threshold: default_slow_rate(),
        }
    }
}

fn default_ttfb_ms() -> Millis {
    Millis(15_000)
}

fn default_slow_rate() -> f64 {
    0.8
}

/// Open-duration schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpen {
    /// First open duration.
    #[serde(default = "default_base_ms")]
    pub base_ms: Millis,
    /// Cap on the open duration.
    #[serde(default = "default_max_ms")]
    pub max_ms: Millis,
    /// Growth per re-open without a full close in between.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Random spread, as a fraction of the duration (0 <= j < 1).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for RawOpen {
    fn default() -> Self {
        Self {
            base_ms: default_base_ms(),
            max_ms: default_max_ms(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

fn default_base_ms() -> Millis {
    Millis(30_000)
}

fn default_max_ms() -> Millis {
    Millis(300_000)
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_jitter() -> f64 {
    0.1
}

/// Half-open probing settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHalfOpen {
    /// Probe requests admitted at once, across all workers.
    #[serde(default = "default_permitted")]
    pub permitted_calls: u32,
    /// Probe successes that close the breaker.
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,
    /// A probe permit not reported back within this is released.
    #[serde(default = "default_permit_timeout_ms")]
    pub permit_timeout_ms: Millis,
}

impl Default for RawHalfOpen {
    fn default() -> Self {
        Self {
            permitted_calls: default_permitted(),
            success_threshold: default_success_threshold(),
            permit_timeout_ms: default_permit_timeout_ms(),
        }
    }
}

fn default_permitted() -> u32 {
    3
}

fn default_success_threshold() -> u32 {
    2
}

fn default_permit_timeout_ms() -> Millis {
    Millis(60_000)
}

/// Failure classification settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailure {
    /// Upstream status codes that count as failures.
    #[serde(default = "default_status")]
    pub status: Vec<u16>,
    /// Upstream status codes that count as rate-limit failures.
    #[serde(default = "default_rate_limited")]
    pub rate_limited: Vec<u16>,
    /// Count connection failures (Envoy flag UF, and UH).
    #[serde(default = "yes")]
    pub connect_failure: bool,
    /// Count resets before or during the response (flags UR, UC).
    #[serde(default = "yes")]
    pub reset: bool,
    /// Count upstream timeouts (flag UT).
    #[serde(default = "yes")]
    pub timeout: bool,
    /// Count an error inside a 200 response: an SSE error event, a `data:` error
    /// object, a JSON body that is an error object.
    #[serde(default = "yes")]
    pub in_band_error: bool,
    /// Count an SSE stream that ends without its terminal event (`[DONE]`,
    /// `message_stop`).
    #[serde(default = "yes")]
    pub stream_truncated: bool,
    /// Client 4xx statuses that count as provider failures after all (for example
    /// 403 from a provider that disabled the key). Empty by default.
    #[serde(default)]
    pub client_errors_as_failures: Vec<u16>,
}

impl Default for RawFailure {
    fn default() -> Self {
        Self {
            status: default_status(),
            rate_limited: default_rate_limited(),
            connect_failure: true,
            reset: true,
            timeout: true,
            in_band_error: true,
            stream_truncated: true,
            client_errors_as_failures: Vec::new(),
        }
    }
}

fn default_status() -> Vec<u16> {
    vec![500, 502, 503, 504, 529]
}

fn default_rate_limited() -> Vec<u16> {
    vec![429]
}

fn yes() -> bool {
    true
}
