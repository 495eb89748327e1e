//! HTTP/1.1 framing for the mock: reading one request (content-length or chunked
//! body, `expect: 100-continue`) and writing fixed-length or chunked responses, each
//! chunk flushed on its own so SSE events leave one at a time.

use serde_json::Value;
use std::io::{self, BufRead, Read, Write};

/// Longest request line, header line or chunk-size line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// One request as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it arrived chunked.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// First value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `content-length` header, parsed.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.parse().ok()
    }

    /// The body's top-level `model` string, if it is JSON with one.
    pub fn model(&self) -> Option<String> {
        self.model_and_stream().0
    }

    /// The body's top-level `model` string, and whether its `stream` is `true`,
    /// from one parse of the body.
    pub(crate) fn model_and_stream(&self) -> (Option<String>, bool) {
        let Ok(doc) = serde_json::from_slice::<Value>(&self.body) else {
            return (None, false);
        };
        let model = doc.get("model").and_then(Value::as_str).map(str::to_string);
        let stream = doc.get("stream").and_then(Value::as_bool).unwrap_or(false);
        (model, stream)
    }

    /// True when the client asked to close the connection after this exchange.
    pub(crate) fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one CRLF- (or LF-) terminated line without its terminator; `None` at EOF.
fn line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(bad("line too long or cut short"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads the next request; `Ok(None)` when the peer closed the connection between
/// requests. Answers `expect: 100-continue` on `out` before reading the body.
pub(crate) fn read_request<R: BufRead, W: Write>(
    r: &mut R,
    out: &mut W,
) -> io::Result<Option<RecordedRequest>> {
    let request_line = loop {
        match line(r)? {
            None => return Ok(None),
            // Tolerate stray blank lines between requests (RFC 9112 §2.2).
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let mut headers = Vec::new();
    loop {
        let h = line(r)?.ok_or_else(|| bad("eof in headers"))?;
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut req = RecordedRequest {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        out.flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(v) = req.header("content-length") {
        let len: usize = v.parse().map_err(|_| bad("bad content-length"))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

/// De-chunks a chunked body, skipping chunk extensions and trailers.
fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size = line(r)?.ok_or_else(|| bad("eof in chunk size"))?;
        let hex = size.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
        if n == 0 {
            // Trailers, up to the blank line.
            while !line(r)?.ok_or_else(|| bad("eof in trailers"))?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        if !line(r)?.is_some_and(|l| l.is_empty()) {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// Writes a status line and headers (and the blank line after them).
pub(crate) fn write_head<W: Write>(
    out: &mut W,
    status: u16,
    headers: &[(&str, String)],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// A complete response with a `content-length` body.
pub(crate) fn write_fixed<W: Write>(
    out: &mut W,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut all = headers.to_vec();
    all.push(("content-length", body.len().to_string()));
    // Head and body in one write: a container stopped or cut off between two writes
    // would otherwise leave a client with a 200 head and half a body.
    let mut whole = Vec::with_capacity(256 + body.len());
    write_head(&mut whole, status, &all)?;
    whole.extend_from_slice(body);
    out.write_all(&whole)?;
    out.flush()
}

/// Writes one chunk of a chunked body and flushes it.
pub(crate) fn write_chunk<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut buf = format!("{:x}\r\n", data.len()).into_bytes();
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
    out.write_all(&buf)?;
    out.flush()
}

/// Ends a chunked body properly.
pub(crate) fn write_last_chunk<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// The reason phrase for a status line.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Status",
    }
}
