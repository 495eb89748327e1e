//! Turns the filter's JSON into a [`Config`], in named steps: read the document,
//! check each top-level section, build the routes and their upstreams, then the
//! breaker cells. The first problem is reported with the path of its field.

use super::breaker::breaker_config;
use super::error::{invalid, typed};
use super::models::{cells, check_model_count, listed_models};
use super::raw::RawConfig;
use super::routes::{object_or_empty, Routing};
use super::sections::{FailoverMode, Headers, InBand, ModelSettings, Timing};
use super::{AdminConfig, Config, ConfigError, Failover};

pub(super) fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let raw = read_document(bytes)?;
    let headers = Headers::of(&raw)?;
    let timing = Timing::of(&raw)?;
    let mode = FailoverMode::of(&raw)?;
    let in_band = InBand::try_from(raw.in_band).map_err(|e| e.under("in_band"))?;
    let global = object_or_empty(raw.breaker, "breaker")?;
    // Type the global block on its own first, so its errors name `breaker.*`.
    breaker_config(global.clone(), "breaker")?;
    if raw.routes.is_empty() {
        return Err(invalid("routes", "must list at least one route"));
    }
    let listed = listed_models(&raw.models)?;
    let model = ModelSettings::try_from(raw.model).map_err(|e| e.under("model"))?;
    let mut routing = Routing::new(&global, &raw.upstreams, listed);
    for (i, r) in raw.routes.into_iter().enumerate() {
        routing.add_route(i, r)?;
    }
    routing.check_overrides_used()?;
    if mode.failover != Failover::WithinRequest {
        if let Some(u) = routing.upstreams.iter().find(|u| !u.request.is_empty()) {
            return Err(invalid(
                format!("upstreams.{}.request", u.name),
                "only with `failover: \"within_request\"` (the upstream role shapes each attempt)",
            ));
        }
    }
    check_model_count(&routing.models)?;
    let admin = if raw.admin.enabled {
        Some(AdminConfig::try_from(raw.admin).map_err(|e| e.under("admin"))?)
    } else {
        None
    };
    let fleet = raw
        .fleet
        .map(super::FleetConfig::try_from)
        .transpose()
        .map_err(|e| e.under("fleet"))?;
    let (cells, cell_base) = cells(&routing.upstreams, &routing.models);
    Ok(Config {
        route_header: headers.route,
        response_header: headers.response,
        routes: routing.routes,
        success_flush_ms: timing.success_flush_ms,
        admission_cache_ms: timing.admission_cache_ms,
        upstreams: routing.upstreams,
        max_scan_bytes: in_band.max_scan_bytes,
        model_source: model.source,
        model_header: model.header,
        max_body_bytes: model.max_body_bytes,
        models: routing.models,
        cells,
        cell_base,
        admin,
        failover: mode.failover,
        role: mode.role,
        retry_buffer_limit_bytes: mode.retry_buffer_limit_bytes,
        attempt_upstream_header: mode.attempt_upstream_header,
        mode: raw.mode,
        fleet,
    })
}

/// The document typed as [`RawConfig`]: not empty, JSON, an object, the schema.
fn read_document(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
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
    typed(doc, "")
}
