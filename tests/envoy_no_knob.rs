//! The filter without `allow_on_headers_stop_iteration` (as Istio's `WasmPlugin` runs
//! it), in the real Envoy (two workers) in front of the mock LLM provider: a route
//! that needs the model from the body never hangs (the first held request is resumed
//! from the root context's tick and routed without the model; later ones are not
//! held), and model rewrites still work, on a chunked upstream body.
//!
//! Envoy missing is a failure, never a skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client::{self, Response};
use llm_breaker_harness::envoy::{Envoy, Options, Within};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream, RecordedRequest};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

const UNREAD: &str = "wasmcustom.llm_breaker.route.gpt.requests_model_unread";

#[test]
fn a_model_route_answers_without_the_knob_as_for_an_unknown_model() {
    let (o, v) = (MockUpstream::start("openai"), MockUpstream::start("vllm"));
    let cfg = format!(
        r#"{{"routes":[
             {{"name":"gpt","match":{{"models":["gpt-4o*"]}},"upstreams":["openai"]}},
             {{"name":"rest","upstreams":["vllm"]}}],
            {BREAKER}}}"#
    );
    let e = start(&cfg, &[&o, &v]);
    // Without the knob the body never reaches the filter while the headers are held:
    // the first request of each worker is resumed from the tick, later ones are not
    // held. Either way each is answered (Envoy's 5 s idle timeout would answer 504),
    // routed as for an unknown model: to the model-free route.
    const N: u64 = 8;
    for i in 0..N {
        let t = Instant::now();
        let r = chat(&e, "gpt-4o");
        eprintln!(
            "request {i}: {} from {:?} after {:?}",
            r.status,
            r.upstream(),
            t.elapsed()
        );
        assert_eq!((r.status, r.upstream()), (200, Some("vllm")), "{}", e.log());
    }
    assert_eq!(o.requests(), 0);
    assert_eq!(v.requests(), N as usize);
    // The body reached the provider byte for byte, with its content-length.
    let got = v.last_request().unwrap();
    assert_eq!(got.body, body("gpt-4o").as_bytes());
    assert_eq!(
        header(&got, "content-length"),
        Some(got.body.len().to_string()).as_deref()
    );
    // Counted on the model route, every request.
    assert_eq!(e.wait_stat(UNREAD, N), N, "{}", e.prometheus());
    let line = format!(r#"llm_breaker_route_requests_model_unread{{llm_breaker_route="gpt"}} {N}"#);
    assert!(e.prometheus().contains(&line), "{}", e.prometheus());
    // One error line per worker at most, naming the knob.
    let log = e.log();
    let lines = log
        .matches("set `allow_on_headers_stop_iteration: true`")
        .count();
    assert!((1..=2).contains(&lines), "{lines} lines: {log}");
}

#[test]
fn a_model_rewrite_works_without_the_knob_on_a_chunked_body() {
    let (o, v) = (MockUpstream::start("openai"), MockUpstream::start("vllm"));
    const LLAMA: &str = "meta-llama/Llama-3.1-70B-Instruct";
    let cfg = format!(
        r#"{{"routes":[
             {{"name":"local","match":{{"path_prefix":"/v1/local/"}},
               "upstreams":[{{"upstream":"vllm","model":"{LLAMA}"}}]}},
             {{"name":"chat","upstreams":["openai",{{"upstream":"vllm","model":"{LLAMA}"}}]}}],
            {BREAKER}}}"#
    );
    let e = start(&cfg, &[&o, &v]);
    let want = body("gpt-4o").replace(r#""model":"gpt-4o""#, &format!(r#""model":"{LLAMA}""#));
    // A primary that rewrites: the first request of a worker is held, then resumed
    // from the tick; later ones are not held. Each reaches vLLM rewritten, chunked.
    for i in 0..6 {
        let r = client::post(e.listener, "/v1/local/chat", &body("gpt-4o")).unwrap();
        assert_eq!(
            (r.status, r.upstream()),
            (200, Some("vllm")),
            "{i}: {}",
            e.log()
        );
        let got = v.last_request().unwrap();
        assert_eq!(String::from_utf8_lossy(&got.body), want, "{i}");
        assert_eq!(header(&got, "content-length"), None, "{i}");
        assert_eq!(header(&got, "transfer-encoding"), Some("chunked"), "{i}");
    }
    // No route here needs the model to choose: nothing counted.
    assert_eq!(
        e.stat("wasmcustom.llm_breaker.route.chat.requests_model_unread"),
        Some(0)
    );
    // The primary without a rewrite gets the client's body and content-length.
    let r = chat(&e, "gpt-4o");
    assert_eq!(r.upstream(), Some("openai"));
    let got = o.last_request().unwrap();
    assert_eq!(got.body, body("gpt-4o").as_bytes());
    assert_eq!(
        header(&got, "content-length"),
        Some(got.body.len().to_string()).as_deref()
    );
    // On failover the fallback's body is rewritten.
    o.set(Behaviour::Status(503));
    for _ in 0..2 {
        assert_eq!(chat(&e, "gpt-4o").status, 503);
    }
    let r = chat(&e, "gpt-4o");
    assert_eq!((r.status, r.upstream()), (200, Some("vllm")), "{}", e.log());
    assert!(r.text().contains("Llama-3.1-70B"), "{}", r.text());
    let got = v.last_request().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.body), want);
    assert_eq!(header(&got, "content-length"), None);
}

/// `within_request` with the generator's clusters for these providers, the knob
/// off on both roles.
fn start_within(filter: &str, providers: &[(&str, SocketAddr)]) -> Envoy {
    let within = Within::generated(filter, providers, Duration::from_secs(5));
    assert!(within
        .clusters
        .iter()
        .any(|c| c.contains(r#""allow_on_headers_stop_iteration":true"#)));
    let mut opts = Options::breaker(filter, providers);
    opts.within = Some(within);
    opts.stop_iteration = false;
    Envoy::start(&opts)
}

#[test]
fn within_request_attempts_carry_their_chain_entrys_model_without_the_knob() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let cfg = format!(
        r#"{{"failover":"within_request",
            "routes":[{{"name":"chat","upstreams":["openai",{{"upstream":"azure","model":"gpt-4o-az"}}]}}],
            {BREAKER}}}"#
    );
    let e = start_within(&cfg, &[("openai", a.addr()), ("azure", b.addr())]);
    let want = body("gpt-4o").replace(r#""model":"gpt-4o""#, r#""model":"gpt-4o-az""#);
    a.set(Behaviour::Status(503));
    // Both attempts of each request: openai gets the client's body, azure its
    // rewrite; neither carries a content-length that does not fit.
    for i in 0..4 {
        let t = Instant::now();
        let r = chat(&e, "gpt-4o");
        eprintln!(
            "request {i}: {} from {:?} after {:?}",
            r.status,
            r.upstream(),
            t.elapsed()
        );
        assert_eq!(
            (r.status, r.upstream()),
            (200, Some("azure")),
            "{i}: {}",
            e.log()
        );
        let first = a.last_request().unwrap();
        assert_eq!(first.body, body("gpt-4o").as_bytes(), "{i}");
        let second = b.last_request().unwrap();
        assert_eq!(String::from_utf8_lossy(&second.body), want, "{i}");
        for got in [&first, &second] {
            let length = header(got, "content-length");
            assert!(
                length.is_none_or(|l| l == got.body.len().to_string()),
                "{i}: {length:?}"
            );
        }
        assert_eq!(header(&second, "content-length"), None, "{i}");
        // The breaker opened after two failed attempts: later requests go to azure
        // alone.
        if i >= 2 {
            assert_eq!(a.requests(), 2, "{i}");
        }
    }
}

#[test]
fn with_the_knob_a_body_sent_late_is_still_waited_for_and_routed_by_model() {
    // The tick resumes a held request only once Envoy has received some of its body
    // without a body callback: a client that is merely slow to send it is routed by
    // its model when it does.
    let (o, v) = (MockUpstream::start("openai"), MockUpstream::start("vllm"));
    let cfg = format!(
        r#"{{"routes":[
             {{"name":"gpt","match":{{"models":["gpt-4o*"]}},"upstreams":["openai"]}},
             {{"name":"rest","upstreams":["vllm"]}}],
            {BREAKER}}}"#
    );
    let e = Envoy::start(&Options::breaker_for(&cfg, &[&o, &v]));
    let b = body("gpt-4o");
    let mut s = TcpStream::connect(e.listener).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        b.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // Well past the hold deadline (1 s), well before Envoy's idle timeout (5 s).
    std::thread::sleep(Duration::from_millis(2500));
    s.write_all(b.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-upstream: openai"),
        "{answer}"
    );
    assert_eq!((o.requests(), v.requests()), (1, 0));
    assert!(
        !e.log().contains("allow_on_headers_stop_iteration"),
        "{}",
        e.log()
    );
    assert_eq!(e.stat(UNREAD), Some(0));
}
