//! Per-attempt request shaping (upstream role, issue 14): the header edits that make
//! one attempt a request its provider accepts — its credential header filled from the
//! staging header Envoy's `credential_injector` wrote, every other credential and
//! staging header removed, its path and extra headers — as plain data the host applies.
//!
//! The attempts of a request share one request header map, so an edit made for
//! attempt 1 is what attempt 2 starts from. Every attempt therefore sets or removes
//! *every* header any upstream's shaping touches, and the path is computed from the
//! client's original path, kept in [`ORIGINAL_PATH_HEADER`] by the first attempt.

use super::{Metrics, Worker};
use crate::config::{Config, CLIENT_CREDENTIAL_HEADERS, CLIENT_STAGING_PREFIX, STAGING_PREFIX};
use crate::ids::RouteId;
use crate::ids::UpstreamId;
use crate::store::SharedStore;

/// The client's path before any attempt rewrote it (set by the first attempt; the
/// generated Envoy route removes a client's value).
pub const ORIGINAL_PATH_HEADER: &str = "x-llm-breaker-original-path";

/// One header edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Set (replace) a header.
    Set(String, String),
    /// Remove a header.
    Remove(String),
}

/// What shaping one attempt decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shaped {
    /// Header edits, in order.
    pub edits: Vec<Edit>,
    /// The gateway's key for this upstream went into its credential header: a 401 or
    /// 403 is then the operator's key, not the client's.
    pub credential: bool,
    /// The upstream has a credential configured but its staging header was empty or
    /// missing (no `credential_injector`, or no secret): the attempt goes without a key.
    pub missing_credential: bool,
}

/// The staging header of `upstream`.
pub fn staging_header(upstream: &str) -> String {
    format!("{STAGING_PREFIX}{upstream}")
}

/// Where the downstream role keeps a client's credential header `name` on a
/// passthrough route.
pub fn client_staging(name: &str) -> String {
    format!("{CLIENT_STAGING_PREFIX}{name}")
}

/// Shapes one attempt to `upstream`; `passthrough`: the route passes the client's
/// credentials (no key injected; the client's own, kept by the downstream role in
/// [`client_staging`] headers, go back into their headers). `header` reads the
/// attempt's request headers.
pub fn shape(
    config: &Config,
    upstream: UpstreamId,
    passthrough: bool,
    header: impl Fn(&str) -> Option<Vec<u8>>,
) -> Shaped {
    let mut out = Shaped::default();
    let Some(up) = config.upstream(upstream) else {
        return out;
    };
    let text = |name: &str| header(name).and_then(|v| String::from_utf8(v).ok());
    // The path, from the client's original.
    let current = text(":path").unwrap_or_default();
    let original = match text(ORIGINAL_PATH_HEADER) {
        Some(p) if !p.is_empty() => p,
        _ => {
            out.edits
                .push(Edit::Set(ORIGINAL_PATH_HEADER.into(), current.clone()));
            current.clone()
        }
    };
    let path = up
        .request
        .path
        .as_ref()
        .map_or_else(|| original.clone(), |r| r.apply(&original));
    if !path.is_empty() && path != current {
        out.edits.push(Edit::Set(":path".into(), path));
    }
    if passthrough {
        client_credentials(&text, &mut out);
    } else {
        credentials(config, upstream, &text, &mut out);
    }
    for name in CLIENT_CREDENTIAL_HEADERS {
        let staged = client_staging(name);
        if header(&staged).is_some() {
            out.edits.push(Edit::Remove(staged));
        }
    }
    // Staging headers of every upstream with a credential go (so do Envoy's
    // header_mutation after this filter, also when the VM is down).
    for (_, u) in config.upstream_ids() {
        let staging = staging_header(&u.name);
        if u.request.credential.is_some() && header(&staging).is_some() {
            out.edits.push(Edit::Remove(staging));
        }
    }
    // Extra headers: this upstream's set, the others' removed.
    for (_, u) in config.upstream_ids().filter(|(id, _)| *id != upstream) {
        for (name, _) in &u.request.headers {
            let own = up.request.headers.iter().any(|(n, _)| n == name);
            if !own && header(name).is_some() {
                out.edits.push(Edit::Remove(name.clone()));
            }
        }
    }
    for (name, value) in &up.request.headers {
        out.edits.push(Edit::Set(name.clone(), value.clone()));
    }
    out
}

/// Every credential header any provider or client uses.
fn credential_headers(config: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = CLIENT_CREDENTIAL_HEADERS.to_vec();
    for (_, u) in config.upstream_ids() {
        if let Some(c) = &u.request.credential {
            if !names.contains(&c.header.as_str()) {
                names.push(&c.header);
            }
        }
    }
    names
}

/// Passthrough: each client credential header back from its [`client_staging`]
/// header. Without one (an earlier attempt already restored it, and Envoy's
/// header_mutation removed the copy) the header is left as it is: on a passthrough
/// route nothing but this restores a credential header, so it is the client's.
fn client_credentials(text: &impl Fn(&str) -> Option<String>, out: &mut Shaped) {
    for name in CLIENT_CREDENTIAL_HEADERS {
        if let Some(v) = text(&client_staging(name)) {
            out.edits.push(Edit::Set(name.into(), v));
        }
    }
}

/// This upstream's credential header from its staging header; every other credential
/// header (the client's, or an earlier attempt's provider's) removed.
fn credentials(
    config: &Config,
    upstream: UpstreamId,
    text: &impl Fn(&str) -> Option<String>,
    out: &mut Shaped,
) {
    let Some(up) = config.upstream(upstream) else {
        return;
    };
    let own = up.request.credential.as_ref();
    for name in credential_headers(config) {
        match own.filter(|c| c.header == name) {
            Some(c) => match text(&staging_header(&up.name)).filter(|v| !v.is_empty()) {
                Some(key) => {
                    out.edits
                        .push(Edit::Set(name.into(), format!("{}{key}", c.prefix)));
                    out.credential = true;
                }
                None => {
                    out.missing_credential = true;
                    out.edits.push(Edit::Remove(name.into()));
                }
            },
            None => {
                if text(name).is_some() {
                    out.edits.push(Edit::Remove(name.into()));
                }
            }
        }
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Downstream role, a request routed by `route`: on a passthrough route the
    /// client's credential headers are copied into [`client_staging`] headers (the
    /// Envoy route removes the originals); on any other a client's staging headers go.
    pub fn stage_client_credentials(
        &self,
        route: RouteId,
        header: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Vec<Edit> {
        if !self.shapes {
            return Vec::new();
        }
        let passthrough = self.config.passes_client_credentials(Some(route));
        // The upstream role keeps the path it rewrites from there: never the client's.
        let mut edits = vec![Edit::Remove(ORIGINAL_PATH_HEADER.into())];
        for name in CLIENT_CREDENTIAL_HEADERS {
            let staged = client_staging(name);
            match header(name).and_then(|v| String::from_utf8(v).ok()) {
                Some(v) if passthrough => edits.push(Edit::Set(staged, v)),
                _ => {
                    if header(&staged).is_some() {
                        edits.push(Edit::Remove(staged));
                    }
                }
            }
        }
        edits
    }

    /// Upstream role: the edits for one attempt to the upstream `name`, the route read
    /// from the downstream role's `tickets` (without them, the client's credentials
    /// are not passed through). `None`: nothing is shaped under this configuration,
    /// or `name` is not one of its upstreams.
    /// A missing key is warned about (rate-limited, see [`Worker::warn_credential`]).
    pub fn shape_attempt(
        &self,
        name: &[u8],
        route: Option<RouteId>,
        now_ms: u64,
        header: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Option<Shaped> {
        if !self.shapes {
            return None;
        }
        let (upstream, _) = self
            .config
            .upstream_ids()
            .find(|(_, u)| u.name.as_bytes() == name)?;
        let passthrough = self.config.passes_client_credentials(route);
        let shaped = shape(&self.config, upstream, passthrough, header);
        if shaped.missing_credential {
            self.warn_credential(upstream, now_ms, || {
                "has a credential header configured but no key arrived in its staging header: is its credential_injector (and secret) in the aggregate cluster?".into()
            });
        }
        Some(shaped)
    }
}
