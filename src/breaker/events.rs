//! What the breaker reports when it changes phase: the phase kinds, the reasons and
//! the transition record that metrics and the log consume.

/// The phase without its data, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    /// Closed.
    Closed,
    /// Open.
    Open,
    /// Half-open.
    HalfOpen,
    /// Forced open by an operator until released.
    Isolated,
}

impl PhaseKind {
    /// Every kind. The transition history stores a kind as its position here:
    /// append new kinds, never reorder.
    pub const ALL: [PhaseKind; 4] = [
        PhaseKind::Closed,
        PhaseKind::Open,
        PhaseKind::HalfOpen,
        PhaseKind::Isolated,
    ];

    /// Name used in logs, metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Closed => "closed",
            PhaseKind::Open => "open",
            PhaseKind::HalfOpen => "half_open",
            PhaseKind::Isolated => "isolated",
        }
    }

    /// Value of the state gauge: 0 closed, 1 open (also when isolated), 2 half-open.
    pub fn gauge(self) -> u64 {
        match self {
            PhaseKind::Closed => 0,
            PhaseKind::Open | PhaseKind::Isolated => 1,
            PhaseKind::HalfOpen => 2,
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `consecutive_failures` reached.
    ConsecutiveFailures,
    /// Failure rate over the window reached its threshold.
    FailureRate,
    /// Slow-call rate over the window reached its threshold.
    SlowCallRate,
    /// The provider rate-limited and said when the limit resets.
    RateLimitReset,
    /// The open period passed.
    OpenElapsed,
    /// A half-open probe failed.
    ProbeFailed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// An operator reset the breaker.
    OperatorReset,
    /// An operator isolated the upstream.
    OperatorIsolate,
    /// An operator released an isolated upstream.
    OperatorRelease,
    /// An active recovery probe succeeded while open.
    ActiveProbe,
    /// Another Envoy's transition, applied from the fleet record (etcd).
    Fleet,
    /// The fleet's failure streak (this Envoy's plus the others', through etcd)
    /// reached `consecutive_failures`.
    FleetFailures,
}

impl Reason {
    /// Every reason. The transition history stores a reason as its position here:
    /// append new reasons (a reason missing here is dropped from the history),
    /// never reorder.
    pub const ALL: [Reason; 13] = [
        Reason::ConsecutiveFailures,
        Reason::FailureRate,
        Reason::SlowCallRate,
        Reason::RateLimitReset,
        Reason::OpenElapsed,
        Reason::ProbeFailed,
        Reason::ProbesSucceeded,
        Reason::OperatorReset,
        Reason::OperatorIsolate,
        Reason::OperatorRelease,
        Reason::ActiveProbe,
        Reason::Fleet,
        Reason::FleetFailures,
    ];

    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::FailureRate => "failure_rate",
            Reason::SlowCallRate => "slow_call_rate",
            Reason::RateLimitReset => "rate_limit_reset",
            Reason::OpenElapsed => "open_elapsed",
            Reason::ProbeFailed => "probe_failed",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::OperatorReset => "operator_reset",
            Reason::OperatorIsolate => "operator_isolate",
            Reason::OperatorRelease => "operator_release",
            Reason::ActiveProbe => "active_probe",
            Reason::Fleet => "fleet",
            Reason::FleetFailures => "fleet_failures",
        }
    }
}

/// A state change, reported to metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Phase before.
    pub from: PhaseKind,
    /// Phase after.
    pub to: PhaseKind,
    /// Why.
    pub reason: Reason,
    /// For transitions to open: how long it stays open.
    pub open_ms: Option<u64>,
}
