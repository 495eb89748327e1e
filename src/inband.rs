//! In-band error detection: a provider that has already sent `200` can still fail
//! inside the body, as an SSE `error` event, a `data:` JSON error object, a JSON
//! error body, or a stream that stops before its terminal event. This module owns
//! the streaming [`Scanner`] that notices those without buffering whole bodies or
//! holding chunks back.
//!
//! The host asks [`Scanner::wants`] which bytes of each chunk to fetch and feeds
//! exactly those, so a body costs at most `max_scan_bytes` plus the chunk that
//! crosses it, then [`TAIL_BYTES`] per later chunk. Create a scanner only for a
//! successful (2xx) response: error statuses are classified from the status alone.

mod sse;
#[cfg(test)]
mod tests;

use serde::de::IgnoredAny;
use serde::Deserialize;
use sse::Sse;

/// Bytes kept from the end of the stream once the scan budget is spent, to see
/// the terminal event (`data: [DONE]`, Anthropic's `message_stop`).
pub const TAIL_BYTES: usize = 64;

/// Largest JSON body examined: real error bodies are small.
pub const JSON_CAP: usize = 64 * 1024;

/// How the response body is framed, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/event-stream`: a streamed completion.
    Sse,
    /// `application/json` or `application/*+json`: a whole completion or an error.
    Json,
    /// Anything else: nothing is scanned.
    Other,
}

/// The [`BodyKind`] of a `content-type` value; parameters (`; charset=utf-8`) and
/// case are ignored.
pub fn body_kind(content_type: &[u8]) -> BodyKind {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if essence.eq_ignore_ascii_case(b"text/event-stream") {
        return BodyKind::Sse;
    }
    let json = |subtype: &[u8]| {
        subtype.eq_ignore_ascii_case(b"json")
            || subtype
                .len()
                .checked_sub(5)
                .and_then(|at| subtype.get(at..))
                .is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"+json"))
    };
    match essence.split_at_checked(12) {
        Some((kind, subtype)) if kind.eq_ignore_ascii_case(b"application/") && json(subtype) => {
            BodyKind::Json
        }
        _ => BodyKind::Other,
    }
}

/// An error the provider reported inside a successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InBandError {
    /// An SSE event named `error` (Anthropic, OpenAI Responses).
    SseErrorEvent,
    /// An SSE `data:` object with a top-level `error` key or `"type":"error"` (OpenAI).
    SseDataError,
    /// A JSON body that is an error object.
    JsonErrorBody,
}

/// What the body said about the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InBand {
    /// A complete, well-formed answer.
    Clean,
    /// The provider reported an error in the body; the first one found.
    Error(InBandError),
    /// The stream ended normally but without the terminal event its dialect
    /// promises, or with no events at all.
    Truncated,
    /// Nothing to say: not scanned, not recognised, too large, or cut short (the
    /// filter counts a stream that did not end as a reset on its own).
    #[default]
    Unknown,
}

/// Streaming in-band error detector, one per response.
#[derive(Debug)]
pub struct Scanner {
    body: Body,
}

#[derive(Debug)]
enum Body {
    Sse(Sse),
    Json(JsonBody),
    Other,
}

impl Scanner {
    /// A scanner for a body of `kind` that parses at most about `max_scan_bytes`.
    pub fn new(kind: BodyKind, max_scan_bytes: usize) -> Scanner {
        let body = match kind {
            BodyKind::Sse => Body::Sse(Sse::new(max_scan_bytes)),
            BodyKind::Json => Body::Json(JsonBody::new(max_scan_bytes.min(JSON_CAP))),
            BodyKind::Other => Body::Other,
        };
        Scanner { body }
    }

    /// Which bytes of the next chunk, `chunk_len` long, to fetch and [`feed`]:
    /// `(offset, len)`, always within the chunk; `len == 0` means fetch nothing.
    /// The whole chunk while under the budget, then only its last [`TAIL_BYTES`].
    ///
    /// [`feed`]: Scanner::feed
    pub fn wants(&self, chunk_len: usize) -> (usize, usize) {
        match &self.body {
            Body::Sse(sse) => sse.wants(chunk_len),
            Body::Json(json) => json.wants(chunk_len),
            Body::Other => (0, 0),
        }
    }

    /// The bytes fetched as [`wants`](Scanner::wants) said, for each chunk in order.
    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.body {
            Body::Sse(sse) => sse.feed(bytes),
            Body::Json(json) => json.feed(bytes),
            Body::Other => {}
        }
    }

    /// The verdict once the body is over. `end_of_stream_seen` is false when the
    /// stream was cut short: then only an error already found is reported.
    pub fn finish(&mut self, end_of_stream_seen: bool) -> InBand {
        match &mut self.body {
            Body::Sse(sse) => sse.finish(end_of_stream_seen),
            Body::Json(json) if end_of_stream_seen => json.finish(),
            Body::Json(_) | Body::Other => InBand::Unknown,
        }
    }
}

/// A JSON body buffered up to its cap; past the cap it is dropped.
#[derive(Debug)]
struct JsonBody {
    buf: Vec<u8>,
    cap: usize,
    over: bool,
}

impl JsonBody {
    fn new(cap: usize) -> JsonBody {
        JsonBody {
            buf: Vec::new(),
            cap,
            over: cap == 0,
        }
    }

    /// One byte beyond the cap is enough to learn the body is too large.
    fn wants(&self, chunk_len: usize) -> (usize, usize) {
        if self.over {
            return (0, 0);
        }
        let room = (self.cap + 1).saturating_sub(self.buf.len());
        (0, chunk_len.min(room))
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if self.buf.len().saturating_add(bytes.len()) > self.cap {
            self.over = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn finish(&mut self) -> InBand {
        let buf = std::mem::take(&mut self.buf);
        if self.over {
            return InBand::Unknown;
        }
        // Every error shape names "error" (as a key or a value): a body without
        // the word can't be one, and most successes skip the JSON parse entirely.
        // (Clean means "not an error" here; the body is not validated further.)
        if !contains(&buf, b"error") {
            return if buf.trim_ascii_start().first() == Some(&b'{') {
                InBand::Clean
            } else {
                InBand::Unknown
            };
        }
        match Probe::of(&buf) {
            Some(p) if p.is_error() => InBand::Error(InBandError::JsonErrorBody),
            Some(_) => InBand::Clean,
            None => InBand::Unknown,
        }
    }
}

/// The top-level fields of a JSON object that mark it as an error.
#[derive(Deserialize)]
struct Probe {
    /// OpenAI, Azure, vLLM, most proxies: `{"error": {...}}` or `{"error": "..."}`.
    #[serde(default)]
    error: Option<IgnoredAny>,
    /// Anthropic: `{"type": "error", ...}`; also `message_stop` in SSE data.
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
    /// Older vLLM / FastChat: `{"object": "error", ...}`.
    #[serde(default)]
    object: Option<serde_json::Value>,
}

impl Probe {
    /// The top-level fields of `json` if it is one JSON object, else `None`.
    fn of(json: &[u8]) -> Option<Probe> {
        // A derived struct also deserializes from an array, positionally: only
        // objects are error bodies.
        if json.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    fn is_error(&self) -> bool {
        self.error.is_some() || self.type_is("error") || is_str(&self.object, "error")
    }

    fn type_is(&self, name: &str) -> bool {
        is_str(&self.kind, name)
    }
}

fn is_str(v: &Option<serde_json::Value>, s: &str) -> bool {
    matches!(v, Some(serde_json::Value::String(x)) if x == s)
}

/// Whether `needle` occurs in `hay` (an empty needle does).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `hay` holds any of `names` as a quoted string (`"name"`): one pass over
/// its quotes however many names, as this runs on every SSE `data:` line.
fn contains_quoted(hay: &[u8], names: &[&[u8]]) -> bool {
    let mut rest = hay;
    while let Some(i) = rest.iter().position(|b| *b == b'"') {
        rest = rest.get(i + 1..).unwrap_or_default();
        let closed = |name: &&[u8]| {
            rest.strip_prefix(*name)
                .is_some_and(|after| after.first() == Some(&b'"'))
        };
        if names.iter().any(closed) {
            return true;
        }
    }
    false
}
