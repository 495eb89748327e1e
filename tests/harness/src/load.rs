//! A small closed-loop load generator: N keep-alive connections, each sending the
//! next request as soon as the previous response is read, for a fixed time.

use crate::client::read_response;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Responses received.
    pub responses: u64,
    /// Responses with a status other than 200.
    pub non_200: u64,
    /// Connection or parse errors.
    pub errors: u64,
    /// Measured time.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Envoy's CPU time during the run (filled in by the caller).
    pub envoy_cpu: Duration,
}

impl LoadResult {
    /// Envoy CPU microseconds per response.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.envoy_cpu.as_secs_f64() * 1e6 / (self.responses.max(1) as f64)
    }

    /// Responses per second.
    pub fn rps(&self) -> f64 {
        self.responses as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `connections` closed loops of `POST path` with `body` for `duration`.
pub fn run(
    addr: SocketAddr,
    path: &str,
    body: &str,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(100_000);
                let (mut non_200, mut errors) = (0u64, 0u64);
                'conn: while Instant::now() < deadline {
                    let Ok(s) = TcpStream::connect(addr) else {
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let Ok(mut w) = s.try_clone() else {
                        errors += 1;
                        continue;
                    };
                    let mut r = BufReader::new(s);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        if w.write_all(request.as_bytes()).is_err() {
                            errors += 1;
                            continue 'conn;
                        }
                        match read_response(&mut r) {
                            Ok(resp) => {
                                lat.push(t.elapsed());
                                if resp.status != 200 {
                                    non_200 += 1;
                                }
                                if resp
                                    .header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    continue 'conn;
                                }
                            }
                            Err(_) => {
                                errors += 1;
                                continue 'conn;
                            }
                        }
                    }
                }
                (lat, non_200, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut out = LoadResult::default();
    for h in handles {
        if let Ok((lat, n, e)) = h.join() {
            all.extend(lat);
            out.non_200 += n;
            out.errors += e;
        }
    }
    out.elapsed = start.elapsed();
    all.sort_unstable();
    out.responses = all.len() as u64;
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    out.p50 = pct(0.50);
    out.p99 = pct(0.99);
    out
}
