//! The time formats providers put in rate-limit reset headers, written from the
//! system clock without a date library: IMF-fixdate (`retry-after: <HTTP-date>`),
//! RFC 3339 UTC (Anthropic's `anthropic-ratelimit-*-reset`) and OpenAI's Go-style
//! durations (`x-ratelimit-reset-requests: 1m30s`), and the reset headers of each
//! [`ResetForm`].

use super::ResetForm;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A civil UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Splits Unix seconds into a UTC date (Howard Hinnant's `civil_from_days`).
fn civil(unix: u64) -> Civil {
    let days = (unix / 86_400) as i64;
    let secs = (unix % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: ((days + 4).rem_euclid(7)) as u32,
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(unix);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `1994-11-06T08:49:37Z` (RFC 3339, UTC).
pub fn rfc3339(unix: u64) -> String {
    let c = civil(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// OpenAI's reset duration: `120ms`, `2s`, `1.5s`, `1m30s`, `6m0s`, `1h0m0s`.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

impl ResetForm {
    /// The reset hint of a rate-limited answer `after` from now, in this form.
    pub(crate) fn headers(self, after: Duration) -> Vec<(&'static str, String)> {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        let at = unix_now() + secs;
        match self {
            ResetForm::RetryAfter => vec![("retry-after", secs.to_string())],
            ResetForm::HttpDate => vec![("retry-after", http_date(at))],
            ResetForm::RetryAfterMs => vec![("retry-after-ms", after.as_millis().to_string())],
            ResetForm::OpenAi => vec![
                ("x-ratelimit-limit-requests", "500".to_string()),
                ("x-ratelimit-remaining-requests", "0".to_string()),
                ("x-ratelimit-reset-requests", openai_duration(after)),
            ],
            ResetForm::Anthropic => vec![
                ("anthropic-ratelimit-requests-limit", "50".to_string()),
                ("anthropic-ratelimit-requests-remaining", "0".to_string()),
                ("anthropic-ratelimit-requests-reset", rfc3339(at)),
            ],
            ResetForm::Garbage => vec![
                ("retry-after", "soon-ish".to_string()),
                ("retry-after-ms", "-x".to_string()),
                ("x-ratelimit-reset-requests", "1q2w".to_string()),
                (
                    "anthropic-ratelimit-requests-reset",
                    "31/02/2024 25:61".to_string(),
                ),
            ],
            ResetForm::None => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // RFC 9110's own example.
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(784_111_777), "1994-11-06T08:49:37Z");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // A leap day, and the last second of a century leap year.
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(http_date(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn formats_openai_durations() {
        let cases = [
            (120, "120ms"),
            (2_000, "2s"),
            (1_500, "1.5s"),
            (17_520, "17.52s"),
            (90_000, "1m30s"),
            (360_000, "6m0s"),
            (3_600_000, "1h0m0s"),
            (3_723_000, "1h2m3s"),
        ];
        for (ms, want) in cases {
            assert_eq!(openai_duration(Duration::from_millis(ms)), want, "{ms} ms");
        }
    }
}
