//! Transitions that come from the fleet record ([`crate::fleet`]) instead of this
//! Envoy's own traffic: they carry [`Reason::Fleet`], and the open period's end can
//! be moved without a transition (held while another Envoy probes, released when
//! this one is the fleet's prober).

use super::{unchanged, Breaker, Phase, Reason, Step};
use crate::backoff::open_duration_ms;
use crate::config::BreakerConfig;

impl Breaker {
    /// The fleet says open until `until_ms`: open (reason `fleet`) or, if already
    /// open, move the end. An isolated breaker stays isolated.
    pub fn fleet_open(&mut self, cfg: &BreakerConfig, until_ms: u64, now_ms: u64) -> Step<()> {
        match self.phase {
            Phase::Isolated => unchanged(()),
            Phase::Open { .. } => self.fleet_until(cfg, until_ms),
            _ => {
                let until_ms = until_ms.min(now_ms.saturating_add(cfg.longest_open_ms()));
                let ms = until_ms.saturating_sub(now_ms);
                let t = self.enter(Phase::Open { until_ms }, now_ms, Reason::Fleet, Some(ms));
                Step {
                    value: (),
                    changed: true,
                    transition: Some(t),
                }
            }
        }
    }

    /// The fleet's failure streak reached `consecutive_failures`: a closed breaker
    /// opens (reason `fleet_failures`) for its first open period, as a local trip
    /// would. Does nothing in any other phase.
    pub fn fleet_trip(&mut self, cfg: &BreakerConfig, now_ms: u64, seed: u64) -> Step<()> {
        if self.phase != Phase::Closed {
            return unchanged(());
        }
        let ms = open_duration_ms(&cfg.open, 0, seed);
        self.reopens = 1;
        let t = self.open_for(ms, now_ms, Reason::FleetFailures);
        Step {
            value: (),
            changed: true,
            transition: Some(t),
        }
    }

    /// The fleet says closed: closed with a fresh backoff (reason `fleet`).
    pub fn fleet_close(&mut self, now_ms: u64) -> Step<()> {
        if self.phase == Phase::Closed {
            return unchanged(());
        }
        self.reopens = 0;
        self.step_to(Phase::Closed, now_ms, Reason::Fleet)
    }

    /// The fleet says isolated (an operator isolated it on some Envoy).
    pub fn fleet_isolate(&mut self, now_ms: u64) -> Step<()> {
        if self.phase == Phase::Isolated {
            return unchanged(());
        }
        self.step_to(Phase::Isolated, now_ms, Reason::Fleet)
    }

    /// Moves the end of an open period, without a transition. Does nothing unless
    /// open. A fleet outage can outlast one open period (re-opens elsewhere, holds
    /// while another Envoy probes), so `since_ms` moves up as far as needed for the
    /// new end to stay within the longest open period ([`super::open_end_plausible`]
    /// treats a later end as corrupt and admits); an end too far from now still
    /// reads as corrupt, so garbage from etcd falls back to the local breaker.
    pub fn fleet_until(&mut self, cfg: &BreakerConfig, until_ms: u64) -> Step<()> {
        let min_since = until_ms.saturating_sub(cfg.longest_open_ms());
        match &mut self.phase {
            Phase::Open { until_ms: u } if *u != until_ms => {
                *u = until_ms;
                self.since_ms = self.since_ms.max(min_since);
                Step {
                    value: (),
                    changed: true,
                    transition: None,
                }
            }
            _ => unchanged(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::PhaseKind;
    use crate::config::Config;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn cfg() -> BreakerConfig {
        let c = Config::parse(br#"{"routes":[{"name":"r","upstreams":["a"]}]}"#).unwrap();
        c.upstreams[0].breaker.clone()
    }

    #[test]
    fn fleet_open_then_hold_then_close() {
        let c = cfg();
        let mut b = Breaker::new(&c, 0);
        let s = b.fleet_open(&c, 5_000, 1_000);
        assert_eq!(s.transition.unwrap().reason, Reason::Fleet);
        assert_eq!(b.phase, Phase::Open { until_ms: 5_000 });
        let epoch = b.epoch;
        // Holding moves the end without a transition.
        let s = b.fleet_until(&c, 9_000);
        assert!(s.changed && s.transition.is_none());
        assert_eq!(
            (b.phase.clone(), b.epoch),
            (Phase::Open { until_ms: 9_000 }, epoch)
        );
        // A long fleet outage: holds far past the first open period keep denying.
        let late = 1_000 + 3 * c.longest_open_ms();
        b.fleet_until(&c, late + 5_000);
        assert!(matches!(
            b.admit(&c, late).value,
            crate::breaker::Admission::Denied { .. }
        ));
        // An absurd end (garbage from etcd) reads as corrupt: the breaker admits.
        b.fleet_until(&c, u64::MAX);
        assert!(matches!(
            b.admit(&c, late).value,
            crate::breaker::Admission::Admitted(_)
        ));
        let s = b.fleet_close(10_000);
        assert_eq!(s.transition.unwrap().to, PhaseKind::Closed);
        assert!(!b.fleet_close(11_000).changed);
    }

    #[test]
    fn a_fleet_trip_opens_a_closed_breaker_only() {
        let c = cfg();
        let mut b = Breaker::new(&c, 0);
        let s = b.fleet_trip(&c, 1_000, 7);
        let t = s.transition.unwrap();
        assert_eq!((t.to, t.reason), (PhaseKind::Open, Reason::FleetFailures));
        assert_eq!((b.reopens, b.consecutive_failures), (1, 0));
        assert!(!b.fleet_trip(&c, 1_001, 7).changed);
        assert_eq!(Reason::FleetFailures.as_str(), "fleet_failures");
    }

    #[test]
    fn isolation_wins_over_a_fleet_open() {
        let c = cfg();
        let mut b = Breaker::new(&c, 0);
        b.fleet_isolate(1);
        assert!(!b.fleet_open(&c, 5_000, 2).changed);
        assert_eq!(b.kind(), PhaseKind::Isolated);
        assert!(!b.fleet_until(&c, 9).changed);
    }
}
