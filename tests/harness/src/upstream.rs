//! A mock LLM provider that fails like the real ones: an HTTP/1.1 server on
//! loopback that answers OpenAI `POST /v1/chat/completions` and Anthropic
//! `POST /v1/messages` (JSON, or SSE when the body says `"stream": true`), echoing
//! the request's `model`, according to a [`Behaviour`] switched at run time. It
//! counts what it received (per path, per model, and the last request in full).
//! Each provider a test needs is its own [`MockUpstream`] on its own port.
//!
//! Any other path gets a small generic JSON body (`{"upstream":NAME,…}`); every
//! answer carries `x-upstream: NAME`.
//!
//! # Control endpoints (not counted as traffic)
//!
//! - `GET|POST /_mock/set?QUERY` (or the query as a POST body): switch behaviour;
//!   answers `200` with the resulting behaviour, or `400` naming the bad key.
//! - `GET /_mock/stats`: `{"name","behaviour","total","paths":{path:n},
//!   "models":{model:n},"last":{"method","path","model","content_length",
//!   "transfer_encoding","body_len"}|null}`.
//! - `GET /_mock/reset`: healthy again, no chunk delay, counts cleared.
//!
//! # Control query
//!
//! | query | behaviour |
//! |---|---|
//! | `mode=ok` | [`Behaviour::Ok`] |
//! | `mode=sized&bytes=2048` | [`Behaviour::OkSized`] |
//! | `mode=status&status=529` | [`Behaviour::Status`], provider's error body |
//! | `mode=ratelimit&form=F&seconds=2` (or `ms=1500`; `status=429` default) | [`Behaviour::RateLimited`]; `F` is `retry-after` (default), `http-date`, `retry-after-ms`, `openai`, `anthropic`, `garbage` or `none` |
//! | `mode=json-error[&status=529]` | [`Behaviour::JsonError`]: 200 with an error object |
//! | `mode=delay&ms=500` | [`Behaviour::Delay`] |
//! | `mode=close`, `mode=hang`, `mode=cut` | [`Behaviour::Close`], [`Behaviour::Hang`], [`Behaviour::CutMidBody`] |
//! | `mode=sse-error&chunks=3` | [`Behaviour::SseError`] |
//! | `mode=sse-cut&chunks=2` | [`Behaviour::SseCut`] |
//! | `mode=sse-no-terminal&chunks=2` | [`Behaviour::SseNoTerminal`] |
//! | `mode=sse-stall&chunks=1` | [`Behaviour::SseStall`] |
//! | `mode=fail-every&n=2&status=503` (or `fail=MODE` plus that mode's keys) | [`Behaviour::FailEvery`] |
//! | `mode=sequence&steps=ok,503,sse-cut;chunks=1,ratelimit;form=openai` | [`Behaviour::Sequence`]: a step is a status or a mode with `;`-separated keys |
//! | `expect=openai&key=sk-1` | check as OpenAI does: `authorization: Bearer sk-1` (else 401 with OpenAI's `invalid_api_key` body), a path under `/v1/` (else 404) |
//! | `expect=azure&key=K&deployment=D` | check as Azure OpenAI does: a path `/openai/deployments/D/…?api-version=…` (else 404, Azure's body), `api-key: K` (else 401, "Access denied due to invalid subscription key…") |
//! | `expect=anthropic&key=K` | check as Anthropic does: `x-api-key: K` (else 401 `authentication_error`), path `/v1/messages` (else 404), an `anthropic-version` header (else 400) |
//! | `expect=none` | no checks (the default; `/_mock/reset` clears it too) |
//!
//! `chunks` defaults to 2 and counts content events; each provider's opening
//! events (OpenAI's role chunk; Anthropic's `message_start`, `content_block_start`,
//! `ping`) come first. The `sse-*` modes stream whatever the request asked for.
//! Two keys combine with any mode: `model=NAME` scopes the behaviour to requests
//! whose body names that model (others keep theirs: [`Behaviour::ByModel`]), and
//! `chunk_ms=N` pauses N ms between SSE events (also valid alone). `expect=` is valid
//! alone or with a mode; a request the gate refuses is counted, then answered with the
//! provider's error instead of the behaviour. Values may be percent-encoded. Unknown
//! keys are rejected. `/_mock/stats` and [`MockUpstream::credentials_seen`] show which
//! credential headers arrived.

mod behaviour;
mod clock;
mod control;
mod gate;
mod http;
mod provider;
mod server;
mod stats;
mod stream;
#[cfg(test)]
mod tests;

pub use behaviour::{Behaviour, ResetForm};
pub use http::RecordedRequest;

use server::{lock, State};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A running mock upstream. Stops accepting, and shuts down every open
/// connection, when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
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
        let state = Arc::new(State::new(name));
        let s = state.clone();
        let acceptor = thread::Builder::new()
            .name(format!("mock-{name}"))
            .spawn(move || server::accept_loop(listener, s))?;
        Ok(MockUpstream {
            addr,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (returned in the `x-upstream` response header).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Switches how it answers, for every model, and restarts sequences.
    pub fn set(&self, b: Behaviour) {
        self.state.set(b);
    }

    /// Switches how it answers requests for `model` only (see [`Behaviour::ByModel`]).
    pub fn set_for_model(&self, model: &str, b: Behaviour) {
        self.state.set_for_model(model, b);
    }

    /// Applies a control query, exactly as `/_mock/set?QUERY` would.
    pub fn apply(&self, query: &str) -> Result<Behaviour, String> {
        self.state.apply(query)
    }

    /// The current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        lock(&self.state.plan).behaviour.clone()
    }

    /// Requests received so far (control requests excluded).
    pub fn requests(&self) -> usize {
        lock(&self.state.stats).total
    }

    /// Requests whose body named `model`.
    pub fn requests_for_model(&self, model: &str) -> usize {
        lock(&self.state.stats)
            .models
            .get(model)
            .copied()
            .unwrap_or(0)
    }

    /// Requests per body `model`, sorted by model.
    pub fn model_counts(&self) -> Vec<(String, usize)> {
        let stats = lock(&self.state.stats);
        stats.models.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Requests per path (query stripped), sorted by path.
    pub fn path_counts(&self) -> Vec<(String, usize)> {
        let stats = lock(&self.state.stats);
        stats.paths.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Headers of the last request received.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.last_request().map(|r| r.headers).unwrap_or_default()
    }

    /// The last request received, in full (body de-chunked).
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state.stats)
            .last
            .as_ref()
            .map(|(r, _)| r.clone())
    }

    /// The `/_mock/stats` document.
    pub fn stats_json(&self) -> String {
        self.state.stats_json()
    }

    /// Every distinct (credential header, value) this mock received (see the
    /// module's `expect=`).
    pub fn credentials_seen(&self) -> Vec<(String, String)> {
        lock(&self.state.stats)
            .credentials
            .iter()
            .cloned()
            .collect()
    }

    /// Requests received per full target (path and query) are not kept; the last
    /// request's target, for path checks.
    pub fn last_target(&self) -> Option<String> {
        self.last_request().map(|r| r.target)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for c in lock(&self.state.conns).values() {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the acceptor so it sees the flag and closes the listener.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(h) = self.acceptor.take() {
                let _ = h.join();
            }
        }
    }
}
