//! A standalone mock upstream: `mock-upstream NAME ADDR [NAME ADDR ...]`.
//! Each answers 200 until switched with `GET /_mock/set?mode=...` on its port.

use llm_breaker_harness::upstream::MockUpstream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("usage: mock-upstream NAME ADDR [NAME ADDR ...]   e.g. mock-upstream openai 127.0.0.1:18001");
        std::process::exit(2);
    }
    let mut running = Vec::new();
    for pair in args.chunks(2) {
        match MockUpstream::start_on(&pair[0], &pair[1]) {
            Ok(u) => {
                println!("{} listening on {}", u.name(), u.addr());
                running.push(u);
            }
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", pair[1]);
                std::process::exit(1);
            }
        }
    }
    loop {
        std::thread::park();
    }
}
