//! The control endpoints and the counting API: `/_mock/set`, `/_mock/stats`,
//! `/_mock/reset`, per-model rules, and how request bodies are read (content-length,
//! chunked, `expect: 100-continue`).

use super::*;
use crate::upstream::Behaviour;
use std::io::BufRead;

#[test]
fn set_endpoint_switches_behaviour_and_is_not_traffic() {
    let u = MockUpstream::start("p");
    let r = client::get(u.addr(), "/_mock/set?mode=status&status=529").unwrap();
    assert_eq!((r.status, r.text()), (200, "Status(529)\n".to_string()));
    assert_eq!(post(&u, CHAT, &body("m", false)).status, 529);

    let r = client::request(u.addr(), "POST", "/_mock/set", &[], b"mode=ok").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(u.behaviour(), Behaviour::Ok);

    let r = client::get(u.addr(), "/_mock/set?mode=status&stauts=529").unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("stauts"), "{}", r.text());
    assert_eq!(client::get(u.addr(), "/_mock/nope").unwrap().status, 404);
    assert_eq!(u.requests(), 1, "control requests are not counted");
}

#[test]
fn stats_report_paths_models_and_the_last_request() {
    let u = MockUpstream::start("openai");
    post(&u, CHAT, &body("gpt-4o", false));
    post(&u, CHAT, &body("gpt-4o", true));
    post(&u, MESSAGES, &body("claude", false));
    let last = body("gpt-4o-mini", false);
    post(&u, CHAT, &last);
    client::get(u.addr(), "/models").unwrap();

    let r = client::get(u.addr(), "/_mock/stats").unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let n = |p: &str| v.at(p).and_then(Value::as_f64);
    assert_eq!(str_at(&v, "name"), Some("openai"));
    assert_eq!(str_at(&v, "behaviour"), Some("Ok"));
    assert_eq!(n("total"), Some(5.0));
    let paths = v.get("paths").unwrap();
    assert_eq!(paths.get(CHAT).and_then(Value::as_f64), Some(3.0));
    assert_eq!(paths.get(MESSAGES).and_then(Value::as_f64), Some(1.0));
    assert_eq!(paths.get("/models").and_then(Value::as_f64), Some(1.0));
    assert_eq!(n("models.gpt-4o"), Some(2.0));
    assert_eq!(n("models.gpt-4o-mini"), Some(1.0));
    assert_eq!(str_at(&v, "last.method"), Some("GET"));
    assert_eq!(str_at(&v, "last.path"), Some("/models"));
    assert!(v.at("last.model").unwrap().is_null());
    assert_eq!(n("last.body_len"), Some(0.0));

    // The same through the Rust API.
    assert_eq!(u.requests(), 5);
    assert_eq!(u.requests_for_model("gpt-4o"), 2);
    assert_eq!(u.requests_for_model("absent"), 0);
    assert_eq!(
        u.model_counts(),
        [
            ("claude".into(), 1),
            ("gpt-4o".into(), 2),
            ("gpt-4o-mini".into(), 1)
        ]
    );
    assert_eq!(u.path_counts()[0], ("/models".to_string(), 1));
    assert_eq!(u.stats_json(), r.text());

    u.set(Behaviour::Ok);
    post(&u, CHAT, &last);
    let req = u.last_request().unwrap();
    assert_eq!((req.method.as_str(), req.path()), ("POST", CHAT));
    assert_eq!(req.body, last.as_bytes());
    assert_eq!(req.content_length(), Some(last.len()));
    assert_eq!(req.model().as_deref(), Some("gpt-4o-mini"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(u.last_headers(), req.headers);
    let v = client::get(u.addr(), "/_mock/stats").unwrap().json();
    assert_eq!(str_at(&v, "last.model"), Some("gpt-4o-mini"));
    assert_eq!(
        v.at("last.content_length").and_then(Value::as_f64),
        Some(last.len() as f64)
    );
    assert_eq!(
        v.at("last.body_len").and_then(Value::as_f64),
        Some(last.len() as f64)
    );

    assert_eq!(client::get(u.addr(), "/_mock/reset").unwrap().status, 200);
    assert_eq!((u.requests(), u.last_request()), (0, None));
}

#[test]
fn chunked_request_bodies_are_read_whole_on_a_keep_alive_connection() {
    let u = MockUpstream::start("p");
    let mut c = Conn::new(&u);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
          9\r\n{\"model\":\r\n5;ext=1\r\n\"gpt-\r\n12\r\n4o\",\"stream\":false\r\n1\r\n}\r\n0\r\nx-trailer: 1\r\n\r\n",
    );
    let r = c.read().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(str_at(&r.json(), "model"), Some("gpt-4o"));
    let req = u.last_request().unwrap();
    assert_eq!(req.body, br#"{"model":"gpt-4o","stream":false}"#);
    assert_eq!(req.content_length(), None);
    assert_eq!(req.header("transfer-encoding"), Some("chunked"));
    let v = client::get(u.addr(), "/_mock/stats").unwrap().json();
    assert!(v.at("last.content_length").unwrap().is_null());
    assert_eq!(str_at(&v, "last.transfer_encoding"), Some("chunked"));

    // The connection is still usable.
    let r = c.post(MESSAGES, &body("claude", false));
    assert_eq!(str_at(&r.json(), "model"), Some("claude"));
    assert_eq!(u.requests(), 2);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let u = MockUpstream::start("p");
    let b = body("gpt-4o", false);
    let mut c = Conn::new(&u);
    c.send(
        format!(
            "POST {CHAT} HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            b.len()
        )
        .as_bytes(),
    );
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    c.r.read_line(&mut line).unwrap();
    c.send(b.as_bytes());
    assert_eq!(c.read().unwrap().status, 200);
}

#[test]
fn a_rule_for_one_model_leaves_the_others_alone() {
    let u = MockUpstream::start("p");
    let r = client::get(u.addr(), "/_mock/set?model=gpt-4o&mode=status&status=529").unwrap();
    assert_eq!(r.status, 200);
    u.set_for_model("gpt-4o-mini", Behaviour::JsonError(500));
    assert_eq!(post(&u, CHAT, &body("gpt-4o", false)).status, 529);
    assert_eq!(post(&u, MESSAGES, &body("gpt-4o", false)).status, 529);
    let r = post(&u, CHAT, &body("gpt-4o-mini", false));
    assert!(r.json().get("error").is_some());
    assert_eq!(post(&u, CHAT, &body("o3", false)).status, 200);
    assert_eq!(post(&u, "/other", "not json").status, 200);
    assert_eq!(u.requests_for_model("gpt-4o"), 2);
    assert_eq!(u.requests_for_model("o3"), 1);

    // A model's rule is replaced in place; an unscoped set replaces them all.
    u.apply("model=gpt-4o&mode=ok").unwrap();
    assert_eq!(post(&u, CHAT, &body("gpt-4o", false)).status, 200);
    u.apply("mode=status&status=503").unwrap();
    assert_eq!(post(&u, CHAT, &body("gpt-4o-mini", false)).status, 503);
}
