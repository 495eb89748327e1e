//! Per-attempt request shaping: each provider's credential header from its staging
//! header and nothing else's, the path from the client's original on every attempt
//! (attempts share one header map), extra headers, passthrough routes, and a 401 to
//! the gateway's key counted as `credential_rejected`, never as a failure.

use super::fakes::*;
use crate::ids::RouteId;
use crate::worker::metrics::UpstreamMetric;
use crate::worker::shape::{Edit, ORIGINAL_PATH_HEADER};
use crate::worker::within::{decode_tickets, WithinRouting, GATEWAY_KEY_SUFFIX};
use std::cell::RefCell;
use std::collections::BTreeMap;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;

/// openai (Bearer), azure (api-key, deployment path), anthropic (x-api-key and a
/// version header), vllm (nothing); route `chat` and a passthrough route `byok`.
fn json(role: &str) -> String {
    format!(
        r#"{{"failover":"within_request","role":"{role}",
  "routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure","anthropic","vllm"]}},
            {{"name":"byok","match":{{"path_prefix":"/byok/"}},"upstreams":["openai","vllm"],"pass_client_credentials":true}}],
  "upstreams":{{
    "openai":{{"request":{{"credential":{{"header":"authorization","prefix":"Bearer "}}}}}},
    "azure":{{"request":{{"credential":{{"header":"api-key"}},
      "path":{{"strip_prefix":"/v1","prefix":"/openai/deployments/gpt-4o","query":"api-version=2024-10-21"}}}}}},
    "anthropic":{{"request":{{"credential":{{"header":"x-api-key"}},"headers":{{"anthropic-version":"2023-06-01"}}}}}}}}}}"#
    )
}

/// One request's header map, shared by its attempts as in Envoy.
struct Headers(RefCell<BTreeMap<String, String>>);

impl Headers {
    fn new(pairs: &[(&str, &str)]) -> Headers {
        let mut m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // What the credential_injectors write before the filter, on every attempt.
        for (u, key) in [
            ("openai", "sk-oa"),
            ("azure", "az-key"),
            ("anthropic", "ak-key"),
        ] {
            m.insert(format!("x-llm-breaker-credential-{u}"), key.into());
        }
        Headers(RefCell::new(m))
    }

    fn get(&self, k: &str) -> Option<String> {
        self.0.borrow().get(k).cloned()
    }

    /// One attempt to `name`: the injectors run again, then the filter's edits.
    fn attempt(&self, w: &TestWorker, name: &str, tickets: Option<&str>) -> bool {
        for (u, key) in [
            ("openai", "sk-oa"),
            ("azure", "az-key"),
            ("anthropic", "ak-key"),
        ] {
            self.0
                .borrow_mut()
                .insert(format!("x-llm-breaker-credential-{u}"), key.into());
        }
        let read = |h: &str| self.get(h).map(String::into_bytes);
        // The route the tickets name, as the attempt's start finds it.
        let route = tickets
            .and_then(|t| decode_tickets(t.as_bytes(), w.config().routes.len()))
            .map(|(r, _)| r);
        let shaped = w.shape_attempt(name.as_bytes(), route, T0, read).unwrap();
        let mut m = self.0.borrow_mut();
        for e in shaped.edits {
            match e {
                Edit::Set(k, v) => m.insert(k, v),
                Edit::Remove(k) => m.remove(&k),
            };
        }
        shaped.credential
    }

    fn credentials(&self) -> Vec<(String, String)> {
        let m = self.0.borrow();
        m.iter()
            .filter(|(k, _)| {
                ["authorization", "api-key", "x-api-key"].contains(&k.as_str())
                    || k.starts_with("x-llm-breaker-credential-")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn pair(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

fn tickets(down: &TestWorker, route: usize) -> String {
    match down.route_within(RouteId::new(route), None, T0).unwrap() {
        WithinRouting::Send { tickets, .. } => tickets.expect("shaping writes tickets"),
        WithinRouting::Reject(_) => panic!("rejected"),
    }
}

#[test]
fn every_attempt_carries_only_its_own_providers_key_and_path() {
    let store = Store::default();
    let (down, up) = (
        worker(&json("downstream"), &store, T0),
        worker(&json("upstream"), &store, T0),
    );
    let t = tickets(&down, 0);
    let h = Headers::new(&[
        (":path", "/v1/chat/completions?x=1"),
        ("authorization", "Bearer client"),
    ]);
    assert!(h.attempt(&up, "openai", Some(&t)));
    assert_eq!(h.credentials(), pair("authorization", "Bearer sk-oa"));
    assert_eq!(h.get(":path").unwrap(), "/v1/chat/completions?x=1");
    assert_eq!(
        h.get(ORIGINAL_PATH_HEADER).unwrap(),
        "/v1/chat/completions?x=1"
    );
    // Attempt 2 starts from attempt 1's edits.
    assert!(h.attempt(&up, "azure", Some(&t)));
    assert_eq!(
        h.credentials(),
        pair("api-key", "az-key"),
        "no Bearer of openai's"
    );
    assert_eq!(
        h.get(":path").unwrap(),
        "/openai/deployments/gpt-4o/chat/completions?x=1&api-version=2024-10-21"
    );
    assert!(h.attempt(&up, "anthropic", Some(&t)));
    assert_eq!(h.credentials(), pair("x-api-key", "ak-key"));
    assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
    assert_eq!(
        h.get(":path").unwrap(),
        "/v1/chat/completions?x=1",
        "from the original, not azure's"
    );
    assert!(!h.attempt(&up, "vllm", Some(&t)), "vllm has no key");
    assert_eq!(
        h.credentials(),
        vec![],
        "no key at all, the client's neither"
    );
    assert_eq!(
        h.get("anthropic-version"),
        None,
        "anthropic's extra header is gone"
    );
}

#[test]
fn without_tickets_the_client_credential_is_still_removed() {
    let up = worker(&json("upstream"), &Store::default(), T0);
    let h = Headers::new(&[
        (":path", "/v1/x"),
        ("x-api-key", "client"),
        ("api-key", "client"),
    ]);
    assert!(!h.attempt(&up, "vllm", None));
    assert_eq!(h.credentials(), vec![]);
}

#[test]
fn a_passthrough_route_carries_the_clients_key_across_the_route_and_injects_none() {
    let store = Store::default();
    let (down, up) = (
        worker(&json("downstream"), &store, T0),
        worker(&json("upstream"), &store, T0),
    );
    let t = tickets(&down, 1);
    let h = Headers::new(&[(":path", "/byok/chat"), ("authorization", "Bearer mine")]);
    // Downstream role: copies the client's header; the Envoy route then removes it.
    let read = |k: &str| h.get(k).map(String::into_bytes);
    let edits = down.stage_client_credentials(RouteId::new(1), read);
    assert_eq!(
        edits,
        vec![
            Edit::Remove("x-llm-breaker-original-path".into()),
            Edit::Set(
                "x-llm-breaker-client-authorization".into(),
                "Bearer mine".into()
            )
        ]
    );
    h.0.borrow_mut().insert(
        "x-llm-breaker-client-authorization".into(),
        "Bearer mine".into(),
    );
    h.0.borrow_mut().remove("authorization");
    assert!(!h.attempt(&up, "openai", Some(&t)));
    assert_eq!(h.credentials(), pair("authorization", "Bearer mine"));
    assert_eq!(h.get("x-llm-breaker-client-authorization"), None);
    assert!(!h.attempt(&up, "vllm", Some(&t)));
    // Envoy's header_mutation removed the copy after attempt 1: nothing to restore,
    // and nothing else leaks.
    assert_eq!(h.credentials(), pair("authorization", "Bearer mine"));
}

#[test]
fn other_routes_drop_a_clients_forged_copy() {
    let store = Store::default();
    let down = worker(&json("downstream"), &store, T0);
    let read = |k: &str| match k {
        "authorization" => Some(b"Bearer mine".to_vec()),
        "x-llm-breaker-client-api-key" => Some(b"forged".to_vec()),
        _ => None,
    };
    assert_eq!(
        down.stage_client_credentials(RouteId::new(0), read),
        vec![
            Edit::Remove("x-llm-breaker-original-path".into()),
            Edit::Remove("x-llm-breaker-client-api-key".into())
        ]
    );
}

#[test]
fn a_missing_staging_header_sends_no_key_and_warns_once() {
    let up = worker(&json("upstream"), &Store::default(), T0);
    let read = |h: &str| match h {
        ":path" => Some(b"/v1/x".to_vec()),
        "authorization" => Some(b"Bearer client".to_vec()),
        _ => None,
    };
    let s = up.shape_attempt(b"openai", None, T0, read).unwrap();
    assert!(!s.credential && s.missing_credential);
    assert!(s.edits.contains(&Edit::Remove("authorization".into())));
    let s2 = up.shape_attempt(b"openai", None, T0 + 1000, read).unwrap();
    assert!(s2.missing_credential);
    let lines = logs();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("upstream=openai") && !lines[0].contains("client"),
        "{lines:?}"
    );
}

#[test]
fn nothing_is_shaped_when_no_upstream_has_a_request_block() {
    let json = config(
        &["a", "b"],
        "{}",
        r#","failover":"within_request","role":"upstream""#,
    );
    let up = worker(&json, &Store::default(), T0);
    assert!(up.shape_attempt(b"a", None, T0, |_| None).is_none());
}

#[test]
fn a_401_to_the_gateways_key_is_credential_rejected_not_a_failure() {
    let down = worker(&json("downstream"), &Store::default(), T0);
    let plan = |route| match down.route_within(RouteId::new(route), None, T0).unwrap() {
        WithinRouting::Send { plan, .. } => plan,
        WithinRouting::Reject(_) => panic!("rejected"),
    };
    // openai answers 401 or 403 on `chat` to the key the gateway injected (the served
    // header says so): the downstream role records it, as the operator's wrong key.
    let chat = plan(0);
    let keyed = format!("openai{GATEWAY_KEY_SUFFIX}");
    for (i, status) in [401u16, 403, 401, 401, 401].into_iter().enumerate() {
        let s = answer_within(&down, &chat, &keyed, status, T0 + i as u64);
        assert!(s.record.is_some() && s.gateway_key);
        assert_eq!(s.attempts, Some(1), "the suffix still names openai");
    }
    let m = down.metrics();
    assert_eq!(m.up(0, UpstreamMetric::IgnoredCredentialRejected), 5);
    assert_eq!(m.up(0, UpstreamMetric::Ignored), 5);
    assert_eq!(m.up(0, UpstreamMetric::ClientErrors), 0);
    assert_eq!(
        stored(&down, T0 + 10).kind(),
        crate::breaker::PhaseKind::Closed
    );
    let lines: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.contains("gateway's key"))
        .collect();
    assert_eq!(lines.len(), 1, "rate-limited: {lines:?}");
    assert!(
        lines[0].contains("upstream=openai answered 401"),
        "{lines:?}"
    );
    // Without the gateway's key (none injected, or a passthrough route, whatever the
    // header says) a 401 is the client's.
    let s = answer_within(&down, &chat, "openai", 401, T0 + 20);
    assert!(!s.gateway_key);
    let s = answer_within(&down, &plan(1), &keyed, 401, T0 + 21);
    assert!(!s.gateway_key);
    assert_eq!(down.metrics().up(0, UpstreamMetric::ClientErrors), 2);
}
