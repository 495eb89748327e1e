//! SSE answers: healthy streams for both providers, and each way a stream can go
//! wrong (error event, cut, missing terminal event, stall), framed one event per
//! flushed chunk.

use super::*;
use crate::upstream::Behaviour;
use std::io::ErrorKind;
use std::time::Instant;

fn names(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect()
}

#[test]
fn openai_stream_is_completion_chunks_ending_in_done() {
    let u = MockUpstream::start("openai");
    let mut s = open(&u, CHAT, &body("gpt-4o", true));
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("transfer-encoding"), Some("chunked"));
    let (chunks, end) = s.read_all();
    end.expect("a proper end");
    let events = one_event_per_chunk(&chunks);
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last.data, "[DONE]");
    let mut text = String::new();
    for e in rest {
        assert_eq!(e.event, None);
        let v = data(e);
        assert_eq!(str_at(&v, "object"), Some("chat.completion.chunk"));
        assert_eq!(str_at(&v, "model"), Some("gpt-4o"));
        text.push_str(str_at(&v, "choices.0.delta.content").unwrap_or(""));
    }
    assert_eq!(
        str_at(&data(&rest[0]), "choices.0.delta.role"),
        Some("assistant")
    );
    let finish = data(rest.last().unwrap());
    assert_eq!(str_at(&finish, "choices.0.finish_reason"), Some("stop"));
    assert_eq!(text, "Hello from the mock upstream.");
}

#[test]
fn anthropic_stream_has_the_full_event_sequence() {
    let u = MockUpstream::start("anthropic");
    let (chunks, end) = open(&u, MESSAGES, &body("claude-3-5-haiku", true)).read_all();
    end.expect("a proper end");
    let events = one_event_per_chunk(&chunks);
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(["content_block_delta"; 5]);
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), want);
    for e in &events {
        assert_eq!(str_at(&data(e), "type"), e.event.as_deref(), "{e:?}");
    }
    let start = data(&events[0]);
    assert_eq!(str_at(&start, "message.model"), Some("claude-3-5-haiku"));
    assert_eq!(str_at(&data(&events[3]), "delta.type"), Some("text_delta"));
    let delta = data(&events[9]);
    assert_eq!(str_at(&delta, "delta.stop_reason"), Some("end_turn"));
}

#[test]
fn sse_error_sends_an_error_event_then_ends_the_response_properly() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseError { chunks: 3 });
    let (chunks, end) = open(&u, CHAT, &body("gpt-4o", true)).read_all();
    end.expect("terminating chunk");
    let events = one_event_per_chunk(&chunks);
    assert_eq!(events.len(), 1 + 3 + 1);
    let err = data(events.last().unwrap());
    assert_eq!(str_at(&err, "error.type"), Some("server_error"));
    assert!(err.at("error.param").unwrap().is_null());
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    let (chunks, end) = open(&u, MESSAGES, &body("claude", true)).read_all();
    end.expect("terminating chunk");
    let events = one_event_per_chunk(&chunks);
    assert_eq!(events.len(), 3 + 3 + 1);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        last.data,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
    );
}

#[test]
fn sse_cut_closes_the_connection_without_the_terminating_chunk() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseCut { chunks: 2 });
    for (path, opening) in [(CHAT, 1), (MESSAGES, 3)] {
        let (chunks, end) = open(&u, path, &body("m", true)).read_all();
        let e = end.expect_err("cut mid-body");
        assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{e:?}"
        );
        assert_eq!(one_event_per_chunk(&chunks).len(), opening + 2, "{path}");
    }
}

#[test]
fn sse_no_terminal_ends_cleanly_without_done_or_message_stop() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseNoTerminal { chunks: 2 });
    for (path, opening) in [(CHAT, 1), (MESSAGES, 3)] {
        let (chunks, end) = open(&u, path, &body("m", true)).read_all();
        end.expect("terminating chunk");
        let events = one_event_per_chunk(&chunks);
        assert_eq!(events.len(), opening + 2, "{path}");
        assert!(events
            .iter()
            .all(|e| e.data != "[DONE]" && e.event.as_deref() != Some("message_stop")));
    }
}

#[test]
fn stream_failures_stream_even_when_the_request_did_not_ask() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseNoTerminal { chunks: 1 });
    let r = post(&u, CHAT, &body("m", false));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse::parse(&r.text()).len(), 2);
}

#[test]
fn sse_stall_holds_the_connection_without_blocking_others() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseStall { chunks: 1 });
    let mut s = open(&u, CHAT, &body("m", true));
    s.set_read_timeout(Duration::from_secs(5)).unwrap();
    assert!(s.next_chunk().unwrap().is_some(), "role chunk");
    assert!(s.next_chunk().unwrap().is_some(), "content chunk");
    s.set_read_timeout(Duration::from_millis(300)).unwrap();
    let e = s.next_chunk().unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));

    u.set(Behaviour::Ok);
    let t = Instant::now();
    assert_eq!(post(&u, CHAT, &body("m", false)).status, 200);
    assert!(t.elapsed() < Duration::from_secs(1));

    // The stalled exchange ends when the client goes away.
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !super::super::lock(&u.state.conns).is_empty() {
        assert!(
            Instant::now() < deadline,
            "stalled connection thread still alive"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dropping_the_server_releases_a_stalled_stream() {
    let u = MockUpstream::start("p");
    u.set(Behaviour::SseStall { chunks: 0 });
    let mut s = open(&u, MESSAGES, &body("m", true));
    for _ in 0..3 {
        s.next_chunk().unwrap();
    }
    let t = Instant::now();
    drop(u);
    assert!(s.next_chunk().is_err(), "no terminating chunk after a stop");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn chunk_delay_spaces_the_events_out() {
    let u = MockUpstream::start("p");
    u.apply("chunk_ms=30").unwrap();
    let t = Instant::now();
    let mut s = open(&u, CHAT, &body("m", true));
    let first = s.next_chunk().unwrap();
    assert!(first.is_some() && t.elapsed() < Duration::from_secs(1));
    let (rest, end) = s.read_all();
    end.unwrap();
    // role + 5 content + finish + [DONE]: seven pauses.
    assert_eq!(rest.len(), 7);
    assert!(t.elapsed() >= Duration::from_millis(7 * 30));
}
