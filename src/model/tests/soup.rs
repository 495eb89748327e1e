//! Random and mutated bodies: `find_model` must never panic, and must agree with
//! serde_json on what is a JSON object.

use super::*;
use crate::backoff::noise;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Whatever `find_model` says about `body` must be consistent: a span is a JSON
/// string of the body that decodes to the value, and serde_json agrees on validity.
fn check_soup(body: &[u8]) {
    let got = find_model(body);
    if let Ok(Some(span)) = &got {
        let raw = &body[span.start..span.end];
        assert_eq!(
            serde_json::from_slice::<String>(raw).ok().as_ref(),
            Some(&span.value)
        );
    }
    let serde_ok = matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)));
    if serde_ok {
        assert!(
            got.is_ok(),
            "serde accepts {:?}: {got:?}",
            String::from_utf8_lossy(body)
        );
    }
    // serde_json rejects lone surrogates we tolerate outside the model.
    if got.is_ok() && !body.windows(2).any(|w| w == b"\\u") {
        assert!(
            serde_ok,
            "serde rejects {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn random_byte_soup_never_panics() {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b" ",
        b"\n",
        b"\\",
        b"\\\"",
        b"\\u",
        b"d83d",
        b"\\ude80",
        b"model",
        b"\"model\"",
        b"\"model\":",
        b"0",
        b"-1.5e3",
        b"true",
        b"null",
        b"x",
        b"\xc3\xa9",
        b"\xff",
        b"\x01",
    ];
    let mut below = noise(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut body = Vec::new();
        if below(2) == 0 {
            body.push(b'{');
        }
        for _ in 0..below(40) {
            if below(8) == 0 {
                body.push(below(256) as u8);
            } else {
                body.extend_from_slice(TOKENS[below(TOKENS.len())]);
            }
        }
        check_soup(&body);
    }
}

#[test]
fn mutated_requests_never_panic_or_disagree() {
    let mut below = noise(0x2545_f491_4f6c_dd1d);
    let base = CHAT.as_bytes();
    for _ in 0..3_000 {
        let mut body = base.to_vec();
        for _ in 0..1 + below(3) {
            let at = below(body.len());
            match below(3) {
                0 => body[at] = b"{}[]\":,\\ 0an"[below(12)],
                1 => {
                    body.remove(at);
                }
                _ => body.insert(at, below(256) as u8),
            }
        }
        check_soup(&body);
    }
}
