//! The in-band scanner: response bodies from providers, cut into chunks wherever
//! the network and Envoy cut them.

use llm_breaker::inband::{body_kind, BodyKind, InBand, InBandError, Scanner};
use proptest::prelude::*;

/// OpenAI Chat Completions content events.
const OPENAI: &[&str] = &[
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"An \\\"error\\\" is\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
];
const OPENAI_DONE: &str = "data: [DONE]\n\n";
const OPENAI_ERROR: &str = "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

/// Anthropic Messages events.
const ANTHROPIC: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Say \\\"message_stop\\\".\"}}\n\n",
];
const ANTHROPIC_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const ANTHROPIC_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// Runs chunks through a scanner as the host does: fetch what `wants` says, feed it.
fn run(
    kind: BodyKind,
    budget: usize,
    chunks: &[&[u8]],
    end: bool,
) -> Result<InBand, TestCaseError> {
    let mut s = Scanner::new(kind, budget);
    for chunk in chunks {
        let (offset, len) = s.wants(chunk.len());
        prop_assert!(
            offset.checked_add(len).is_some_and(|e| e <= chunk.len()),
            "wants ({offset}, {len}) outside a chunk of {}",
            chunk.len()
        );
        s.feed(&chunk[offset..offset + len]);
    }
    Ok(s.finish(end))
}

/// `text` cut at the given points (indices into it, any order, repeats allowed).
fn split<'a>(text: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// A stream of `prefix` events of one dialect, the error event, and maybe the
/// terminal event after it, with its line ends written as `\n`, `\r\n` or `\r`.
fn stream_with_error() -> impl Strategy<Value = (String, InBandError)> {
    (
        any::<bool>(),
        0..=3usize,
        any::<bool>(),
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
    )
        .prop_map(|(openai, prefix, terminal, eol)| {
            let (events, error, done, class) = if openai {
                (OPENAI, OPENAI_ERROR, OPENAI_DONE, InBandError::SseDataError)
            } else {
                (
                    ANTHROPIC,
                    ANTHROPIC_ERROR,
                    ANTHROPIC_STOP,
                    InBandError::SseErrorEvent,
                )
            };
            let mut s: String = events.iter().take(prefix).copied().collect();
            s.push_str(error);
            if terminal {
                s.push_str(done);
            }
            (s.replace('\n', eol), class)
        })
}

/// SSE comment and `id:`/`retry:` lines: legal anywhere between events, meaningless.
fn noise_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(|t| format!(": {t}\n\n")),
        "[0-9a-z]{1,12}".prop_map(|t| format!("id: {t}\n\n")),
        (0u32..100_000).prop_map(|ms| format!("retry: {ms}\n\n")),
    ]
}

fn kind() -> impl Strategy<Value = BodyKind> {
    prop::sample::select(vec![BodyKind::Sse, BodyKind::Json, BodyKind::Other])
}

proptest! {
    #![proptest_config(crate::cases())]

    #[test]
    fn arbitrary_chunks_never_panic_and_wants_stays_in_the_chunk(
        kind in kind(),
        budget in prop_oneof![0..300usize, 0..200_000usize],
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        end in any::<bool>(),
    ) {
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        run(kind, budget, &chunks, end)?;
    }

    #[test]
    fn sse_shaped_soup_never_panics(
        budget in 0..2_000usize,
        parts in prop::collection::vec(
            prop_oneof![
                Just("data: ".to_string()), Just("event: error\n".to_string()),
                Just("data: [DONE]".to_string()), Just("\n".to_string()), Just("\r".to_string()),
                Just("{\"error\":".to_string()), Just("\"type\":\"error\"".to_string()),
                Just("message_stop".to_string()), Just("}".to_string()), "[ -~]{0,20}",
            ],
            0..40,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        end in any::<bool>(),
    ) {
        let text = parts.concat();
        run(BodyKind::Sse, budget, &split(text.as_bytes(), &cuts), end)?;
    }

    #[test]
    fn an_error_event_is_found_however_the_stream_is_split(
        (text, class) in stream_with_error(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        end in any::<bool>(),
    ) {
        let chunks = split(text.as_bytes(), &cuts);
        // Also when the stream is cut short afterwards (`end` false).
        prop_assert_eq!(run(BodyKind::Sse, 64 * 1024, &chunks, end)?, InBand::Error(class));
    }

    #[test]
    fn comment_and_id_lines_do_not_hide_an_error_event(
        (text, class) in stream_with_error(),
        noise in prop::collection::vec(noise_line(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        // Noise before the stream and between its events (events end with a blank line).
        let mut with_noise = noise.concat();
        let eol_pair = if text.contains("\r\n") { "\r\n\r\n" } else if text.contains('\r') { "\r\r" } else { "\n\n" };
        let fixed: Vec<String> = noise.iter().map(|n| n.replace("\n\n", eol_pair)).collect();
        with_noise = with_noise.replace("\n\n", eol_pair);
        for (i, event) in text.split_inclusive(eol_pair).enumerate() {
            with_noise.push_str(event);
            with_noise.push_str(&fixed[i % fixed.len()]);
        }
        let chunks = split(with_noise.as_bytes(), &cuts);
        prop_assert_eq!(run(BodyKind::Sse, 64 * 1024, &chunks, true)?, InBand::Error(class));
    }

    #[test]
    fn clean_and_truncated_streams_are_told_apart_however_split(
        openai in any::<bool>(),
        events in 1..=3usize,
        terminal in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (list, done) = if openai { (OPENAI, OPENAI_DONE) } else { (ANTHROPIC, ANTHROPIC_STOP) };
        let mut text: String = list.iter().take(events).copied().collect();
        if terminal {
            text.push_str(done);
        }
        let want = if terminal { InBand::Clean } else { InBand::Truncated };
        prop_assert_eq!(run(BodyKind::Sse, 64 * 1024, &split(text.as_bytes(), &cuts), true)?, want);
    }

    #[test]
    fn a_json_error_body_is_found_however_split(
        message in "[ -~&&[^\"\\\\]]{0,200}",
        status in 500u16..600,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let body = format!(
            "{{\"error\":{{\"message\":\"{message}\",\"type\":\"server_error\",\"code\":{status}}}}}"
        );
        let chunks = split(body.as_bytes(), &cuts);
        prop_assert_eq!(
            run(BodyKind::Json, 64 * 1024, &chunks, true)?,
            InBand::Error(InBandError::JsonErrorBody)
        );
    }

    #[test]
    fn content_types_never_panic(ct in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = body_kind(&ct);
    }
}
