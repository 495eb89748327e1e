//! The mock's sockets: the accept loop, one thread per keep-alive connection, the
//! `/_mock/*` control endpoints, and turning a resolved [`Behaviour`] into bytes on
//! the wire. Every connection is registered so stopping the server can shut them
//! all down, which wakes any thread blocked on a stalled or hanging exchange.

use super::behaviour::{Behaviour, Counters};
use super::clock::unix_now;
use super::control::Control;
use super::gate::Expect;
use super::http::{
    read_request, write_chunk, write_fixed, write_head, write_last_chunk, RecordedRequest,
};
use super::provider::{content, Provider, Reply, DEFAULT_MODEL, PIECES};
use super::stats::Stats;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// The current behaviour and the counters its sequences advance.
#[derive(Debug)]
pub(crate) struct Plan {
    pub behaviour: Behaviour,
    pub counters: Counters,
}

/// Everything a server's threads share.
pub(crate) struct State {
    pub name: String,
    pub plan: Mutex<Plan>,
    pub chunk_delay: Mutex<Duration>,
    /// The provider gate (`expect=`), if any.
    pub expect: Mutex<Option<Expect>>,
    pub stats: Mutex<Stats>,
    pub stop: AtomicBool,
    /// Open connections by id, so a stop can shut them down.
    pub conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// Locks, shrugging off poisoning: a panicking test thread must not wedge the mock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    pub(crate) fn new(name: &str) -> State {
        State {
            name: name.to_string(),
            plan: Mutex::new(Plan {
                behaviour: Behaviour::Ok,
                counters: Counters::default(),
            }),
            chunk_delay: Mutex::new(Duration::ZERO),
            expect: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }

    /// Replaces the behaviour (for every model) and restarts its sequences.
    pub(crate) fn set(&self, b: Behaviour) {
        let mut plan = lock(&self.plan);
        plan.behaviour = b;
        plan.counters.clear();
    }

    /// Sets the behaviour for one model, keeping every other model's.
    pub(crate) fn set_for_model(&self, model: &str, b: Behaviour) {
        let mut plan = lock(&self.plan);
        let old = std::mem::replace(&mut plan.behaviour, Behaviour::Ok);
        plan.behaviour = old.with_model(model, b);
        plan.counters.clear_model(model);
    }

    /// Applies a control query; returns the resulting behaviour.
    pub(crate) fn apply(&self, query: &str) -> Result<Behaviour, String> {
        let c = Control::parse(query)?;
        if let Some(d) = c.chunk_delay {
            *lock(&self.chunk_delay) = d;
        }
        if let Some(e) = c.expect {
            *lock(&self.expect) = e;
        }
        match (c.behaviour, c.model) {
            (Some(b), Some(m)) => self.set_for_model(&m, b),
            (Some(b), None) => self.set(b),
            (None, _) => {}
        }
        Ok(lock(&self.plan).behaviour.clone())
    }

    /// The `/_mock/stats` document.
    pub(crate) fn stats_json(&self) -> String {
        let behaviour = format!("{:?}", lock(&self.plan).behaviour);
        lock(&self.stats).to_json(&self.name, &behaviour)
    }

    /// Back to a fresh server: healthy, no chunk delay, nothing counted.
    pub(crate) fn reset(&self) {
        self.set(Behaviour::Ok);
        *lock(&self.chunk_delay) = Duration::ZERO;
        *lock(&self.expect) = None;
        *lock(&self.stats) = Stats::default();
    }
}

/// Accepts until stopped, one thread per connection.
pub(crate) fn accept_loop(listener: TcpListener, s: std::sync::Arc<State>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            if s.stop.load(Ordering::SeqCst) {
                break;
            }
            continue;
        };
        let id = s.next_conn.fetch_add(1, Ordering::SeqCst);
        {
            // Checked under the lock the stopper takes, so no connection slips in
            // after the stopper has shut the registered ones down.
            let mut conns = lock(&s.conns);
            if s.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = conn.try_clone() {
                conns.insert(id, c);
            }
        }
        let s = s.clone();
        thread::spawn(move || {
            serve(conn, &s);
            lock(&s.conns).remove(&id);
        });
    }
}

/// Whether the connection can carry another request.
enum Next {
    KeepAlive,
    Close,
}

fn serve(conn: TcpStream, s: &State) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while !s.stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader, &mut out) {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        let next = if req.path().starts_with("/_mock/") {
            control(&mut out, s, &req)
        } else {
            traffic(&mut out, &mut reader, s, &req)
        };
        match next {
            Ok(Next::KeepAlive) if !req.wants_close() => {}
            _ => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn text(out: &mut TcpStream, s: &State, status: u16, ctype: &str, body: &str) -> io::Result<Next> {
    let headers = [
        ("content-type", ctype.to_string()),
        ("x-upstream", s.name.clone()),
    ];
    write_fixed(out, status, &headers, body.as_bytes())?;
    Ok(Next::KeepAlive)
}

/// `/_mock/set`, `/_mock/stats`, `/_mock/reset`.
fn control(out: &mut TcpStream, s: &State, req: &RecordedRequest) -> io::Result<Next> {
    let plain = "text/plain";
    match req.path() {
        "/_mock/set" => {
            let query = match req.query() {
                Some(q) if !q.is_empty() => q.to_string(),
                _ => String::from_utf8_lossy(&req.body).trim().to_string(),
            };
            match s.apply(&query) {
                Ok(b) => text(out, s, 200, plain, &format!("{b:?}\n")),
                Err(e) => text(out, s, 400, plain, &format!("bad control query: {e}\n")),
            }
        }
        "/_mock/stats" => text(out, s, 200, "application/json", &s.stats_json()),
        "/_mock/reset" => {
            s.reset();
            text(out, s, 200, plain, "reset\n")
        }
        _ => text(out, s, 404, plain, "unknown control endpoint\n"),
    }
}

/// A request to answer as the provider would.
fn traffic(
    out: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    s: &State,
    req: &RecordedRequest,
) -> io::Result<Next> {
    let (model, wants_stream) = req.model_and_stream();
    let seq = lock(&s.stats).record(req, model.as_deref());
    let refused = lock(&s.expect).as_ref().and_then(|e| e.check(req));
    if let Some((status, body)) = refused {
        let headers = [
            ("content-type", "application/json".to_string()),
            ("x-upstream", s.name.clone()),
        ];
        write_fixed(out, status, &headers, body.as_bytes())?;
        return Ok(Next::KeepAlive);
    }
    let behaviour = {
        let mut plan = lock(&s.plan);
        let Plan {
            behaviour,
            counters,
        } = &mut *plan;
        behaviour.resolve(model.as_deref(), counters)
    };
    let reply = Reply {
        provider: Provider::for_path(req.path()),
        name: &s.name,
        model: model.as_deref().unwrap_or(DEFAULT_MODEL),
        seq: seq as u64,
        created: unix_now(),
    };
    let json = |status: u16, body: &str, extra: Vec<(&'static str, String)>| {
        let mut headers = json_headers(&reply);
        headers.extend(extra);
        (status, headers, body.to_string())
    };
    let (status, headers, body) = match behaviour {
        Behaviour::Close => return Ok(Next::Close),
        Behaviour::Hang => {
            drain(reader);
            return Ok(Next::Close);
        }
        Behaviour::CutMidBody => {
            // A head promising 1000 bytes, then a few and the connection closes.
            let headers = [
                ("content-type", "application/json".to_string()),
                ("x-upstream", s.name.clone()),
                ("content-length", "1000".to_string()),
            ];
            write_head(out, 200, &headers)?;
            out.write_all(b"{\"partial\":")?;
            out.flush()?;
            thread::sleep(Duration::from_millis(50));
            return Ok(Next::Close);
        }
        b if b.is_stream_failure() => return stream(out, reader, s, &reply, &b),
        Behaviour::Delay(d) => {
            thread::sleep(d);
            return healthy(out, reader, s, &reply, wants_stream);
        }
        Behaviour::OkSized(n) => json(200, &reply.sized(n), vec![]),
        Behaviour::Status(code) => json(code, &reply.error(code), vec![]),
        Behaviour::JsonError(code) => json(200, &reply.error(code), vec![]),
        Behaviour::RateLimited {
            status,
            reset,
            after,
        } => json(status, &reply.error(status), reset.headers(after)),
        // `Ok`, and composites (already resolved, so never seen here).
        _ => return healthy(out, reader, s, &reply, wants_stream),
    };
    write_fixed(out, status, &headers, body.as_bytes())?;
    Ok(Next::KeepAlive)
}

/// A healthy answer: a completion, or a complete stream if the request asked.
fn healthy(
    out: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    s: &State,
    reply: &Reply,
    wants_stream: bool,
) -> io::Result<Next> {
    if wants_stream {
        return stream(out, reader, s, reply, &Behaviour::Ok);
    }
    let body = reply.completion(&content());
    write_fixed(out, 200, &json_headers(reply), body.as_bytes())?;
    Ok(Next::KeepAlive)
}

/// `content-type: application/json` and the provider's headers.
fn json_headers(reply: &Reply) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend(reply.headers());
    headers
}

/// An SSE answer, each event its own flushed chunk: complete for `Ok`, cut short
/// as the stream-failure behaviours say.
fn stream(
    out: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    s: &State,
    reply: &Reply,
    b: &Behaviour,
) -> io::Result<Next> {
    let delay = *lock(&s.chunk_delay);
    let mut headers = vec![
        ("content-type", "text/event-stream".to_string()),
        ("cache-control", "no-cache".to_string()),
        ("transfer-encoding", "chunked".to_string()),
    ];
    headers.extend(reply.headers());
    write_head(out, 200, &headers)?;
    out.flush()?;
    let mut first = true;
    let mut send = |out: &mut TcpStream, event: &str| {
        if !std::mem::take(&mut first) && !delay.is_zero() {
            thread::sleep(delay);
        }
        write_chunk(out, event.as_bytes())
    };
    let chunks = match *b {
        Behaviour::SseError { chunks }
        | Behaviour::SseCut { chunks }
        | Behaviour::SseNoTerminal { chunks }
        | Behaviour::SseStall { chunks } => chunks,
        _ => PIECES,
    };
    for e in reply.stream_opening() {
        send(out, &e)?;
    }
    for i in 0..chunks {
        send(out, &reply.stream_content(i))?;
    }
    match b {
        Behaviour::SseError { .. } => send(out, &reply.stream_error())?,
        Behaviour::SseCut { .. } => return Ok(Next::Close),
        Behaviour::SseNoTerminal { .. } => {}
        Behaviour::SseStall { .. } => {
            drain(reader);
            return Ok(Next::Close);
        }
        _ => {
            for e in reply.stream_closing(chunks) {
                send(out, &e)?;
            }
            send(out, &reply.stream_terminal())?;
        }
    }
    write_last_chunk(out)?;
    Ok(Next::KeepAlive)
}

/// Blocks, discarding input, until the peer closes or the server stops (which
/// shuts the socket down and so ends the read).
fn drain(reader: &mut BufReader<TcpStream>) {
    let mut sink = [0u8; 1024];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}
