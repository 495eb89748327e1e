//! The `text/event-stream` side of the scanner: a line parser that survives any
//! chunking (lines, events and `\r\n` split across chunks), recognises the
//! provider dialect, its error events and its terminal event, and after the scan
//! budget keeps only a rolling tail of the stream.
//!
//! Lines are acted on as they complete rather than per dispatched event: an
//! `event: error` line is already an error, whatever data follows. A line longer
//! than [`LINE_CAP`] is skipped to its end (error and terminal lines are short).
//!
//! Which streams must end with a terminal event: those whose dialect promises one,
//! recognised within the budget (OpenAI chat/completions: `[DONE]`; Anthropic:
//! `message_stop`; OpenAI Responses: `response.completed` / `.incomplete` /
//! `.failed`), and a stream with no events at all (a `200` with nothing in it is
//! broken). Other SSE with data but no known dialect (e.g. Gemini's native API,
//! which has no terminal event) is `Unknown`, not `Truncated`. Past the budget
//! only `[DONE]` and `message_stop` can be seen in the tail, so a Responses stream
//! that long is `Unknown` too.

use super::{contains, contains_quoted, InBand, InBandError, Probe, TAIL_BYTES};

/// Longest line kept across chunks.
pub(super) const LINE_CAP: usize = 8 * 1024;

/// Which provider's event vocabulary the stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Unknown,
    /// Chat Completions / Completions: `data:` chunks, then `data: [DONE]`.
    OpenAi,
    /// Messages API: named events, ending with `message_stop`.
    Anthropic,
    /// OpenAI Responses API: `response.*` events, ending with `response.completed`.
    Responses,
}

/// The last [`TAIL_BYTES`] of everything fed, contiguous in the real stream as
/// long as each chunk's fetched part is a suffix of it.
#[derive(Debug)]
struct Tail {
    buf: [u8; TAIL_BYTES],
    len: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let new = bytes
            .get(bytes.len().saturating_sub(TAIL_BYTES)..)
            .unwrap_or(bytes);
        let keep = (TAIL_BYTES - new.len()).min(self.len);
        self.buf.copy_within(self.len - keep..self.len, 0);
        if let Some(dst) = self.buf.get_mut(keep..keep + new.len()) {
            dst.copy_from_slice(new);
        }
        self.len = keep + new.len();
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Whether the stream's last line is a terminal one.
    fn ends_terminal(&self) -> bool {
        let t = self.bytes().trim_ascii_end();
        let last = match t.iter().rposition(|b| *b == b'\n' || *b == b'\r') {
            Some(i) => t.get(i + 1..).unwrap_or_default(),
            None => t,
        };
        contains(last, b"[DONE]") || contains(last, b"message_stop")
    }
}

/// SSE scanning state for one response.
#[derive(Debug)]
pub(super) struct Sse {
    budget: usize,
    scanned: usize,
    /// The current line so far, when it spans chunks.
    line: Vec<u8>,
    /// The current line outgrew [`LINE_CAP`]: drop bytes up to its end.
    skipping: bool,
    /// The last chunk ended in `\r`: a `\n` opening the next one belongs to it.
    after_cr: bool,
    saw_event: bool,
    dialect: Dialect,
    terminal: bool,
    error: Option<InBandError>,
    tail: Tail,
}

impl Sse {
    pub(super) fn new(budget: usize) -> Sse {
        Sse {
            budget,
            scanned: 0,
            line: Vec::new(),
            skipping: false,
            after_cr: false,
            saw_event: false,
            dialect: Dialect::Unknown,
            terminal: false,
            error: None,
            tail: Tail {
                buf: [0; TAIL_BYTES],
                len: 0,
            },
        }
    }

    pub(super) fn wants(&self, chunk_len: usize) -> (usize, usize) {
        if self.error.is_some() {
            (0, 0)
        } else if self.parsing() {
            (0, chunk_len)
        } else {
            let n = chunk_len.min(TAIL_BYTES);
            (chunk_len - n, n)
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.tail.push(bytes);
        if !self.parsing() {
            return;
        }
        self.scan(bytes);
        self.scanned = self.scanned.saturating_add(bytes.len());
        if !self.parsing() {
            self.line = Vec::new();
        }
    }

    pub(super) fn finish(&mut self, end_of_stream_seen: bool) -> InBand {
        if !end_of_stream_seen {
            return self.error.map_or(InBand::Unknown, InBand::Error);
        }
        if self.parsing() && self.error.is_none() {
            // Lenient: a last line without its newline still counts.
            let line = std::mem::take(&mut self.line);
            if !self.skipping {
                self.on_line(&line);
            }
            self.skipping = false;
        }
        if let Some(e) = self.error {
            return InBand::Error(e);
        }
        if self.terminal {
            return InBand::Clean;
        }
        if !self.parsing() {
            return if self.tail.ends_terminal() {
                InBand::Clean
            } else if matches!(self.dialect, Dialect::OpenAi | Dialect::Anthropic) {
                InBand::Truncated
            } else {
                InBand::Unknown
            };
        }
        if !self.saw_event || self.dialect != Dialect::Unknown {
            InBand::Truncated
        } else {
            InBand::Unknown
        }
    }

    /// Still under the budget: whole chunks are fetched and parsed.
    fn parsing(&self) -> bool {
        self.scanned < self.budget
    }

    /// Splits `bytes` into lines on `\n`, `\r\n` or `\r`, joining with the
    /// partial line left by the previous chunk.
    fn scan(&mut self, mut bytes: &[u8]) {
        if self.after_cr {
            self.after_cr = false;
            if let Some((b'\n', rest)) = bytes.split_first() {
                bytes = rest;
            }
        }
        while let Some(i) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (part, rest) = bytes.split_at(i);
            self.end_line(part);
            let Some((&end, rest)) = rest.split_first() else {
                return;
            };
            bytes = rest;
            if end == b'\r' {
                match bytes.split_first() {
                    Some((b'\n', rest)) => bytes = rest,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.error.is_some() {
                return;
            }
        }
        if self.skipping || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > LINE_CAP {
            self.line.clear();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// `part` completes the current line.
    fn end_line(&mut self, part: &[u8]) {
        if self.skipping {
            self.skipping = false;
        } else if self.line.is_empty() {
            // The cap applies to whole lines too, so chunking never changes a verdict.
            if part.len() <= LINE_CAP {
                self.on_line(part);
            }
        } else if self.line.len() + part.len() <= LINE_CAP {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(part);
            self.on_line(&line);
            line.clear();
            self.line = line;
        } else {
            self.line.clear();
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        let (field, value) = match line.iter().position(|b| *b == b':') {
            // Blank lines end events and `:` lines are comments: nothing to see.
            Some(0) => return,
            None if line.is_empty() => return,
            None => (line, &line[..0]),
            Some(i) => {
                let (field, value) = line.split_at(i);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
        };
        match field {
            b"event" => self.on_event(value),
            b"data" => self.on_data(value),
            _ => {}
        }
    }

    fn on_event(&mut self, name: &[u8]) {
        self.saw_event = true;
        match name {
            b"error" => self.fail(InBandError::SseErrorEvent),
            b"message_stop" => self.end(Dialect::Anthropic),
            b"message_start"
            | b"content_block_start"
            | b"content_block_delta"
            | b"content_block_stop"
            | b"message_delta" => self.seen(Dialect::Anthropic),
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                self.end(Dialect::Responses)
            }
            n if n.starts_with(b"response.") => self.seen(Dialect::Responses),
            _ => {}
        }
    }

    fn on_data(&mut self, value: &[u8]) {
        self.saw_event = true;
        let v = value.trim_ascii();
        if v == b"[DONE]" {
            self.end(Dialect::OpenAi);
            return;
        }
        if v.first() != Some(&b'{') {
            return;
        }
        if self.dialect == Dialect::Unknown {
            if contains_quoted(v, &[b"chat.completion.chunk", b"text_completion"]) {
                self.seen(Dialect::OpenAi);
            } else if contains_quoted(v, &[b"message_start"]) {
                self.seen(Dialect::Anthropic);
            } else if contains_quoted(v, &[b"response.created"]) {
                self.seen(Dialect::Responses);
            }
        }
        // Only a line that names one of these as a JSON string is worth parsing.
        if !contains_quoted(v, &[b"error", b"message_stop"]) {
            return;
        }
        match Probe::of(v) {
            Some(p) if p.is_error() => self.fail(InBandError::SseDataError),
            Some(p) if p.type_is("message_stop") => self.end(Dialect::Anthropic),
            _ => {}
        }
    }

    fn seen(&mut self, dialect: Dialect) {
        if self.dialect == Dialect::Unknown {
            self.dialect = dialect;
        }
    }

    fn end(&mut self, dialect: Dialect) {
        self.seen(dialect);
        self.terminal = true;
    }

    fn fail(&mut self, error: InBandError) {
        self.error.get_or_insert(error);
    }
}
