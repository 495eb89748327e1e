use super::date::{days_from_civil, year_of_day};
use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// 2026-11-25T10:50:00Z.
const NOW: u64 = 1_795_603_800_000;

/// Inputs every parser must reject.
const GARBAGE: &[&[u8]] = &[
    b"",
    b"   ",
    b"\t\r\n",
    b"-1",
    b"-0.5",
    b"+5",
    b"99999999999999999999",
    b"1e3",
    b"1,5",
    b"1.2.3",
    b".",
    b"6x",
    b"abc",
    b"\xff\xfe",
    b"1\x00",
    b"\xc3\x28",
    b"Mon, 32 Foo 2026",
];

/// Checks a parser against a table of header values and what they must give.
fn check(parse: impl Fn(&[u8]) -> Option<u64>, table: &[(&[u8], Option<u64>)]) {
    for (value, want) in table {
        assert_eq!(parse(value), *want, "{:?}", String::from_utf8_lossy(value));
    }
}

#[test]
fn retry_after_reads_delay_seconds_and_lenient_decimals() {
    let table: &[(&[u8], Option<u64>)] = &[
        (b"0", Some(0)),
        (b"1", Some(1_000)),
        (b"120", Some(120_000)),
        (b"  30 \t", Some(30_000)),
        (b"007", Some(7_000)),
        (b"1.5", Some(1_500)),
        (b"0.0001", Some(1)),
        (b"2.", Some(2_000)),
        (b".25", Some(250)),
        // Fits u64 as seconds, not as ms: saturates.
        (b"18446744073709551615", Some(u64::MAX)),
        (b"18446744073709551616", None),
        (b"1 s", None),
        (b"1s", None),
    ];
    check(|v| retry_after(v, NOW), table);
}

#[test]
fn retry_after_reads_all_three_http_date_forms() {
    // 2026-11-25T10:50:18Z is 18 s after NOW.
    let table: &[&[u8]] = &[
        b"Wed, 25 Nov 2026 10:50:18 GMT",
        b"Wednesday, 25-Nov-26 10:50:18 GMT",
        b"Wed Nov 25 10:50:18 2026",
        b"wed, 25 nov 2026 10:50:18 gmt",
        b"  Wed,  25 Nov 2026 10:50:18 GMT  ",
        b"Wed, 25 Nov 2026 10:50:18 UTC",
    ];
    for value in table {
        assert_eq!(
            retry_after(value, NOW),
            Some(18_000),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    let asctime_padded = b"Sun Nov  6 08:49:37 1994";
    assert_eq!(
        retry_after(asctime_padded, 784_111_777_000 - 500),
        Some(500)
    );
}

#[test]
fn dates_in_the_past_mean_come_back_now() {
    for value in [
        &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
        b"Wed, 25 Nov 2026 10:50:00 GMT",
        b"Thu, 01 Jan 1970 00:00:00 GMT",
        b"Sat, 01 Jan 0000 00:00:00 GMT",
    ] {
        assert_eq!(retry_after(value, NOW), Some(0));
    }
    assert_eq!(rfc3339(b"2026-11-25T10:49:59Z", NOW), Some(0));
    assert_eq!(rfc3339(b"1970-01-01T00:00:00Z", NOW), Some(0));
}

#[test]
fn rfc850_two_digit_years_over_fifty_years_ahead_are_last_century() {
    // NOW is 2026: "76" is 2076 (50 ahead), "77" is 1977.
    let at = |yy: &str| retry_after(format!("Friday, 01-Jan-{yy} 00:00:00 GMT").as_bytes(), NOW);
    let ms_2076 = days_from_civil(2076, 1, 1) as u64 * 86_400_000 - NOW;
    assert_eq!(at("76"), Some(ms_2076));
    assert_eq!(at("77"), Some(0));
    assert_eq!(at("94"), Some(0));
    assert!(at("30").is_some_and(|ms| ms > 0));
}

#[test]
fn http_dates_with_impossible_fields_are_rejected() {
    let table: &[&[u8]] = &[
        b"Mon, 32 Nov 2026 10:50:18 GMT",
        b"Mon, 31 Nov 2026 10:50:18 GMT",
        b"Sun, 29 Feb 2026 10:50:18 GMT",
        b"Mon, 00 Nov 2026 10:50:18 GMT",
        b"Mon, 25 Foo 2026 10:50:18 GMT",
        b"Mon, 25 Nov 2026 24:00:00 GMT",
        b"Mon, 25 Nov 2026 10:60:00 GMT",
        b"Mon, 25 Nov 2026 10:50:61 GMT",
        b"Mon, 25 Nov 2026 10:50 GMT",
        b"Mon, 25 Nov 2026 10:50:18 PST",
        b"Mon, 25 Nov 26 10:50:18 GMT",
        b"Mon 25 Nov 2026 10:50:18 GMT",
        b"Xyz, 25 Nov 2026 10:50:18 GMT",
        b"Mon, 25 Nov 2026 10:50:18 GMT extra",
        b"Monday, 25-Nov-2026 10:50:18 GMT",
        b"Monday, 25-Nov-26-1 10:50:18 GMT",
        b"Mon Nov 25 10:50:18 26",
        b"Mon, 25 Nov 2026 1a:50:18 GMT",
        b"Mon, \xff5 Nov 2026 10:50:18 GMT",
    ];
    for value in table {
        assert_eq!(
            retry_after(value, NOW),
            None,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    // Leap day in a leap year is fine.
    assert_eq!(
        retry_after(b"Thu, 29 Feb 2024 12:00:00 GMT", 1_709_208_000_000),
        Some(0)
    );
}

#[test]
fn a_leap_second_counts_as_the_next_minute() {
    assert_eq!(
        retry_after(b"Wed, 25 Nov 2026 10:50:60 GMT", NOW),
        Some(60_000)
    );
    assert_eq!(rfc3339(b"2026-11-25T10:50:60Z", NOW), Some(60_000));
}

#[test]
fn retry_after_ms_reads_integer_and_decimal_milliseconds() {
    let table: &[(&[u8], Option<u64>)] = &[
        (b"0", Some(0)),
        (b"20", Some(20)),
        (b" 1500 ", Some(1_500)),
        (b"1.2", Some(2)),
        (b"0.001", Some(1)),
        (b"18446744073709551615", Some(u64::MAX)),
        (b"18446744073709551615.5", Some(u64::MAX)),
        (b"20ms", None),
    ];
    check(retry_after_ms, table);
}

#[test]
fn go_durations_sum_their_components_and_round_up_to_a_millisecond() {
    let table: &[(&[u8], Option<u64>)] = &[
        (b"0", Some(0)),
        (b"0s", Some(0)),
        (b"1s", Some(1_000)),
        (b"6m0s", Some(360_000)),
        (b"20ms", Some(20)),
        (b"1h2m3.5s", Some(3_723_500)),
        (b"0.5s", Some(500)),
        (b".5s", Some(500)),
        (b"250us", Some(1)),
        (b"250\xc2\xb5s", Some(1)),
        (b"250\xce\xbcs", Some(1)),
        (b"1500us", Some(2)),
        (b"1ns", Some(1)),
        (b"1000000ns", Some(1)),
        (b"1000001ns", Some(2)),
        (b"2h", Some(7_200_000)),
        (b"1.000000000000000000000001s", Some(1_001)),
        (b" 59.9s\t", Some(59_900)),
        (b"18446744073709551615h", Some(u64::MAX)),
        (b"1m1m", Some(120_000)),
        (b"1", None),
        (b"s", None),
        (b"1.s5", None),
        (b"1m 2s", None),
        (b"1M", None),
        (b"1sec", None),
        (b"1\xb5s", None),
    ];
    check(go_duration, table);
}

#[test]
fn rfc3339_timestamps_count_down_to_their_instant() {
    let table: &[(&[u8], Option<u64>)] = &[
        (b"2026-11-25T10:50:18Z", Some(18_000)),
        (b"2026-11-25t10:50:18z", Some(18_000)),
        (b"2026-11-25 10:50:18Z", Some(18_000)),
        (b" 2026-11-25T10:50:18Z ", Some(18_000)),
        (b"2026-11-25T10:50:18.123Z", Some(18_123)),
        (b"2026-11-25T10:50:18.1234Z", Some(18_124)),
        (b"2026-11-25T10:50:18.1230000Z", Some(18_123)),
        (b"2026-11-25T10:50:18.5Z", Some(18_500)),
        (b"2026-11-25T11:50:18.123+01:00", Some(18_123)),
        (b"2026-11-25T05:20:18-05:30", Some(18_000)),
        (b"2026-11-25T10:50:18+00:00", Some(18_000)),
        (b"2026-11-25T10:50:18-00:00", Some(18_000)),
        (b"2026-11-26T10:50:00Z", Some(86_400_000)),
        (b"2026-11-25T10:50:18", None),
        (b"2026-11-25T10:50:18.Z", None),
        (b"2026-11-25T10:50:18+0100", None),
        (b"2026-11-25T10:50:18+24:00", None),
        (b"2026-11-25T10:50:18+01:60", None),
        (b"2026-13-25T10:50:18Z", None),
        (b"2026-02-29T10:50:18Z", None),
        (b"2026-11-31T10:50:18Z", None),
        (b"2026-11-25X10:50:18Z", None),
        (b"2026/11/25T10:50:18Z", None),
        (b"26-11-25T10:50:18Z", None),
        (b"2026-11-25T10:50:18ZZ", None),
        (b"2026-11-25T10:50Z", None),
        (b"+2026-11-25T10:50:18Z", None),
    ];
    check(|v| rfc3339(v, NOW), table);
}

#[test]
fn garbage_is_none_for_every_parser() {
    for value in GARBAGE {
        let shown = String::from_utf8_lossy(value);
        assert_eq!(retry_after(value, NOW), None, "retry-after {shown:?}");
        assert_eq!(retry_after_ms(value), None, "retry-after-ms {shown:?}");
        assert_eq!(go_duration(value), None, "go duration {shown:?}");
        assert_eq!(rfc3339(value, NOW), None, "rfc3339 {shown:?}");
    }
}

#[test]
fn extreme_clocks_neither_panic_nor_wrap() {
    for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
        assert_eq!(retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", now), {
            if now < 784_111_777_000 {
                Some(784_111_777_000 - now)
            } else {
                Some(0)
            }
        });
        assert!(retry_after(b"Sunday, 06-Nov-94 08:49:37 GMT", now).is_some());
        assert!(rfc3339(b"9999-12-31T23:59:60.999999+00:00", now).is_some());
        assert!(rfc3339(b"0000-01-01T00:00:00-23:59", now).is_some());
    }
    assert_eq!(
        rfc3339(b"9999-12-31T23:59:59.999Z", 0),
        Some(253_402_300_799_999)
    );
}

/// Response headers as (lower-case name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn reset_hint_takes_the_first_header_that_parses_in_priority_order() {
    let hint = |headers: Headers| {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes().to_vec())
        };
        reset_hint_ms(get, NOW)
    };
    let table: &[(Headers, Option<u64>)] = &[
        (&[], None),
        (&[("retry-after", "7")], Some(7_000)),
        (
            &[("retry-after", "7"), ("retry-after-ms", "6500")],
            Some(6_500),
        ),
        // A malformed header gives way to the next.
        (
            &[("retry-after-ms", "soon"), ("retry-after", "7")],
            Some(7_000),
        ),
        (
            &[
                ("x-ratelimit-reset-tokens", "6m0s"),
                ("x-ratelimit-reset-requests", "1s"),
            ],
            Some(1_000),
        ),
        (&[("x-ratelimit-reset-tokens", "6m0s")], Some(360_000)),
        (
            &[
                ("anthropic-ratelimit-tokens-reset", "2026-11-25T10:51:00Z"),
                ("anthropic-ratelimit-requests-reset", "2026-11-25T10:50:18Z"),
            ],
            Some(18_000),
        ),
        (
            &[("anthropic-ratelimit-tokens-reset", "2026-11-25T10:51:00Z")],
            Some(60_000),
        ),
        (
            &[
                ("retry-after", "Wed, 25 Nov 2026 10:50:18 GMT"),
                ("anthropic-ratelimit-requests-reset", "2026-11-25T10:51:00Z"),
            ],
            Some(18_000),
        ),
        // Names are looked up lower-case only.
        (&[("Retry-After", "7")], None),
        (&[("x-unrelated", "7")], None),
    ];
    for (headers, want) in table {
        assert_eq!(hint(headers), *want, "{headers:?}");
    }
}

#[test]
fn reset_headers_are_lower_case_and_distinct() {
    let names: Vec<&str> = RESET_HEADERS.iter().map(|(name, _)| *name).collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name.to_ascii_lowercase(), *name);
        assert!(!names[..i].contains(name));
    }
}

#[test]
fn civil_day_numbers_round_trip_across_eras() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 1, 1), 10_957);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
    assert_eq!(days_from_civil(0, 3, 1), -719_468);
    for (y, m, d) in [
        (0, 1, 1),
        (1600, 2, 29),
        (1970, 1, 1),
        (2024, 12, 31),
        (9999, 12, 31),
    ] {
        let days = days_from_civil(y, m, d);
        assert_eq!(year_of_day(days), y, "{y}-{m}-{d}");
        assert_eq!(
            year_of_day(days + 1),
            if (m, d) == (12, 31) { y + 1 } else { y }
        );
    }
}
