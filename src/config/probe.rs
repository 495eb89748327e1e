//! An upstream's `probe` block: the health request sent while its breaker is open.
//! Errors are named relative to the block (`upstreams.<name>.probe`).

use super::checks::{check_header_name, range};
use super::error::invalid;
use super::raw::RawProbe;
use super::{ConfigError, ProbeConfig};

/// Methods a probe may use.
const METHODS: [&str; 5] = ["GET", "POST", "HEAD", "PUT", "OPTIONS"];

/// Largest probe body.
const MAX_BODY: usize = 64 * 1024;

/// A probe of the named upstream (its name is the default `:authority`).
impl TryFrom<(&str, RawProbe)> for ProbeConfig {
    type Error = ConfigError;

    fn try_from((upstream, p): (&str, RawProbe)) -> Result<Self, ConfigError> {
        if !METHODS.contains(&p.method.as_str()) {
            return Err(invalid(
                "method",
                format!(
                    "must be GET, POST, HEAD, PUT or OPTIONS, got {:?}",
                    p.method
                ),
            ));
        }
        if !p.path.starts_with('/') || p.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(invalid(
                "path",
                format!(
                    "must start with '/' and hold no spaces or control characters, got {:?}",
                    p.path
                ),
            ));
        }
        let headers = request_headers(upstream, &p)?;
        if p.expect_status.is_empty() {
            return Err(invalid("expect_status", "must list at least one status"));
        }
        for (i, s) in p.expect_status.iter().enumerate() {
            range(&format!("expect_status[{i}]"), (*s).into(), 100, 599)?;
        }
        let timeout_ms = p.timeout_ms.within("timeout_ms", 1, 60_000)?;
        let interval_ms = p.interval_ms.within("interval_ms", 100, 3_600_000)?;
        if p.body.len() > MAX_BODY {
            return Err(invalid("body", "must be at most 64 KiB"));
        }
        Ok(ProbeConfig {
            headers,
            body: p.body.into_bytes(),
            expect_status: p.expect_status,
            timeout_ms,
            interval_ms,
        })
    }
}

/// The pseudo-headers, then the configured headers; a `host` header becomes the
/// `:authority` (default: the upstream's name).
fn request_headers(upstream: &str, p: &RawProbe) -> Result<Vec<(String, String)>, ConfigError> {
    let mut authority = upstream.to_string();
    let mut headers = Vec::new();
    for (k, v) in &p.headers {
        check_header_name(&format!("headers.{k}"), k)?;
        if v.bytes().any(|b| b.is_ascii_control()) {
            return Err(invalid(
                format!("headers.{k}"),
                "must hold no control characters",
            ));
        }
        if k == "host" {
            authority = v.clone();
        } else {
            headers.push((k.clone(), v.clone()));
        }
    }
    let mut all = vec![
        (":method".to_string(), p.method.clone()),
        (":path".to_string(), p.path.clone()),
        (":authority".to_string(), authority),
    ];
    all.extend(headers);
    Ok(all)
}
