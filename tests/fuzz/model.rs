//! The model scanner and rewriter: request bodies from clients, and model names
//! from headers and the config.

use llm_breaker::model::{
    find_model, model_from_header, rewrite_model, ModelPattern, ModelSpan, MAX_MODEL_LEN,
};
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(Value::String("model".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![Just("model".to_string()), any::<String>()],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// JSON whitespace, as clients and SDKs write it.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

/// A key that is not `model` however it is spelled.
fn other_key() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("not model", |k| k != "model")
}

/// A model name a client could send: no control characters.
fn model_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:/-]{1,40}",
        any::<String>().prop_filter("no control chars", |s| !s.chars().any(char::is_control)),
    ]
}

/// A request body: a JSON object written by hand (any key order, any spacing,
/// `model` encoded plainly or with every character `\u`-escaped), with the model
/// at a random position among other members (some holding nested `model` keys).
fn body_with_model() -> impl Strategy<Value = (Vec<u8>, String)> {
    (
        model_name(),
        any::<bool>(),
        prop::collection::vec((other_key(), json_value(), ws(), ws()), 0..5),
        any::<prop::sample::Index>(),
        ws(),
        ws(),
    )
        .prop_map(|(model, escape, members, at, lead, trail)| {
            let mut parts: Vec<String> = members
                .iter()
                .map(|(k, v, a, b)| format!("{a}{}{b}:{a}{v}{b}", Value::String(k.clone())))
                .collect();
            let value = if escape {
                let mut s = String::from("\"");
                for unit in model.encode_utf16() {
                    s.push_str(&format!("\\u{unit:04x}"));
                }
                s.push('"');
                s
            } else {
                Value::String(model.clone()).to_string()
            };
            parts.insert(at.index(parts.len() + 1), format!("\"model\" : {value}"));
            (
                format!("{lead}{{{}}}{trail}", parts.join(",")).into_bytes(),
                model,
            )
        })
}

fn check_span(body: &[u8], span: &ModelSpan) -> Result<(), TestCaseError> {
    prop_assert!(
        span.start < span.end && span.end <= body.len(),
        "span {span:?} outside {} bytes",
        body.len()
    );
    prop_assert_eq!(body[span.start], b'"');
    prop_assert_eq!(body[span.end - 1], b'"');
    prop_assert!(!span.value.chars().any(char::is_control));
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases())]

    #[test]
    fn arbitrary_bytes_never_panic_the_model_scanner(body in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(Some(span)) = find_model(&body) {
            check_span(&body, &span)?;
        }
    }

    #[test]
    fn json_shaped_soup_never_panics_the_model_scanner(
        parts in prop::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\"model\""),
                Just("\"gpt-4o\""), Just("\"\\u00"), Just("\\ud800"), Just("\""), Just("1e999"),
                Just("-0.5"), Just("null"), Just(" "), Just("\\"), Just("tru"),
            ],
            0..60,
        ),
    ) {
        let body = parts.concat().into_bytes();
        if let Ok(Some(span)) = find_model(&body) {
            check_span(&body, &span)?;
        }
    }

    #[test]
    fn the_model_is_found_wherever_it_sits((body, model) in body_with_model()) {
        let span = find_model(&body)
            .map_err(|e| TestCaseError::fail(format!("{e} in {}", String::from_utf8_lossy(&body))))?
            .ok_or_else(|| TestCaseError::fail("model not found"))?;
        check_span(&body, &span)?;
        prop_assert_eq!(&span.value, &model);
    }

    #[test]
    fn rewriting_then_scanning_finds_the_new_model_and_nothing_else_moved(
        (body, _) in body_with_model(),
        new_model in model_name(),
    ) {
        let span = find_model(&body).ok().flatten().ok_or_else(|| TestCaseError::fail("model not found"))?;
        let out = rewrite_model(&body, &span, &new_model);
        let again = find_model(&out)
            .map_err(|e| TestCaseError::fail(format!("rewritten body does not scan: {e}")))?
            .ok_or_else(|| TestCaseError::fail("rewritten body lost its model"))?;
        prop_assert_eq!(&again.value, &new_model);
        prop_assert_eq!(again.start, span.start);
        prop_assert_eq!(&out[..span.start], &body[..span.start]);
        prop_assert_eq!(&out[again.end..], &body[span.end..]);
        prop_assert_eq!(out.len() - again.end, body.len() - span.end);
    }

    #[test]
    fn the_body_is_truncated_not_guessed_when_cut((body, _) in body_with_model(), cut in any::<prop::sample::Index>()) {
        let trimmed_len = body.trim_ascii_end().len();
        let at = cut.index(trimmed_len); // strictly before the closing brace
        prop_assert!(find_model(&body[..at]).is_err(), "a body cut at {at} of {} scanned", body.len());
    }

    #[test]
    fn rewriting_with_any_span_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..200),
        start in 0..260usize,
        len in 0..260usize,
        new_model in any::<String>(),
    ) {
        let span = ModelSpan { start, end: start.saturating_add(len), value: String::new() };
        let out = rewrite_model(&body, &span, &new_model);
        if span.end > body.len() {
            prop_assert_eq!(out, body);
        }
    }

    #[test]
    fn header_model_names_are_bounded_and_clean(value in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Some(name) = model_from_header(&value) {
            prop_assert!((1..=MAX_MODEL_LEN).contains(&name.len()));
            prop_assert!(!name.chars().any(char::is_control));
        }
    }

    #[test]
    fn model_patterns_never_panic(pattern in any::<String>(), model in any::<String>()) {
        if let Ok(p) = ModelPattern::parse(&pattern) {
            let _ = p.matches(&model);
            if p.is_exact() {
                prop_assert_eq!(p.matches(&model), model == p.as_str());
            }
        }
    }

    #[test]
    fn globs_agree_with_a_reference_matcher(pattern in "[abé*?.-]{1,10}", model in "[abé.-]{0,14}") {
        let p = ModelPattern::parse(&pattern).map_err(TestCaseError::fail)?;
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        prop_assert_eq!(p.matches(&model), reference_glob(&chars(&pattern), &chars(&model)));
    }
}

/// Exponential but obviously right: `*` any run of characters, `?` exactly one.
fn reference_glob(p: &[char], n: &[char]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some(('*', rest)) => (0..=n.len()).any(|i| reference_glob(rest, &n[i..])),
        Some(('?', rest)) => !n.is_empty() && reference_glob(rest, &n[1..]),
        Some((c, rest)) => n.first() == Some(c) && reference_glob(rest, &n[1..]),
    }
}
