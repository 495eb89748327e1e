//! End-to-end model awareness: per-model breakers, routes chosen by model, and the
//! model rewrite on failover, in the real Envoy (two workers) in front of the mock
//! LLM provider.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::Envoy;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};

const CHAT: &str = "/v1/chat/completions";

fn body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"say \"model\": {{\"x\":1}}"}}],"temperature":0.2}}"#
    )
}

/// Sends a chat request for `model` and waits until its outcome is recorded.
fn chat(e: &Envoy, model: &str, headers: &[(&str, &str)]) -> Response {
    e.send_recorded(CHAT, headers, body(model).as_bytes())
}

const BREAKER: &str = r#""breaker":{"consecutive_failures":2,
    "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
    "open":{"base_ms":60000,"max_ms":600000,"jitter":0}}"#;

#[test]
fn per_model_breakers_keep_one_model_flowing_while_another_fails_over() {
    for source in ["body", "header"] {
        let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
        let cfg = format!(
            r#"{{"model":{{"source":"{source}"}},"models":["gpt-4o","gpt-4o-mini"],
                "routes":[{{"name":"chat","upstreams":["openai","azure"]}}],
                "upstreams":{{"openai":{{"breaker":{{"scope":"upstream_and_model"}}}}}},
                {BREAKER}}}"#
        );
        let e = Envoy::start_breaker(&cfg, &[&a, &b]);
        a.set(Behaviour::Ok.with_model("gpt-4o-mini", Behaviour::Status(529)));
        let headers = |m: &'static str| -> Vec<(&'static str, &'static str)> {
            if source == "header" {
                vec![("x-llm-model", m)]
            } else {
                vec![]
            }
        };
        for _ in 0..2 {
            let r = chat(&e, "gpt-4o-mini", &headers("gpt-4o-mini"));
            assert_eq!((r.status, r.upstream()), (529, Some("openai")), "{source}");
        }
        assert!(
            e.log()
                .contains("upstream=openai model=gpt-4o-mini from=closed to=open"),
            "{source}: {}",
            e.log()
        );
        for _ in 0..3 {
            let r = chat(&e, "gpt-4o-mini", &headers("gpt-4o-mini"));
            assert_eq!((r.status, r.upstream()), (200, Some("azure")), "{source}");
            let r = chat(&e, "gpt-4o", &headers("gpt-4o"));
            assert_eq!((r.status, r.upstream()), (200, Some("openai")), "{source}");
        }
        assert_eq!(a.requests_for_model("gpt-4o"), 3, "{source}");
        assert_eq!(a.requests_for_model("gpt-4o-mini"), 2, "{source}");
        assert_eq!(b.requests_for_model("gpt-4o-mini"), 3, "{source}");
    }
}

#[test]
fn a_failover_rewrites_the_model_and_content_length_for_the_fallback() {
    // With the header source the body is read only for the rewrite; either way the
    // fallback gets the same bytes.
    for source in ["body", "header"] {
        let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("vllm"));
        let cfg = format!(
            r#"{{"model":{{"source":"{source}"}},
                "routes":[{{"name":"chat","upstreams":["openai",{{"upstream":"vllm","model":"meta-llama/Llama-3.1-70B-Instruct"}}]}}],
                {BREAKER}}}"#
        );
        let e = Envoy::start_breaker(&cfg, &[&a, &b]);
        // Healthy: the primary gets the body byte for byte.
        let r = chat(&e, "gpt-4o", &[("x-llm-model", "gpt-4o")]);
        assert_eq!(r.upstream(), Some("openai"));
        let sent = a.last_request().unwrap();
        assert_eq!(sent.body, body("gpt-4o").as_bytes());
        a.set(Behaviour::Status(503));
        chat(&e, "gpt-4o", &[("x-llm-model", "gpt-4o")]);
        chat(&e, "gpt-4o", &[("x-llm-model", "gpt-4o")]);
        let r = chat(&e, "gpt-4o", &[("x-llm-model", "gpt-4o")]);
        assert_eq!((r.status, r.upstream()), (200, Some("vllm")), "{source}");
        let got = b.last_request().unwrap();
        assert_eq!(
            got.model().as_deref(),
            Some("meta-llama/Llama-3.1-70B-Instruct")
        );
        assert_eq!(got.content_length(), Some(got.body.len()));
        // Only the model changed: the rest of the body is byte for byte the client's.
        let want = body("gpt-4o").replace(
            r#""model":"gpt-4o""#,
            r#""model":"meta-llama/Llama-3.1-70B-Instruct""#,
        );
        assert_eq!(String::from_utf8_lossy(&got.body), want);
        // The completion names the model the fallback actually ran.
        assert!(r.text().contains("Llama-3.1-70B"), "{}", r.text());
    }
}

#[test]
fn routes_match_models_by_name_and_glob() {
    let (o, c, v) = (
        MockUpstream::start("openai"),
        MockUpstream::start("anthropic"),
        MockUpstream::start("vllm"),
    );
    let cfg = format!(
        r#"{{"routes":[
             {{"name":"gpt","match":{{"models":["gpt-4o*","o3"]}},"upstreams":["openai","vllm"]}},
             {{"name":"claude","match":{{"models":["claude-*"]}},"upstreams":["anthropic"]}},
             {{"name":"rest","upstreams":["vllm"]}}],
            {BREAKER}}}"#
    );
    let e = Envoy::start_breaker(&cfg, &[&o, &c, &v]);
    for (model, want) in [
        ("gpt-4o", "openai"),
        ("gpt-4o-mini", "openai"),
        ("o3", "openai"),
        ("o3-mini", "vllm"),
        ("claude-sonnet-4", "anthropic"),
        ("llama-3", "vllm"),
    ] {
        let r = chat(&e, model, &[]);
        assert_eq!((r.status, r.upstream()), (200, Some(want)), "{model}");
    }
    // A body without a model only matches model-free routes.
    let r = client::post(e.listener, CHAT, r#"{"messages":[]}"#).unwrap();
    assert_eq!(r.upstream(), Some("vllm"));
}

#[test]
fn random_model_names_share_one_breaker_and_cannot_grow_shared_data() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let cfg = r#"{"models":["gpt-4o"],"routes":[{"name":"chat","upstreams":["openai","azure"]}],
        "breaker":{"scope":"upstream_and_model","consecutive_failures":2,
          "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
          "open":{"base_ms":60000,"max_ms":600000,"jitter":0}}}"#;
    let e = Envoy::start_breaker(cfg, &[&a, &b]);
    // Every model but gpt-4o is overloaded on the primary.
    a.set(Behaviour::Status(529).with_model("gpt-4o", Behaviour::Ok));
    for i in 0..200u32 {
        let model = format!("rand-{:08x}", i.wrapping_mul(2654435761));
        let r = chat(&e, &model, &[]);
        assert_eq!(r.status, if i < 2 { 529 } else { 200 }, "{model}");
    }
    // 200 distinct names, one shared "other models" breaker: it tripped once, after
    // two failures, and every later random name failed over with it.
    let log = e.log();
    assert_eq!(
        log.matches("upstream=openai model=* from=closed to=open")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("from=closed to=open").count(), 1);
    assert_eq!(a.requests(), 2);
    assert_eq!(b.requests(), 198);
    // The configured model still has its own, closed breaker.
    let r = chat(&e, "gpt-4o", &[]);
    assert_eq!(r.upstream(), Some("openai"));
}
