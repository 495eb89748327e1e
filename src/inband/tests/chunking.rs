//! Chunking, budget and robustness tests: verdicts that hold for every split of
//! a stream, the cost bound past the budget, and byte soup that must not panic.

use super::*;
use crate::backoff::noise;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[test]
fn verdicts_do_not_depend_on_where_chunks_split() {
    let streams = [
        (joined(OPENAI), InBand::Clean),
        (joined(ANTHROPIC), InBand::Clean),
        (
            joined(&[&OPENAI[..3], &[OPENAI_ERROR]].concat()),
            InBand::Error(InBandError::SseDataError),
        ),
        (
            joined(&[&ANTHROPIC[..1], &[ANTHROPIC_ERROR]].concat()),
            InBand::Error(InBandError::SseErrorEvent),
        ),
        (joined(&OPENAI[..2]), InBand::Truncated),
        (with_line_ends(&joined(ANTHROPIC), "\r\n"), InBand::Clean),
        (with_line_ends(&joined(OPENAI), "\r"), InBand::Clean),
    ];
    for (text, want) in &streams {
        let b = text.as_bytes();
        let n = b.len();
        for i in 0..=n {
            let got = run(BodyKind::Sse, BUDGET, &[&b[..i], &b[i..]], true);
            assert_eq!(got, *want, "split at {i}");
            // Three chunks: every first split, with second splits right after it
            // (to cut `\r\n` pairs and short lines) and spread over the rest.
            let stride = (n / 10).max(1);
            let seconds = (i..(i + 3).min(n + 1)).chain((i..=n).step_by(stride));
            for j in seconds {
                let got = run(BodyKind::Sse, BUDGET, &[&b[..i], &b[i..j], &b[j..]], true);
                assert_eq!(got, *want, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(
            run(BodyKind::Sse, BUDGET, &bytes, true),
            *want,
            "byte by byte"
        );
    }
}

/// A long OpenAI stream: `n` delta chunks, then the given ending.
fn long_openai(n: usize, ending: &str) -> Vec<String> {
    let mut chunks = vec![OPENAI[0].to_string()];
    chunks.extend((0..n).map(|_| OPENAI[2].to_string()));
    chunks.push(OPENAI[3].to_string());
    chunks.push(ending.to_string());
    chunks
}

#[test]
fn past_the_budget_only_tails_are_fetched_and_the_end_still_counts() {
    let budget = 4 * 1024;
    let anthropic_long: Vec<String> = ANTHROPIC[..4]
        .iter()
        .chain(std::iter::repeat(&ANTHROPIC[3]).take(400))
        .chain(&ANTHROPIC[5..])
        .map(|s| s.to_string())
        .collect();
    let cases = [
        (long_openai(400, OPENAI[4]), InBand::Clean),
        (long_openai(400, "data: [DONE]"), InBand::Clean),
        (long_openai(400, ""), InBand::Truncated),
        (long_openai(400, OPENAI[2]), InBand::Truncated),
        (anthropic_long.clone(), InBand::Clean),
        (
            anthropic_long[..anthropic_long.len() - 1].to_vec(),
            InBand::Truncated,
        ),
    ];
    for (i, (events, want)) in cases.iter().enumerate() {
        // A few events per chunk, as Envoy delivers a fast stream.
        let chunks: Vec<String> = events.chunks(4).map(|c| c.concat()).collect();
        let total: usize = chunks.iter().map(String::len).sum();
        assert!(total > 10 * budget);
        let mut s = Scanner::new(BodyKind::Sse, budget);
        let mut fetched = 0;
        let mut largest = 0;
        for chunk in &chunks {
            let (offset, len) = s.wants(chunk.len());
            assert!(offset + len == chunk.len() || len == 0);
            fetched += len;
            largest = largest.max(chunk.len());
            s.feed(&chunk.as_bytes()[offset..offset + len]);
        }
        assert_eq!(s.finish(true), *want, "case {i}");
        assert!(fetched <= budget + largest + TAIL_BYTES * chunks.len());
        assert!(
            fetched < total / 4,
            "case {i}: fetched {fetched} of {total}"
        );
    }
    // Everything in one chunk per byte past the budget: the tail is still exact.
    let text = long_openai(400, OPENAI[4]).concat();
    let bytes: Vec<&[u8]> = text.as_bytes().chunks(7).collect();
    assert_eq!(run(BodyKind::Sse, budget, &bytes, true), InBand::Clean);
}

#[test]
fn wants_whole_chunks_under_the_budget_then_tails_then_nothing_after_an_error() {
    let mut s = Scanner::new(BodyKind::Sse, 100);
    assert_eq!(s.wants(5000), (0, 5000));
    s.feed(&[b'x'; 150]);
    assert_eq!(s.wants(5000), (5000 - TAIL_BYTES, TAIL_BYTES));
    assert_eq!(s.wants(10), (0, 10));
    assert_eq!(s.wants(0), (0, 0));

    let mut s = Scanner::new(BodyKind::Sse, BUDGET);
    s.feed(ANTHROPIC_ERROR.as_bytes());
    assert_eq!(s.wants(5000), (0, 0));

    let s = Scanner::new(BodyKind::Other, BUDGET);
    assert_eq!(s.wants(5000), (0, 0));

    let mut s = Scanner::new(BodyKind::Json, 10);
    assert_eq!(s.wants(5000), (0, 11));
    s.feed(b"{\"a\":");
    assert_eq!(s.wants(5000), (0, 6));
    s.feed(b"1234567");
    assert_eq!(s.wants(5000), (0, 0));
    assert_eq!(s.finish(true), InBand::Unknown);
}

#[test]
fn a_zero_budget_scans_only_the_tail() {
    let chunks: Vec<&[u8]> = OPENAI.iter().map(|c| c.as_bytes()).collect();
    assert_eq!(run(BodyKind::Sse, 0, &chunks, true), InBand::Clean);
    // The dialect was never seen, so a missing terminal says nothing.
    assert_eq!(run(BodyKind::Sse, 0, &chunks[..2], true), InBand::Unknown);
    assert_eq!(
        run(BodyKind::Json, 0, &[b"{\"error\":1}"], true),
        InBand::Unknown
    );
}

#[test]
fn overlong_lines_are_skipped_not_fatal() {
    let long = format!("data: {{\"error\":\"{}\"}}\n\n", "x".repeat(LINE_CAP));
    let long_comment = format!(": {}\r\n", "y".repeat(3 * LINE_CAP));
    let text = [OPENAI[0], &long, &long_comment, OPENAI[3], OPENAI[4]].concat();
    let b = text.as_bytes();
    for size in [1, 100, 4096, LINE_CAP + 1, b.len()] {
        let chunks: Vec<&[u8]> = b.chunks(size).collect();
        assert_eq!(
            run(BodyKind::Sse, BUDGET, &chunks, true),
            InBand::Clean,
            "{size}"
        );
    }
    // A short error line after a skipped one is still found.
    let text = [OPENAI[0], &long, OPENAI_ERROR].concat();
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(1000).collect();
    assert_eq!(
        run(BodyKind::Sse, BUDGET, &chunks, true),
        InBand::Error(InBandError::SseDataError)
    );
}

#[test]
fn byte_soup_in_any_chunking_never_panics() {
    // Pieces that drive the parser into its corners, mixed with raw noise.
    const PIECES: &[&[u8]] = &[
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b":",
        b" ",
        b"data:",
        b"data: ",
        b"event: ",
        b"error",
        b"message_stop",
        b"[DONE]",
        b"{",
        b"}",
        b"\"error\"",
        b"\"type\":\"error\"",
        b"\"message_stop\"",
        b"\"chat.completion.chunk\"",
        b"{\"error\":",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\"",
        b"\\",
        b"[",
        b"response.completed",
    ];
    let mut below = noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let len = below(if round % 10 == 0 { 3 * LINE_CAP } else { 600 });
        let mut soup = Vec::with_capacity(len + 32);
        while soup.len() < len {
            if below(3) == 0 {
                soup.push(below(256) as u8);
            } else {
                soup.extend_from_slice(PIECES[below(PIECES.len())]);
            }
        }
        let mut chunks = Vec::new();
        let mut rest = &soup[..];
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(1 + below(rest.len().min(200)));
            chunks.push(chunk);
            rest = after;
        }
        for kind in [BodyKind::Sse, BodyKind::Json, BodyKind::Other] {
            let budget = [0, 1, 64, 500, BUDGET][below(5)];
            let end = below(2) == 0;
            let _ = run(kind, budget, &chunks, end);
        }
        // Within the budget, errors are found whatever the chunking.
        let whole = run(BodyKind::Sse, BUDGET, &[&soup], false);
        assert_eq!(
            run(BodyKind::Sse, BUDGET, &chunks, false),
            whole,
            "round {round}"
        );
    }
}
