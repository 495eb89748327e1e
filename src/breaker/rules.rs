//! The small policies the state machine consults: which rule trips a closed
//! breaker, how long a rate limit's reset hint keeps it open, and whether a stored
//! open period is plausible enough to trust.

use super::{Breaker, Reason};
use crate::classify::{FailureClass, Outcome};
use crate::config::BreakerConfig;

/// The rule a closed breaker trips by after its last outcome, if any.
pub(super) fn trip_reason(cfg: &BreakerConfig, b: &Breaker, now_ms: u64) -> Option<Reason> {
    if cfg.consecutive_failures > 0 && b.consecutive_failures >= cfg.consecutive_failures {
        return Some(Reason::ConsecutiveFailures);
    }
    let t = b.window.totals(now_ms);
    if t.calls == 0 || t.calls < cfg.minimum_calls {
        return None;
    }
    let calls = f64::from(t.calls);
    if f64::from(t.failures) / calls >= cfg.failure_rate_threshold {
        return Some(Reason::FailureRate);
    }
    if f64::from(t.slow) / calls >= cfg.slow_rate_threshold {
        return Some(Reason::SlowCallRate);
    }
    None
}

/// The open period a rate-limited outcome asks for: the provider's reset hint,
/// capped, when the config honours hints; `None` to follow the normal rules (no
/// hint, a zero hint, or hints turned off).
pub(super) fn hinted_open_ms(cfg: &BreakerConfig, outcome: &Outcome) -> Option<u64> {
    if outcome.failure != Some(FailureClass::RateLimited) || !cfg.rate_limit.trip_on_reset_hint {
        return None;
    }
    outcome
        .reset_in_ms
        .filter(|&ms| ms > 0)
        .map(|ms| ms.min(cfg.rate_limit.max_open_ms))
}

/// Slack for clocks of different workers (and a clock step) when judging an open
/// period against the reader's own time.
const CLOCK_SLACK_MS: u64 = 60_000;

/// Whether an open period ending at `until_ms` can be genuine: no open period is
/// longer than `max_ms` (or the rate-limit cap), so a later end comes from corrupt
/// bytes or a lowered cap, and must not strand the upstream. Measured from when it opened, with
/// the reader's clock only as a loose bound.
pub fn open_end_plausible(cfg: &BreakerConfig, since_ms: u64, until_ms: u64, now_ms: u64) -> bool {
    let longest = cfg.longest_open_ms();
    until_ms <= since_ms.saturating_add(longest)
        && until_ms <= now_ms.saturating_add(longest + CLOCK_SLACK_MS)
}
