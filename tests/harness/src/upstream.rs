//! A controllable HTTP/1.1 upstream on loopback: answers every request according to
//! its current [`Behaviour`], counts what it received, and can be switched at run
//! time from the test (or over HTTP at `/_mock/set?mode=...` for the demo).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with a small JSON body naming the upstream.
    Ok,
    /// 200 with a JSON completion of about this many bytes.
    OkSized(usize),
    /// This status with a JSON error body.
    Status(u16),
    /// Wait this long, then answer 200.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Close,
    /// Read the request and never answer (until the client gives up).
    Hang,
    /// Send 200 headers and part of the body, then close the connection.
    CutMidBody,
}

impl Behaviour {
    /// Parses the control endpoint's query (`mode=ok|status|delay|close|hang|cut`,
    /// `status=N`, `ms=N`).
    pub fn from_query(q: &str) -> Option<Behaviour> {
        let get = |k: &str| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        match get("mode")?.as_str() {
            "ok" => Some(Behaviour::Ok),
            "status" => Some(Behaviour::Status(get("status")?.parse().ok()?)),
            "delay" => Some(Behaviour::Delay(Duration::from_millis(
                get("ms")?.parse().ok()?,
            ))),
            "close" => Some(Behaviour::Close),
            "hang" => Some(Behaviour::Hang),
            "cut" => Some(Behaviour::CutMidBody),
            _ => None,
        }
    }
}

struct State {
    name: String,
    behaviour: Mutex<Behaviour>,
    requests: AtomicUsize,
    stop: AtomicBool,
    last_headers: Mutex<Vec<(String, String)>>,
}

/// A running mock upstream. Stops accepting when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
}

impl MockUpstream {
    /// Starts on an ephemeral loopback port.
    pub fn start(name: &str) -> MockUpstream {
        Self::start_on(name, "127.0.0.1:0").expect("bind mock upstream")
    }

    /// Starts on the given address.
    pub fn start_on(name: &str, addr: &str) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            behaviour: Mutex::new(Behaviour::Ok),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            last_headers: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    thread::spawn(move || serve(conn, &s));
                }
            }
        });
        Ok(MockUpstream { addr, state })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (returned in the `x-upstream` response header).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Switches how it answers.
    pub fn set(&self, b: Behaviour) {
        *self.state.behaviour.lock().unwrap() = b;
    }

    /// Requests received so far (control requests excluded).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Headers of the last request received.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.state.last_headers.lock().unwrap().clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, s: &State) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(q) = target.strip_prefix("/_mock/set?") {
            let (status, msg) = match Behaviour::from_query(q) {
                Some(b) => {
                    *s.behaviour.lock().unwrap() = b.clone();
                    (200, format!("{b:?}\n"))
                }
                None => (400, "bad mode\n".to_string()),
            };
            if respond(&mut out, status, &s.name, &msg).is_err() {
                return;
            }
            continue;
        }
        s.requests.fetch_add(1, Ordering::SeqCst);
        *s.last_headers.lock().unwrap() = headers;
        let behaviour = s.behaviour.lock().unwrap().clone();
        let ok_body = format!(
            "{{\"upstream\":\"{}\",\"object\":\"chat.completion\",\"choices\":[]}}\n",
            s.name
        );
        let result = match behaviour {
            Behaviour::Ok => respond(&mut out, 200, &s.name, &ok_body),
            Behaviour::OkSized(n) => {
                let body = format!(
                    "{{\"upstream\":\"{}\",\"object\":\"chat.completion\",\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}\n",
                    s.name,
                    "x".repeat(n.saturating_sub(100))
                );
                respond(&mut out, 200, &s.name, &body)
            }
            Behaviour::Status(code) => {
                let body = format!(
                    "{{\"error\":{{\"type\":\"server_error\",\"code\":{code},\"message\":\"mock {} failing\"}}}}\n",
                    s.name
                );
                respond(&mut out, code, &s.name, &body)
            }
            Behaviour::Delay(d) => {
                thread::sleep(d);
                respond(&mut out, 200, &s.name, &ok_body)
            }
            Behaviour::Close => return,
            Behaviour::Hang => {
                // Hold the connection until the peer closes it.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Behaviour::CutMidBody => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream: {}\r\ncontent-length: 1000\r\n\r\n{{\"partial\":",
                    s.name
                );
                let _ = out.write_all(head.as_bytes());
                let _ = out.flush();
                thread::sleep(Duration::from_millis(50));
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
}

fn respond(out: &mut TcpStream, status: u16, name: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\nx-upstream: {name}\r\ncontent-length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
