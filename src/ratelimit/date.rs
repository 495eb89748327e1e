//! Calendar arithmetic for the reset hints: HTTP-dates (RFC 9110) and RFC 3339
//! timestamps to unix milliseconds, with no date library.
//!
//! Dates are proleptic Gregorian, years 0000–9999, so every intermediate value
//! fits an `i64` with room to spare. A leap second (`:60`) is accepted and counts
//! as the first second of the next minute: the hint is then at most a second late,
//! which beats dropping a provider's answer.

const MS_PER_DAY: i64 = 86_400_000;

const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];
const SHORT_DAYS: [&[u8]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
    b"sunday",
];

/// Milliseconds from `now_ms` until `at_ms`; 0 when `at_ms` is not in the future.
pub(super) fn ms_until(at_ms: i64, now_ms: u64) -> u64 {
    let d = i128::from(at_ms) - i128::from(now_ms);
    u64::try_from(d.max(0)).unwrap_or(u64::MAX)
}

/// An HTTP-date as unix ms: IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850
/// `Sunday, 06-Nov-94 08:49:37 GMT` or asctime `Sun Nov  6 08:49:37 1994`. Names
/// are matched case-insensitively and runs of whitespace are one separator; the
/// weekday must be a real day name but is not checked against the date.
pub(super) fn http_date_ms(s: &[u8], now_ms: u64) -> Option<i64> {
    let mut tokens: [&[u8]; 6] = [&[]; 6];
    let mut n = 0;
    for token in s
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
    {
        *tokens.get_mut(n)? = token;
        n += 1;
    }
    let (day, mon, year, time) = match *tokens.get(..n)? {
        [weekday, day, mon, year, time, zone] => {
            day_name(weekday.strip_suffix(b",")?)?;
            gmt(zone)?;
            (day, mon, i64::from(digits(year, 4, 4)?), time)
        }
        [weekday, dmy, time, zone] => {
            day_name(weekday.strip_suffix(b",")?)?;
            gmt(zone)?;
            let mut parts = dmy.split(|b| *b == b'-');
            let (day, mon, yy) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            (day, mon, two_digit_year(digits(yy, 2, 2)?, now_ms), time)
        }
        [weekday, mon, day, time, year] => {
            day_name(weekday)?;
            (day, mon, i64::from(digits(year, 4, 4)?), time)
        }
        _ => return None,
    };
    let (h, mi, sec) = clock(time)?;
    civil_ms(year, month(mon)?, digits(day, 1, 2)?, h, mi, sec)
}

/// An RFC 3339 timestamp as unix ms: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with
/// `t`/`z` or a space for `T` accepted. Fractions finer than a millisecond round up.
pub(super) fn rfc3339_ms(s: &[u8]) -> Option<i64> {
    let (date, rest) = s.split_at_checked(10)?;
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *date else {
        return None;
    };
    let (sep, rest) = rest.split_first()?;
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    let (time, mut rest) = rest.split_at_checked(8)?;
    let (h, mi, sec) = clock(time)?;
    let mut frac_ms = 0;
    if rest.first() == Some(&b'.') {
        // `.digits`: integer part 0, at least one fraction digit.
        let (_, frac, after) = super::decimal_prefix(rest)?;
        frac_ms = i64::try_from(super::scale(0, frac, 1000)).ok()?;
        rest = after;
    }
    let offset_ms = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh0, oh1, b':', om0, om1] => {
            let oh = digits(&[*oh0, *oh1], 2, 2)?;
            let om = digits(&[*om0, *om1], 2, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let ms = (i64::from(oh) * 60 + i64::from(om)) * 60_000;
            if *sign == b'-' {
                -ms
            } else {
                ms
            }
        }
        _ => return None,
    };
    let year = digits(&[y0, y1, y2, y3], 4, 4)?;
    let local = civil_ms(
        i64::from(year),
        digits(&[m0, m1], 2, 2)?,
        digits(&[d0, d1], 2, 2)?,
        h,
        mi,
        sec,
    )?;
    Some(local + frac_ms - offset_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Gregorian year that day `days` (since 1970-01-01) falls in (Hinnant's
/// `civil_from_days`, year only).
pub(super) fn year_of_day(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_is_jan_or_feb = mp >= 10;
    yoe + era * 400 + i64::from(month_is_jan_or_feb)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix ms of a validated date and time of day (UTC).
fn civil_ms(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let secs = i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec);
    Some(days_from_civil(year, month, day) * MS_PER_DAY + secs * 1000)
}

/// RFC 9110: a two-digit year more than 50 years in the future is the most recent
/// past year with those digits.
fn two_digit_year(yy: u32, now_ms: u64) -> i64 {
    let now_days = i64::try_from(now_ms / 86_400_000).unwrap_or(i64::MAX / 2);
    let this_year = year_of_day(now_days.min(3_000_000));
    let year = this_year - this_year.rem_euclid(100) + i64::from(yy);
    if year > this_year + 50 {
        year - 100
    } else {
        year
    }
}

/// `HH:MM:SS`, with `SS` up to 60 for a leap second.
fn clock(t: &[u8]) -> Option<(u32, u32, u32)> {
    let [h0, h1, b':', m0, m1, b':', s0, s1] = *t else {
        return None;
    };
    let (h, m, s) = (
        digits(&[h0, h1], 2, 2)?,
        digits(&[m0, m1], 2, 2)?,
        digits(&[s0, s1], 2, 2)?,
    );
    (h <= 23 && m <= 59 && s <= 60).then_some((h, m, s))
}

/// An all-digit field of `min..=max` digits.
fn digits(s: &[u8], min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

fn month(name: &[u8]) -> Option<u32> {
    let i = MONTHS.iter().position(|m| name.eq_ignore_ascii_case(m))?;
    u32::try_from(i + 1).ok()
}

fn day_name(name: &[u8]) -> Option<()> {
    let known = |list: &[&[u8]]| list.iter().any(|d| name.eq_ignore_ascii_case(d));
    (known(&SHORT_DAYS) || known(&LONG_DAYS)).then_some(())
}

fn gmt(zone: &[u8]) -> Option<()> {
    (zone.eq_ignore_ascii_case(b"GMT") || zone.eq_ignore_ascii_case(b"UTC")).then_some(())
}
