//! Deterministic failure sequences over real requests, many concurrent keep-alive
//! connections, and stopping the server.

use super::*;
use crate::upstream::Behaviour;
use std::thread;

fn statuses(u: &MockUpstream, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| post(u, CHAT, &body("m", false)).status)
        .collect()
}

#[test]
fn fail_every_fails_exactly_every_nth_request_from_the_last_set() {
    let u = MockUpstream::start("p");
    u.apply("mode=fail-every&n=2&status=503").unwrap();
    assert_eq!(statuses(&u, 6), [200, 503, 200, 503, 200, 503]);
    post(&u, CHAT, &body("m", false));
    u.apply("mode=fail-every&n=3&fail=json-error").unwrap();
    let codes: Vec<bool> = (0..6)
        .map(|_| {
            post(&u, CHAT, &body("m", false))
                .json()
                .get("error")
                .is_some()
        })
        .collect();
    assert_eq!(codes, [false, false, true, false, false, true]);
}

#[test]
fn sequences_cycle_in_order() {
    let u = MockUpstream::start("p");
    u.apply("mode=sequence&steps=ok,503,ratelimit;form=openai;seconds=2,529")
        .unwrap();
    assert_eq!(statuses(&u, 8), [200, 503, 429, 529, 200, 503, 429, 529]);
    u.set(Behaviour::Sequence(vec![
        Behaviour::Status(500),
        Behaviour::SseCut { chunks: 0 },
    ]));
    assert_eq!(post(&u, CHAT, &body("m", false)).status, 500);
    assert!(client::post(u.addr(), CHAT, &body("m", true)).is_err());
    assert_eq!(post(&u, CHAT, &body("m", false)).status, 500);
}

#[test]
fn per_model_sequences_count_only_their_models_requests() {
    let u = MockUpstream::start("p");
    u.apply("model=a&mode=fail-every&n=2&status=529").unwrap();
    let mut got = Vec::new();
    for m in ["a", "b", "b", "a", "b", "a", "a"] {
        got.push(post(&u, CHAT, &body(m, false)).status);
    }
    assert_eq!(got, [200, 200, 200, 529, 200, 200, 529]);
}

#[test]
fn many_concurrent_keep_alive_connections_are_all_served() {
    let u = MockUpstream::start("p");
    let (conns, each) = (48, 10);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let u = &u;
                scope.spawn(move || {
                    let mut c = Conn::new(u);
                    (0..each)
                        .map(|j| {
                            let stream = (i + j) % 3 == 0;
                            let r = c.post(CHAT, &body(&format!("m{}", i % 4), stream));
                            r.status
                        })
                        .filter(|s| *s == 200)
                        .count()
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, conns * each);
    });
    assert_eq!(u.requests(), conns * each);
    assert_eq!(u.requests_for_model("m0"), conns / 4 * each);
}

#[test]
fn drop_closes_the_listener_and_every_open_connection() {
    let u = MockUpstream::start("p");
    let addr = u.addr();
    let mut idle = Conn::new(&u);
    idle.post(CHAT, &body("m", false));
    drop(u);
    assert!(
        idle.read().is_err(),
        "idle keep-alive connection was closed"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}
