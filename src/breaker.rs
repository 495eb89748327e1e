//! The circuit breaker of one upstream: a state machine over [`Phase`], driven by
//! admissions and outcomes with the time passed in. Pure: it neither reads a clock
//! nor touches shared data; [`crate::store`] loads, applies and saves it.

use crate::backoff::open_duration_ms;
use crate::classify::{FailureClass, Outcome};
use crate::config::BreakerConfig;
use crate::window::Window;

mod events;
pub use events::{PhaseKind, Reason, Transition};

pub use crate::config::MAX_PERMITS;

/// Where the breaker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Traffic flows; outcomes feed the trip rules.
    Closed,
    /// Traffic is diverted until `until_ms` (unix ms); the next request after that
    /// moves the breaker to half-open.
    Open {
        /// When the open period ends.
        until_ms: u64,
    },
    /// Forced open by an operator (maintenance, an incident) until released: no
    /// traffic, no probes, outcomes ignored.
    Isolated,
    /// A bounded number of probe requests test recovery.
    HalfOpen {
        /// Expiry time (unix ms) of each permit in use; also the permit's token.
        permits: Vec<u64>,
        /// Probe successes so far.
        successes: u32,
    },
}

/// What an admitted request carries until its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Breaker epoch at admission; outcomes from an older epoch are ignored.
    pub epoch: u32,
    /// Half-open permit token, for probes.
    pub permit: Option<u64>,
}

/// The answer to "may this request go to this upstream?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Admitted(Ticket),
    /// No; the breaker may admit again from `retry_at_ms`.
    Denied {
        /// Earliest time the upstream may admit again.
        retry_at_ms: u64,
    },
}

/// Result of applying an event to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<T> {
    /// The event's answer.
    pub value: T,
    /// Whether the breaker changed and must be written back.
    pub changed: bool,
    /// The phase change, if any.
    pub transition: Option<Transition>,
}

/// Per-upstream breaker state, as kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    /// Current phase.
    pub phase: Phase,
    /// Bumped on every phase change.
    pub epoch: u32,
    /// Time of the last phase change (unix ms).
    pub since_ms: u64,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Opens since the last full close (drives the backoff).
    pub reopens: u32,
    /// Opens since this state was created.
    pub times_opened: u32,
    /// Outcomes in the sliding window while closed.
    pub window: Window,
    /// The last failure recorded: its class and time (unix ms).
    pub last_failure: Option<(FailureClass, u64)>,
}

/// How long an isolated upstream tells clients to wait (`retry-after`).
pub const ISOLATED_RETRY_MS: u64 = 60_000;

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(cfg: &BreakerConfig, now_ms: u64) -> Breaker {
        Breaker {
            phase: Phase::Closed,
            epoch: 0,
            since_ms: now_ms,
            consecutive_failures: 0,
            reopens: 0,
            times_opened: 0,
            window: Window::new(cfg.window),
            last_failure: None,
        }
    }

    /// The phase without its data.
    pub fn kind(&self) -> PhaseKind {
        match self.phase {
            Phase::Closed => PhaseKind::Closed,
            Phase::Open { .. } => PhaseKind::Open,
            Phase::HalfOpen { .. } => PhaseKind::HalfOpen,
            Phase::Isolated => PhaseKind::Isolated,
        }
    }

    /// Operator reset: closed, counts and window cleared, backoff growth reset.
    pub fn operator_reset(&mut self, cfg: &BreakerConfig, now_ms: u64) -> Step<()> {
        self.reopens = 0;
        self.window = Window::new(cfg.window);
        self.step_to(Phase::Closed, now_ms, Reason::OperatorReset)
    }

    /// Operator isolation: no traffic until [`Breaker::operator_release`].
    pub fn operator_isolate(&mut self, now_ms: u64) -> Step<()> {
        if self.phase == Phase::Isolated {
            return unchanged(());
        }
        self.step_to(Phase::Isolated, now_ms, Reason::OperatorIsolate)
    }

    /// A successful active probe while open: half-open now, without waiting for the
    /// open period to end. Does nothing in any other phase.
    pub fn probe_succeeded(&mut self, now_ms: u64) -> Step<()> {
        if !matches!(self.phase, Phase::Open { .. }) {
            return unchanged(());
        }
        let half_open = Phase::HalfOpen {
            permits: Vec::new(),
            successes: 0,
        };
        self.step_to(half_open, now_ms, Reason::ActiveProbe)
    }

    /// Ends an isolation: closed, with a fresh window. Does nothing otherwise.
    pub fn operator_release(&mut self, now_ms: u64) -> Step<()> {
        if self.phase != Phase::Isolated {
            return unchanged(());
        }
        self.reopens = 0;
        self.step_to(Phase::Closed, now_ms, Reason::OperatorRelease)
    }

    /// Moves to `phase` as a step that must be written back.
    fn step_to(&mut self, phase: Phase, now_ms: u64, reason: Reason) -> Step<()> {
        let transition = self.enter(phase, now_ms, reason, None);
        Step {
            value: (),
            changed: true,
            transition: Some(transition),
        }
    }

    /// Makes a decoded state fit the current config (the window shape may have
    /// changed); returns whether anything changed.
    pub fn conform(&mut self, cfg: &BreakerConfig) -> bool {
        if self.window.fits(cfg.window) {
            return false;
        }
        self.window = Window::new(cfg.window);
        true
    }

    /// Decides whether a request may go to this upstream now.
    pub fn admit(&mut self, cfg: &BreakerConfig, now_ms: u64) -> Step<Admission> {
        let mut transition = None;
        if let Phase::Open { until_ms } = self.phase {
            if now_ms < until_ms && open_end_plausible(cfg, self.since_ms, until_ms, now_ms) {
                return unchanged(Admission::Denied {
                    retry_at_ms: until_ms,
                });
            }
            transition = Some(self.enter(
                Phase::HalfOpen {
                    permits: Vec::new(),
                    successes: 0,
                },
                now_ms,
                Reason::OpenElapsed,
                None,
            ));
        }
        let epoch = self.epoch;
        match &mut self.phase {
            Phase::Closed => unchanged(Admission::Admitted(Ticket {
                epoch,
                permit: None,
            })),
            Phase::HalfOpen { permits, .. } => {
                let before = permits.len();
                permits.retain(|&expiry| expiry > now_ms);
                let mut changed = transition.is_some() || permits.len() != before;
                let limit = (cfg.half_open.permitted_calls as usize).min(MAX_PERMITS);
                let value = if permits.len() < limit {
                    let mut token = now_ms.saturating_add(cfg.half_open.permit_timeout_ms);
                    while permits.contains(&token) {
                        token += 1;
                    }
                    permits.push(token);
                    changed = true;
                    Admission::Admitted(Ticket {
                        epoch,
                        permit: Some(token),
                    })
                } else {
                    let earliest = permits.iter().copied().min().unwrap_or(now_ms);
                    Admission::Denied {
                        retry_at_ms: earliest.min(now_ms + 1000),
                    }
                };
                Step {
                    value,
                    changed,
                    transition,
                }
            }
            // Unreachable: Open was handled above.
            Phase::Open { until_ms } => unchanged(Admission::Denied {
                retry_at_ms: *until_ms,
            }),
            // No traffic, no probes, until an operator releases it.
            Phase::Isolated => unchanged(Admission::Denied {
                retry_at_ms: now_ms.saturating_add(ISOLATED_RETRY_MS),
            }),
        }
    }

    /// Records the outcome of a request admitted with `ticket`. `seed` feeds the
    /// open-duration jitter.
    pub fn record(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        ticket: Ticket,
        outcome: Outcome,
        seed: u64,
    ) -> Step<()> {
        if ticket.epoch != self.epoch {
            // Admitted before the last phase change: it says nothing about now.
            return unchanged(());
        }
        let failed = outcome.failure.is_some();
        if let (Some(class), Phase::Closed | Phase::HalfOpen { .. }) =
            (outcome.failure, &self.phase)
        {
            self.last_failure = Some((class, now_ms));
        }
        match &mut self.phase {
            Phase::Closed => {
                self.window.record(now_ms, failed, outcome.slow);
                self.consecutive_failures = if failed {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                let hinted = hinted_open_ms(cfg, &outcome);
                let reason = match hinted {
                    Some(_) => Some(Reason::RateLimitReset),
                    None => self.trip_reason(cfg, now_ms),
                };
                let transition = reason.map(|reason| {
                    let ms = hinted.unwrap_or_else(|| open_duration_ms(&cfg.open, 0, seed));
                    self.reopens = 1;
                    self.enter(
                        Phase::Open {
                            until_ms: now_ms.saturating_add(ms),
                        },
                        now_ms,
                        reason,
                        Some(ms),
                    )
                });
                Step {
                    value: (),
                    changed: true,
                    transition,
                }
            }
            Phase::Open { .. } | Phase::Isolated => unchanged(()),
            Phase::HalfOpen { permits, successes } => {
                if let Some(token) = ticket.permit {
                    permits.retain(|&p| p != token);
                }
                let transition = if failed {
                    let ms = hinted_open_ms(cfg, &outcome)
                        .unwrap_or_else(|| open_duration_ms(&cfg.open, self.reopens, seed));
                    self.reopens = self.reopens.saturating_add(1);
                    Some(self.enter(
                        Phase::Open {
                            until_ms: now_ms.saturating_add(ms),
                        },
                        now_ms,
                        Reason::ProbeFailed,
                        Some(ms),
                    ))
                } else {
                    *successes = successes.saturating_add(1);
                    if *successes >= cfg.half_open.success_threshold {
                        self.reopens = 0;
                        Some(self.enter(Phase::Closed, now_ms, Reason::ProbesSucceeded, None))
                    } else {
                        None
                    }
                };
                Step {
                    value: (),
                    changed: true,
                    transition,
                }
            }
        }
    }

    /// Adds `n` fast successes of requests admitted while closed in `epoch`, held by
    /// one worker. They were held only because the breaker had no failure streak when
    /// they completed ([`crate::store::quiet_now`]), so a streak that has started since
    /// came after them: they dilute the rates but leave the streak alone, and never trip.
    pub fn record_successes(&mut self, now_ms: u64, epoch: u32, n: u32) -> Step<()> {
        if epoch != self.epoch || n == 0 || self.phase != Phase::Closed {
            return unchanged(());
        }
        self.window.record_successes(now_ms, n);
        Step {
            value: (),
            changed: true,
            transition: None,
        }
    }

    /// Closed with no failure streak: a fast success now changes nothing but the
    /// window's call count.
    pub fn is_quiet(&self) -> bool {
        self.phase == Phase::Closed && self.consecutive_failures == 0
    }

    /// Releases a probe permit whose request ended without an outcome that counts
    /// (for example the client went away).
    pub fn release(&mut self, ticket: Ticket) -> Step<()> {
        match (&mut self.phase, ticket.permit) {
            (Phase::HalfOpen { permits, .. }, Some(token))
                if ticket.epoch == self.epoch && permits.contains(&token) =>
            {
                permits.retain(|&p| p != token);
                Step {
                    value: (),
                    changed: true,
                    transition: None,
                }
            }
            _ => unchanged(()),
        }
    }

    fn trip_reason(&self, cfg: &BreakerConfig, now_ms: u64) -> Option<Reason> {
        if cfg.consecutive_failures > 0 && self.consecutive_failures >= cfg.consecutive_failures {
            return Some(Reason::ConsecutiveFailures);
        }
        let t = self.window.totals(now_ms);
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

    /// Moves to `phase`, clearing what the new phase must not inherit.
    fn enter(
        &mut self,
        phase: Phase,
        now_ms: u64,
        reason: Reason,
        open_ms: Option<u64>,
    ) -> Transition {
        let from = self.kind();
        self.phase = phase;
        let to = self.kind();
        self.epoch = self.epoch.wrapping_add(1);
        self.since_ms = now_ms;
        self.consecutive_failures = 0;
        if to != PhaseKind::HalfOpen {
            self.window.clear();
        }
        if to == PhaseKind::Open {
            self.times_opened = self.times_opened.saturating_add(1);
        }
        Transition {
            from,
            to,
            reason,
            open_ms,
        }
    }
}

/// The open period a rate-limited outcome asks for: the provider's reset hint,
/// capped, when the config honours hints; `None` to follow the normal rules (no
/// hint, a zero hint, or hints turned off).
fn hinted_open_ms(cfg: &BreakerConfig, outcome: &Outcome) -> Option<u64> {
    if outcome.failure != Some(crate::classify::FailureClass::RateLimited)
        || !cfg.rate_limit.trip_on_reset_hint
    {
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

fn unchanged<T>(value: T) -> Step<T> {
    Step {
        value,
        changed: false,
        transition: None,
    }
}

#[cfg(test)]
mod tests;
