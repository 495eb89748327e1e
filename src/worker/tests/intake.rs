//! What routing takes from a request: the route, the model (header or body), when
//! to wait for the body, and the body a rewrite may replace.

use super::fakes::*;
use crate::ids::RouteId;
use crate::worker::intake::{Intake, RequestBody};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const T0: u64 = 1_000_000;
const BODY: &[u8] = br#"{"model":"gpt-4o","messages":[]}"#;

fn models(source: &str) -> String {
    format!(
        r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/","models":["gpt-*"]}},
            "upstreams":["openai",{{"upstream":"azure","model":"gpt-4o-az"}}]}}],
          "model":{{"source":"{source}","max_body_bytes":64}}}}"#
    )
}

fn no_header(_: &str) -> Option<Vec<u8>> {
    None
}

#[test]
fn without_models_the_path_alone_routes_and_nothing_else_is_read() {
    let w = worker(&config(&["openai"], "{}", ""), &Store::default(), T0);
    let read = |_: &str| -> Option<Vec<u8>> { panic!("no header read") };
    let want = Intake::Route {
        route: RouteId::new(0),
        model: None,
        body: RequestBody::None,
    };
    assert_eq!(w.intake_headers("/v1/chat", false, read), want);
}

#[test]
fn a_body_model_waits_for_the_body_within_the_limit() {
    let w = worker(&models("body"), &Store::default(), T0);
    assert_eq!(
        w.intake_headers("/v1/chat", false, no_header),
        Intake::AwaitBody
    );
    assert_eq!(
        w.intake_headers("/other", false, no_header),
        Intake::PassThrough
    );
    // (size, eos, enough)
    for (size, eos, enough) in [
        (10, false, false),
        (64, false, false),
        (65, false, true),
        (10, true, true),
    ] {
        assert_eq!(w.body_is_enough(size, eos), enough, "{size} {eos}");
    }
    let got = w.intake_body("/v1/chat", BODY.len(), true, no_header, |_| BODY.to_vec());
    let Intake::Route {
        model,
        body: RequestBody::Scanned(Some(span), _),
        ..
    } = got
    else {
        panic!("{got:?}");
    };
    assert_eq!(
        (model.as_deref(), span.value.as_str()),
        (Some("gpt-4o"), "gpt-4o")
    );
    // Over the limit: not read, and no model, so the model route does not match.
    let got = w.intake_body("/v1/chat", 65, false, no_header, |_| panic!("not read"));
    assert_eq!(got, Intake::PassThrough);
}

#[test]
fn a_header_model_routes_on_headers_and_reads_the_body_only_for_a_rewrite() {
    let w = worker(&models("header"), &Store::default(), T0);
    let header = |name: &str| (name == "x-llm-model").then(|| b" gpt-4o ".to_vec());
    // The chain rewrites the model, so routing waits for the body anyway.
    assert_eq!(
        w.intake_headers("/v1/chat", false, header),
        Intake::AwaitBody
    );
    let got = w.intake_body("/v1/chat", BODY.len(), true, header, |_| {
        panic!("not read yet")
    });
    let Intake::Route { model, body, .. } = got else {
        panic!("{got:?}");
    };
    assert_eq!(
        (model.as_deref(), &body),
        (Some("gpt-4o"), &RequestBody::Unread(BODY.len()))
    );
    let (old_len, new) = body.rewrite("gpt-4o-az", |_| BODY.to_vec()).unwrap();
    assert_eq!(
        (old_len, &new[..]),
        (BODY.len(), &br#"{"model":"gpt-4o-az","messages":[]}"#[..])
    );
}

#[test]
fn a_body_that_already_names_the_model_or_is_unavailable_is_not_rewritten() {
    let named = crate::model::find_model(BODY).unwrap();
    assert_eq!(
        RequestBody::Scanned(named, BODY.to_vec()).rewrite("gpt-4o", |_| unreachable!()),
        None
    );
    assert_eq!(
        RequestBody::None.rewrite("gpt-4o-az", |_| unreachable!()),
        None
    );
    let no_model = br#"{"messages":[]}"#.to_vec();
    assert_eq!(
        RequestBody::Unread(15).rewrite("gpt-4o-az", |_| no_model),
        None
    );
}
