//! The filter without `allow_on_headers_stop_iteration` (as Istio's `WasmPlugin` runs
//! it), in the real Envoy (two workers) in front of the mock LLM provider: a route
//! that needs the model from the body never hangs (the first held request is resumed
//! from the root context's tick and routed without the model; later ones are not
//! held), and model rewrites still work, on a chunked upstream body.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{Envoy, Options};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream, RecordedRequest};
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";

fn body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"say \"model\": {{\"x\":1}}"}}],"temperature":0.2}}"#
    )
}

const BREAKER: &str = r#""breaker":{"consecutive_failures":2,
    "failure_rate":{"minimum_calls":1000000,"window":{"seconds":60}},
    "open":{"base_ms":60000,"max_ms":600000,"jitter":0}}"#;

/// Envoy running llm-breaker with `config`, the knob off.
fn start(config: &str, upstreams: &[&MockUpstream]) -> Envoy {
    let mut opts = Options::breaker_for(config, upstreams);
    opts.stop_iteration = false;
    Envoy::start(&opts)
}

fn chat(e: &Envoy, model: &str) -> Response {
    client::post(e.listener, CHAT, &body(model)).expect("an answer through Envoy")
}

fn header<'a>(r: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_model_route_answers_without_the_knob() {
    let (o, v) = (MockUpstream::start("openai"), MockUpstream::start("vllm"));
    let cfg = format!(
        r#"{{"routes":[
             {{"name":"gpt","match":{{"models":["gpt-4o*"]}},"upstreams":["openai"]}},
             {{"name":"rest","upstreams":["vllm"]}}],
            {BREAKER}}}"#
    );
    let e = start(&cfg, &[&o, &v]);
    let t = Instant::now();
    let r = chat(&e, "gpt-4o");
    eprintln!("first request: {} after {:?}", r.status, t.elapsed());
    assert_eq!(r.status, 200, "{}", e.log());
}
