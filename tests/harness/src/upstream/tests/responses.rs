//! Whole (non-streamed) answers: healthy completions, provider error bodies, the
//! generic bodies on other paths, and the legacy connection-level failures.

use super::*;
use crate::upstream::Behaviour;
use std::io::Read;
use std::time::Instant;

#[test]
fn healthy_openai_answer_is_a_chat_completion_echoing_the_model() {
    let u = MockUpstream::start("openai");
    let r = post(&u, CHAT, &body("gpt-4o-mini", false));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.upstream(), Some("openai"));
    assert!(r.header("x-request-id").is_some());
    let v = r.json();
    assert_eq!(str_at(&v, "object"), Some("chat.completion"));
    assert_eq!(str_at(&v, "model"), Some("gpt-4o-mini"));
    assert_eq!(str_at(&v, "choices.0.message.role"), Some("assistant"));
    assert_eq!(
        str_at(&v, "choices.0.message.content"),
        Some("Hello from the mock upstream.")
    );
    assert_eq!(str_at(&v, "choices.0.finish_reason"), Some("stop"));
    assert!(v.at("usage.total_tokens").is_some());
}

#[test]
fn healthy_anthropic_answer_is_a_message_echoing_the_model() {
    let u = MockUpstream::start("anthropic");
    let r = post(&u, MESSAGES, &body("claude-sonnet-4-5", false));
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").is_some());
    let v = r.json();
    assert_eq!(str_at(&v, "type"), Some("message"));
    assert_eq!(str_at(&v, "role"), Some("assistant"));
    assert_eq!(str_at(&v, "model"), Some("claude-sonnet-4-5"));
    assert_eq!(str_at(&v, "content.0.type"), Some("text"));
    assert_eq!(str_at(&v, "stop_reason"), Some("end_turn"));
    assert!(v.at("usage.output_tokens").is_some());
}

#[test]
fn other_paths_keep_the_generic_bodies() {
    let u = MockUpstream::start("vllm");
    let r = post(&u, "/v1/embeddings", "{}");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "{\"upstream\":\"vllm\",\"object\":\"chat.completion\",\"choices\":[]}\n"
    );
    u.set(Behaviour::Status(503));
    let r = client::get(u.addr(), "/healthz").unwrap();
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v.at("error.code").and_then(Value::as_f64), Some(503.0));
    assert_eq!(str_at(&v, "error.type"), Some("server_error"));
}

#[test]
fn status_errors_take_the_shape_of_the_provider_the_path_names() {
    let u = MockUpstream::start("p");
    // status, OpenAI type, OpenAI code, Anthropic type
    let cases = [
        (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "invalid_request_error",
        ),
        (
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "authentication_error",
        ),
        (
            403,
            "request_forbidden",
            Some("unsupported_country_region_territory"),
            "permission_error",
        ),
        (
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "not_found_error",
        ),
        (413, "invalid_request_error", None, "request_too_large"),
        (
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "rate_limit_error",
        ),
        (500, "server_error", None, "api_error"),
        (502, "server_error", None, "api_error"),
        (503, "server_error", None, "api_error"),
        (529, "server_error", None, "overloaded_error"),
    ];
    for (status, oa_type, oa_code, an_type) in cases {
        u.set(Behaviour::Status(status));
        let r = post(&u, CHAT, &body("gpt-4o", false));
        assert_eq!(r.status, status);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(str_at(&v, "error.type"), Some(oa_type), "{status}");
        assert_eq!(str_at(&v, "error.code"), oa_code, "{status}");
        assert!(v.at("error.code").is_some() && v.at("error.param").unwrap().is_null());
        assert!(str_at(&v, "error.message").is_some_and(|m| !m.is_empty()));

        let r = post(&u, MESSAGES, &body("claude", true));
        assert_eq!(r.status, status, "errors are JSON even for stream requests");
        let v = r.json();
        assert_eq!(str_at(&v, "type"), Some("error"));
        assert_eq!(str_at(&v, "error.type"), Some(an_type), "{status}");
        assert!(str_at(&v, "error.message").is_some());
    }
    u.set(Behaviour::Status(404));
    let v = post(&u, CHAT, &body("gpt-9", false)).json();
    assert!(str_at(&v, "error.message").unwrap().contains("`gpt-9`"));
}

#[test]
fn json_error_is_a_200_carrying_the_providers_error_object() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::JsonError(529));
    let r = post(&u, CHAT, &body("gpt-4o", false));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(str_at(&v, "error.type"), Some("server_error"));
    assert!(v.get("choices").is_none());
    let r = post(&u, MESSAGES, &body("claude", false));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(str_at(&v, "type"), Some("error"));
    assert_eq!(str_at(&v, "error.type"), Some("overloaded_error"));
    assert_eq!(str_at(&v, "error.message"), Some("Overloaded"));
}

#[test]
fn sized_answers_are_that_big_and_still_completions() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::OkSized(2048));
    let r = post(&u, CHAT, &body("gpt-4o", false));
    assert_eq!(r.body.len(), 2048);
    assert_eq!(str_at(&r.json(), "object"), Some("chat.completion"));
    let r = post(&u, "/other", "");
    assert!((2000..2100).contains(&r.body.len()), "{}", r.body.len());
}

#[test]
fn delay_holds_back_the_first_byte_of_plain_and_streamed_answers() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::Delay(Duration::from_millis(250)));
    let t = Instant::now();
    assert_eq!(post(&u, CHAT, &body("m", false)).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(250));
    let t = Instant::now();
    let s = open(&u, MESSAGES, &body("m", true));
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(u.requests(), 2, "counted on arrival, before the delay");
}

#[test]
fn close_hang_and_cut_fail_at_the_connection_level() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::Close);
    assert!(client::post(u.addr(), CHAT, "{}").is_err());

    u.set(Behaviour::CutMidBody);
    assert!(client::post(u.addr(), CHAT, "{}").is_err());

    u.set(Behaviour::Hang);
    let mut c = Conn::new(&u);
    c.w.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}");
    let mut buf = [0u8; 16];
    let e = c.r.get_mut().read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    assert_eq!(u.requests(), 3);
}
