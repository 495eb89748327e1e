//! The rate-limit hint parsers: header values from providers (and anything
//! between them and Envoy).

use llm_breaker::ratelimit::reset_hint_ms;
use proptest::prelude::*;

/// Every header `reset_hint_ms` reads.
const HEADERS: [&str; 6] = [
    "retry-after-ms",
    "retry-after",
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-reset",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-tokens-reset",
];

/// Unix ms of 10000-01-01: dates are read for years 0000–9999 only, so a hint
/// from a date is never further away than this.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

/// The hint when only `name` is sent, with `value`.
fn hint(name: &str, value: &[u8], now_ms: u64) -> Option<u64> {
    reset_hint_ms(|h| (h == name).then(|| value.to_vec()), now_ms)
}

/// Values shaped like the real forms, mangled: digits, units, date words.
fn hint_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[0-9]{1,25}",
            Just(".".into()),
            Just("h".into()),
            Just("m".into()),
            Just("s".into()),
            Just("ms".into()),
            Just("µs".into()),
            Just("ns".into()),
            Just(" ".into()),
            Just("-".into()),
            Just(":".into()),
            Just("T".into()),
            Just("Z".into()),
            Just("+".into()),
            Just(",".into()),
            Just("GMT".into()),
            Just("Sun".into()),
            Just("Nov".into()),
            Just("Sunday".into()),
            Just("Feb".into()),
            Just("29".into()),
            Just("60".into()),
            Just("9999".into()),
        ],
        0..14,
    )
    .prop_map(|p| p.concat())
}

fn check_bounds(name: &str, value: &[u8], got: Option<u64>) -> Result<(), TestCaseError> {
    let Some(ms) = got else { return Ok(()) };
    let trimmed = value.trim_ascii();
    let date_form = name.starts_with("anthropic")
        || (name == "retry-after"
            && !trimmed
                .first()
                .is_some_and(|b| b.is_ascii_digit() || *b == b'.'));
    if date_form {
        prop_assert!(
            ms <= YEAR_10000_MS,
            "{name}: {:?} gave {ms} ms",
            String::from_utf8_lossy(value)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases())]

    #[test]
    fn arbitrary_values_never_panic_and_dates_stay_bounded(
        name in prop::sample::select(HEADERS.to_vec()),
        value in prop::collection::vec(any::<u8>(), 0..80),
        now_ms in any::<u64>(),
    ) {
        check_bounds(name, &value, hint(name, &value, now_ms))?;
    }

    #[test]
    fn mangled_hints_never_panic_and_dates_stay_bounded(
        name in prop::sample::select(HEADERS.to_vec()),
        value in hint_soup(),
        now_ms in prop_oneof![any::<u64>(), 0..4_102_444_800_000u64],
    ) {
        check_bounds(name, value.as_bytes(), hint(name, value.as_bytes(), now_ms))?;
    }

    #[test]
    fn whole_seconds_and_milliseconds_are_exact(n in any::<u64>(), now_ms in any::<u64>(), pad in "[ \t]{0,2}") {
        let v = format!("{pad}{n}{pad}");
        prop_assert_eq!(hint("retry-after", v.as_bytes(), now_ms), Some(n.saturating_mul(1000)));
        prop_assert_eq!(hint("retry-after-ms", v.as_bytes(), now_ms), Some(n));
    }

    #[test]
    fn fractions_round_up_never_down(int in 0u64..1_000_000, frac in "[0-9]{1,30}") {
        let v = format!("{int}.{frac}");
        let got = hint("retry-after-ms", v.as_bytes(), 0).ok_or_else(|| TestCaseError::fail("no hint"))?;
        let exact_up = int + u64::from(frac.bytes().any(|d| d != b'0'));
        prop_assert_eq!(got, exact_up);
    }

    #[test]
    fn go_durations_add_up(h in 0u64..10_000, m in 0u64..10_000, s in 0u64..10_000, ms in 0u64..10_000) {
        let v = format!("{h}h{m}m{s}s{ms}ms");
        let want = ((h * 60 + m) * 60 + s) * 1000 + ms;
        prop_assert_eq!(hint("x-ratelimit-reset-requests", v.as_bytes(), 0), Some(want));
    }

    #[test]
    fn rfc3339_in_the_future_counts_down_and_the_past_is_zero(secs in 0i64..253_402_300_799, now_s in 0i64..253_402_300_799) {
        let v = rfc3339(secs);
        let got = hint("anthropic-ratelimit-requests-reset", v.as_bytes(), (now_s * 1000) as u64);
        prop_assert_eq!(got, Some(((secs - now_s).max(0) * 1000) as u64), "{}", v);
    }

    #[test]
    fn a_malformed_header_falls_through_to_the_next(garbage in "[a-z !]{1,10}", n in 0u64..1_000_000) {
        let got = reset_hint_ms(
            |h| match h {
                "retry-after-ms" => Some(garbage.clone().into_bytes()),
                "retry-after" => Some(n.to_string().into_bytes()),
                _ => None,
            },
            0,
        );
        prop_assert_eq!(got, Some(n * 1000));
    }
}

/// `secs` since the epoch as RFC 3339 UTC, by the civil-from-days algorithm
/// (Howard Hinnant), independent of the filter's own calendar code.
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
