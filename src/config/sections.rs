//! The small top-level sections: the routing headers, the worker's timing knobs,
//! `in_band`, `model` and `admin`. Each is validated on its own, with errors named
//! relative to it and put under its name by the caller.

use super::checks::{check_header_name, check_path_prefix, range};
use super::error::invalid;
use super::raw::{RawAdmin, RawConfig, RawInBand, RawModel};
use super::{AdminConfig, ConfigError, Failover, Millis, ModelSource, Role};

/// The header the filter writes for Envoy's router, and the optional response
/// header naming the upstream that served.
pub(super) struct Headers {
    pub route: String,
    pub response: Option<String>,
}

impl Headers {
    /// Checks both names (top-level fields) and that they differ.
    pub(super) fn of(raw: &RawConfig) -> Result<Headers, ConfigError> {
        check_header_name("route_header", &raw.route_header)?;
        let response = if raw.response_header.is_empty() {
            None
        } else {
            check_header_name("response_header", &raw.response_header)?;
            if raw.response_header == raw.route_header {
                return Err(invalid(
                    "response_header",
                    "must differ from `route_header`",
                ));
            }
            Some(raw.response_header.clone())
        };
        Ok(Headers {
            route: raw.route_header.clone(),
            response,
        })
    }
}

/// How long a worker may hold successes and answer admissions from its own read.
pub(super) struct Timing {
    pub success_flush_ms: Millis,
    pub admission_cache_ms: Millis,
}

impl Timing {
    /// Checks the two top-level `*_ms` knobs.
    pub(super) fn of(raw: &RawConfig) -> Result<Timing, ConfigError> {
        Ok(Timing {
            success_flush_ms: raw.success_flush_ms.within("success_flush_ms", 0, 10_000)?,
            admission_cache_ms: raw
                .admission_cache_ms
                .within("admission_cache_ms", 0, 100)?,
        })
    }
}

/// Longest chain `within_request` takes: its aggregates number 2^n − 1 per chain.
pub(super) const MAX_WITHIN_CHAIN: usize = 8;

/// The failover mode and this instance's role.
pub(super) struct FailoverMode {
    pub failover: Failover,
    pub role: Role,
    pub retry_buffer_limit_bytes: u64,
    pub attempt_upstream_header: Option<String>,
}

impl FailoverMode {
    /// Checks that the pair makes sense and that `within_request` chains are short
    /// enough for their aggregates (`routes[i].upstreams`).
    pub(super) fn of(raw: &RawConfig) -> Result<FailoverMode, ConfigError> {
        if raw.role != Role::Downstream && raw.failover != Failover::WithinRequest {
            return Err(invalid(
                "role",
                "`upstream` and `upstream_log` run only with `failover: \"within_request\"`",
            ));
        }
        if raw.failover == Failover::WithinRequest {
            if let Some((i, r)) = raw
                .routes
                .iter()
                .enumerate()
                .find(|(_, r)| r.upstreams.len() > MAX_WITHIN_CHAIN)
            {
                return Err(invalid(
                    format!("routes[{i}].upstreams"),
                    format!(
                        "at most {MAX_WITHIN_CHAIN} upstreams with `failover: \"within_request\"`, got {}",
                        r.upstreams.len()
                    ),
                ));
            }
        }
        super::checks::range(
            "retry_buffer_limit_bytes",
            raw.retry_buffer_limit_bytes,
            1,
            u64::from(u32::MAX),
        )?;
        let attempt_upstream_header = if raw.attempt_upstream_header.is_empty() {
            None
        } else {
            check_header_name("attempt_upstream_header", &raw.attempt_upstream_header)?;
            if raw.role != Role::Upstream {
                return Err(invalid(
                    "attempt_upstream_header",
                    "only with `role: \"upstream\"` (the generator sets it on the aggregates' upstream filter)",
                ));
            }
            Some(raw.attempt_upstream_header.clone())
        };
        Ok(FailoverMode {
            failover: raw.failover,
            role: raw.role,
            retry_buffer_limit_bytes: raw.retry_buffer_limit_bytes,
            attempt_upstream_header,
        })
    }
}

/// The validated `in_band` section.
pub(super) struct InBand {
    pub max_scan_bytes: usize,
}

impl TryFrom<RawInBand> for InBand {
    type Error = ConfigError;

    fn try_from(r: RawInBand) -> Result<Self, ConfigError> {
        range("max_scan_bytes", r.max_scan_bytes, 0, 16 * 1024 * 1024)?;
        Ok(InBand {
            max_scan_bytes: usize::try_from(r.max_scan_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// The validated `model` section.
pub(super) struct ModelSettings {
    pub source: ModelSource,
    pub header: String,
    pub max_body_bytes: usize,
}

impl TryFrom<RawModel> for ModelSettings {
    type Error = ConfigError;

    fn try_from(m: RawModel) -> Result<Self, ConfigError> {
        check_header_name("header", &m.header)?;
        range("max_body_bytes", m.max_body_bytes, 1, 64 * 1024 * 1024)?;
        Ok(ModelSettings {
            source: m.source,
            header: m.header,
            max_body_bytes: usize::try_from(m.max_body_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// An enabled `admin` section (a disabled one is not checked).
impl TryFrom<RawAdmin> for AdminConfig {
    type Error = ConfigError;

    fn try_from(a: RawAdmin) -> Result<Self, ConfigError> {
        let path_prefix = check_path_prefix("path_prefix", &a.path_prefix)?;
        if a.token_env.is_empty() || a.token_env.len() > 128 {
            return Err(invalid(
                "token_env",
                "must be an environment variable name (1-128 chars)",
            ));
        }
        range("history", a.history.into(), 1, 1000)?;
        Ok(AdminConfig {
            path_prefix,
            protect_reads: a.protect_reads,
            token_env: a.token_env,
            history: u16::try_from(a.history).unwrap_or(1000),
        })
    }
}
