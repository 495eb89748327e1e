//! Small value rules shared by the config validation: ranges, header and name syntax.
//! Each returns a [`ConfigError`] naming the field and the bad value.

use super::error::invalid;
use super::ConfigError;

/// `v` is above 0 and at most 1 (a rate threshold).
pub(super) fn unit_interval(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be above 0 and at most 1, got {v}"),
        ))
    }
}

/// `v` is between `lo` and `hi`, inclusive.
pub(super) fn range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

/// `v` is 1 to `max` bytes, each allowed by `ok`; else an error saying `what` it must be.
fn check_chars(
    field: &str,
    v: &str,
    max: usize,
    ok: impl Fn(u8) -> bool,
    what: &str,
) -> Result<(), ConfigError> {
    if !v.is_empty() && v.len() <= max && v.bytes().all(ok) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be {what}, got {v:?}")))
    }
}

/// An absolute URL path prefix other than `/`; returned without trailing slashes.
pub(super) fn check_path_prefix(field: &str, v: &str) -> Result<String, ConfigError> {
    let what =
        "a path like \"/_llm_breaker\" ('/' then [A-Za-z0-9/-_.~], at most 128 chars, not \"/\")";
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b);
    check_chars(field, v, 128, ok, what)?;
    let prefix = v.trim_end_matches('/');
    if !v.starts_with('/') || prefix.is_empty() {
        return Err(invalid(field, format!("must be {what}, got {v:?}")));
    }
    Ok(prefix.to_string())
}

/// A lowercase HTTP header name.
pub(super) fn check_header_name(field: &str, v: &str) -> Result<(), ConfigError> {
    check_chars(
        field,
        v,
        128,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_',
        "a lowercase header name ([a-z0-9_-], 1-128 chars)",
    )
}

/// A route name (it ends up in metric names).
pub(super) fn check_name(field: &str, v: &str) -> Result<(), ConfigError> {
    check_chars(
        field,
        v,
        64,
        |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
        "1-64 chars of [A-Za-z0-9_-]",
    )
}

/// Upstream names end up in a header value, a shared-data key and metric names.
pub(super) fn check_upstream_name(field: &str, v: &str) -> Result<(), ConfigError> {
    check_chars(
        field,
        v,
        200,
        |b| b.is_ascii_alphanumeric() || b"-_.|:~+".contains(&b),
        "1-200 chars of [A-Za-z0-9-_.|:~+] (an Envoy cluster name)",
    )
}
