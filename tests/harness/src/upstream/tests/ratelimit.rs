//! Rate-limited answers: each reset-header form, its value, and nothing else.

use super::*;
use crate::upstream::clock::{http_date, rfc3339, unix_now};
use crate::upstream::{Behaviour, ResetForm};

const RESET_HEADERS: [&str; 4] = [
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-reset",
];

fn limited(u: &MockUpstream, path: &str, reset: ResetForm, after: Duration) -> Response {
    u.set(Behaviour::RateLimited {
        status: 429,
        reset,
        after,
    });
    let r = post(u, path, &body("gpt-4o", false));
    assert_eq!(r.status, 429);
    r
}

/// The reset headers present, by name.
fn present(r: &Response) -> Vec<&str> {
    RESET_HEADERS
        .into_iter()
        .filter(|h| r.header(h).is_some())
        .collect()
}

/// True if `value` is what `format` gives for a time 1..=3 s from now.
fn within_a_second(value: &str, secs: u64, format: fn(u64) -> String) -> bool {
    let now = unix_now();
    (now + secs - 1..=now + secs + 1).any(|t| format(t) == value)
}

#[test]
fn each_reset_form_sends_exactly_its_own_header() {
    let u = MockUpstream::start("p");
    let secs = Duration::from_secs;

    let r = limited(&u, CHAT, ResetForm::RetryAfter, secs(2));
    assert_eq!(
        (present(&r), r.header("retry-after")),
        (vec!["retry-after"], Some("2"))
    );
    let r = limited(&u, CHAT, ResetForm::RetryAfter, Duration::from_millis(1200));
    assert_eq!(r.header("retry-after"), Some("2"), "rounded up");

    let r = limited(&u, CHAT, ResetForm::HttpDate, secs(2));
    assert_eq!(present(&r), ["retry-after"]);
    let date = r.header("retry-after").unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    assert!(within_a_second(date, 2, http_date), "{date}");

    let r = limited(
        &u,
        CHAT,
        ResetForm::RetryAfterMs,
        Duration::from_millis(1500),
    );
    assert_eq!(present(&r), ["retry-after-ms"]);
    assert_eq!(r.header("retry-after-ms"), Some("1500"));

    for (after, want) in [(2, "2s"), (90, "1m30s"), (360, "6m0s")] {
        let r = limited(&u, CHAT, ResetForm::OpenAi, secs(after));
        assert_eq!(present(&r), ["x-ratelimit-reset-requests"]);
        assert_eq!(r.header("x-ratelimit-reset-requests"), Some(want));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    }

    let r = limited(&u, MESSAGES, ResetForm::Anthropic, secs(2));
    assert_eq!(present(&r), ["anthropic-ratelimit-requests-reset"]);
    let at = r.header("anthropic-ratelimit-requests-reset").unwrap();
    assert!(within_a_second(at, 2, rfc3339), "{at}");
    assert_eq!(str_at(&r.json(), "error.type"), Some("rate_limit_error"));

    let r = limited(&u, CHAT, ResetForm::None, secs(2));
    assert!(present(&r).is_empty());
}

#[test]
fn garbage_form_sends_unparsable_values_in_every_reset_header() {
    let u = MockUpstream::start("p");
    let r = limited(&u, CHAT, ResetForm::Garbage, Duration::from_secs(2));
    assert_eq!(present(&r), RESET_HEADERS);
    for h in RESET_HEADERS {
        let v = r.header(h).unwrap();
        assert!(v.parse::<f64>().is_err(), "{h}: {v}");
        assert!(!v.ends_with(" GMT") && !v.ends_with('Z'), "{h}: {v}");
    }
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("1q2w"));
}

#[test]
fn rate_limits_carry_the_providers_429_body_and_may_use_another_status() {
    let u = MockUpstream::start("p");
    u.apply("mode=ratelimit&form=openai&seconds=90").unwrap();
    let r = post(&u, CHAT, &body("gpt-4o", false));
    let v = r.json();
    assert_eq!(str_at(&v, "error.type"), Some("requests"));
    assert_eq!(str_at(&v, "error.code"), Some("rate_limit_exceeded"));

    u.apply("mode=ratelimit&status=529&form=retry-after&seconds=5")
        .unwrap();
    let r = post(&u, MESSAGES, &body("claude", false));
    assert_eq!((r.status, r.header("retry-after")), (529, Some("5")));
    assert_eq!(str_at(&r.json(), "error.type"), Some("overloaded_error"));
}
