//! Rate-limit reset hints: how long a provider that answered 429, 529 or 503 asks
//! the client to wait, read from whichever of the standard and provider-specific
//! headers it sent (`Retry-After`, OpenAI/Azure `retry-after-ms` and
//! `x-ratelimit-reset-*`, Anthropic `anthropic-ratelimit-*-reset`).
//!
//! Every parser takes raw header bytes from the wire and the current time as a
//! value, and answers milliseconds from now or `None`. Anything malformed (empty,
//! negative, non-UTF-8, a number that does not fit `u64`, an impossible date) is
//! `None`, never a panic. A well-formed value that is merely huge saturates at
//! `u64::MAX`: the caller applies its own maximum. Fractions of a millisecond round
//! up, so the hint never tells a client to come back early. A time in the past is
//! `Some(0)`.

mod date;
#[cfg(test)]
mod tests;

/// A header's parser: its raw value and the current unix ms, to ms from now.
type Parser = fn(&[u8], u64) -> Option<u64>;

/// The headers [`reset_hint_ms`] reads, lower-case, in priority order, each with
/// how it is written.
const RESET_HEADERS: [(&str, Parser); 6] = [
    ("retry-after-ms", |v, _| retry_after_ms(v)),
    ("retry-after", retry_after),
    ("x-ratelimit-reset-requests", |v, _| go_duration(v)),
    ("anthropic-ratelimit-requests-reset", rfc3339),
    ("x-ratelimit-reset-tokens", |v, _| go_duration(v)),
    ("anthropic-ratelimit-tokens-reset", rfc3339),
];

const NS_PER_MS: u128 = 1_000_000;

/// The first of the reset headers that `get` returns and that parses, as
/// milliseconds from `now_ms` (unix milliseconds). A header that is present but
/// malformed is skipped in favour of the next one.
pub fn reset_hint_ms(get: impl Fn(&str) -> Option<Vec<u8>>, now_ms: u64) -> Option<u64> {
    RESET_HEADERS
        .iter()
        .find_map(|(name, parse)| parse(&get(name)?, now_ms))
}

/// `Retry-After` (RFC 9110): delay-seconds, leniently also a decimal (`1.5`), or an
/// HTTP-date in any of the three accepted forms (IMF-fixdate, RFC 850, asctime).
fn retry_after(value: &[u8], now_ms: u64) -> Option<u64> {
    let text = value.trim_ascii();
    match text.first() {
        Some(b) if b.is_ascii_digit() || *b == b'.' => whole_decimal(text, 1000),
        Some(_) => date::http_date_ms(text, now_ms).map(|at| date::ms_until(at, now_ms)),
        None => None,
    }
}

/// `retry-after-ms` (OpenAI, Azure OpenAI): milliseconds, integer or decimal.
fn retry_after_ms(value: &[u8]) -> Option<u64> {
    whole_decimal(value.trim_ascii(), 1)
}

/// OpenAI `x-ratelimit-reset-requests` / `-tokens`: a Go duration such as `6m0s`,
/// `1h2m3.5s`, `20ms` or `250us` (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`).
/// A bare `0` is allowed, as in Go; signs are not.
fn go_duration(value: &[u8]) -> Option<u64> {
    let mut rest = value.trim_ascii();
    if rest == b"0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let (int, frac, after) = decimal_prefix(rest)?;
        let unit_len = after
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        total_ns = total_ns.saturating_add(scale(int, frac, unit_ns(unit)?));
        rest = after;
    }
    Some(to_u64(total_ns.div_ceil(NS_PER_MS)))
}

/// Anthropic `anthropic-ratelimit-*-reset`: an RFC 3339 timestamp
/// (`2026-11-25T10:50:18Z`, `2026-11-25T10:50:18.123+01:00`).
fn rfc3339(value: &[u8], now_ms: u64) -> Option<u64> {
    date::rfc3339_ms(value.trim_ascii()).map(|at| date::ms_until(at, now_ms))
}

/// Nanoseconds in a Go duration unit.
fn unit_ns(unit: &[u8]) -> Option<u128> {
    Some(match unit {
        b"ns" => 1,
        // "us", U+00B5 micro sign, U+03BC Greek small mu: Go accepts all three.
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// A value that is exactly one decimal number, times `unit` (milliseconds per
/// input unit), rounded up.
fn whole_decimal(text: &[u8], unit: u128) -> Option<u64> {
    match decimal_prefix(text)? {
        (int, frac, []) => Some(to_u64(scale(int, frac, unit))),
        _ => None,
    }
}

/// Splits a leading `digits[.digits]` (at least one digit in all) off `s`: the
/// integer part, the fraction digits and the rest. `None` when there is no number
/// or the integer part does not fit `u64`.
fn decimal_prefix(s: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int_digits, rest) = s.split_at(int_len);
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
            after.split_at(n)
        }
        _ => (&rest[..0], rest),
    };
    if int_digits.is_empty() && frac.is_empty() {
        return None;
    }
    let int = int_digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((int, frac, rest))
}

/// `int.frac × unit`, rounded up. Cannot overflow: `int × unit` < 2^64 × 2^42, and
/// only the first 19 fraction digits are multiplied (later ones can only round up).
fn scale(int: u64, frac: &[u8], unit: u128) -> u128 {
    let whole = u128::from(int).saturating_mul(unit);
    let mut num: u128 = 0;
    let mut den: u128 = 1;
    let mut beyond = false;
    for d in frac {
        if den < 10_000_000_000_000_000_000 {
            num = num * 10 + u128::from(d - b'0');
            den *= 10;
        } else if *d != b'0' {
            beyond = true;
        }
    }
    let prod = num * unit;
    let part = prod / den + u128::from(prod % den != 0 || beyond);
    whole.saturating_add(part)
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
