//! Fleet sync between two "Envoys" (two workers over two separate stores, so no
//! shared data between them) through a fake etcd that answers the JSON gateway's
//! range, txn (mod/create revision compares) and lease grant like etcd does.

use super::fakes::{config, consecutive, exchange, logs, route, stored, worker, Store, TestWorker};
use crate::breaker::{PhaseKind, Reason};
use crate::fleet::{base64, etcd::Call, FleetRecord, FleetState};
use crate::ids::CellId;
use crate::worker::fleet::Round;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SYNC: u64 = 100;

/// A stored value: (value, mod_revision, create_revision).
type Entry = (Vec<u8>, u64, u64);

/// etcd's JSON gateway, in memory.
#[derive(Default)]
struct FakeEtcd {
    kv: RefCell<BTreeMap<Vec<u8>, Entry>>,
    rev: Cell<u64>,
    down: Cell<bool>,
}

fn dec(v: &Value) -> Vec<u8> {
    base64::decode(v.as_str().unwrap_or("")).unwrap()
}

fn num(v: &Value) -> u64 {
    v.as_str()
        .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
}

impl FakeEtcd {
    fn put(&self, key: &[u8], value: &[u8]) {
        let rev = self.rev.get() + 1;
        self.rev.set(rev);
        let mut kv = self.kv.borrow_mut();
        let create = kv.get(key).map_or(rev, |e| e.2);
        kv.insert(key.to_vec(), (value.to_vec(), rev, create));
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.borrow().get(key.as_bytes()).map(|e| e.0.clone())
    }

    fn record(&self, name: &str) -> FleetRecord {
        FleetRecord::decode(&self.get(&format!("/llm-breaker/breakers/{name}")).unwrap()).unwrap()
    }

    fn answer(&self, call: &Call) -> (Option<u16>, Vec<u8>) {
        if self.down.get() {
            return (None, Vec::new());
        }
        let doc: Value = serde_json::from_str(&call.body).unwrap();
        let out = match call.path {
            "/v3/kv/range" => {
                let (from, to) = (dec(&doc["key"]), dec(&doc["range_end"]));
                let kvs: Vec<Value> = self
                    .kv
                    .borrow()
                    .range(from..to)
                    .map(|(k, (v, m, _))| {
                        json!({"key": base64::encode(k), "value": base64::encode(v), "mod_revision": m.to_string()})
                    })
                    .collect();
                json!({"header": {"revision": self.rev.get().to_string()}, "kvs": kvs})
            }
            "/v3/kv/txn" => self.txn(&doc),
            "/v3/lease/grant" => json!({"ID": "7", "TTL": doc["TTL"]}),
            p => panic!("unexpected path {p}"),
        };
        (Some(200), out.to_string().into_bytes())
    }

    fn txn(&self, doc: &Value) -> Value {
        let c = &doc["compare"][0];
        let key = dec(&c["key"]);
        let held = c.is_null() || {
            let kv = self.kv.borrow();
            let e = kv.get(&key);
            match c["target"].as_str().unwrap() {
                "MOD" => e.map_or(0, |e| e.1) == num(&c["mod_revision"]),
                "CREATE" => e.map_or(0, |e| e.2) == num(&c["create_revision"]),
                "VALUE" => e.is_some_and(|e| e.0 == dec(&c["value"])),
                t => panic!("target {t}"),
            }
        };
        if held {
            for op in doc["success"].as_array().unwrap() {
                if let Some(p) = op.get("request_put") {
                    self.put(&dec(&p["key"]), &dec(&p["value"]));
                } else if let Some(d) = op.get("request_delete_range") {
                    self.kv.borrow_mut().remove(&dec(&d["key"]));
                }
            }
        }
        let mut out = json!({"header": {"revision": self.rev.get().to_string()}});
        if held {
            out["succeeded"] = true.into();
        }
        out
    }
}

/// One Envoy: a worker over its own store, with its own round.
struct Envoy {
    w: TestWorker,
    round: Round,
}

fn envoy(instance: &str, open_ms: u64) -> Envoy {
    envoy_n(instance, 1, open_ms)
}

/// An Envoy whose breakers trip after `n` failures in a row.
fn envoy_n(instance: &str, n: u32, open_ms: u64) -> Envoy {
    let fleet = format!(
        r#","fleet":{{"etcd_cluster":"etcd","sync_ms":{SYNC},"timeout_ms":50,"instance":"{instance}"}}"#
    );
    let w = worker(
        &config(&["openai", "azure"], &consecutive(n, open_ms), &fleet),
        &Store::default(),
        0,
    );
    w.fleet_seed(Some(instance), 0);
    Envoy {
        w,
        round: Round::default(),
    }
}

/// Runs one sync round if one is due; returns the errors and link changes seen.
fn sync(e: &mut Envoy, etcd: &FakeEtcd, now: u64) -> (u32, Vec<bool>) {
    let (mut errors, mut links) = (0, Vec::new());
    let mut next = e.w.fleet_start(&mut e.round, now);
    let mut token = 0;
    while let Some(call) = next {
        token += 1;
        let r = e.w.fleet_sent(&mut e.round, Some(token), now);
        assert!(!r.error);
        let (status, body) = etcd.answer(&call);
        let (n, r) = e.w.fleet_answered(&mut e.round, token, status, &body, now);
        errors += u32::from(r.error);
        links.extend(r.connected);
        next = n;
    }
    (errors, links)
}

fn kind(e: &Envoy, now: u64) -> PhaseKind {
    stored(&e.w, now).kind()
}

#[test]
fn a_trip_on_one_envoy_opens_the_other_with_reason_fleet() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b) = (envoy("a", 10_000), envoy("b", 10_000));
    assert_eq!(sync(&mut a, &etcd, 0).1, vec![true]);
    sync(&mut b, &etcd, 0);
    exchange(&a.w, 503, 50);
    assert_eq!(kind(&a, 50), PhaseKind::Open);
    // The next round writes the record: open, the original reason, who, until.
    sync(&mut a, &etcd, 100);
    let r = etcd.record("openai");
    assert_eq!(
        (r.state, r.instance.as_str(), r.reason.as_str()),
        (FleetState::Open, "a", "consecutive_failures")
    );
    assert_eq!((r.until_ms, r.generation), (10_050, 1));
    let _ = logs();
    sync(&mut b, &etcd, 100);
    assert_eq!(kind(&b, 100), PhaseKind::Open);
    assert!(logs()
        .iter()
        .any(|l| l.contains("upstream=openai from=closed to=open reason=fleet")));
    // Its requests go to the fallback; status shows the fleet record beside it.
    assert_eq!(route(&b.w, 200).unwrap().1, "azure");
    let s: Value = serde_json::from_str(&b.w.fleet_status(crate::admin::status_json(
        b.w.config(),
        &b.w.states(200),
        &[],
        200,
        None,
    )))
    .unwrap();
    assert_eq!(s["upstreams"][0]["fleet"]["instance"], "a");
    assert_eq!(s["upstreams"][0]["fleet"]["reason"], "consecutive_failures");
    assert_eq!(s["fleet"]["instance"], "b");
    // Nothing more to write while nothing changes.
    let rev = etcd.rev.get();
    sync(&mut a, &etcd, 200);
    sync(&mut b, &etcd, 200);
    assert_eq!(etcd.rev.get(), rev);
    assert_eq!(Reason::Fleet.as_str(), "fleet");
}

#[test]
fn one_envoy_probes_and_its_success_closes_the_fleet() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b) = (envoy("a", 1_000), envoy("b", 1_000));
    exchange(&a.w, 503, 0);
    sync(&mut a, &etcd, 0);
    sync(&mut b, &etcd, 0);
    // Both hold past the open period (no one probes before the election).
    assert!(route(&a.w, 1_100).unwrap().1 == "azure" && route(&b.w, 1_100).unwrap().1 == "azure");
    // b syncs first after the open period: it takes the prober key and probes.
    sync(&mut b, &etcd, 1_200);
    sync(&mut a, &etcd, 1_200);
    assert_eq!(
        String::from_utf8(etcd.get("/llm-breaker/probers/openai").unwrap()).unwrap(),
        "b"
    );
    assert_eq!(route(&a.w, 1_250).unwrap().1, "azure", "a must not probe");
    assert_eq!(exchange(&b.w, 200, 1_250), "openai");
    assert_eq!(exchange(&b.w, 200, 1_260), "openai");
    assert_eq!(kind(&b, 1_260), PhaseKind::Closed);
    // Later syncs: a keeps holding until b's result arrives, then closes.
    sync(&mut a, &etcd, 1_300);
    assert_eq!(kind(&a, 1_300), PhaseKind::Open);
    sync(&mut b, &etcd, 1_400);
    assert_eq!(etcd.record("openai").state, FleetState::Closed);
    assert!(etcd.get("/llm-breaker/probers/openai").is_none());
    sync(&mut a, &etcd, 1_400);
    assert_eq!(kind(&a, 1_400), PhaseKind::Closed);
    assert_eq!(route(&a.w, 1_450).unwrap().1, "openai");
}

#[test]
fn a_fresh_envoy_starts_from_the_fleet_record() {
    let etcd = FakeEtcd::default();
    let mut a = envoy("a", 30_000);
    exchange(&a.w, 503, 0);
    sync(&mut a, &etcd, 0);
    let mut late = envoy("late", 30_000);
    sync(&mut late, &etcd, 5_000);
    assert_eq!(route(&late.w, 5_000).unwrap().1, "azure");
    // It wrote nothing over the fleet's record.
    assert_eq!(etcd.record("openai").instance, "a");
}

#[test]
fn etcd_down_backs_off_counts_and_logs_once() {
    let etcd = FakeEtcd::default();
    let mut a = envoy("a", 1_000);
    sync(&mut a, &etcd, 0);
    etcd.down.set(true);
    let _ = logs();
    // The first failure is retried once at once, then counted.
    assert_eq!(sync(&mut a, &etcd, 100), (1, vec![false]));
    assert_eq!(sync(&mut a, &etcd, 200), (1, vec![]));
    let warned = logs()
        .iter()
        .filter(|l| l.contains("etcd unreachable"))
        .count();
    assert_eq!(warned, 1);
    // Backing off: the next round waits 2 syncs, then 4.
    assert_eq!(sync(&mut a, &etcd, 300), (0, vec![]));
    assert_eq!(sync(&mut a, &etcd, 400), (1, vec![]));
    // The request path never waits: local breakers work alone.
    exchange(&a.w, 503, 450);
    assert_eq!(route(&a.w, 460).unwrap().1, "azure");
    etcd.down.set(false);
    assert_eq!(sync(&mut a, &etcd, 900), (0, vec![true]));
    assert_eq!(etcd.record("openai").state, FleetState::Open);
}

#[test]
fn garbage_and_other_versions_are_ignored_with_one_warning() {
    let etcd = FakeEtcd::default();
    let mut a = envoy("a", 1_000);
    etcd.put(b"/llm-breaker/breakers/openai", b"\xff\x00garbage");
    etcd.put(b"/llm-breaker/breakers/azure", br#"{"v":7,"state":"open"}"#);
    etcd.put(b"/llm-breaker/unrelated", b"x");
    let _ = logs();
    assert_eq!(sync(&mut a, &etcd, 0).0, 0);
    let l = logs();
    assert_eq!(
        l.iter().filter(|l| l.contains("fleet: ignoring")).count(),
        2,
        "{l:?}"
    );
    assert!(l.iter().any(|l| l.contains("fleet record version 7")));
    sync(&mut a, &etcd, 100);
    assert!(!logs().iter().any(|l| l.contains("fleet: ignoring")));
    assert_eq!(kind(&a, 100), PhaseKind::Closed);
    // A local trip replaces the garbage (CAS on its revision).
    exchange(&a.w, 503, 150);
    sync(&mut a, &etcd, 200);
    assert_eq!(etcd.record("openai").state, FleetState::Open);
}

#[test]
fn isolate_and_release_reach_the_other_envoy() {
    use crate::admin::{Action, Endpoint};
    let etcd = FakeEtcd::default();
    let fleet = format!(
        r#","fleet":{{"etcd_cluster":"etcd","sync_ms":{SYNC},"instance":"a"}},"admin":{{"enabled":true}}"#
    );
    let mut w = worker(
        &config(&["openai", "azure"], &consecutive(1, 1_000), &fleet),
        &Store::default(),
        0,
    );
    w.load_admin_token(|_| Some("t".into()));
    w.fleet_seed(Some("a"), 0);
    let mut a = Envoy {
        w,
        round: Round::default(),
    };
    let mut b = envoy("b", 1_000);
    let act = |e: &Envoy, action, now| {
        let ep = Ok(Endpoint::Act {
            upstream: "openai".into(),
            action,
        });
        e.w.answer(ep, || Some(b"Bearer t".to_vec()), now);
    };
    act(&a, Action::Isolate, 10);
    sync(&mut a, &etcd, 100);
    assert_eq!(etcd.record("openai").state, FleetState::Isolated);
    sync(&mut b, &etcd, 100);
    assert_eq!(kind(&b, 100), PhaseKind::Isolated);
    act(&a, Action::Release, 150);
    sync(&mut a, &etcd, 200);
    sync(&mut b, &etcd, 200);
    assert_eq!(etcd.record("openai").reason, "operator_release");
    assert_eq!(kind(&b, 200), PhaseKind::Closed);
}

#[test]
fn a_prober_without_traffic_hands_the_key_over() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b) = (envoy("a", 1_000), envoy("b", 1_000));
    exchange(&a.w, 503, 0);
    sync(&mut a, &etcd, 0);
    sync(&mut b, &etcd, 0);
    // b wins the key after the open period but gets no request to probe with.
    sync(&mut b, &etcd, 1_200);
    let key = "/llm-breaker/probers/openai";
    assert_eq!(etcd.get(key).as_deref(), Some(&b"b"[..]));
    sync(&mut a, &etcd, 1_200);
    assert_eq!(route(&a.w, 1_250).unwrap().1, "azure");
    let _ = logs();
    sync(&mut b, &etcd, 1_300);
    assert!(
        etcd.get(key).is_some(),
        "not before two syncs without traffic"
    );
    sync(&mut b, &etcd, 1_450);
    assert!(etcd.get(key).is_none());
    assert!(logs().iter().any(|l| l.contains("prober key handed over")));
    // b does not take it back; a, which has traffic, does and probes.
    sync(&mut b, &etcd, 1_550);
    assert!(etcd.get(key).is_none());
    sync(&mut a, &etcd, 1_550);
    assert_eq!(etcd.get(key).as_deref(), Some(&b"a"[..]));
    assert_eq!(exchange(&a.w, 200, 1_600), "openai");
}

#[test]
fn a_local_trip_brings_the_next_sync_forward() {
    let etcd = FakeEtcd::default();
    let mut a = envoy("a", 10_000);
    sync(&mut a, &etcd, 0);
    // Not due again before one sync_ms...
    assert_eq!(sync(&mut a, &etcd, 20), (0, vec![]));
    assert!(etcd.get("/llm-breaker/breakers/openai").is_none());
    // ... unless the breaker trips: its record is written at the next tick.
    exchange(&a.w, 503, 30);
    sync(&mut a, &etcd, 40);
    assert_eq!(etcd.record("openai").state, FleetState::Open);
}

/// The streak keys in etcd, as `breaker/instance` names.
fn streak_keys(etcd: &FakeEtcd) -> Vec<String> {
    let p = b"/llm-breaker/streaks/";
    etcd.kv
        .borrow()
        .keys()
        .filter_map(|k| k.strip_prefix(&p[..]))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn three(n: u32) -> (Envoy, Envoy, Envoy) {
    (
        envoy_n("a", n, 10_000),
        envoy_n("b", n, 10_000),
        envoy_n("c", n, 10_000),
    )
}

#[test]
fn three_envoys_with_one_failure_each_trip_after_one_round() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b, mut c) = three(3);
    exchange(&a.w, 503, 10);
    exchange(&b.w, 503, 20);
    exchange(&c.w, 503, 30);
    let _ = logs();
    sync(&mut a, &etcd, 100);
    sync(&mut b, &etcd, 100);
    assert_eq!(streak_keys(&etcd), ["openai/a", "openai/b"]);
    assert_eq!(
        (kind(&a, 100), kind(&b, 100)),
        (PhaseKind::Closed, PhaseKind::Closed)
    );
    // c's round sees 1 + 1 besides its own 1: the fleet failed 3 times in a row.
    sync(&mut c, &etcd, 100);
    assert_eq!(kind(&c, 100), PhaseKind::Open);
    let r = etcd.record("openai");
    assert_eq!(
        (r.state, r.reason.as_str(), r.instance.as_str()),
        (FleetState::Open, "fleet_failures", "c")
    );
    let l = logs();
    assert!(
        l.iter()
            .any(|l| l.contains("from=closed to=open reason=fleet_failures")),
        "{l:?}"
    );
    assert!(l
        .iter()
        .any(|l| l.contains("openai failed 3 times in a row across the fleet (1 here)")));
    // The others open from the record at their next round and withdraw their streaks.
    sync(&mut a, &etcd, 200);
    sync(&mut b, &etcd, 200);
    assert_eq!(
        (kind(&a, 200), kind(&b, 200)),
        (PhaseKind::Open, PhaseKind::Open)
    );
    sync(&mut a, &etcd, 300);
    sync(&mut b, &etcd, 300);
    assert!(streak_keys(&etcd).is_empty(), "{:?}", streak_keys(&etcd));
    // The status history keeps the reason.
    assert_eq!(route(&c.w, 300).unwrap().1, "azure");
}

#[test]
fn a_success_resets_that_envoys_streak() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b, mut c) = three(3);
    exchange(&a.w, 503, 10);
    exchange(&b.w, 503, 20);
    sync(&mut a, &etcd, 100);
    sync(&mut b, &etcd, 100);
    // a succeeds: its next publish withdraws its streak.
    exchange(&a.w, 200, 150);
    sync(&mut a, &etcd, 200);
    assert_eq!(streak_keys(&etcd), ["openai/b"]);
    exchange(&c.w, 503, 250);
    sync(&mut c, &etcd, 300);
    assert_eq!(kind(&c, 300), PhaseKind::Closed, "1 + 1 < 3");
    // status shows what the other Envoys' streaks add.
    assert_eq!(
        c.w.fleet_cell_json(CellId::all(2).next().unwrap())["failures_elsewhere"],
        1
    );
    // One more failure on b: 2 + 1.
    exchange(&b.w, 503, 350);
    sync(&mut b, &etcd, 400);
    assert_eq!(kind(&b, 400), PhaseKind::Open);
}

#[test]
fn stale_streaks_do_not_count() {
    let etcd = FakeEtcd::default();
    let (mut a, mut b, mut c) = three(3);
    exchange(&a.w, 503, 0);
    sync(&mut a, &etcd, 100);
    // 40 s later (streak_ttl_ms 30 000 by default): a's failure no longer counts.
    exchange(&b.w, 503, 40_000);
    sync(&mut b, &etcd, 40_000);
    exchange(&c.w, 503, 40_100);
    sync(&mut c, &etcd, 40_100);
    assert_eq!(kind(&c, 40_100), PhaseKind::Closed);
    // A fresh one does.
    exchange(&a.w, 503, 40_200);
    sync(&mut a, &etcd, 40_200);
    assert_eq!(kind(&a, 40_200), PhaseKind::Open);
    assert_eq!(etcd.record("openai").reason, "fleet_failures");
}

#[test]
fn garbage_streaks_are_ignored_with_one_warning() {
    let etcd = FakeEtcd::default();
    let mut a = envoy_n("a", 3, 10_000);
    etcd.put(b"/llm-breaker/streaks/openai/x", b"\xff\x00garbage");
    etcd.put(
        b"/llm-breaker/streaks/openai/y",
        br#"{"v":9,"breaker":"openai","instance":"y","streak":50,"last_ms":10}"#,
    );
    // A valid value at a key it does not name (copied by hand).
    etcd.put(
        b"/llm-breaker/streaks/openai/z",
        br#"{"v":1,"breaker":"openai","instance":"w","streak":50,"last_ms":10}"#,
    );
    exchange(&a.w, 503, 10);
    let _ = logs();
    assert_eq!(sync(&mut a, &etcd, 100).0, 0);
    let l = logs();
    let warned: Vec<_> = l
        .iter()
        .filter(|l| l.contains("fleet: ignoring /llm-breaker/streaks/"))
        .collect();
    assert_eq!(warned.len(), 3, "{l:?}");
    assert!(l.iter().any(|l| l.contains("streak version 9")));
    assert_eq!(kind(&a, 100), PhaseKind::Closed);
    sync(&mut a, &etcd, 200);
    assert!(!logs().iter().any(|l| l.contains("fleet: ignoring")));
    assert_eq!(kind(&a, 200), PhaseKind::Closed);
}
