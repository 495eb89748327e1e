use super::sse::LINE_CAP;
use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod chunking;

const BUDGET: usize = 64 * 1024;

/// OpenAI Chat Completions stream, one event per chunk.
const OPENAI: &[&str] = &[
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"An \\\"error\\\" is\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a mistake.\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1732530000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];

const OPENAI_ERROR: &str = "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

/// Anthropic Messages stream.
const ANTHROPIC: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"! Say \\\"message_stop\\\".\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

const ANTHROPIC_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// Runs `chunks` through a scanner the way the host does: fetch what `wants`
/// says, feed it, finish.
fn run(kind: BodyKind, budget: usize, chunks: &[&[u8]], end: bool) -> InBand {
    let mut s = Scanner::new(kind, budget);
    for chunk in chunks {
        let (offset, len) = s.wants(chunk.len());
        assert!(offset + len <= chunk.len(), "wants out of the chunk");
        s.feed(&chunk[offset..offset + len]);
    }
    s.finish(end)
}

fn sse(chunks: &[&str]) -> InBand {
    let chunks: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
    run(BodyKind::Sse, BUDGET, &chunks, true)
}

fn joined(parts: &[&str]) -> String {
    parts.concat()
}

fn with_line_ends(s: &str, end: &str) -> String {
    s.replace('\n', end)
}

#[test]
fn content_types_map_to_body_kinds() {
    let table: &[(&[u8], BodyKind)] = &[
        (b"text/event-stream", BodyKind::Sse),
        (b"text/event-stream; charset=utf-8", BodyKind::Sse),
        (b" Text/Event-Stream ;charset=UTF-8", BodyKind::Sse),
        (b"application/json", BodyKind::Json),
        (b"application/json; charset=utf-8", BodyKind::Json),
        (b"APPLICATION/JSON", BodyKind::Json),
        (b"application/problem+json", BodyKind::Json),
        (b"application/vnd.api+JSON; q=1", BodyKind::Json),
        (b"application/x-ndjson", BodyKind::Other),
        (b"application/jsonl", BodyKind::Other),
        (b"application/vnd.amazon.eventstream", BodyKind::Other),
        (b"text/plain", BodyKind::Other),
        (b"text/json", BodyKind::Other),
        (b"application/", BodyKind::Other),
        (b"json", BodyKind::Other),
        (b"", BodyKind::Other),
        (b"\xff\xfe", BodyKind::Other),
    ];
    for (ct, want) in table {
        assert_eq!(body_kind(ct), *want, "{:?}", String::from_utf8_lossy(ct));
    }
}

#[test]
fn provider_streams_get_their_verdicts() {
    let openai_error = [&OPENAI[..3], &[OPENAI_ERROR]].concat();
    let anthropic_error = [&ANTHROPIC[..1], &[ANTHROPIC_ERROR]].concat();
    let anthropic_data_error = [
        &ANTHROPIC[..2],
        &["data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n"],
    ]
    .concat();
    let responses = [
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"error\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"error\":null}}\n\n",
    ];
    let gemini_native = [
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"}}]}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}]}\r\n\r\n",
    ];
    let table: &[(&str, &[&str], InBand)] = &[
        ("openai", OPENAI, InBand::Clean),
        (
            "openai error after three chunks",
            &openai_error,
            InBand::Error(InBandError::SseDataError),
        ),
        (
            "openai cut after two chunks",
            &OPENAI[..2],
            InBand::Truncated,
        ),
        ("anthropic", ANTHROPIC, InBand::Clean),
        (
            "anthropic overloaded",
            &anthropic_error,
            InBand::Error(InBandError::SseErrorEvent),
        ),
        (
            "anthropic error data without its event line",
            &anthropic_data_error,
            InBand::Error(InBandError::SseDataError),
        ),
        (
            "anthropic cut after two chunks",
            &ANTHROPIC[..2],
            InBand::Truncated,
        ),
        ("responses", &responses, InBand::Clean),
        ("responses cut", &responses[..2], InBand::Truncated),
        ("no dialect, no terminal", &gemini_native, InBand::Unknown),
    ];
    assert_sse_verdicts(table);
}

#[test]
fn sse_edge_cases_get_their_verdicts() {
    let table: &[(&str, &[&str], InBand)] = &[
        ("nothing at all", &[], InBand::Truncated),
        (
            "only comments",
            &[": keep-alive\n\n", ":\n\n"],
            InBand::Truncated,
        ),
        (
            "error wins over a later terminal",
            &[ANTHROPIC_ERROR, "event: message_stop\ndata: {}\n\n"],
            InBand::Error(InBandError::SseErrorEvent),
        ),
        (
            "first error is sticky",
            &[OPENAI_ERROR, ANTHROPIC_ERROR],
            InBand::Error(InBandError::SseDataError),
        ),
        (
            "done without trailing newline",
            &[OPENAI[0], "data: [DONE]"],
            InBand::Clean,
        ),
        (
            "done without the space",
            &[OPENAI[0], "data:[DONE]\n\n"],
            InBand::Clean,
        ),
        (
            "null error is no error",
            &[
                "data: {\"object\":\"chat.completion.chunk\",\"error\":null}\n\n",
                "data: [DONE]\n\n",
            ],
            InBand::Clean,
        ),
        (
            "nested error is no error",
            &[
                "data: {\"object\":\"chat.completion.chunk\",\"x\":{\"error\":1}}\n\n",
                "data: [DONE]\n\n",
            ],
            InBand::Clean,
        ),
        (
            "error in an unknown field name is ignored",
            &["errors: {\"error\":1}\n\n", "data: [DONE]\n\n"],
            InBand::Clean,
        ),
        (
            "data that is not an object is ignored",
            &[
                "data: [\"x\",\"error\"]\n\n",
                "data: \"error\"\n\n",
                "data: [DONE]\n\n",
            ],
            InBand::Clean,
        ),
    ];
    assert_sse_verdicts(table);
}

/// Each named stream gets its verdict, whole and with every line-ending style the
/// SSE spec allows.
fn assert_sse_verdicts(table: &[(&str, &[&str], InBand)]) {
    for (name, chunks, want) in table {
        assert_eq!(sse(chunks), *want, "{name}");
        for end in ["\r\n", "\r"] {
            let text = with_line_ends(&joined(chunks), end);
            assert_eq!(sse(&[&text]), *want, "{name} with {end:?}");
        }
    }
}

#[test]
fn a_stream_that_did_not_end_reports_only_errors() {
    let chunks: Vec<&[u8]> = OPENAI.iter().map(|c| c.as_bytes()).collect();
    assert_eq!(run(BodyKind::Sse, BUDGET, &chunks, false), InBand::Unknown);
    assert_eq!(
        run(BodyKind::Sse, BUDGET, &chunks[..2], false),
        InBand::Unknown
    );
    let err: &[&[u8]] = &[OPENAI[0].as_bytes(), OPENAI_ERROR.as_bytes()];
    assert_eq!(
        run(BodyKind::Sse, BUDGET, err, false),
        InBand::Error(InBandError::SseDataError)
    );
    assert_eq!(
        run(BodyKind::Json, BUDGET, &[b"{\"error\":1}"], false),
        InBand::Unknown
    );
}

#[test]
fn json_bodies_are_errors_only_when_the_top_level_says_so() {
    let big = format!("{{\"error\":{{\"message\":\"{}\"}}}}", "x".repeat(JSON_CAP));
    let table: &[(&str, InBand)] = &[
        (
            "{\"error\":{\"message\":\"The server is overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
            InBand::Error(InBandError::JsonErrorBody),
        ),
        ("{\"error\": \"upstream unavailable\"}", InBand::Error(InBandError::JsonErrorBody)),
        (
            "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
            InBand::Error(InBandError::JsonErrorBody),
        ),
        (
            "{\"object\":\"error\",\"message\":\"out of KV cache\",\"type\":\"InternalServerError\",\"code\":500}",
            InBand::Error(InBandError::JsonErrorBody),
        ),
        (
            " \n{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1732530000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\\\"error\\\"\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n",
            InBand::Clean,
        ),
        (
            "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}],\"stop_reason\":\"end_turn\"}",
            InBand::Clean,
        ),
        ("{\"error\":null,\"result\":1}", InBand::Clean),
        ("{\"data\":{\"error\":\"nested\"}}", InBand::Clean),
        ("[\"x\",\"error\"]", InBand::Unknown),
        ("{\"error\":1,\"error\":2}", InBand::Unknown),
        ("{\"error\":", InBand::Unknown),
        ("{\"error\":1} trailing", InBand::Unknown),
        ("", InBand::Unknown),
        ("null", InBand::Unknown),
        (&big, InBand::Unknown),
    ];
    for (body, want) in table {
        let b = body.as_bytes();
        assert_eq!(
            run(BodyKind::Json, BUDGET * 4, &[b], true),
            *want,
            "{body:.80}"
        );
        let halves: &[&[u8]] = &[&b[..b.len() / 2], &b[b.len() / 2..]];
        assert_eq!(
            run(BodyKind::Json, BUDGET * 4, halves, true),
            *want,
            "{body:.80}"
        );
    }
    // The cap is the smaller of the budget and JSON_CAP.
    let small = "{\"error\":{\"message\":\"overloaded\"}}".as_bytes();
    assert_eq!(
        run(BodyKind::Json, small.len() - 1, &[small], true),
        InBand::Unknown
    );
    assert_eq!(
        run(BodyKind::Json, small.len(), &[small], true),
        InBand::Error(InBandError::JsonErrorBody)
    );
}

#[test]
fn other_bodies_are_never_judged() {
    let body: &[&[u8]] = &[OPENAI_ERROR.as_bytes(), b"{\"error\":1}"];
    assert_eq!(run(BodyKind::Other, BUDGET, body, true), InBand::Unknown);
}

#[test]
fn quoted_search_finds_exactly_the_quoted_names() {
    let names: &[&[u8]] = &[b"error", b"message_stop"];
    let table: &[(&[u8], bool)] = &[
        (b"{\"error\":1}", true),
        (b"{\"type\":\"message_stop\"}", true),
        (b"{\"x\":\"\"error\"}", true),
        (b"{\"errors\":1}", false),
        (b"{\"x\":\"an \\\"error\\\" is\"}", false),
        (b"error\"", false),
        (b"\"error", false),
        (b"\"", false),
        (b"", false),
    ];
    for (hay, want) in table {
        let shown = String::from_utf8_lossy(hay);
        assert_eq!(contains_quoted(hay, names), *want, "{shown}");
        let one_by_one = names
            .iter()
            .any(|n| contains(hay, &[b"\"", *n, b"\""].concat()));
        assert_eq!(one_by_one, *want, "{shown}");
    }
}
