//! The config: operator input from Envoy's plugin configuration or an xDS push.
//! Whatever it holds, parsing must answer, and a refusal must say which field.

use llm_breaker::config::{Config, ConfigError};
use proptest::prelude::*;
use serde_json::Value;

/// The documented example, with models, probes, admin and overrides: the seed the
/// mutations start from.
const FULL: &str = r#"{
  "route_header": "x-llm-breaker-upstream",
  "response_header": "x-llm-breaker",
  "model": {"source": "body", "header": "x-llm-model", "max_body_bytes": 65536},
  "models": ["gpt-4o", "gpt-4o-mini"],
  "admin": {"enabled": true, "path_prefix": "/_llm_breaker", "history": 50},
  "routes": [
    {"name": "gpt", "match": {"path_prefix": "/v1/", "models": ["gpt-4o*", "o3"]},
     "upstreams": ["openai", {"upstream": "azure-openai", "model": "gpt-4o-2024-08-06"}, "vllm"],
     "when_all_open": "reject"},
    {"name": "models", "match": {"path": "/v1/models"}, "upstreams": ["openai"]}
  ],
  "breaker": {
    "consecutive_failures": 5,
    "failure_rate": {"threshold": 0.5, "minimum_calls": 20, "window": {"seconds": 60}},
    "slow_call": {"ttfb_ms": 15000, "rate_threshold": 0.8},
    "open": {"base_ms": 30000, "max_ms": 300000, "multiplier": 2.0, "jitter": 0.1},
    "half_open": {"permitted_calls": 3, "success_threshold": 2},
    "failure": {"status": [500, 502, 503, 504, 529], "rate_limited": [429],
                "connect_failure": true, "reset": true, "timeout": true}
  },
  "upstreams": {
    "openai": {"breaker": {"scope": "upstream_and_model"},
               "probe": {"path": "/v1/models", "expect_status": [200], "interval_ms": 5000}},
    "vllm": {"breaker": {"consecutive_failures": 3, "failure_rate": {"window": {"calls": 50}}}}
  }
}"#;

/// Field names the schema knows, so mutations land on real fields as often as not.
const FIELDS: &[&str] = &[
    "admin",
    "admission_cache_ms",
    "base_ms",
    "body",
    "breaker",
    "calls",
    "client_errors_as_failures",
    "connect_failure",
    "consecutive_failures",
    "enabled",
    "expect_status",
    "failure",
    "failure_rate",
    "half_open",
    "header",
    "headers",
    "history",
    "in_band",
    "in_band_error",
    "interval_ms",
    "jitter",
    "match",
    "max_body_bytes",
    "max_ms",
    "max_open_ms",
    "max_scan_bytes",
    "method",
    "minimum_calls",
    "model",
    "models",
    "multiplier",
    "name",
    "open",
    "path",
    "path_prefix",
    "permit_timeout_ms",
    "permitted_calls",
    "probe",
    "protect_reads",
    "rate_limit",
    "rate_limited",
    "rate_threshold",
    "reset",
    "response_header",
    "route_header",
    "routes",
    "scope",
    "seconds",
    "slow_call",
    "source",
    "status",
    "stream_truncated",
    "success_flush_ms",
    "success_threshold",
    "threshold",
    "timeout",
    "timeout_ms",
    "token_env",
    "trip_on_reset_hint",
    "ttfb_ms",
    "upstream",
    "upstreams",
    "when_all_open",
    "window",
    "openai",
    "vllm",
    "gpt-4o",
    "*",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(FIELDS).prop_map(str::to_string), 1 => "[a-z_*-]{0,8}"]
}

/// Values of every JSON type, including the awkward ones: huge and negative
/// numbers, fractions where integers go, empty and odd strings.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(u32::MAX as i64 + 1),
            any::<i64>()
        ]
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop_oneof![
            Just(0.5f64),
            Just(-0.0),
            Just(1e300),
            Just(2.5),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(String::new()),
            Just("*".into()),
            Just("reject".into()),
            Just("body".into()),
            Just("/v1/".into()),
            Just("openai".into()),
            "[ -~]{0,12}",
            any::<String>()
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Insert(String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => value().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        2 => (key(), value()).prop_map(|(k, v)| Edit::Insert(k, v)),
    ]
}

/// Applies `edit` at the node `at` picks, in a walk of the whole tree.
fn mutate(doc: &mut Value, at: prop::sample::Index, edit: Edit) {
    let mut count = 0;
    count_nodes(doc, &mut count);
    let mut target = at.index(count);
    apply(doc, &mut target, edit);
}

fn count_nodes(v: &Value, n: &mut usize) {
    *n += 1;
    match v {
        Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        Value::Object(o) => o.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

/// Walks to node number `target` (pre-order); returns true once applied.
fn apply(v: &mut Value, target: &mut usize, edit: Edit) -> bool {
    if *target == 0 {
        match edit {
            Edit::Replace(new) => *v = new,
            Edit::Insert(k, new) => match v {
                Value::Object(o) => {
                    o.insert(k, new);
                }
                Value::Array(a) => a.push(new),
                other => *other = new,
            },
            Edit::Remove => match v {
                Value::Object(o) => {
                    let first = o.keys().next().cloned();
                    if let Some(k) = first {
                        o.remove(&k);
                    }
                }
                Value::Array(a) => {
                    a.pop();
                }
                other => *other = Value::Null,
            },
        }
        return true;
    }
    *target -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| apply(x, target, edit.clone())),
        Value::Object(o) => o.values_mut().any(|x| apply(x, target, edit.clone())),
        _ => false,
    }
}

/// A refusal of a JSON object must name where the problem is.
fn names_a_field(input_is_object: bool, err: &ConfigError) -> Result<(), TestCaseError> {
    let text = err.to_string();
    prop_assert!(text.starts_with("invalid configuration: "), "{}", text);
    prop_assert!(!text.contains('\n'), "multi-line error: {}", text);
    if input_is_object {
        let named = match err {
            ConfigError::Empty => false,
            ConfigError::Json { field, .. } | ConfigError::Invalid { field, .. } => {
                (!field.is_empty() && field != ".") || text.contains('`')
            }
        };
        prop_assert!(named, "error names no field: {}", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases_scaled(2))]

    #[test]
    fn arbitrary_bytes_never_panic_the_config_parser(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = Config::parse(&bytes) {
            names_a_field(false, &e)?;
        }
    }

    #[test]
    fn arbitrary_json_objects_never_panic_and_refusals_name_a_field(
        doc in prop::collection::vec((key(), value()), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ) {
        let bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = Config::parse(&bytes) {
            names_a_field(true, &e)?;
        }
    }

    #[test]
    fn mutated_real_configs_never_panic_and_refusals_name_a_field(
        edits in prop::collection::vec((any::<prop::sample::Index>(), edit()), 1..4),
    ) {
        let mut doc: Value = serde_json::from_str(FULL).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, e) in edits {
            mutate(&mut doc, at, e);
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Config::parse(&bytes) {
            Ok(c) => {
                // Whatever is accepted is usable: every route has a chain of known upstreams.
                for r in &c.routes {
                    prop_assert!(!r.chain.is_empty());
                    prop_assert!(r.chain.iter().all(|&u| c.upstream(u).is_some()));
                }
            }
            Err(e) => names_a_field(doc.is_object(), &e)?,
        }
    }

    #[test]
    fn cut_configs_are_refused_without_panicking(cut in any::<prop::sample::Index>()) {
        let at = cut.index(FULL.trim_end().len());
        let err = Config::parse(&FULL.as_bytes()[..at]);
        prop_assert!(err.is_err());
    }
}

#[test]
fn the_seed_config_parses() {
    Config::parse(FULL.as_bytes()).unwrap();
}
