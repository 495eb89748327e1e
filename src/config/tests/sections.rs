//! Each section validates on its own, naming fields relative to itself; the caller
//! puts the section's path in front.

use super::super::error::invalid;
use super::super::raw::{
    RawAdmin, RawFailure, RawHalfOpen, RawModel, RawOpen, RawProbe, RawWindow,
};
use super::super::sections::ModelSettings;
use super::*;
use serde::de::DeserializeOwned;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn raw<T: DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

/// The field an invalid section is refused for.
fn field<T, R>(json: &str) -> String
where
    R: DeserializeOwned,
    T: TryFrom<R, Error = ConfigError> + std::fmt::Debug,
{
    match T::try_from(raw::<R>(json)).unwrap_err() {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("{json}: {other:?}"),
    }
}

#[test]
fn under_puts_the_section_path_in_front() {
    let at = |e: ConfigError, p: &str| e.under(p).to_string();
    assert_eq!(
        at(invalid("base_ms", "bad"), "breaker.open"),
        "invalid configuration: `breaker.open.base_ms`: bad"
    );
    assert_eq!(
        at(invalid("", "bad"), "breaker.failure_rate.window"),
        "invalid configuration: `breaker.failure_rate.window`: bad"
    );
    assert_eq!(
        at(invalid("[3]", "bad"), "models"),
        "invalid configuration: `models[3]`: bad"
    );
    assert_eq!(ConfigError::Empty.under("x"), ConfigError::Empty);
}

#[test]
fn sections_name_their_own_fields() {
    assert_eq!(field::<OpenPolicy, RawOpen>(r#"{"base_ms":0}"#), "base_ms");
    assert_eq!(field::<OpenPolicy, RawOpen>(r#"{"jitter":2}"#), "jitter");
    assert_eq!(
        field::<HalfOpenPolicy, RawHalfOpen>(r#"{"permitted_calls":33}"#),
        "permitted_calls"
    );
    assert_eq!(
        field::<FailurePolicy, RawFailure>(r#"{"status":[500,404]}"#),
        "status[1]"
    );
    assert_eq!(field::<WindowSpec, RawWindow>(r#"{"calls":0}"#), "calls");
    assert_eq!(field::<WindowSpec, RawWindow>(r#"{}"#), "");
    assert_eq!(
        field::<AdminConfig, RawAdmin>(r#"{"history":0}"#),
        "history"
    );
    let model = ModelSettings::try_from(raw::<RawModel>(r#"{"header":"X"}"#));
    assert!(matches!(model, Err(ConfigError::Invalid { field, .. }) if field == "header"));
    let probe = ProbeConfig::try_from(("a", raw::<RawProbe>(r#"{"path":"/h","timeout_ms":0}"#)));
    assert!(matches!(probe, Err(ConfigError::Invalid { field, .. }) if field == "timeout_ms"));
}

#[test]
fn valid_sections_keep_their_values() {
    let open = OpenPolicy::try_from(raw::<RawOpen>(r#"{"base_ms":10,"max_ms":10}"#)).unwrap();
    assert_eq!(
        (open.base_ms.get(), open.max_ms.get(), open.multiplier),
        (10, 10, 2.0)
    );
    let w = WindowSpec::try_from(raw::<RawWindow>(r#"{"seconds":30}"#)).unwrap();
    assert_eq!(w, WindowSpec::Seconds(30));
}

#[test]
fn millis_is_a_json_integer_with_its_range_beside_it() {
    assert_eq!(raw::<Millis>("250"), Millis(250));
    assert!(serde_json::from_str::<Millis>("-1").is_err());
    assert!(serde_json::from_str::<Millis>("\"5s\"").is_err());
    assert_eq!(Millis(5).within("x_ms", 1, 10), Ok(Millis(5)));
    assert_eq!(
        Millis(0).within("x_ms", 1, 10).unwrap_err().to_string(),
        "invalid configuration: `x_ms`: must be between 1 and 10, got 0"
    );
}
