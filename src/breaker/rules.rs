//! The small policies the state machine consults: which rule trips a closed
//! breaker, how long a rate limit's reset hint keeps it open, whether a stored
//! open period is plausible enough to trust, and how half-open hands out permits.

use super::{Admission, Breaker, Reason, Ticket};
use crate::classify::{FailureClass, Outcome};
use crate::config::{BreakerConfig, MAX_PERMITS};

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
        .map(|ms| ms.min(cfg.rate_limit.max_open_ms.get()))
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

/// A half-open admission: expired permits are dropped, then a permit is handed
/// out if fewer than the limit are in use. Returns the answer and whether the
/// permits changed.
pub(super) fn admit_probe(
    permits: &mut Vec<u64>,
    cfg: &BreakerConfig,
    now_ms: u64,
    epoch: u32,
) -> (Admission, bool) {
    let before = permits.len();
    permits.retain(|&expiry| expiry > now_ms);
    let expired = permits.len() != before;
    let limit = (cfg.half_open.permitted_calls as usize).min(MAX_PERMITS);
    if permits.len() >= limit {
        let earliest = permits.iter().copied().min().unwrap_or(now_ms);
        let retry_at_ms = earliest.min(now_ms.saturating_add(1000));
        return (Admission::Denied { retry_at_ms }, expired);
    }
    let mut token = now_ms.saturating_add(cfg.half_open.permit_timeout_ms.get());
    while permits.contains(&token) {
        token = token.wrapping_add(1);
    }
    permits.push(token);
    let ticket = Ticket {
        epoch,
        permit: Some(token),
    };
    (Admission::Admitted(ticket), true)
}
