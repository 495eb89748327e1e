//! Turns [`RawConfig`] into a [`Config`]: merges overrides, checks ranges and names,
//! and reports the first problem with the path of the field that has it.

use super::checks::{
    check_header_name, check_name, check_path_prefix, check_upstream_name, invalid, range,
    unit_interval,
};
use super::raw::{RawBreaker, RawConfig, RawProbe};
use super::{
    AdminConfig, BreakerConfig, Cell, Config, FailurePolicy, HalfOpenPolicy, OpenPolicy,
    ProbeConfig, RateLimitPolicy, Route, Scope, Upstream, WindowSpec, MAX_MODELS, OTHER_MODELS,
};
use crate::ids::{CellId, UpstreamId};
use crate::model::ModelPattern;
use std::fmt;

/// A model name used as-is (rewrite target, `models` entry): no glob characters.
fn check_model_name(field: &str, m: &str) -> Result<(), ConfigError> {
    let p = ModelPattern::parse(m).map_err(|e| invalid(field, e))?;
    // Also refuses `*`, the name of the breaker all other models share.
    if !p.is_exact() {
        return Err(invalid(
            field,
            format!("must be a model name, not a pattern, got {m:?}"),
        ));
    }
    Ok(())
}

/// Adds a model to the set with breakers of their own, once.
fn note_model(known: &mut Vec<String>, m: &str) {
    if !known.iter().any(|k| k == m) {
        known.push(m.to_string());
    }
}

/// Why a configuration was refused. `Display` gives one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration was empty.
    Empty,
    /// JSON that does not parse, or does not fit the schema (type, unknown field).
    Json {
        /// Dotted path of the field (empty for the document itself).
        field: String,
        /// What serde said.
        message: String,
    },
    /// A value that parsed but breaks a rule.
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong, with the bad value.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Empty => write!(
                f,
                "invalid configuration: configuration is empty; expected a JSON object with at least `routes`"
            ),
            ConfigError::Json { field, message } if field.is_empty() || field == "." => {
                write!(f, "invalid configuration: {message}")
            }
            ConfigError::Json { field, message } | ConfigError::Invalid { field, message } => {
                write!(f, "invalid configuration: `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserializes `T` from JSON bytes or a value, reporting the path under `prefix`.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ConfigError::Json {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// Statuses that are the client's own mistake, never a provider failure.
const CLIENT_ERRORS: [u16; 6] = [400, 401, 403, 404, 413, 422];

pub(super) fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ConfigError::Empty);
    }
    let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
        field: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    if !doc.is_object() {
        return Err(ConfigError::Json {
            field: String::new(),
            message: "expected a JSON object at the top level".into(),
        });
    }
    let raw: RawConfig = typed(doc, "")?;

    check_header_name("route_header", &raw.route_header)?;
    let response_header = if raw.response_header.is_empty() {
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

    range("success_flush_ms", raw.success_flush_ms, 0, 10_000)?;
    range("admission_cache_ms", raw.admission_cache_ms, 0, 100)?;
    range(
        "in_band.max_scan_bytes",
        raw.in_band.max_scan_bytes,
        0,
        16 * 1024 * 1024,
    )?;
    let global = object_or_empty(raw.breaker, "breaker")?;
    // Type the global block on its own first, so its errors name `breaker.*`.
    breaker_config(global.clone(), "breaker")?;

    if raw.routes.is_empty() {
        return Err(invalid("routes", "must list at least one route"));
    }
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut known_models: Vec<String> = Vec::new();
    for (i, m) in raw.models.iter().enumerate() {
        let field = format!("models[{i}]");
        check_model_name(&field, m)?;
        if known_models.contains(m) {
            return Err(invalid(field, format!("duplicate model {m:?}")));
        }
        known_models.push(m.clone());
    }
    check_header_name("model.header", &raw.model.header)?;
    range(
        "model.max_body_bytes",
        raw.model.max_body_bytes,
        1,
        64 * 1024 * 1024,
    )?;
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        check_name(&format!("{at}.name"), &r.name)?;
        if routes.iter().any(|x| x.name == r.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("duplicate route name {:?}", r.name),
            ));
        }
        if r.upstreams.is_empty() {
            return Err(invalid(
                format!("{at}.upstreams"),
                "must list at least one upstream",
            ));
        }
        for (field, v) in [
            ("path_prefix", &r.matcher.path_prefix),
            ("path", &r.matcher.path),
        ] {
            if let Some(p) = v {
                if !p.starts_with('/') {
                    return Err(invalid(
                        format!("{at}.match.{field}"),
                        format!("must start with '/', got {p:?}"),
                    ));
                }
            }
        }
        let mut chain = Vec::with_capacity(r.upstreams.len());
        let mut chain_models = Vec::with_capacity(r.upstreams.len());
        for (j, entry) in r.upstreams.iter().enumerate() {
            let field = format!("{at}.upstreams[{j}]");
            let name = entry.upstream();
            check_upstream_name(&field, name)?;
            if r.upstreams[..j].iter().any(|e| e.upstream() == name) {
                return Err(invalid(field, format!("duplicate upstream {name:?}")));
            }
            if let Some(m) = entry.model() {
                check_model_name(&format!("{field}.model"), m)?;
                note_model(&mut known_models, m);
            }
            chain_models.push(entry.model().map(str::to_string));
            let idx = match upstreams.iter().position(|u| u.name == name) {
                Some(idx) => idx,
                None => {
                    let merged = match raw.upstreams.get(name) {
                        Some(o) => {
                            let path = format!("upstreams.{name}.breaker");
                            let o = object_or_empty(o.breaker.clone(), &path)?;
                            (merge(global.clone(), o), path)
                        }
                        None => (global.clone(), "breaker".to_string()),
                    };
                    let probe = match raw.upstreams.get(name).and_then(|o| o.probe.as_ref()) {
                        Some(p) => Some(probe_config(name, p)?),
                        None => None,
                    };
                    upstreams.push(Upstream {
                        name: name.to_string(),
                        breaker: breaker_config(merged.0, &merged.1)?,
                        probe,
                    });
                    upstreams.len() - 1
                }
            };
            chain.push(UpstreamId::new(idx));
        }
        let mut models = Vec::new();
        for (j, m) in r.matcher.models.iter().flatten().enumerate() {
            let field = format!("{at}.match.models[{j}]");
            let p = ModelPattern::parse(m).map_err(|e| invalid(&field, e))?;
            if p.is_exact() {
                note_model(&mut known_models, m);
            }
            models.push(p);
        }
        if r.matcher.models.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                format!("{at}.match.models"),
                "must list at least one model (or be left out)",
            ));
        }
        routes.push(Route {
            name: r.name,
            path_prefix: r.matcher.path_prefix,
            path: r.matcher.path,
            chain,
            chain_models,
            models,
            when_all_open: r.when_all_open,
        });
    }
    if let Some(name) = raw
        .upstreams
        .keys()
        .find(|n| !upstreams.iter().any(|u| &u.name == *n))
    {
        return Err(invalid(
            format!("upstreams.{name}"),
            "is not used by any route (typo?)",
        ));
    }
    if known_models.len() > MAX_MODELS {
        return Err(invalid(
            "models",
            format!(
                "at most {MAX_MODELS} models may have breakers of their own (listed in `models`, exact route matches and chain rewrites), got {}",
                known_models.len()
            ),
        ));
    }
    let admin = if raw.admin.enabled {
        let a = &raw.admin;
        let prefix = check_path_prefix("admin.path_prefix", &a.path_prefix)?;
        if a.token_env.is_empty() || a.token_env.len() > 128 {
            return Err(invalid(
                "admin.token_env",
                "must be an environment variable name (1-128 chars)",
            ));
        }
        range("admin.history", a.history.into(), 1, 1000)?;
        Some(AdminConfig {
            path_prefix: prefix,
            protect_reads: a.protect_reads,
            token_env: a.token_env.clone(),
            history: u16::try_from(a.history).unwrap_or(1000),
        })
    } else {
        None
    };
    let mut cells = Vec::new();
    let mut cell_base = Vec::with_capacity(upstreams.len());
    for (u, up) in UpstreamId::all(upstreams.len()).zip(&upstreams) {
        cell_base.push(CellId::new(cells.len()));
        if up.breaker.scope == Scope::UpstreamAndModel {
            for m in known_models
                .iter()
                .map(String::as_str)
                .chain([OTHER_MODELS])
            {
                cells.push(Cell {
                    upstream: u,
                    model: Some(m.to_string()),
                });
            }
        } else {
            cells.push(Cell {
                upstream: u,
                model: None,
            });
        }
    }
    Ok(Config {
        route_header: raw.route_header,
        response_header,
        routes,
        success_flush_ms: raw.success_flush_ms,
        admission_cache_ms: raw.admission_cache_ms,
        upstreams,
        max_scan_bytes: usize::try_from(raw.in_band.max_scan_bytes).unwrap_or(usize::MAX),
        model_source: raw.model.source,
        model_header: raw.model.header,
        max_body_bytes: usize::try_from(raw.model.max_body_bytes).unwrap_or(usize::MAX),
        models: known_models,
        cells,
        cell_base,
        admin,
    })
}

fn probe_config(name: &str, p: &RawProbe) -> Result<ProbeConfig, ConfigError> {
    let at = format!("upstreams.{name}.probe");
    if !["GET", "POST", "HEAD", "PUT", "OPTIONS"].contains(&p.method.as_str()) {
        return Err(invalid(
            format!("{at}.method"),
            format!(
                "must be GET, POST, HEAD, PUT or OPTIONS, got {:?}",
                p.method
            ),
        ));
    }
    if !p.path.starts_with('/') || p.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(invalid(
            format!("{at}.path"),
            format!(
                "must start with '/' and hold no spaces or control characters, got {:?}",
                p.path
            ),
        ));
    }
    let mut authority = name.to_string();
    let mut headers = Vec::new();
    for (k, v) in &p.headers {
        check_header_name(&format!("{at}.headers.{k}"), k)?;
        if v.bytes().any(|b| b.is_ascii_control()) {
            return Err(invalid(
                format!("{at}.headers.{k}"),
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
    if p.expect_status.is_empty() {
        return Err(invalid(
            format!("{at}.expect_status"),
            "must list at least one status",
        ));
    }
    for (i, s) in p.expect_status.iter().enumerate() {
        range(&format!("{at}.expect_status[{i}]"), (*s).into(), 100, 599)?;
    }
    range(&format!("{at}.timeout_ms"), p.timeout_ms, 1, 60_000)?;
    range(&format!("{at}.interval_ms"), p.interval_ms, 100, 3_600_000)?;
    if p.body.len() > 64 * 1024 {
        return Err(invalid(format!("{at}.body"), "must be at most 64 KiB"));
    }
    Ok(ProbeConfig {
        headers: all,
        body: p.body.clone().into_bytes(),
        expect_status: p.expect_status.clone(),
        timeout_ms: p.timeout_ms,
        interval_ms: p.interval_ms,
    })
}

fn object_or_empty(v: serde_json::Value, field: &str) -> Result<serde_json::Value, ConfigError> {
    match v {
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        serde_json::Value::Object(_) => Ok(v),
        other => Err(ConfigError::Json {
            field: field.to_string(),
            message: format!("expected an object, got {other}"),
        }),
    }
}

/// Deep-merges `over` into `base`. A `window` object is replaced whole, since its two
/// forms exclude each other.
fn merge(base: serde_json::Value, over: serde_json::Value) -> serde_json::Value {
    use serde_json::Value::Object;
    match (base, over) {
        (Object(mut b), Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) if k != "window" => merge(old, v),
                    _ => v,
                };
                b.insert(k, merged);
            }
            Object(b)
        }
        (_, over) => over,
    }
}

fn breaker_config(v: serde_json::Value, at: &str) -> Result<BreakerConfig, ConfigError> {
    let b: RawBreaker = typed(v, at)?;
    let fr = &b.failure_rate;
    unit_interval(&format!("{at}.failure_rate.threshold"), fr.threshold)?;
    unit_interval(
        &format!("{at}.slow_call.rate_threshold"),
        b.slow_call.rate_threshold,
    )?;
    range(
        &format!("{at}.consecutive_failures"),
        b.consecutive_failures.into(),
        0,
        1_000_000,
    )?;
    range(
        &format!("{at}.failure_rate.minimum_calls"),
        fr.minimum_calls.into(),
        1,
        1_000_000,
    )?;
    let window = match (fr.window.seconds, fr.window.calls) {
        (Some(s), None) => {
            range(
                &format!("{at}.failure_rate.window.seconds"),
                s.into(),
                1,
                3600,
            )?;
            WindowSpec::Seconds(s)
        }
        (None, Some(c)) => {
            range(
                &format!("{at}.failure_rate.window.calls"),
                c.into(),
                1,
                crate::window::MAX_CALLS.into(),
            )?;
            if fr.minimum_calls > c {
                return Err(invalid(
                    format!("{at}.failure_rate.minimum_calls"),
                    format!(
                        "must not exceed the window's {c} calls, got {}",
                        fr.minimum_calls
                    ),
                ));
            }
            WindowSpec::Calls(c)
        }
        _ => {
            return Err(invalid(
                format!("{at}.failure_rate.window"),
                "must be exactly one of {\"seconds\": N} or {\"calls\": N}",
            ))
        }
    };
    range(
        &format!("{at}.slow_call.ttfb_ms"),
        b.slow_call.ttfb_ms,
        1,
        3_600_000,
    )?;
    let o = &b.open;
    range(&format!("{at}.open.base_ms"), o.base_ms, 1, 86_400_000)?;
    range(
        &format!("{at}.open.max_ms"),
        o.max_ms,
        o.base_ms,
        86_400_000,
    )
    .map_err(|_| {
        invalid(
            format!("{at}.open.max_ms"),
            format!(
                "must be between base_ms ({}) and 86400000, got {}",
                o.base_ms, o.max_ms
            ),
        )
    })?;
    if !(o.multiplier.is_finite() && (1.0..=100.0).contains(&o.multiplier)) {
        return Err(invalid(
            format!("{at}.open.multiplier"),
            format!("must be between 1.0 and 100.0, got {}", o.multiplier),
        ));
    }
    if !(o.jitter.is_finite() && (0.0..1.0).contains(&o.jitter)) {
        return Err(invalid(
            format!("{at}.open.jitter"),
            format!("must be at least 0 and below 1, got {}", o.jitter),
        ));
    }
    let h = &b.half_open;
    range(
        &format!("{at}.half_open.permitted_calls"),
        h.permitted_calls.into(),
        1,
        crate::breaker::MAX_PERMITS as u64,
    )?;
    range(
        &format!("{at}.half_open.success_threshold"),
        h.success_threshold.into(),
        1,
        u64::from(u16::MAX),
    )?;
    range(
        &format!("{at}.half_open.permit_timeout_ms"),
        h.permit_timeout_ms,
        1,
        86_400_000,
    )?;
    let f = &b.failure;
    for (name, list) in [("status", &f.status), ("rate_limited", &f.rate_limited)] {
        for (i, s) in list.iter().enumerate() {
            let field = format!("{at}.failure.{name}[{i}]");
            range(&field, (*s).into(), 100, 599)?;
            if CLIENT_ERRORS.contains(s) {
                return Err(invalid(
                    field,
                    format!("{s} is the client's own error and never counts as a provider failure"),
                ));
            }
        }
    }
    for (i, s) in f.client_errors_as_failures.iter().enumerate() {
        if !(400..500).contains(s) {
            return Err(invalid(
                format!("{at}.failure.client_errors_as_failures[{i}]"),
                format!("must be a 4xx status, got {s}"),
            ));
        }
    }
    range(
        &format!("{at}.rate_limit.max_open_ms"),
        b.rate_limit.max_open_ms,
        1,
        86_400_000,
    )?;
    if let Some(s) = f.status.iter().find(|s| f.rate_limited.contains(s)) {
        return Err(invalid(
            format!("{at}.failure.rate_limited"),
            format!("status {s} is also listed in `failure.status`"),
        ));
    }
    Ok(BreakerConfig {
        consecutive_failures: b.consecutive_failures,
        failure_rate_threshold: fr.threshold,
        minimum_calls: fr.minimum_calls,
        window,
        slow_ttfb_ms: b.slow_call.ttfb_ms,
        slow_rate_threshold: b.slow_call.rate_threshold,
        open: OpenPolicy {
            base_ms: o.base_ms,
            max_ms: o.max_ms,
            multiplier: o.multiplier,
            jitter: o.jitter,
        },
        half_open: HalfOpenPolicy {
            permitted_calls: h.permitted_calls,
            success_threshold: h.success_threshold,
            permit_timeout_ms: h.permit_timeout_ms,
        },
        failure: FailurePolicy {
            status: f.status.clone(),
            rate_limited: f.rate_limited.clone(),
            connect_failure: f.connect_failure,
            reset: f.reset,
            timeout: f.timeout,
            in_band_error: f.in_band_error,
            stream_truncated: f.stream_truncated,
            client_errors_as_failures: f.client_errors_as_failures.clone(),
        },
        rate_limit: RateLimitPolicy {
            trip_on_reset_hint: b.rate_limit.trip_on_reset_hint,
            max_open_ms: b.rate_limit.max_open_ms,
        },
        scope: b.scope,
    })
}
