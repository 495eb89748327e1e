//! The models that get breakers of their own: those listed in `models`, exact
//! names in route matches, and chain rewrite targets, bounded by [`MAX_MODELS`];
//! and the breaker cells they give each upstream.

use super::error::invalid;
use super::{Cell, ConfigError, Scope, Upstream, MAX_MODELS, OTHER_MODELS};
use crate::ids::{CellId, UpstreamId};
use crate::model::ModelPattern;

/// A model name used as-is (rewrite target, `models` entry): no glob characters.
pub(super) fn check_model_name(field: &str, m: &str) -> Result<(), ConfigError> {
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
pub(super) fn note_model(known: &mut Vec<String>, m: &str) {
    if !known.iter().any(|k| k == m) {
        known.push(m.to_string());
    }
}

/// The top-level `models` list: names, each once (errors named `models[i]`).
pub(super) fn listed_models(listed: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut known: Vec<String> = Vec::new();
    for (i, m) in listed.iter().enumerate() {
        let field = format!("models[{i}]");
        check_model_name(&field, m)?;
        if known.contains(m) {
            return Err(invalid(field, format!("duplicate model {m:?}")));
        }
        known.push(m.clone());
    }
    Ok(known)
}

/// At most [`MAX_MODELS`] models in all, since each costs a key per scoped upstream.
pub(super) fn check_model_count(known: &[String]) -> Result<(), ConfigError> {
    if known.len() > MAX_MODELS {
        return Err(invalid(
            "models",
            format!(
                "at most {MAX_MODELS} models may have breakers of their own (listed in `models`, exact route matches and chain rewrites), got {}",
                known.len()
            ),
        ));
    }
    Ok(())
}

/// The breaker cells, upstream by upstream (one, or one per model and `*` on
/// model-scoped upstreams), and each upstream's first cell.
pub(super) fn cells(upstreams: &[Upstream], models: &[String]) -> (Vec<Cell>, Vec<CellId>) {
    let mut cells = Vec::new();
    let mut cell_base = Vec::with_capacity(upstreams.len());
    for (u, up) in UpstreamId::all(upstreams.len()).zip(upstreams) {
        cell_base.push(CellId::new(cells.len()));
        if up.breaker.scope == Scope::UpstreamAndModel {
            for m in models.iter().map(String::as_str).chain([OTHER_MODELS]) {
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
    (cells, cell_base)
}
