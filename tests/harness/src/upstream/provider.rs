//! What the mock's bodies look like for each provider: OpenAI's `chat.completion`
//! and error objects, Anthropic's `message` and `{"type":"error",…}` objects, and
//! the generic bodies for any other path. The request path picks the provider.
//! Bodies are written with `format!` so their keys keep the providers' order.

/// Whose API a request path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `…/chat/completions` (OpenAI, Azure OpenAI, vLLM and other look-alikes).
    OpenAi,
    /// `…/messages` (Anthropic).
    Anthropic,
    /// Anything else: the mock's small generic bodies.
    Generic,
}

impl Provider {
    /// The provider whose API `path` (without query) belongs to.
    pub fn for_path(path: &str) -> Provider {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Provider::OpenAi
        } else if path.ends_with("/v1/messages") {
            Provider::Anthropic
        } else {
            Provider::Generic
        }
    }
}

/// Everything a body needs to know about the request it answers.
#[derive(Debug, Clone)]
pub(crate) struct Reply<'a> {
    /// Whose shape the body takes.
    pub provider: Provider,
    /// The upstream's name.
    pub name: &'a str,
    /// The request's `model`, echoed back.
    pub model: &'a str,
    /// The request's sequence number on this server, for response ids.
    pub seq: u64,
    /// Unix seconds, for `created`.
    pub created: u64,
}

/// The model named in bodies when the request did not name one.
pub(crate) const DEFAULT_MODEL: &str = "mock-model";

/// The pieces a streamed answer is made of; [`content`] joins them all.
const WORDS: [&str; 5] = ["Hello", " from", " the", " mock", " upstream."];

/// The i-th piece of streamed content (cycling for long streams).
pub(crate) fn piece(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// Number of content pieces in a healthy answer.
pub(crate) const PIECES: usize = WORDS.len();

/// The whole content of a healthy answer.
pub(crate) fn content() -> String {
    WORDS.concat()
}

impl Reply<'_> {
    /// The response id (`chatcmpl-…` / `msg_…`).
    pub(crate) fn id(&self) -> String {
        match self.provider {
            Provider::Anthropic => format!("msg_mock{:06}", self.seq),
            _ => format!("chatcmpl-mock{:06}", self.seq),
        }
    }

    /// Provider-specific response headers (request ids), beyond `content-type`.
    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("x-upstream", self.name.to_string())];
        match self.provider {
            Provider::OpenAi => h.push(("x-request-id", format!("req_mock{:06}", self.seq))),
            Provider::Anthropic => h.push(("request-id", format!("req_mock{:06}", self.seq))),
            Provider::Generic => {}
        }
        h
    }

    /// A successful non-streamed answer carrying `text`.
    pub(crate) fn completion(&self, text: &str) -> String {
        let (id, model, text) = (quote(&self.id()), quote(self.model), quote(text));
        match self.provider {
            Provider::OpenAi => format!(
                r#"{{"id":{id},"object":"chat.completion","created":{},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{text},"refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":{PIECES},"total_tokens":{}}},"system_fingerprint":"fp_mock"}}"#,
                self.created,
                9 + PIECES
            ),
            Provider::Anthropic => format!(
                r#"{{"id":{id},"type":"message","role":"assistant","model":{model},"content":[{{"type":"text","text":{text}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":9,"output_tokens":{PIECES}}}}}"#
            ),
            Provider::Generic => format!(
                "{{\"upstream\":{},\"object\":\"chat.completion\",\"choices\":[]}}\n",
                quote(self.name)
            ),
        }
    }

    /// A successful answer of about `bytes` bytes (its content padded with `x`).
    pub(crate) fn sized(&self, bytes: usize) -> String {
        if self.provider == Provider::Generic {
            return format!(
                "{{\"upstream\":{},\"object\":\"chat.completion\",\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}\n",
                quote(self.name),
                "x".repeat(bytes.saturating_sub(100))
            );
        }
        let frame = self.completion("").len();
        self.completion(&"x".repeat(bytes.saturating_sub(frame)))
    }

    /// The provider's error object for `status`.
    pub(crate) fn error(&self, status: u16) -> String {
        match self.provider {
            Provider::Anthropic => {
                let (kind, message) = anthropic_error(status, self.model);
                anthropic_error_body(kind, &message)
            }
            Provider::OpenAi => {
                let (kind, code, message) = openai_error(status, self.model);
                openai_error_body(kind, code, &message)
            }
            Provider::Generic => format!(
                "{{\"error\":{{\"type\":\"server_error\",\"code\":{status},\"message\":{}}}}}\n",
                quote(&format!("mock {} failing", self.name))
            ),
        }
    }
}

/// `s` as a quoted JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// OpenAI's `{"error":{…}}`.
fn openai_error_body(kind: &str, code: Option<&str>, message: &str) -> String {
    let code = code.map_or_else(|| "null".to_string(), quote);
    format!(
        r#"{{"error":{{"message":{},"type":{},"param":null,"code":{code}}}}}"#,
        quote(message),
        quote(kind)
    )
}

/// Anthropic's `{"type":"error","error":{…}}`.
fn anthropic_error_body(kind: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":{},"message":{}}}}}"#,
        quote(kind),
        quote(message)
    )
}

/// OpenAI's error `type`, `code` and message for a status.
fn openai_error(status: u16, model: &str) -> (&'static str, Option<&'static str>, String) {
    let invalid = "invalid_request_error";
    match status {
        400 => (
            invalid,
            Some("context_length_exceeded"),
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.".into(),
        ),
        401 => (
            invalid,
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-mock****. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
        ),
        403 => (
            "request_forbidden",
            Some("unsupported_country_region_territory"),
            "Country, region, or territory not supported".into(),
        ),
        404 => (
            invalid,
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        ),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            format!("Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again later."),
        ),
        503 | 529 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.".into(),
        ),
        s if s >= 500 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!".into(),
        ),
        _ => (invalid, None, format!("Mock error for status {status}.")),
    }
}

/// Anthropic's error `type` and message for a status.
fn anthropic_error(status: u16, model: &str) -> (&'static str, String) {
    match status {
        400 => (
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum".into(),
        ),
        401 => ("authentication_error", "invalid x-api-key".into()),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.".into(),
        ),
        404 => ("not_found_error", format!("model: {model}")),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.".into(),
        ),
        429 => (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit.".into(),
        ),
        529 => ("overloaded_error", "Overloaded".into()),
        s if s >= 500 => ("api_error", "Internal server error".into()),
        _ => (
            "invalid_request_error",
            format!("Mock error for status {status}."),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    fn reply(provider: Provider) -> Reply<'static> {
        Reply {
            provider,
            name: "openai",
            model: "gpt-\"4o\"",
            seq: 7,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn picks_the_provider_from_the_path() {
        for (path, want) in [
            ("/v1/chat/completions", Provider::OpenAi),
            (
                "/openai/deployments/gpt4/chat/completions",
                Provider::OpenAi,
            ),
            ("/v1/messages", Provider::Anthropic),
            ("/v1/messages/", Provider::Anthropic),
            ("/v1/embeddings", Provider::Generic),
            ("/", Provider::Generic),
        ] {
            assert_eq!(Provider::for_path(path), want, "{path}");
        }
    }

    #[test]
    fn every_body_is_valid_json_and_echoes_the_model() {
        for p in [Provider::OpenAi, Provider::Anthropic, Provider::Generic] {
            let r = reply(p);
            for body in [r.completion("hi"), r.sized(2048)] {
                let v = parse(&body);
                if p != Provider::Generic {
                    assert_eq!(v.get("model").and_then(Value::as_str), Some("gpt-\"4o\""));
                }
            }
            for status in [400, 401, 403, 404, 413, 429, 500, 502, 503, 529, 418] {
                parse(&r.error(status));
            }
        }
        let sized = reply(Provider::OpenAi).sized(2048);
        assert_eq!(sized.len(), 2048);
    }
}
