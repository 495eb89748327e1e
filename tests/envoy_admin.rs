//! End-to-end operator endpoints: status, health, reset / isolate / release with
//! the bearer token from the VM environment, in the real Envoy (two workers).
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{Envoy, Options};
use llm_breaker_harness::poll;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use std::thread::sleep;
use std::time::Duration;

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const TOKEN: &str = "t0p-s3cret-token";
const P: &str = "/v1/_llm_breaker";

fn chat(e: &Envoy) -> Response {
    e.send_recorded(CHAT, &[], BODY.as_bytes())
}

fn start(admin: &str, ups: &[&MockUpstream], with_token: bool) -> Envoy {
    // The prefix sits under /v1/ so that, when the endpoints are off, the request
    // is routed like normal traffic by the test bootstrap's cluster_header route.
    let cfg = format!(
        r#"{{"admin":{admin},
            "routes":[{{"name":"chat","match":{{"path_prefix":"/v1/chat/"}},"upstreams":["openai","azure"]}},
                      {{"name":"rest","upstreams":["openai"]}}],
            "breaker":{{"consecutive_failures":2,"open":{{"base_ms":60000,"max_ms":60000,"jitter":0}}}}}}"#
    );
    let mut opts = Options::breaker_for(&cfg, ups);
    if with_token {
        opts.env = vec![("LLM_BREAKER_ADMIN_TOKEN".into(), TOKEN.into())];
    }
    Envoy::start(&opts)
}

fn enabled() -> String {
    format!(r#"{{"enabled":true,"path_prefix":"{P}"}}"#)
}

fn call(e: &Envoy, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = client::request(e.listener, method, &format!("{P}{path}"), &headers, b"").unwrap();
    if method == "POST" && r.status == 200 {
        // An operator action reaches every worker within admission_cache_ms (1 ms):
        // a worker that read the breaker just before answers from that read until
        // then. Traffic this test sends next must see the action.
        std::thread::sleep(Duration::from_millis(10));
    }
    r
}

fn state_of(e: &Envoy, upstream: &str) -> String {
    let doc = call(e, "GET", "/status", None).json();
    doc["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == upstream)
        .map(|u| u["state"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn status_shows_an_open_breaker_with_why_and_until_when_and_reset_closes_it() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(&enabled(), &[&a, &b], true);
    a.set(Behaviour::Status(503));
    chat(&e);
    chat(&e);
    let r = call(&e, "GET", "/status", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    let openai = &doc["upstreams"][0];
    assert_eq!(openai["upstream"], "openai");
    assert_eq!(openai["state"], "open");
    assert_eq!(openai["times_opened"], 1);
    assert_eq!(openai["last_failure"]["class"], "status");
    let until = openai["open_until_ms"].as_u64().unwrap();
    let since = openai["since_ms"].as_u64().unwrap();
    assert_eq!(until - since, 60_000);
    assert_eq!(openai["thresholds"]["consecutive_failures"], 2);
    assert_eq!(doc["routes"][0]["available"], true, "azure still admits");
    let t = &doc["transitions"][0];
    assert_eq!(
        (t["upstream"].as_str(), t["from"].as_str(), t["to"].as_str()),
        (Some("openai"), Some("closed"), Some("open"))
    );
    assert_eq!(t["reason"], "consecutive_failures");
    assert!(!r.text().contains(TOKEN));
    // Health: "chat" still has azure; "rest" has only openai, so it is down.
    let h = call(&e, "GET", "/health", None);
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["routes_down"], serde_json::json!(["rest"]));
    // Reset with the token: closed again, traffic back on the primary.
    a.set(Behaviour::Ok);
    let r = call(&e, "POST", "/upstreams/openai/reset", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["breakers"][0]["state"], "closed");
    assert_eq!(state_of(&e, "openai"), "closed");
    assert_eq!(e.upstream_stat("openai", "state"), 0);
    assert_eq!(chat(&e).upstream(), Some("openai"));
    assert_eq!(call(&e, "GET", "/health", None).status, 200);
    let doc = call(&e, "GET", "/status", None).json();
    assert_eq!(doc["transitions"][0]["reason"], "operator_reset");
    assert!(e.log().contains("reason=operator_reset"));
}

#[test]
fn isolate_forces_traffic_away_until_release_and_health_reports_the_route_down() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(&enabled(), &[&a, &b], true);
    for up in ["openai", "azure"] {
        let r = call(&e, "POST", &format!("/upstreams/{up}/isolate"), Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(state_of(&e, "openai"), "isolated");
    assert_eq!(e.upstream_stat("openai", "isolated"), 1);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    let r = chat(&e);
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-llm-breaker"),
        Some("upstream=none; reason=all_open; skipped=openai,azure")
    );
    let h = call(&e, "GET", "/health", None);
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["routes_down"], serde_json::json!(["chat", "rest"]));
    let r = call(&e, "POST", "/upstreams/azure/release", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&e).upstream(), Some("azure"), "openai stays isolated");
    assert_eq!(
        call(&e, "GET", "/health", None).json()["routes_down"],
        serde_json::json!(["rest"])
    );
    let r = call(&e, "POST", "/upstreams/openai/release", Some(TOKEN));
    assert_eq!(r.json()["breakers"][0]["state"], "closed");
    assert_eq!(e.upstream_stat("openai", "isolated"), 0);
    assert_eq!(chat(&e).upstream(), Some("openai"));
    assert_eq!(a.requests(), 1);
}

#[test]
fn wrong_or_missing_tokens_unknown_names_and_wrong_methods_change_nothing() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(&enabled(), &[&a, &b], true);
    for token in [None, Some("wrong"), Some("t0p-s3cret-toke"), Some("")] {
        let r = call(&e, "POST", "/upstreams/openai/isolate", token);
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.text().contains(TOKEN));
    }
    assert_eq!(state_of(&e, "openai"), "closed");
    let r = call(&e, "POST", "/upstreams/nope/reset", Some(TOKEN));
    assert_eq!(r.status, 404);
    let r = call(&e, "GET", "/upstreams/openai/reset", Some(TOKEN));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = call(&e, "DELETE", "/status", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(call(&e, "GET", "/nothing-here", None).status, 404);
    assert_eq!(state_of(&e, "openai"), "closed");
    // The dashboard is one self-contained page.
    let r = call(&e, "GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );
    assert_eq!(
        a.requests() + b.requests(),
        0,
        "admin requests never reach upstreams"
    );
}

#[test]
fn without_a_token_in_the_environment_mutations_are_refused() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(&enabled(), &[&a, &b], false);
    assert_eq!(
        call(&e, "POST", "/upstreams/openai/isolate", Some(TOKEN)).status,
        401
    );
    assert_eq!(
        call(&e, "POST", "/upstreams/openai/isolate", Some("")).status,
        401
    );
    assert!(e
        .log()
        .contains("admin endpoints enabled but the VM environment has no LLM_BREAKER_ADMIN_TOKEN"));
    assert_eq!(call(&e, "GET", "/status", None).status, 200);
}

#[test]
fn protected_reads_need_the_token() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(
        &format!(r#"{{"enabled":true,"path_prefix":"{P}","protect_reads":true}}"#),
        &[&a, &b],
        true,
    );
    assert_eq!(call(&e, "GET", "/status", None).status, 401);
    assert_eq!(call(&e, "GET", "/health", Some("nope")).status, 401);
    assert_eq!(call(&e, "GET", "/status", Some(TOKEN)).status, 200);
}

#[test]
fn when_disabled_the_prefix_is_normal_traffic() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(r#"{"enabled":false}"#, &[&a, &b], true);
    let r = call(&e, "GET", "/status", None);
    assert_eq!(
        r.upstream(),
        Some("openai"),
        "routed by the 'rest' route: {}",
        r.text()
    );
    let r = call(&e, "POST", "/upstreams/openai/isolate", Some(TOKEN));
    assert_eq!(r.upstream(), Some("openai"));
    assert_eq!(a.requests(), 2);
    assert_eq!(
        a.last_request().unwrap().path(),
        format!("{P}/upstreams/openai/isolate")
    );
}

#[test]
fn active_probes_are_sent_once_per_interval_across_workers_and_half_open_early() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let cfg = r#"{"routes":[{"name":"chat","upstreams":["openai","azure"]}],
        "breaker":{"consecutive_failures":1,"open":{"base_ms":600000,"max_ms":600000,"jitter":0},
                   "half_open":{"permitted_calls":1,"success_threshold":1}},
        "upstreams":{"openai":{"probe":{"method":"POST","path":"/v1/chat/completions?probe=1",
            "headers":{"content-type":"application/json"},
            "body":"{\"model\":\"gpt-4o-mini\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}]}",
            "expect_status":[200],"timeout_ms":1000,"interval_ms":500}}}}"#;
    let e = Envoy::start_breaker(cfg, &[&a, &b]);
    // Healthy and closed: no probes at all.
    sleep(Duration::from_millis(800));
    assert_eq!(a.requests(), 0);
    a.set(Behaviour::Status(503));
    chat(&e);
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    // Probes name gpt-4o-mini, real traffic gpt-4o: the mock tells them apart.
    let probes_sent = || a.requests_for_model("gpt-4o-mini");
    // Open for 10 minutes; probes keep failing (503) at one per 500 ms, not one per
    // worker per tick (two workers probing on their own would send 10 or more).
    let before = probes_sent();
    sleep(Duration::from_millis(2600));
    let probes = probes_sent() - before;
    eprintln!("active probes in 2.6 s at a 500 ms interval, 2 workers: {probes}");
    assert!(
        (3..=7).contains(&probes),
        "{probes} probes in 2.6 s at 500 ms intervals"
    );
    // The counter counts a probe when it is sent, the mock when it arrives: they
    // agree once none is in flight.
    let agreed = poll(Duration::from_secs(3), || {
        e.upstream_stat("openai", "active_probes") as usize == probes_sent()
    });
    assert!(
        agreed.is_some(),
        "active_probes {} against {} probes received",
        e.upstream_stat("openai", "active_probes"),
        probes_sent()
    );
    assert_eq!(
        e.upstream_stat("openai", "state"),
        1,
        "failed probes keep it open"
    );
    let last = a.last_request().unwrap();
    assert_eq!(last.target, "/v1/chat/completions?probe=1");
    assert_eq!(last.model().as_deref(), Some("gpt-4o-mini"));
    // The provider recovers: the next probe half-opens it long before the 10 minutes.
    a.set(Behaviour::Ok);
    let half_opened = poll(Duration::from_secs(3), || {
        e.upstream_stat("openai", "transitions.open_to_half_open") > 0
    });
    assert!(half_opened.is_some(), "no early half-open:\n{}", e.log());
    assert!(e
        .log()
        .contains("from=open to=half_open reason=active_probe"));
    // Real traffic then probes and closes it.
    assert_eq!(chat(&e).upstream(), Some("openai"));
    assert_eq!(e.upstream_stat("openai", "state"), 0);
}
