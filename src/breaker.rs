//! The circuit breaker of one upstream: a state machine over [`Phase`], driven by
//! admissions and outcomes with the time passed in. Pure: it neither reads a clock
//! nor touches shared data; [`crate::store`] loads, applies and saves it.

use crate::backoff::open_duration_ms;
use crate::classify::{FailureClass, Outcome};
use crate::config::BreakerConfig;
use crate::window::Window;

mod events;
mod fleet;
mod rules;
pub use events::{PhaseKind, Reason, Transition};
pub use rules::open_end_plausible;

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
                let (value, permits_changed) = rules::admit_probe(permits, cfg, now_ms, epoch);
                Step {
                    value,
                    changed: permits_changed || transition.is_some(),
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
        if let (Some(class), Phase::Closed | Phase::HalfOpen { .. }) =
            (outcome.failure, &self.phase)
        {
            self.last_failure = Some((class, now_ms));
        }
        let transition = match self.phase {
            Phase::Closed => self.record_closed(cfg, now_ms, &outcome, seed),
            Phase::HalfOpen { .. } => self.record_probe(cfg, now_ms, ticket, &outcome, seed),
            Phase::Open { .. } | Phase::Isolated => return unchanged(()),
        };
        Step {
            value: (),
            changed: true,
            transition,
        }
    }

    /// A closed breaker's outcome: into the window and the streak, then the trip
    /// rules (a rate limit with a reset hint trips at once, for the hinted time).
    fn record_closed(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        outcome: &Outcome,
        seed: u64,
    ) -> Option<Transition> {
        let failed = outcome.failure.is_some();
        self.window.record(now_ms, failed, outcome.slow);
        self.consecutive_failures = if failed {
            self.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        let hinted = rules::hinted_open_ms(cfg, outcome);
        let reason = match hinted {
            Some(_) => Reason::RateLimitReset,
            None => rules::trip_reason(cfg, self, now_ms)?,
        };
        let ms = hinted.unwrap_or_else(|| open_duration_ms(&cfg.open, 0, seed));
        self.reopens = 1;
        Some(self.open_for(ms, now_ms, reason))
    }

    /// A probe's outcome: a failure re-opens with the next (longer) open period,
    /// enough successes close.
    fn record_probe(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        ticket: Ticket,
        outcome: &Outcome,
        seed: u64,
    ) -> Option<Transition> {
        let Phase::HalfOpen { permits, successes } = &mut self.phase else {
            return None;
        };
        if let Some(token) = ticket.permit {
            permits.retain(|&p| p != token);
        }
        if outcome.failure.is_some() {
            let ms = rules::hinted_open_ms(cfg, outcome)
                .unwrap_or_else(|| open_duration_ms(&cfg.open, self.reopens, seed));
            self.reopens = self.reopens.saturating_add(1);
            return Some(self.open_for(ms, now_ms, Reason::ProbeFailed));
        }
        *successes = successes.saturating_add(1);
        if *successes < cfg.half_open.success_threshold {
            return None;
        }
        self.reopens = 0;
        Some(self.enter(Phase::Closed, now_ms, Reason::ProbesSucceeded, None))
    }

    /// Opens for `ms` from now.
    fn open_for(&mut self, ms: u64, now_ms: u64, reason: Reason) -> Transition {
        let until_ms = now_ms.saturating_add(ms);
        self.enter(Phase::Open { until_ms }, now_ms, reason, Some(ms))
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

fn unchanged<T>(value: T) -> Step<T> {
    Step {
        value,
        changed: false,
        transition: None,
    }
}

#[cfg(test)]
mod tests;
