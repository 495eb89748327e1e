//! A standalone mock LLM provider (see `llm_breaker_harness::upstream` for what it
//! answers and the control query), for the demo and the docker-compose harness.
//!
//! ```text
//! mock-upstream --name openai --listen 0.0.0.0:8000 [--mode status --status 529]
//!               [--set 'model=gpt-4o&mode=sse-cut&chunks=2']... [--name NAME ...]
//! mock-upstream NAME ADDR [NAME ADDR ...]
//! mock-upstream --probe ADDR
//! ```
//!
//! Each `--name` starts another server. `--KEY VALUE` (or `--KEY=VALUE`) flags take
//! the control query's keys and form one query, applied before the `--set` queries,
//! which apply in order. `--listen` defaults to `127.0.0.1:0`. Each server prints
//! `NAME listening on ADDR`. `--probe ADDR` exits 0 if a mock answers there (a
//! health check for images without a shell or curl). SIGTERM and SIGINT exit at
//! once, also as PID 1 in a container.

use llm_breaker_harness::client;
use llm_breaker_harness::upstream::MockUpstream;
use std::net::ToSocketAddrs;

const USAGE: &str = "usage: mock-upstream --name NAME [--listen ADDR] [--mode MODE --KEY VALUE ...] [--set QUERY ...] [--name ...]
       mock-upstream NAME ADDR [NAME ADDR ...]
       mock-upstream --probe ADDR
  e.g. mock-upstream --name anthropic --listen 0.0.0.0:8000 --mode status --status 529
       mock-upstream --name openai --set 'model=gpt-4o&mode=ratelimit&form=openai&seconds=2'";

/// One server to start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    name: String,
    listen: String,
    /// Control queries, in the order to apply them.
    queries: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Serve(Vec<Spec>),
    Probe(String),
    Help,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:0";

fn parse_args(args: &[String]) -> Result<Cmd, String> {
    if args.is_empty() {
        return Err("nothing to start".into());
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Cmd::Help);
    }
    if !args[0].starts_with("--") {
        // The original form: NAME ADDR pairs.
        if !args.len().is_multiple_of(2) {
            return Err("NAME ADDR arguments come in pairs".into());
        }
        let specs = args
            .chunks(2)
            .map(|p| Spec {
                name: p[0].clone(),
                listen: p[1].clone(),
                queries: Vec::new(),
            })
            .collect();
        return Ok(Cmd::Serve(specs));
    }
    // (spec, its --KEY VALUE pairs)
    let mut specs: Vec<(Spec, Vec<String>)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k, v.to_string()),
            None => (
                flag,
                it.next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?
                    .clone(),
            ),
        };
        if key == "probe" {
            return Ok(Cmd::Probe(value));
        }
        if key == "name" {
            let spec = Spec {
                name: value,
                listen: DEFAULT_LISTEN.into(),
                queries: Vec::new(),
            };
            specs.push((spec, Vec::new()));
            continue;
        }
        let (spec, pairs) = specs
            .last_mut()
            .ok_or_else(|| format!("--{key} before any --name"))?;
        match key {
            "listen" => spec.listen = value,
            "set" => spec.queries.push(value),
            _ => pairs.push(format!("{key}={value}")),
        }
    }
    let specs = specs
        .into_iter()
        .map(|(mut spec, pairs)| {
            if !pairs.is_empty() {
                spec.queries.insert(0, pairs.join("&"));
            }
            spec
        })
        .collect();
    Ok(Cmd::Serve(specs))
}

fn start(spec: &Spec) -> Result<MockUpstream, String> {
    let u = MockUpstream::start_on(&spec.name, &spec.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", spec.listen))?;
    for q in &spec.queries {
        u.apply(q)
            .map_err(|e| format!("{}: bad control query {q:?}: {e}", spec.name))?;
    }
    Ok(u)
}

fn probe(addr: &str) -> bool {
    let Some(addr) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    client::get(addr, "/_mock/stats").is_ok_and(|r| r.status == 200)
}

/// Exits straight away on SIGTERM/SIGINT: as PID 1 in a container a process with
/// no handler ignores them, and `docker stop` would wait for its timeout.
#[cfg(unix)]
fn exit_on_signals() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn bye(_: i32) {
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: installs a handler that only calls an async-signal-safe function.
    unsafe {
        signal(SIGINT, bye);
        signal(SIGTERM, bye);
    }
}

#[cfg(not(unix))]
fn exit_on_signals() {}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let specs = match parse_args(&args) {
        Ok(Cmd::Serve(specs)) => specs,
        Ok(Cmd::Probe(addr)) => std::process::exit(if probe(&addr) { 0 } else { 1 }),
        Ok(Cmd::Help) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("mock-upstream: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    exit_on_signals();
    let mut running = Vec::new();
    for spec in &specs {
        match start(spec) {
            Ok(u) => {
                println!("{} listening on {}", u.name(), u.addr());
                running.push(u);
            }
            Err(e) => {
                eprintln!("mock-upstream: {e}");
                std::process::exit(1);
            }
        }
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn spec(name: &str, listen: &str, queries: &[&str]) -> Spec {
        Spec {
            name: name.into(),
            listen: listen.into(),
            queries: queries.iter().map(|q| q.to_string()).collect(),
        }
    }

    #[test]
    fn parses_flags_per_server() {
        let got = parse_args(&args(
            "--name openai --listen 0.0.0.0:8000 --set model=a&mode=hang --mode status --status=529 \
             --name anthropic --set mode=sse-cut&chunks=1",
        ));
        assert_eq!(
            got,
            Ok(Cmd::Serve(vec![
                spec(
                    "openai",
                    "0.0.0.0:8000",
                    &["mode=status&status=529", "model=a&mode=hang"]
                ),
                spec("anthropic", DEFAULT_LISTEN, &["mode=sse-cut&chunks=1"]),
            ]))
        );
    }

    #[test]
    fn keeps_the_positional_form_and_the_probe() {
        assert_eq!(
            parse_args(&args("a 127.0.0.1:1 b 127.0.0.1:2")),
            Ok(Cmd::Serve(vec![
                spec("a", "127.0.0.1:1", &[]),
                spec("b", "127.0.0.1:2", &[])
            ]))
        );
        assert_eq!(
            parse_args(&args("--probe 127.0.0.1:9")),
            Ok(Cmd::Probe("127.0.0.1:9".into()))
        );
    }

    #[test]
    fn rejects_malformed_command_lines() {
        for bad in ["", "a", "--mode ok", "--name a --listen", "--name a stray"] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_started_server_has_its_queries_applied_and_answers_probes() {
        let u = start(&spec("x", "127.0.0.1:0", &["mode=status&status=529"])).unwrap();
        assert_eq!(
            u.behaviour(),
            llm_breaker_harness::upstream::Behaviour::Status(529)
        );
        assert!(probe(&u.addr().to_string()));
        assert!(start(&spec("x", "127.0.0.1:0", &["mode=nope"])).is_err());
    }
}
