//! The SSE events of a streamed answer, as each provider frames them: OpenAI's
//! `data: {chat.completion.chunk}` lines ending in `data: [DONE]`, and Anthropic's
//! `event:`/`data:` pairs from `message_start` to `message_stop`. A stream is an
//! opening, content events, a closing and a terminal event; the misbehaving
//! streams stop somewhere along that path.

use super::provider::{piece, quote, Provider, Reply};

/// One SSE event, framed.
fn event(name: Option<&str>, data: &str) -> String {
    match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

impl Reply<'_> {
    fn is_anthropic(&self) -> bool {
        self.provider == Provider::Anthropic
    }

    /// An OpenAI `chat.completion.chunk` with this `delta` and `finish_reason`.
    fn openai_chunk(&self, delta: &str, finish: &str) -> String {
        event(
            None,
            &format!(
                r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":"fp_mock","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#,
                quote(&self.id()),
                self.created,
                quote(self.model)
            ),
        )
    }

    /// Events before any content: OpenAI's role chunk; Anthropic's `message_start`,
    /// `content_block_start` and `ping`.
    pub(crate) fn stream_opening(&self) -> Vec<String> {
        if !self.is_anthropic() {
            return vec![self.openai_chunk(
                r#"{"role":"assistant","content":"","refusal":null}"#,
                "null",
            )];
        }
        vec![
            event(
                Some("message_start"),
                &format!(
                    r#"{{"type":"message_start","message":{{"id":{},"type":"message","role":"assistant","content":[],"model":{},"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":9,"output_tokens":1}}}}}}"#,
                    quote(&self.id()),
                    quote(self.model)
                ),
            ),
            event(
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            event(Some("ping"), r#"{"type": "ping"}"#),
        ]
    }

    /// The i-th content event.
    pub(crate) fn stream_content(&self, i: usize) -> String {
        let text = quote(piece(i));
        if self.is_anthropic() {
            event(
                Some("content_block_delta"),
                &format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{text}}}}}"#
                ),
            )
        } else {
            self.openai_chunk(&format!(r#"{{"content":{text}}}"#), "null")
        }
    }

    /// Events after the content and before the terminal one.
    pub(crate) fn stream_closing(&self, pieces: usize) -> Vec<String> {
        if !self.is_anthropic() {
            return vec![self.openai_chunk("{}", r#""stop""#)];
        }
        vec![
            event(
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            event(
                Some("message_delta"),
                &format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{pieces}}}}}"#
                ),
            ),
        ]
    }

    /// The event that tells a client the stream is complete.
    pub(crate) fn stream_terminal(&self) -> String {
        if self.is_anthropic() {
            event(Some("message_stop"), r#"{"type":"message_stop"}"#)
        } else {
            event(None, "[DONE]")
        }
    }

    /// A mid-stream error event: the provider's error object for a 529 (Anthropic's
    /// `overloaded_error`) or a 500 (OpenAI's `server_error`, also on other paths).
    pub(crate) fn stream_error(&self) -> String {
        if self.is_anthropic() {
            event(Some("error"), &self.error(529))
        } else {
            let openai = Reply {
                provider: Provider::OpenAi,
                ..self.clone()
            };
            event(None, &openai.error(500))
        }
    }
}
