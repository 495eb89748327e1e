//! Per-provider request shaping in the provider file (issue 14): the credential (a
//! file-based SDS secret and the header it goes in), the path rule and extra headers,
//! and how they reach the upstream role's configuration as non-secret
//! `upstreams.<name>.request` blocks. The Envoy filters they need are in
//! [`crate::credentials`].

use crate::input::{FilterView, InputError, Provider, Providers};
use serde::Deserialize;
use std::collections::BTreeSet;

/// Where the gateway's key for a provider comes from, and where it goes.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderCredential {
    /// A file-based SDS resource (`resources: [Secret]`) holding one `generic_secret`
    /// named like the provider; its `secret` may name the key file (`filename`).
    pub sds_file: String,
    /// The directory whose changes make Envoy re-read `sds_file` (default: its own).
    #[serde(default)]
    pub watched_directory: Option<String>,
    /// The provider's header: `authorization`, `api-key`, `x-api-key`, …
    pub header: String,
    /// Put before the key (`"Bearer "`).
    #[serde(default)]
    pub prefix: String,
}

impl ProviderCredential {
    /// The watched directory: the given one, else `sds_file`'s.
    pub fn directory(&self) -> String {
        self.watched_directory.clone().unwrap_or_else(|| {
            std::path::Path::new(&self.sds_file)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "/".into())
        })
    }
}

/// A path rule: strip a prefix, add one, append a query.
#[derive(Debug, Deserialize, serde::Serialize, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProviderPath {
    /// Removed from the start of the client's path (`/v1`).
    #[serde(default)]
    pub strip_prefix: String,
    /// Put in front of the rest (`/openai/deployments/gpt-4o`).
    #[serde(default)]
    pub prefix: String,
    /// Appended to the query (`api-version=2024-10-21`).
    #[serde(default)]
    pub query: String,
}

impl Provider {
    /// Whether the upstream role shapes requests to it.
    pub fn shaped(&self) -> bool {
        self.credential.is_some() || self.path.is_some() || !self.headers.is_empty()
    }

    /// Its `upstreams.<name>.request` block for the upstream role (non-secret).
    pub fn request_block(&self) -> serde_json::Value {
        let mut block = serde_json::Map::new();
        if let Some(c) = &self.credential {
            block.insert(
                "credential".into(),
                serde_json::json!({"header": c.header, "prefix": c.prefix}),
            );
        }
        if let Some(p) = &self.path {
            block.insert("path".into(), serde_json::json!(p));
        }
        if !self.headers.is_empty() {
            block.insert("headers".into(), serde_json::json!(self.headers));
        }
        serde_json::Value::Object(block)
    }
}

/// Puts each shaped provider's request block into the upstream role's configuration
/// (`upstreams.<name>.request`) and validates the result with the filter's parser.
pub fn with_shaping(filter: &mut FilterView, p: &Providers) -> Result<(), InputError> {
    let mut doc: serde_json::Value = serde_json::from_str(&filter.upstream_config)
        .map_err(|e| InputError::FilterConfig(e.to_string()))?;
    let used: BTreeSet<&str> = filter
        .chains
        .iter()
        .flat_map(|(_, c)| c.iter().map(String::as_str))
        .collect();
    for (i, prov) in p.providers.iter().enumerate() {
        if !prov.shaped() || !used.contains(prov.name.as_str()) {
            continue;
        }
        let Some(obj) = doc.as_object_mut() else {
            break;
        };
        let ups = obj
            .entry("upstreams")
            .or_insert_with(|| serde_json::json!({}));
        let entry = ups.as_object_mut().map(|u| {
            u.entry(prov.name.clone())
                .or_insert_with(|| serde_json::json!({}))
        });
        match entry.and_then(|e| e.as_object_mut()) {
            Some(e) if e.contains_key("request") => {
                return Err(InputError::Field {
                    field: format!("providers[{i}]"),
                    message: format!(
                        "the filter's JSON already has `upstreams.{}.request`: shape requests in the provider file only",
                        prov.name
                    ),
                })
            }
            Some(e) => {
                e.insert("request".into(), prov.request_block());
            }
            None => {}
        }
    }
    let text = serde_json::to_string(&doc).map_err(|e| InputError::FilterConfig(e.to_string()))?;
    llm_breaker::config::Config::parse(text.as_bytes()).map_err(|e| {
        InputError::FilterConfig(format!(
            "{e} (from the provider file's credential/path/headers)"
        ))
    })?;
    filter.upstream_config = text;
    Ok(())
}
