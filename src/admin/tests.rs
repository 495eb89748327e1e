use super::*;
use crate::breaker::{PhaseKind, Reason};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const P: &str = "/_llm_breaker";

#[test]
fn parses_endpoints_methods_and_unknown_paths() {
    use Endpoint::*;
    let act = |u: &str, a| {
        Ok(Act {
            upstream: u.into(),
            action: a,
        })
    };
    type Parsed = Option<Result<Endpoint, Refusal>>;
    let table: &[(&str, &str, Parsed)] = &[
        ("GET", "/_llm_breaker", Some(Ok(Dashboard))),
        ("GET", "/_llm_breaker/", Some(Ok(Dashboard))),
        ("GET", "/_llm_breaker/status?x=1", Some(Ok(Status))),
        ("HEAD", "/_llm_breaker/health", Some(Ok(Health))),
        (
            "POST",
            "/_llm_breaker/status",
            Some(Err(Refusal::MethodNotAllowed("GET"))),
        ),
        (
            "POST",
            "/_llm_breaker/upstreams/openai/reset",
            Some(act("openai", Action::Reset)),
        ),
        (
            "POST",
            "/_llm_breaker/upstreams/a.b/isolate",
            Some(act("a.b", Action::Isolate)),
        ),
        (
            "POST",
            "/_llm_breaker/upstreams/x/release",
            Some(act("x", Action::Release)),
        ),
        (
            "GET",
            "/_llm_breaker/upstreams/x/reset",
            Some(Err(Refusal::MethodNotAllowed("POST"))),
        ),
        (
            "POST",
            "/_llm_breaker/upstreams/x/explode",
            Some(Err(Refusal::NotFound)),
        ),
        (
            "POST",
            "/_llm_breaker/upstreams//reset",
            Some(Err(Refusal::NotFound)),
        ),
        ("GET", "/_llm_breaker/nope", Some(Err(Refusal::NotFound))),
        ("GET", "/_llm_breakerx/status", None),
        ("GET", "/v1/chat/completions", None),
    ];
    for (m, path, want) in table {
        assert_eq!(&parse(P, m, path), want, "{m} {path}");
    }
}

#[test]
fn the_token_must_match_exactly_and_missing_tokens_never_match() {
    let ok = Some(&b"Bearer s3cret"[..]);
    assert!(token_matches(Some("s3cret"), ok));
    for bad in [
        &b"Bearer s3cre"[..],
        b"Bearer s3cret ",
        b"bearer s3cret",
        b"s3cret",
        b"",
    ] {
        assert!(!token_matches(Some("s3cret"), Some(bad)), "{bad:?}");
    }
    assert!(!token_matches(Some("s3cret"), None));
    assert!(!token_matches(None, ok));
    assert!(!token_matches(Some(""), Some(b"Bearer ")));
}

fn config() -> Config {
    Config::parse(
        br#"{"routes":[{"name":"chat","upstreams":["openai","azure"]},{"name":"solo","upstreams":["vllm"]}],
             "upstreams":{"openai":{"breaker":{"scope":"upstream_and_model"}}},
             "models":["gpt-4o"]}"#,
    )
    .unwrap()
}

#[test]
fn status_lists_every_cell_routes_and_history_and_health_follows_admission() {
    let cfg = config();
    let now = 1_000_000;
    let mut states: Vec<Breaker> = cfg
        .cells
        .iter()
        .map(|c| Breaker::new(&cfg.upstreams[c.upstream.index()].breaker, 0))
        .collect();
    // vllm (the last cell) isolated: route "solo" is down.
    states[3].operator_isolate(now - 10);
    let history = [Entry {
        at_ms: now - 10,
        cell: 3,
        from: PhaseKind::Closed,
        to: PhaseKind::Isolated,
        reason: Reason::OperatorIsolate,
    }];
    let doc: Value =
        serde_json::from_str(&status_json(&cfg, &states, &history, now, None)).unwrap();
    let ups = doc["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 4);
    assert_eq!(ups[0]["upstream"], "openai");
    assert_eq!(ups[0]["model"], "gpt-4o");
    assert_eq!(ups[1]["model"], "*");
    assert_eq!(ups[2]["model"], Value::Null);
    assert_eq!(ups[3]["state"], "isolated");
    assert_eq!(ups[0]["thresholds"]["consecutive_failures"], 5);
    assert_eq!(ups[0]["window"]["calls"], 0);
    assert_eq!(doc["routes"][0]["available"], true);
    assert_eq!(doc["routes"][1]["available"], false);
    assert_eq!(doc["transitions"][0]["to"], "isolated");
    assert_eq!(doc["transitions"][0]["upstream"], "vllm");
    let (ok, body) = health_json(&cfg, &states, now);
    assert!(!ok);
    assert_eq!(body, r#"{"routes_down":["solo"],"status":"down"}"#);
    states[3].operator_release(now);
    assert!(health_json(&cfg, &states, now).0);
}
