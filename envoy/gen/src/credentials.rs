//! The Envoy pieces of per-provider credentials (issue 14): the secrets stay with
//! Envoy. Each aggregate's upstream filter chain gets, per member with a credential,
//! an `envoy.filters.http.credential_injector` writing that provider's key (a generic
//! credential from a file-based SDS secret, re-read when its directory changes) into
//! a staging header `x-llm-breaker-credential-<provider>`; the upstream role then
//! copies the attempt's own provider's staging value into the header it wants and
//! removes the rest; after it, an `envoy.filters.http.header_mutation` removes every
//! staging header unconditionally, so no provider sees another's key even if the VM
//! is down (measured in Envoy 1.40: both filters run per attempt at that level).
//!
//! The route removes the client's own credential headers (`request_headers_to_remove`),
//! always: on a `pass_client_credentials` route the downstream role first copies them
//! into `x-llm-breaker-client-<header>`, and the upstream role puts them back per
//! attempt; the header_mutation removes those copies too. So with the VM down no
//! provider gets any key, never a wrong one (measured: `tests/envoy_providers.rs`).

use crate::envoy::map;
use crate::input::{Provider, Providers};
use llm_breaker::config::{
    ATTEMPT_UPSTREAM_HEADER, CLIENT_CREDENTIAL_HEADERS, CLIENT_STAGING_PREFIX, STAGING_PREFIX,
};
use serde_yaml::Value;

fn s(v: &str) -> Value {
    Value::from(v)
}

/// The staging header of provider `name`.
pub fn staging_header(name: &str) -> String {
    format!("{STAGING_PREFIX}{name}")
}

/// The original-path header the upstream role keeps (a client's value is removed).
pub const ORIGINAL_PATH_HEADER: &str = "x-llm-breaker-original-path";

/// A file-based SDS resource holding one generic secret `name` with `key`: what a
/// provider's `sds_file` contains (the tests write their keys with it).
pub fn sds_doc(name: &str, key: &str) -> String {
    format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: {name}\n  generic_secret: {{secret: {{inline_string: \"{key}\"}}}}\n"
    )
}

/// The `credential_injector` filter for a provider with a credential.
pub fn injector(p: &Provider) -> Option<Value> {
    let c = p.credential.as_ref()?;
    let sds = map([
        (
            "path_config_source",
            map([
                ("path", s(&c.sds_file)),
                ("watched_directory", map([("path", s(&c.directory()))])),
            ]),
        ),
        ("resource_api_version", s("V3")),
    ]);
    Some(map([
        ("name", s(&format!("llm-breaker-credential-{}", p.name))),
        (
            "typed_config",
            map([
                (
                    "@type",
                    s("type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector"),
                ),
                ("overwrite", Value::from(true)),
                // A secret not loaded yet must not fail the request here: the upstream
                // role sends no key then (and warns), the provider's 401 is counted as
                // `credential_rejected`.
                ("allow_request_without_credential", Value::from(true)),
                (
                    "credential",
                    map([
                        ("name", s("envoy.http.injected_credentials.generic")),
                        (
                            "typed_config",
                            map([
                                (
                                    "@type",
                                    s("type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic"),
                                ),
                                (
                                    "credential",
                                    map([("name", s(&p.name)), ("sds_config", sds)]),
                                ),
                                ("header", s(&staging_header(&p.name))),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]))
}

/// The `header_mutation` filter removing every provider's staging header, the
/// client-credential copies of passthrough routes and the attempt's upstream name.
pub fn strip_staging(p: &Providers) -> Value {
    let removes: Vec<Value> = p
        .providers
        .iter()
        .filter(|x| x.credential.is_some())
        .map(|x| staging_header(&x.name))
        .chain(
            CLIENT_CREDENTIAL_HEADERS
                .iter()
                .map(|h| format!("{CLIENT_STAGING_PREFIX}{h}")),
        )
        .chain(std::iter::once(ATTEMPT_UPSTREAM_HEADER.to_string()))
        .map(|h| map([("remove", s(&h))]))
        .collect();
    map([
        ("name", s("llm-breaker-strip-staging")),
        (
            "typed_config",
            map([
                (
                    "@type",
                    s("type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"),
                ),
                (
                    "mutations",
                    map([("request_mutations", Value::Sequence(removes))]),
                ),
            ]),
        ),
    ])
}

/// The failover route's `request_headers_to_remove`: the client's original-path
/// header and credential headers (after the downstream role copied those of a
/// passthrough route).
pub fn request_headers_to_remove() -> Value {
    let mut v = vec![s(ORIGINAL_PATH_HEADER)];
    v.extend(CLIENT_CREDENTIAL_HEADERS.iter().map(|h| s(h)));
    Value::Sequence(v)
}
