//! Admin answers and active probes, natively: the token gate, operator actions
//! through the same CAS updates as traffic, and which worker probes when.

use super::fakes::*;
use crate::admin::{Action, Endpoint, Refusal};
use crate::ids::UpstreamId;
use crate::worker::metrics::UpstreamMetric;
use crate::worker::operator::{Probes, Reply};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

const ADMIN: &str = r#"{"routes":[{"name":"chat","upstreams":["openai","azure"]}],
    "admin":{"enabled":true,"protect_reads":false}}"#;

fn act(upstream: &str, action: Action) -> Result<Endpoint, Refusal> {
    Ok(Endpoint::Act {
        upstream: upstream.into(),
        action,
    })
}

fn code(r: &Reply) -> u32 {
    match r {
        Reply::Json { status, .. } => *status,
        Reply::Dashboard => 200,
    }
}

/// An admin worker whose environment holds the token `s3cret`.
fn admin() -> TestWorker {
    let mut w = worker(ADMIN, &Store::default(), T0);
    w.load_admin_token(|name| (name == "LLM_BREAKER_ADMIN_TOKEN").then(|| "s3cret".into()));
    w
}

fn token() -> Option<Vec<u8>> {
    Some(b"Bearer s3cret".to_vec())
}

#[test]
fn mutations_need_the_token_and_reads_do_not_unless_protected() {
    let w = admin();
    let never = || -> Option<Vec<u8>> { panic!("a read without protect_reads checks no token") };
    assert_eq!(code(&w.answer(Ok(Endpoint::Status), never, T0)), 200);
    assert_eq!(code(&w.answer(Ok(Endpoint::Dashboard), never, T0)), 200);
    // (request, authorization header, status)
    let cases = [
        (act("openai", Action::Isolate), None, 401),
        (
            act("openai", Action::Isolate),
            Some(&b"Bearer wrong!"[..]),
            401,
        ),
        (act("nope", Action::Reset), Some(b"Bearer s3cret"), 404),
        (act("openai", Action::Reset), Some(b"Bearer s3cret"), 200),
        (Err(Refusal::NotFound), None, 404),
        (Err(Refusal::MethodNotAllowed("POST")), None, 405),
    ];
    for (request, auth, want) in cases {
        let r = w.answer(request, || auth.map(<[u8]>::to_vec), T0);
        assert_eq!(code(&r), want, "{auth:?}");
        if want == 401 {
            let Reply::Json { headers, .. } = r else {
                unreachable!()
            };
            assert_eq!(headers, [("www-authenticate", "Bearer")]);
        }
    }
}

#[test]
fn protected_reads_need_the_token_but_the_dashboard_page_does_not() {
    let mut w = worker(
        &ADMIN.replace(r#""protect_reads":false"#, r#""protect_reads":true"#),
        &Store::default(),
        T0,
    );
    w.load_admin_token(|_| Some("s3cret".into()));
    assert_eq!(code(&w.answer(Ok(Endpoint::Health), || None, T0)), 401);
    assert_eq!(code(&w.answer(Ok(Endpoint::Health), token, T0)), 200);
    assert_eq!(
        w.answer(Ok(Endpoint::Dashboard), || None, T0),
        Reply::Dashboard
    );
}

#[test]
fn isolate_sends_traffic_away_until_release() {
    let w = admin();
    let r = w.answer(act("openai", Action::Isolate), token, T0);
    let Reply::Json { status, body, .. } = r else {
        panic!("json expected");
    };
    assert_eq!(status, 200);
    assert!(body.contains(r#""state":"isolated""#), "{body}");
    assert!(logs()
        .iter()
        .any(|l| l.contains("upstream=openai from=closed to=isolated reason=operator_isolate")));
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::Isolated), Some(1));
    assert_eq!(send(&w, T0 + 1).1, "azure");
    w.answer(act("openai", Action::Release), token, T0 + 2);
    assert_eq!(w.metrics().gauge(0, UpstreamMetric::Isolated), Some(0));
    assert_eq!(send(&w, T0 + 3).1, "openai");
}

#[test]
fn without_a_token_in_the_environment_every_mutation_is_refused() {
    for value in [None, Some(String::new())] {
        let mut w = worker(ADMIN, &Store::default(), T0);
        w.load_admin_token(|_| value.clone());
        assert!(logs()
            .iter()
            .any(|l| l.contains("has no LLM_BREAKER_ADMIN_TOKEN")));
        let bearer = || Some(b"Bearer ".to_vec());
        assert_eq!(
            code(&w.answer(act("openai", Action::Reset), bearer, T0)),
            401
        );
    }
    let mut off = worker(&config(&["openai"], "{}", ""), &Store::default(), T0);
    off.load_admin_token(|_| panic!("not read when admin is off"));
}

const PROBED: &str = r#"{"routes":[{"name":"chat","upstreams":["openai","azure"]}],
    "breaker":{"consecutive_failures":1,"open":{"base_ms":600000,"max_ms":600000,"jitter":0},
               "half_open":{"permitted_calls":1,"success_threshold":1}},
    "upstreams":{"openai":{"probe":{"path":"/health","expect_status":[200],"timeout_ms":1000,"interval_ms":500}}}}"#;

#[test]
fn one_of_two_workers_probes_an_open_upstream_per_interval() {
    let store = Store::default();
    let w = [worker(PROBED, &store, T0), worker(PROBED, &store, T0)];
    let (openai, azure) = (UpstreamId::new(0), UpstreamId::new(1));
    let mut probes = [Probes::default(), Probes::default()];
    assert!(!w[0].probe_due(&probes[0], openai, T0), "closed: no probe");
    exchange(&w[0], 503, T0);
    assert!(
        !w[0].probe_due(&probes[0], azure, T0),
        "no probe configured"
    );
    // (time, which workers win the lease)
    let cases = [
        (T0 + 1, [true, false]),
        (T0 + 400, [false, false]),
        (T0 + 501, [false, true]),
    ];
    for (now, want) in cases {
        for (i, x) in w.iter().enumerate() {
            let due = x.probe_due(&probes[i], openai, now);
            assert_eq!(due, want[i], "worker {i} at +{}", now - T0);
            if due {
                x.probe_sent(&mut probes[i], openai, Some(7 + i as u32));
            }
        }
    }
    // A probe in flight from a worker: that worker sends no other.
    assert!(!w[0].probe_due(&probes[0], openai, T0 + 5000));
    // A failed answer counts; a healthy one half-opens at once.
    w[0].probe_answered(&mut probes[0], 7, || Some(503), T0 + 5001);
    assert_eq!(w[0].metrics().up(0, UpstreamMetric::ActiveProbeFailures), 1);
    w[1].probe_answered(&mut probes[1], 8, || Some(200), T0 + 5002);
    assert!(logs()
        .iter()
        .any(|l| l.contains("upstream=openai from=open to=half_open")));
    let (r, cluster) = send(&w[0], T0 + 5003);
    assert_eq!(cluster, "openai");
    assert!(r.ticket.is_some_and(|t| t.permit.is_some()));
    // An unknown token reads no status.
    w[0].probe_answered(&mut probes[0], 99, || panic!("not ours"), T0);
}
