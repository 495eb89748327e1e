//! A minimal blocking HTTP/1.1 client (one request per connection) for tests:
//! whole responses ([`request`]) or bodies read chunk by chunk as they arrive
//! ([`open`]), which is how a test sees a stream stall or get cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// Which mock upstream answered (its `x-upstream` header), if any.
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }
}

/// Connects and writes one request (closing the connection after it).
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<BufReader<TcpStream>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let _ = s.set_nodelay(true);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    Ok(BufReader::new(s))
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    read_response(&mut send(addr, method, path, headers, body)?)
}

/// Sends one request and reads only the status and headers; the body is then read
/// with [`StreamingResponse::next_chunk`].
pub fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<StreamingResponse> {
    let mut reader = send(addr, method, path, headers, body)?;
    let (status, headers) = read_head(&mut reader)?;
    let chunked = is_chunked(&headers);
    Ok(StreamingResponse {
        status,
        headers,
        reader,
        chunked,
        done: false,
    })
}

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct StreamingResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    done: bool,
}

impl StreamingResponse {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// How long [`Self::next_chunk`] may wait (30 s by default).
    pub fn set_read_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(d))
    }

    /// The next piece of body: one chunk of a chunked body, or whatever arrived of
    /// another. `Ok(None)` once the body ended properly (terminating chunk, or EOF
    /// for a body that is not chunked). An `UnexpectedEof` error means the
    /// connection closed mid-body; `WouldBlock`/`TimedOut` means nothing arrived in
    /// time.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if !self.chunked {
            let mut buf = vec![0; 16 * 1024];
            let n = self.reader.read(&mut buf)?;
            buf.truncate(n);
            self.done = n == 0;
            return Ok((n > 0).then_some(buf));
        }
        let chunk = read_chunk(&mut self.reader)?;
        self.done = chunk.is_none();
        Ok(chunk)
    }

    /// Reads chunks until the body ends or fails: the chunks received, and how it
    /// ended (`Ok` for a proper end).
    pub fn read_all(&mut self) -> (Vec<Vec<u8>>, std::io::Result<()>) {
        let mut chunks = Vec::new();
        loop {
            match self.next_chunk() {
                Ok(Some(c)) => chunks.push(c),
                Ok(None) => return (chunks, Ok(())),
                Err(e) => return (chunks, Err(e)),
            }
        }
    }
}

/// GET shortcut.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, &[], b"")
}

/// POST shortcut with a JSON body.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<Response> {
    request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

/// Reads a status line and headers (names lowercased).
fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(bad("eof in headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn bad(m: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string())
}

/// First value of header `name` (lowercase) in a parsed head.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"))
}

/// Reads one chunk of a chunked body; `Ok(None)` at the terminating chunk, an
/// `UnexpectedEof` error if the connection closed before it.
fn read_chunk<R: BufRead>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut size = String::new();
    if r.read_line(&mut size)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| bad("bad chunk size"))?;
    if n == 0 {
        // The blank line after the last chunk (trailers are not expected).
        let mut end = String::new();
        r.read_line(&mut end)?;
        return Ok(None);
    }
    let mut chunk = vec![0; n + 2];
    r.read_exact(&mut chunk)?;
    chunk.truncate(n);
    Ok(Some(chunk))
}

/// Reads one response from a buffered stream.
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (status, headers) = read_head(r)?;
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(chunk) = read_chunk(r)? {
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
