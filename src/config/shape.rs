//! An upstream's `request` block: how the upstream role shapes each attempt to it
//! (issue 14). Only non-secret parts live here: which header carries the provider's
//! key and its prefix, the path rule, and extra headers. The key itself is put into a
//! staging header by Envoy's `credential_injector` (see `docs/providers.md`). Errors
//! are named relative to the block (`upstreams.<name>.request`).

use super::checks::check_header_name;
use super::error::invalid;
use super::raw::{RawPathRule, RawRequestShape};
use super::ConfigError;

/// Headers clients put their own provider keys in; never forwarded unless a route
/// passes client credentials through.
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// Prefix of the staging header Envoy's `credential_injector` fills with an upstream's
/// key: `x-llm-breaker-credential-<upstream>`.
pub const STAGING_PREFIX: &str = "x-llm-breaker-credential-";

/// The request header the generator's `header_mutation` sets, per attempt and ahead
/// of the upstream role, to the attempt's endpoint metadata `llm_breaker.upstream`
/// (the upstream role's `attempt_upstream_header`; the same filter after it removes it).
pub const ATTEMPT_UPSTREAM_HEADER: &str = "x-llm-breaker-attempt-upstream";

/// Prefix of the header the downstream role moves a client's own credential header
/// into on a `pass_client_credentials` route (`x-llm-breaker-client-authorization`),
/// since the Envoy route removes the original; the upstream role moves it back.
pub const CLIENT_STAGING_PREFIX: &str = "x-llm-breaker-client-";

/// Headers a `request.headers` entry may not set: the filter's own, the body's
/// framing, and credentials (those go through `credential`).
const RESERVED: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-llm-breaker-tickets",
];

/// The validated shaping of one upstream's requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestShape {
    /// The provider's credential header, if the gateway holds its key.
    pub credential: Option<Credential>,
    /// The path rule, if the provider's path differs from the client's.
    pub path: Option<PathRule>,
    /// Extra headers set on every attempt to it.
    pub headers: Vec<(String, String)>,
}

impl RequestShape {
    /// Nothing to shape.
    pub fn is_empty(&self) -> bool {
        self.credential.is_none() && self.path.is_none() && self.headers.is_empty()
    }
}

/// The header a provider wants its key in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Lowercase header name.
    pub header: String,
    /// Put before the key (`"Bearer "`).
    pub prefix: String,
}

/// Strip a prefix, add one, append a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRule {
    /// Removed from the start of the path when present.
    pub strip_prefix: String,
    /// Put in front of the rest.
    pub prefix: String,
    /// Appended to the query, `&`-joined (empty: none).
    pub query: String,
}

impl PathRule {
    /// The provider's path for the client's `path` (query kept, the rule's appended).
    pub fn apply(&self, path: &str) -> String {
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let rest = match p.strip_prefix(self.strip_prefix.as_str()) {
            Some(r) if !self.strip_prefix.is_empty() => r,
            _ => p,
        };
        let mut out = format!("{}{rest}", self.prefix);
        if out.is_empty() {
            out.push('/');
        }
        let queries: Vec<&str> = [q.unwrap_or(""), self.query.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if !queries.is_empty() {
            out.push('?');
            out.push_str(&queries.join("&"));
        }
        out
    }
}

/// A header value: printable ASCII (no CR/LF), at most 1024 bytes.
fn check_value(field: &str, v: &str) -> Result<(), ConfigError> {
    if v.len() <= 1024 && v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be printable ASCII, at most 1024 bytes, got {v:?}"),
        ))
    }
}

/// A path piece: empty, or `/` then URL path characters.
fn check_path_piece(field: &str, v: &str) -> Result<(), ConfigError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"/-_.~%:@!$&'()*+,;=".contains(&b);
    if v.is_empty() || (v.starts_with('/') && v.len() <= 512 && v.bytes().all(ok)) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be empty or a path starting with '/', got {v:?}"),
        ))
    }
}

impl TryFrom<RawPathRule> for PathRule {
    type Error = ConfigError;

    fn try_from(r: RawPathRule) -> Result<Self, ConfigError> {
        check_path_piece("strip_prefix", &r.strip_prefix)?;
        check_path_piece("prefix", &r.prefix)?;
        let ok = |b: u8| b.is_ascii_alphanumeric() || b"-_.~%=&+:,".contains(&b);
        if r.query.len() > 512 || !r.query.bytes().all(ok) || r.query.starts_with('?') {
            return Err(invalid(
                "query",
                format!(
                    "must be a query like \"api-version=2024-10-21\" (no '?'), got {:?}",
                    r.query
                ),
            ));
        }
        Ok(PathRule {
            strip_prefix: r.strip_prefix,
            prefix: r.prefix,
            query: r.query,
        })
    }
}

impl TryFrom<RawRequestShape> for RequestShape {
    type Error = ConfigError;

    fn try_from(r: RawRequestShape) -> Result<Self, ConfigError> {
        let credential = match r.credential {
            Some(c) => {
                check_header_name("credential.header", &c.header)?;
                if c.header.starts_with(STAGING_PREFIX) {
                    return Err(invalid(
                        "credential.header",
                        format!("must not be a staging header, got {:?}", c.header),
                    ));
                }
                check_value("credential.prefix", &c.prefix)?;
                Some(Credential {
                    header: c.header,
                    prefix: c.prefix,
                })
            }
            None => None,
        };
        let path = match r.path {
            Some(p) => Some(PathRule::try_from(p).map_err(|e| e.under("path"))?),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in r.headers {
            let field = format!("headers.{name}");
            check_header_name(&field, &name)?;
            let reserved = RESERVED.contains(&name.as_str())
                || CLIENT_CREDENTIAL_HEADERS.contains(&name.as_str())
                || name.starts_with(STAGING_PREFIX)
                || name.starts_with("x-llm-breaker-");
            if reserved {
                return Err(invalid(
                    &field,
                    "is set by Envoy or the filter (credentials go in `credential`)",
                ));
            }
            check_value(&field, &value)?;
            headers.push((name, value));
        }
        Ok(RequestShape {
            credential,
            path,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn rule(strip: &str, prefix: &str, query: &str) -> PathRule {
        PathRule {
            strip_prefix: strip.into(),
            prefix: prefix.into(),
            query: query.into(),
        }
    }

    #[test]
    fn path_rules_strip_add_and_append_a_query() {
        let azure = rule(
            "/v1",
            "/openai/deployments/gpt-4o",
            "api-version=2024-10-21",
        );
        for (from, to) in [
            (
                "/v1/chat/completions",
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ),
            (
                "/v1/chat/completions?a=b",
                "/openai/deployments/gpt-4o/chat/completions?a=b&api-version=2024-10-21",
            ),
            (
                "/other",
                "/openai/deployments/gpt-4o/other?api-version=2024-10-21",
            ),
        ] {
            assert_eq!(azure.apply(from), to, "{from}");
        }
        assert_eq!(rule("/v1", "", "").apply("/v1"), "/");
        assert_eq!(rule("", "", "").apply("/v1/x?q"), "/v1/x?q");
    }

    fn parse(upstream_block: &str) -> Result<Config, String> {
        let json = format!(
            r#"{{"failover":"within_request","routes":[{{"name":"r","upstreams":["a"]}}],"upstreams":{{"a":{upstream_block}}}}}"#
        );
        Config::parse(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_request_blocks_are_refused_naming_the_field() {
        for (block, field) in [
            (
                r#"{"request":{"credential":{"header":"Authorization"}}}"#,
                "upstreams.a.request.credential.header",
            ),
            (
                r#"{"request":{"credential":{"header":"x-llm-breaker-credential-a"}}}"#,
                "upstreams.a.request.credential.header",
            ),
            (
                r#"{"request":{"path":{"prefix":"openai"}}}"#,
                "upstreams.a.request.path.prefix",
            ),
            (
                r#"{"request":{"path":{"query":"?api-version=1"}}}"#,
                "upstreams.a.request.path.query",
            ),
            (
                r#"{"request":{"headers":{"authorization":"Bearer x"}}}"#,
                "upstreams.a.request.headers.authorization",
            ),
            (
                r#"{"request":{"headers":{"x-v":"a\nb"}}}"#,
                "upstreams.a.request.headers.x-v",
            ),
            (r#"{"request":{"secret":"x"}}"#, "upstreams.a.request"),
        ] {
            let err = parse(block).unwrap_err();
            assert!(err.contains(&format!("`{field}")), "{block}: {err}");
        }
    }

    #[test]
    fn a_request_block_needs_within_request() {
        let json = r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"request":{"headers":{"x-v":"1"}}}}}"#;
        let err = Config::parse(json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("`upstreams.a.request`"), "{err}");
    }

    #[test]
    fn a_valid_block_is_kept() {
        let c = parse(r#"{"request":{"credential":{"header":"authorization","prefix":"Bearer "},"headers":{"anthropic-version":"2023-06-01"}}}"#).unwrap();
        let r = &c.upstreams[0].request;
        assert_eq!(r.credential.as_ref().unwrap().prefix, "Bearer ");
        assert_eq!(
            r.headers,
            vec![("anthropic-version".into(), "2023-06-01".into())]
        );
        assert!(c.shapes_requests());
    }
}
