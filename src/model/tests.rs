use super::*;
use serde_json::Value;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// A chat request with a nested `"model"` before the top-level one, escapes,
/// unicode and every kind of value.
const CHAT: &str = r#"{
  "messages": [
    {"role": "system", "content": "You are \"helpful\".\nBe brief. \\o/ \u00e9\ud83d\ude80"},
    {"role": "user", "content": [{"type": "text", "text": "which model? {\"model\": \"fake\"}"}],
     "metadata": {"model": "nested-decoy", "tags": ["a", "b"], "n": -1.5e-3}}
  ],
  "temperature": 0.7,
  "max_tokens": 1024,
  "stream": true,
  "stop": null,
  "logit_bias": {},
  "tools": [],
  "model" : "gpt-4o-mini",
  "user": "Zoë 🚀"
}"#;

enum Want {
    /// `Ok(Some)` with this raw span text and decoded value.
    Found(&'static str, &'static str),
    Absent,
    Fails(ModelError),
}
use Want::{Absent, Fails, Found};

fn invalid(at: usize) -> Want {
    Fails(ModelError::Invalid { at })
}

fn check(name: &str, body: &[u8], want: &Want) {
    let got = find_model(body);
    match (want, got) {
        (Found(raw, value), Ok(Some(span))) => {
            assert_eq!(&body[span.start..span.end], raw.as_bytes(), "{name}: span");
            assert_eq!(span.value, *value, "{name}: value");
        }
        (Absent, Ok(None)) => {}
        (Fails(e), Err(got)) => assert_eq!(got, *e, "{name}"),
        (_, got) => panic!("{name}: unexpected {got:?}"),
    }
}

/// A top-level string `"model"` is found, however the JSON around it is written.
#[test]
fn finds_the_top_level_model_string() {
    check_all(&[
        (
            "plain",
            r#"{"model":"gpt-4o"}"#.into(),
            Found(r#""gpt-4o""#, "gpt-4o"),
        ),
        (
            "whitespace everywhere",
            " \r\n\t{ \n\"a\" :\t[ 1 , { } ] ,\r\n \"model\"\n:\n\"m\" \n}\n\t ".into(),
            Found(r#""m""#, "m"),
        ),
        (
            "realistic chat",
            CHAT.into(),
            Found(r#""gpt-4o-mini""#, "gpt-4o-mini"),
        ),
        (
            "nested model first",
            r#"{"messages":[{"model":"inner"}],"x":{"model":"obj"},"model":"outer"}"#.into(),
            Found(r#""outer""#, "outer"),
        ),
        (
            "escaped key",
            r#"{"mod\u0065l":"k"}"#.into(),
            Found(r#""k""#, "k"),
        ),
        (
            "key with escaped slash",
            r#"{"m\/x":1,"model":"s"}"#.into(),
            Found(r#""s""#, "s"),
        ),
        (
            "escapes in value",
            r#"{"model":"a\"b\\c\/d\u00e9"}"#.into(),
            Found(r#""a\"b\\c\/d\u00e9""#, "a\"b\\c/dé"),
        ),
        (
            "surrogate pair",
            r#"{"model":"\ud83d\ude80x"}"#.into(),
            Found(r#""\ud83d\ude80x""#, "🚀x"),
        ),
        (
            "raw unicode",
            r#"{"model":"模型-é🚀"}"#.into(),
            Found(r#""模型-é🚀""#, "模型-é🚀"),
        ),
        ("empty string", r#"{"model":""}"#.into(), Found(r#""""#, "")),
        (
            "duplicate key takes first",
            r#"{"model":"a","model":"b"}"#.into(),
            Found(r#""a""#, "a"),
        ),
        (
            "lone surrogate elsewhere is tolerated",
            r#"{"x":"\ud800","y":"\udc00\ud800\u0041","model":"m"}"#.into(),
            Found(r#""m""#, "m"),
        ),
    ]);
}

/// A missing, misspelt, non-string or control-character model is absent.
#[test]
fn a_missing_or_unusable_model_is_absent() {
    check_all(&[
        ("empty object", "{}".into(), Absent),
        ("empty object with space", " { \n } ".into(), Absent),
        ("no model", r#"{"messages":[{"model":"x"}]}"#.into(), Absent),
        ("key differs in case", r#"{"Model":"x"}"#.into(), Absent),
        (
            "key is a prefix",
            r#"{"mode":"x","models":"y"}"#.into(),
            Absent,
        ),
        (
            "key with trailing escape",
            r#"{"model\u0000":"x"}"#.into(),
            Absent,
        ),
        ("number", r#"{"model":4}"#.into(), Absent),
        ("null", r#"{"model":null}"#.into(), Absent),
        ("object", r#"{"model":{"name":"x"}}"#.into(), Absent),
        (
            "first non-string wins",
            r#"{"model":[],"model":"x"}"#.into(),
            Absent,
        ),
        ("escaped control", r#"{"model":"gpt\n4o"}"#.into(), Absent),
        ("escaped nul", r#"{"model":"gpt\u00004o"}"#.into(), Absent),
    ]);
}

/// A body that is not an object, or ends early, says which.
#[test]
fn non_objects_and_cut_bodies_fail_as_such() {
    check_all(&[
        (
            "top-level array",
            r#"[{"model":"x"}]"#.into(),
            Fails(ModelError::NotAnObject),
        ),
        (
            "top-level string",
            r#""model""#.into(),
            Fails(ModelError::NotAnObject),
        ),
        (
            "byte order mark",
            "\u{feff}{}".into(),
            Fails(ModelError::NotAnObject),
        ),
        ("empty body", "".into(), Fails(ModelError::Truncated)),
        (
            "only whitespace",
            " \n ".into(),
            Fails(ModelError::Truncated),
        ),
        (
            "unterminated string",
            r#"{"model":"gpt"#.into(),
            Fails(ModelError::Truncated),
        ),
    ]);
}

/// Malformed JSON fails at the byte where it goes wrong.
#[test]
fn malformed_json_fails_at_the_offending_byte() {
    check_all(&[
        ("trailing garbage", r#"{"model":"m"} x"#.into(), invalid(14)),
        ("two objects", r#"{}{}"#.into(), invalid(2)),
        ("trailing comma", r#"{"model":"m",}"#.into(), invalid(13)),
        ("missing colon", r#"{"model" "m"}"#.into(), invalid(9)),
        ("unquoted key", r#"{model:"m"}"#.into(), invalid(1)),
        (
            "raw newline in string",
            "{\"a\":\"x\ny\",\"model\":\"m\"}".into(),
            invalid(7),
        ),
        (
            "raw tab in model",
            "{\"model\":\"a\tb\"}".into(),
            invalid(11),
        ),
        ("bad escape", r#"{"a":"\x","model":"m"}"#.into(), invalid(7)),
        ("bad hex", r#"{"a":"\u12g4"}"#.into(), invalid(10)),
        (
            "lone surrogate in model",
            r#"{"model":"a\ud800b"}"#.into(),
            invalid(11),
        ),
        (
            "reversed pair in model",
            r#"{"model":"\ude80\ud83d"}"#.into(),
            invalid(10),
        ),
        ("leading zero", r#"{"a":01}"#.into(), invalid(6)),
        ("bare minus", r#"{"a":-}"#.into(), invalid(6)),
        ("dot without digits", r#"{"a":1.}"#.into(), invalid(7)),
        ("exponent without digits", r#"{"a":1e+}"#.into(), invalid(8)),
        ("misspelt literal", r#"{"a":nul}"#.into(), invalid(8)),
        ("mismatched brackets", r#"{"a":[1}"#.into(), invalid(7)),
        ("array as object", r#"{"a":{1}}"#.into(), invalid(6)),
        ("missing comma", r#"{"a":[1 2]}"#.into(), invalid(8)),
        ("single quotes", r#"{'model':'m'}"#.into(), invalid(1)),
    ]);
}

/// Each body gets what its case wants.
fn check_all(cases: &[(&str, String, Want)]) {
    for (name, body, want) in cases {
        check(name, body.as_bytes(), want);
    }
}

#[test]
fn rejects_invalid_utf8_in_strings() {
    check("in key", b"{\"\xff\":1}", &invalid(2));
    check("in value", b"{\"model\":\"a\xc3(\"}", &invalid(11));
    check("overlong", b"{\"a\":\"\xc0\xaf\"}", &invalid(6));
    check(
        "cut at end",
        b"{\"model\":\"\xe6\xa8",
        &Fails(ModelError::Truncated),
    );
    check(
        "cut before quote",
        b"{\"model\":\"\xe6\xa8\"}",
        &invalid(10),
    );
}

#[test]
fn deep_nesting_is_bounded() {
    let ok = format!(
        r#"{{"a":{}1{},"model":"m"}}"#,
        "[".repeat(512),
        "]".repeat(512)
    );
    check("512 levels", ok.as_bytes(), &Found(r#""m""#, "m"));
    let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(513), "]".repeat(513));
    check("513 levels", deep.as_bytes(), &invalid(5 + 512));
    let objects = format!(r#"{{"a":{}1{}}}"#, r#"{"b":"#.repeat(600), "}".repeat(600));
    assert!(matches!(
        find_model(objects.as_bytes()),
        Err(ModelError::Invalid { .. })
    ));
}

#[test]
fn every_prefix_of_a_request_is_truncated_not_a_wrong_span() {
    let body = CHAT.as_bytes();
    for cut in 0..body.len() {
        assert_eq!(
            find_model(&body[..cut]),
            Err(ModelError::Truncated),
            "cut at {cut}"
        );
    }
    let span = find_model(body).unwrap().unwrap();
    assert_eq!(span.value, "gpt-4o-mini");
}

#[test]
fn agrees_with_serde_json_on_valid_bodies() {
    let bodies = [
        CHAT.to_owned(),
        serde_json::json!({"model": "a\u{1}b", "x": [1, 2.5, {"model": 3}]}).to_string(),
        serde_json::json!({"messages": [], "model": "\"quoted\" \\ 😀"}).to_string(),
        serde_json::to_string_pretty(&serde_json::json!({"n": {"deep": [[[]]]}, "model": "p"}))
            .unwrap(),
    ];
    for body in &bodies {
        let v: Value = serde_json::from_str(body).unwrap();
        let got = find_model(body.as_bytes()).unwrap().map(|s| s.value);
        let want = v["model"]
            .as_str()
            .filter(|m| !m.chars().any(char::is_control));
        assert_eq!(got.as_deref(), want, "{body}");
    }
}

#[test]
fn rewrite_changes_only_the_model() {
    let bodies = [
        CHAT,
        r#"{"model":"a"}"#,
        "{ \"model\" :\n \"gpt\\u002d4o\"  , \"x\": 1 }",
    ];
    let names = [
        "claude-3-5-sonnet",
        "",
        "a\"b\\c",
        "line\nbreak\ttab\u{1}\u{1f}",
        "модель 🚀",
        "x/y",
    ];
    for body in bodies {
        let span = find_model(body.as_bytes()).unwrap().unwrap();
        for name in names {
            let out = rewrite_model(body.as_bytes(), &span, name);
            let new_span = find_model(&out).map(|s| s.map(|s| s.value));
            // Names with control characters are written faithfully but not read back.
            let readable = !name.chars().any(char::is_control);
            assert_eq!(new_span, Ok(readable.then(|| name.to_owned())), "{name:?}");
            assert_eq!(&out[..span.start], &body.as_bytes()[..span.start]);
            let tail = &body.as_bytes()[span.end..];
            assert_eq!(&out[out.len() - tail.len()..], tail);
            let mut want: Value = serde_json::from_str(body).unwrap();
            want["model"] = Value::String(name.to_owned());
            assert_eq!(
                serde_json::from_slice::<Value>(&out).unwrap(),
                want,
                "{name:?}"
            );
        }
    }
}

#[test]
fn rewrite_escapes_like_json() {
    let span = find_model(br#"{"model":"x"}"#).unwrap().unwrap();
    let cases = [
        ("plain", r#"{"model":"plain"}"#),
        ("q\"b\\", r#"{"model":"q\"b\\"}"#),
        ("\n\r\t\u{8}\u{c}", r#"{"model":"\n\r\t\b\f"}"#),
        ("\u{0}\u{1f}\u{7f}", "{\"model\":\"\\u0000\\u001f\u{7f}\"}"),
        ("é🚀", r#"{"model":"é🚀"}"#),
    ];
    for (name, want) in cases {
        let out = rewrite_model(br#"{"model":"x"}"#, &span, name);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{name:?}");
    }
}

#[test]
fn rewrite_with_a_foreign_span_leaves_the_body_alone() {
    let body = br#"{"model":"x"}"#;
    let spans = [(5, 100), (20, 30), (9, 3)];
    for (start, end) in spans {
        let span = ModelSpan {
            start,
            end,
            value: String::new(),
        };
        assert_eq!(
            rewrite_model(body, &span, "y"),
            body.to_vec(),
            "{start}..{end}"
        );
    }
}

#[test]
fn header_values_are_trimmed_and_checked() {
    let long = "m".repeat(MAX_MODEL_LEN);
    let too_long = "m".repeat(MAX_MODEL_LEN + 1);
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"gpt-4o", Some("gpt-4o")),
        (b"  claude-3 \t", Some("claude-3")),
        ("modèle-é".as_bytes(), Some("modèle-é")),
        (b"with space", Some("with space")),
        (long.as_bytes(), Some(long.as_str())),
        (too_long.as_bytes(), None),
        (b"", None),
        (b"   ", None),
        (b"gpt\x00", None),
        (b"gp\x1bt", None),
        (b"gpt\x7f", None),
        (b"\xff\xfe", None),
    ];
    for &(value, want) in cases {
        assert_eq!(model_from_header(value).as_deref(), want, "{value:?}");
    }
}

#[test]
fn errors_read_well() {
    assert_eq!(
        ModelError::Invalid { at: 7 }.to_string(),
        "request body is not valid JSON at byte 7"
    );
    assert!(ModelError::Truncated.to_string().contains("ends"));
    assert!(ModelError::NotAnObject
        .to_string()
        .contains("not a JSON object"));
}

mod soup;
