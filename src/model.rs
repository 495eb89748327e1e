//! Model-aware routing inputs: which model an LLM request asks for, and how to
//! change it. OpenAI and Anthropic request bodies are JSON objects with a top-level
//! `"model"` string; [`find_model`] locates it in one pass without building a JSON
//! tree, [`rewrite_model`] swaps it leaving every other byte alone, and
//! [`ModelPattern`] is a configured name or glob to match it against. Pure: bodies
//! and headers come in as bytes and are treated as untrusted.

use std::fmt;

mod pattern;
mod plain;
mod scan;

pub use pattern::ModelPattern;

/// Longest model name accepted from a header or a pattern, in bytes.
pub const MAX_MODEL_LEN: usize = 256;

/// Where the top-level `"model"` string sits in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpan {
    /// Byte offset of the opening quote.
    pub start: usize,
    /// Byte offset just past the closing quote.
    pub end: usize,
    /// The string with its JSON escapes decoded.
    pub value: String,
}

/// Why a body could not be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelError {
    /// The first non-whitespace byte is not `{`.
    NotAnObject,
    /// The body ends before the object does.
    Truncated,
    /// The body stops being JSON at this byte offset.
    Invalid {
        /// Offset of the offending byte.
        at: usize,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NotAnObject => write!(f, "request body is not a JSON object"),
            ModelError::Truncated => write!(f, "request body ends inside the JSON object"),
            ModelError::Invalid { at } => write!(f, "request body is not valid JSON at byte {at}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Finds the top-level `"model"` string of a JSON object body.
///
/// The whole body is checked to be exactly one JSON object (surrounding whitespace
/// allowed), so a body cut short is always [`ModelError::Truncated`], never a
/// guess. Keys are compared after decoding (`"mod\u0065l"` counts); `"model"` keys
/// inside nested values are not top-level and are ignored.
///
/// - The key appears more than once: the first one is used. Note that many JSON
///   parsers (serde_json, Python's `json`) keep the last, so a caller that must
///   agree with the upstream on a duplicated key should reject such bodies.
/// - Not a string (number, null, object, ...): `Ok(None)`, as when absent.
/// - A string that decodes to control characters (`"gpt\n4o"`): `Ok(None)` too,
///   so such a name never reaches a header or a log line.
///
/// Lone UTF-16 surrogate escapes are an error in the model string (it would not
/// decode) but tolerated elsewhere, like most parsers do. Nesting deeper than 512
/// arrays or objects is reported as invalid.
pub fn find_model(body: &[u8]) -> Result<Option<ModelSpan>, ModelError> {
    scan::find(body)
}

/// The body with `span` replaced by `new_model` as a JSON string; every other byte
/// is unchanged. A span that does not fit in `body` (not one [`find_model`]
/// returned for it) leaves the body as it was.
pub fn rewrite_model(body: &[u8], span: &ModelSpan, new_model: &str) -> Vec<u8> {
    let (Some(head), Some(_), Some(tail)) = (
        body.get(..span.start),
        body.get(span.start..span.end),
        body.get(span.end..),
    ) else {
        return body.to_vec();
    };
    let mut out = Vec::with_capacity(head.len() + new_model.len() + 2 + tail.len());
    out.extend_from_slice(head);
    // serde_json writes a `&str` as a JSON string literal; writing to a Vec cannot fail.
    if serde_json::to_writer(&mut out, new_model).is_err() {
        return body.to_vec();
    }
    out.extend_from_slice(tail);
    out
}

/// A model name from a request header: trimmed, UTF-8, 1 to [`MAX_MODEL_LEN`]
/// bytes and free of control characters; anything else is `None`.
pub fn model_from_header(value: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(value.trim_ascii()).ok()?;
    let fits = (1..=MAX_MODEL_LEN).contains(&name.len());
    (fits && !name.chars().any(char::is_control)).then(|| name.to_owned())
}

#[cfg(test)]
mod tests;
