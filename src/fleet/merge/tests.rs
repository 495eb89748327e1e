use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn rec(state: FleetState, until: u64, since: u64, who: &str, generation: u64) -> FleetRecord {
    FleetRecord {
        v: VERSION,
        state,
        until_ms: until,
        since_ms: since,
        reason: "consecutive_failures".into(),
        instance: who.into(),
        generation,
    }
}

fn local(kind: PhaseKind, epoch: u32, since: u64, until: Option<u64>) -> Local {
    Local {
        kind,
        epoch,
        since_ms: since,
        until_ms: until,
    }
}

fn synced(rev: u64, epoch: u32, record: Option<FleetRecord>) -> View {
    View {
        rev,
        record,
        synced_epoch: Some(epoch),
        ..View::default()
    }
}

#[test]
fn a_newer_fleet_record_is_applied() {
    let r = rec(FleetState::Open, 9_000, 1_000, "b", 1);
    let l = local(PhaseKind::Closed, 0, 0, None);
    let d = decide(&l, &View::default(), Some((&r, 5)), "a");
    assert_eq!(d, Decision::Apply(r.clone(), 5));
    // Seen already: nothing.
    assert_eq!(
        decide(&l, &synced(5, 0, Some(r.clone())), Some((&r, 5)), "a"),
        Decision::Nothing
    );
}

#[test]
fn a_local_trip_is_pushed_with_the_cas_revision() {
    let l = local(PhaseKind::Open, 1, 2_000, Some(32_000));
    let view = View {
        reason: Some("consecutive_failures".into()),
        ..synced(0, 0, None)
    };
    match decide(&l, &view, None, "a") {
        Decision::Push(r, 0) => {
            assert_eq!(
                (r.state, r.until_ms, r.since_ms),
                (FleetState::Open, 32_000, 2_000)
            );
            assert_eq!(
                (r.instance.as_str(), r.reason.as_str(), r.generation),
                ("a", "consecutive_failures", 1)
            );
        }
        d => panic!("{d:?}"),
    }
    // Against an existing closed record: CAS on its revision, next generation.
    let closed = rec(FleetState::Closed, 0, 500, "b", 4);
    match decide(
        &l,
        &synced(7, 0, Some(closed.clone())),
        Some((&closed, 7)),
        "a",
    ) {
        Decision::Push(r, 7) => assert_eq!(r.generation, 5),
        d => panic!("{d:?}"),
    }
}

#[test]
fn the_later_change_wins_a_conflict() {
    let fleet = rec(FleetState::Open, 9_000, 1_000, "b", 2);
    let view = synced(3, 0, None);
    // Local closed by an operator after the fleet's trip: local wins.
    let l = local(PhaseKind::Closed, 1, 1_500, None);
    assert!(matches!(
        decide(&l, &view, Some((&fleet, 4)), "a"),
        Decision::Push(_, 4)
    ));
    // Local change older than the fleet's: the fleet wins.
    let l = local(PhaseKind::Open, 1, 900, Some(5_000));
    assert_eq!(
        decide(&l, &view, Some((&fleet, 4)), "a"),
        Decision::Apply(fleet.clone(), 4)
    );
}

#[test]
fn half_open_is_never_written_and_a_restart_starts_quiet() {
    let fleet = rec(FleetState::Open, 9_000, 1_000, "b", 2);
    let l = local(PhaseKind::HalfOpen, 3, 9_000, None);
    assert_eq!(
        decide(
            &l,
            &synced(4, 2, Some(fleet.clone())),
            Some((&fleet, 4)),
            "a"
        ),
        Decision::Nothing
    );
    // A fresh Envoy (never synced, closed) writes nothing over an empty fleet.
    let l = local(PhaseKind::Closed, 0, 10, None);
    assert_eq!(decide(&l, &View::default(), None, "a"), Decision::Nothing);
    // ... and applies an open fleet record even though its own `since` is later.
    assert_eq!(
        decide(&l, &View::default(), Some((&fleet, 4)), "a"),
        Decision::Apply(fleet, 4)
    );
}

#[test]
fn a_change_the_fleet_already_has_is_only_noted() {
    let fleet = rec(FleetState::Closed, 0, 1_000, "b", 2);
    let l = local(PhaseKind::Closed, 5, 2_000, None);
    assert_eq!(
        decide(
            &l,
            &synced(4, 3, Some(fleet.clone())),
            Some((&fleet, 4)),
            "a"
        ),
        Decision::Synced
    );
    // Closed locally, no record at all: nothing to write either.
    assert_eq!(decide(&l, &synced(0, 3, None), None, "a"), Decision::Synced);
}

#[test]
fn one_prober_per_open_period() {
    let r = rec(FleetState::Open, 1_000, 0, "b", 1);
    assert_eq!(prober(&r, None, "a", 500), Some(Prober::Wait));
    assert_eq!(prober(&r, None, "a", 1_000), Some(Prober::Claim));
    assert_eq!(prober(&r, Some("a"), "a", 1_200), Some(Prober::Probe));
    assert_eq!(prober(&r, Some("c"), "a", 1_200), Some(Prober::Hold));
    let closed = rec(FleetState::Closed, 0, 0, "b", 2);
    assert_eq!(prober(&closed, Some("a"), "a", 1_200), None);
}

#[test]
fn views_survive_garbage() {
    assert_eq!(View::decode(b"\x00\xffnot json"), View::default());
    let v = synced(9, 2, Some(rec(FleetState::Open, 1, 0, "b", 1)));
    assert_eq!(View::decode(&v.encode()), v);
}
