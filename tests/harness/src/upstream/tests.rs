//! Loopback tests of the mock: real TCP, the harness's own client or raw sockets,
//! one file per area. Helpers shared by them live here.

mod control;
mod lifecycle;
mod ratelimit;
mod responses;
mod streams;

use super::MockUpstream;
use crate::client::{self, Response, StreamingResponse};
use crate::sse::{self, Event};
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub(super) const CHAT: &str = "/v1/chat/completions";
pub(super) const MESSAGES: &str = "/v1/messages";

/// A request body for either provider (both take `model`, `messages`, `stream`).
pub(super) fn body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

/// POSTs `body` to `path` and reads the whole response.
pub(super) fn post(u: &MockUpstream, path: &str, body: &str) -> Response {
    client::post(u.addr(), path, body).expect("request to the mock")
}

/// POSTs `body` to `path` and returns the response with its body unread.
pub(super) fn open(u: &MockUpstream, path: &str, body: &str) -> StreamingResponse {
    let headers = [("content-type", "application/json")];
    client::open(u.addr(), "POST", path, &headers, body.as_bytes()).expect("open stream")
}

/// Paths into a JSON document written `a.b.0.c` (object keys and array indices).
pub(super) trait At {
    fn at(&self, path: &str) -> Option<&Value>;
}

impl At for Value {
    fn at(&self, path: &str) -> Option<&Value> {
        self.pointer(&format!("/{}", path.replace('.', "/")))
    }
}

/// A string member at `path`, `None` if missing or not a string.
pub(super) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.at(path).and_then(Value::as_str)
}

/// Checks that every chunk holds exactly one SSE event, and returns the events.
pub(super) fn one_event_per_chunk(chunks: &[Vec<u8>]) -> Vec<Event> {
    chunks
        .iter()
        .map(|c| {
            let text = String::from_utf8(c.clone()).expect("utf-8 chunk");
            assert!(
                text.ends_with("\n\n"),
                "chunk is not one whole event: {text:?}"
            );
            let mut events = sse::parse(&text);
            assert_eq!(
                events.len(),
                1,
                "chunk holds {} events: {text:?}",
                events.len()
            );
            events.remove(0)
        })
        .collect()
}

/// The event's data parsed as JSON.
pub(super) fn data(e: &Event) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {:?}", e.data))
}

/// A keep-alive connection sending raw requests.
pub(super) struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    pub(super) fn new(u: &MockUpstream) -> Conn {
        let s = TcpStream::connect(u.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// Writes raw bytes.
    pub(super) fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
    }

    /// Reads one response.
    pub(super) fn read(&mut self) -> std::io::Result<Response> {
        client::read_response(&mut self.r)
    }

    /// POSTs a JSON body with content-length on this connection.
    pub(super) fn post(&mut self, path: &str, body: &str) -> Response {
        self.send(
            format!(
                "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        self.read().expect("response")
    }
}
