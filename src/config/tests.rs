use super::*;
use crate::ids::{CellId, RouteId, UpstreamId};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const FULL: &str = r#"{
  "route_header": "x-llm-breaker-upstream",
  "routes": [
    {"name": "chat", "match": {"path_prefix": "/v1/"},
     "upstreams": ["openai", "azure-openai", "vllm"], "when_all_open": "reject"}
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
  "upstreams": {"vllm": {"breaker": {"consecutive_failures": 3}}}
}"#;

#[test]
fn the_documented_example_parses_with_overrides_merged() {
    let c = Config::parse(FULL.as_bytes()).unwrap();
    assert_eq!(c.routes[0].chain, UpstreamId::all(3).collect::<Vec<_>>());
    assert_eq!(c.upstreams[2].name, "vllm");
    assert_eq!(c.upstreams[2].breaker.consecutive_failures, 3);
    assert_eq!(c.upstreams[2].breaker.minimum_calls, 20);
    assert_eq!(c.upstreams[0].breaker.consecutive_failures, 5);
    assert_eq!(c.response_header.as_deref(), Some("x-llm-breaker"));
}

#[test]
fn one_route_is_a_complete_config_and_defaults_apply() {
    let c = Config::parse(br#"{"routes":[{"name":"r","upstreams":["a"]}]}"#).unwrap();
    let b = &c.upstreams[0].breaker;
    assert_eq!(c.route_header, "x-llm-breaker-upstream");
    assert_eq!(c.success_flush_ms, Millis(250));
    assert_eq!(b.consecutive_failures, 5);
    assert_eq!(b.window, WindowSpec::Seconds(60));
    assert_eq!(b.open.base_ms, Millis(30_000));
    assert_eq!(b.half_open.permitted_calls, 3);
    assert_eq!(b.failure.status, vec![500, 502, 503, 504, 529]);
    assert!(c.routes[0].matches("/anything"));
}

#[test]
fn routes_match_on_path_without_query() {
    let c = Config::parse(
        br#"{"routes":[{"name":"a","match":{"path":"/v1/models"},"upstreams":["x"]},
                       {"name":"b","match":{"path_prefix":"/v1/"},"upstreams":["y"]}]}"#,
    )
    .unwrap();
    assert_eq!(c.route_for("/v1/models?x=1").unwrap().1.name, "a");
    assert_eq!(c.route_for("/v1/chat/completions").unwrap().1.name, "b");
    assert!(c.route_for("/healthz").is_none());
}

#[test]
fn count_window_and_response_header_off() {
    let c = Config::parse(
        br#"{"response_header":"","routes":[{"name":"r","upstreams":["a"]}],
             "breaker":{"failure_rate":{"minimum_calls":5,"window":{"calls":50}}}}"#,
    )
    .unwrap();
    assert_eq!(c.upstreams[0].breaker.window, WindowSpec::Calls(50));
    assert_eq!(c.response_header, None);
}

#[test]
fn an_override_may_switch_the_window_kind() {
    let c = Config::parse(
        br#"{"routes":[{"name":"r","upstreams":["a"]}],
             "upstreams":{"a":{"breaker":{"failure_rate":{"minimum_calls":5,"window":{"calls":10}}}}}}"#,
    )
    .unwrap();
    assert_eq!(c.upstreams[0].breaker.window, WindowSpec::Calls(10));
}

#[test]
fn invalid_documents_and_routes_name_the_field() {
    let route = r#""routes":[{"name":"r","upstreams":["a"]}]"#;
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "configuration is empty"),
        ("   ".into(), "configuration is empty"),
        ("{".into(), "not valid JSON"),
        ("[]".into(), "JSON object"),
        ("{}".into(), "missing field `routes`"),
        (format!(r#"{{{route},"bogus":1}}"#), "unknown field `bogus`"),
        (
            r#"{"routes":[]}"#.into(),
            "`routes`: must list at least one route",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":[]}]}"#.into(),
            "`routes[0].upstreams`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a","a"]}]}"#.into(),
            "`routes[0].upstreams[1]`: duplicate upstream",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]},{"name":"r","upstreams":["b"]}]}"#.into(),
            "`routes[1].name`: duplicate route name",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a b"]}]}"#.into(),
            "`routes[0].upstreams[0]`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"],"when_all_open":"maybe"}]}"#.into(),
            "routes[0].when_all_open",
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path_prefix":"v1"},"upstreams":["a"]}]}"#.into(),
            "`routes[0].match.path_prefix`",
        ),
        (
            r#"{"routes":[{"name":"r","match":{"prefix":"/"},"upstreams":["a"]}]}"#.into(),
            "routes[0].match.prefix",
        ),
    ];
    assert_all_rejected(&cases);
}

#[test]
fn invalid_breaker_settings_name_the_field() {
    let route = r#""routes":[{"name":"r","upstreams":["a"]}]"#;
    let cases: Vec<(String, &str)> = vec![
        (
            format!(r#"{{{route},"breaker":{{"failure_rate":{{"threshold":1.5}}}}}}"#),
            "`breaker.failure_rate.threshold`: must be above 0 and at most 1, got 1.5",
        ),
        (
            format!(r#"{{{route},"breaker":{{"failure_rate":{{"threshold":0}}}}}}"#),
            "`breaker.failure_rate.threshold`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"consecutive_failures":"five"}}}}"#),
            "breaker.consecutive_failures",
        ),
        (
            format!(r#"{{{route},"breaker":{{"consecutive_failures":-1}}}}"#),
            "breaker.consecutive_failures",
        ),
        (
            format!(
                r#"{{{route},"breaker":{{"failure_rate":{{"window":{{"seconds":10,"calls":10}}}}}}}}"#
            ),
            "`breaker.failure_rate.window`: must be exactly one",
        ),
        (
            format!(r#"{{{route},"breaker":{{"failure_rate":{{"window":{{"calls":5000}}}}}}}}"#),
            "`breaker.failure_rate.window.calls`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"open":{{"base_ms":5000,"max_ms":1000}}}}}}"#),
            "`breaker.open.max_ms`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"open":{{"multiplier":0.5}}}}}}"#),
            "`breaker.open.multiplier`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"open":{{"jitter":1}}}}}}"#),
            "`breaker.open.jitter`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"half_open":{{"permitted_calls":0}}}}}}"#),
            "`breaker.half_open.permitted_calls`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"failure":{{"status":[700]}}}}}}"#),
            "`breaker.failure.status[0]`",
        ),
        (
            format!(r#"{{{route},"breaker":{{"failure":{{"rate_limited":[503]}}}}}}"#),
            "`breaker.failure.rate_limited`",
        ),
    ];
    assert_all_rejected(&cases);
}

#[test]
fn invalid_overrides_headers_and_limits_name_the_field() {
    let route = r#""routes":[{"name":"r","upstreams":["a"]}]"#;
    let cases: Vec<(String, &str)> = vec![
        (
            format!(r#"{{{route},"breaker":[]}}"#),
            "`breaker`: expected an object",
        ),
        (
            format!(
                r#"{{{route},"upstreams":{{"a":{{"breaker":{{"consecutive_failures":true}}}}}}}}"#
            ),
            "upstreams.a.breaker.consecutive_failures",
        ),
        (
            format!(r#"{{{route},"upstreams":{{"zzz":{{"breaker":{{}}}}}}}}"#),
            "`upstreams.zzz`: is not used by any route",
        ),
        (
            format!(r#"{{{route},"route_header":"X-Upper"}}"#),
            "`route_header`",
        ),
        (
            format!(r#"{{{route},"response_header":"x-llm-breaker-upstream"}}"#),
            "`response_header`: must differ",
        ),
        (
            format!(r#"{{{route},"breaker":{{"failure":{{"client_errors_as_failures":[503]}}}}}}"#),
            "`breaker.failure.client_errors_as_failures[0]`: must be a 4xx status, got 503",
        ),
        (
            format!(r#"{{{route},"breaker":{{"rate_limit":{{"max_open_ms":0}}}}}}"#),
            "`breaker.rate_limit.max_open_ms`: must be between 1 and 86400000, got 0",
        ),
        (
            format!(r#"{{{route},"breaker":{{"rate_limit":{{"trip":true}}}}}}"#),
            "`breaker.rate_limit.trip`: unknown field `trip`",
        ),
        (
            format!(r#"{{{route},"in_band":{{"max_scan_bytes":99999999999}}}}"#),
            "`in_band.max_scan_bytes`: must be between 0 and 16777216",
        ),
    ];
    assert_all_rejected(&cases);
}

#[test]
fn failover_and_role_default_to_today_and_parse_both_ways() {
    let c = Config::parse(br#"{"routes":[{"name":"r","upstreams":["a"]}]}"#).unwrap();
    assert_eq!(
        (c.failover, c.role),
        (Failover::NextRequest, Role::Downstream)
    );
    let c = Config::parse(
        br#"{"failover":"within_request","role":"upstream","routes":[{"name":"r","upstreams":["a","b"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        (c.failover, c.role),
        (Failover::WithinRequest, Role::Upstream)
    );
    assert_eq!(c.attempt_upstream_header, None);
    let c = Config::parse(
        br#"{"failover":"within_request","role":"upstream","attempt_upstream_header":"x-llm-breaker-attempt-upstream","routes":[{"name":"r","upstreams":["a","b"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        c.attempt_upstream_header.as_deref(),
        Some("x-llm-breaker-attempt-upstream")
    );
}

#[test]
fn invalid_failover_and_role_name_the_field() {
    let route = r#""routes":[{"name":"r","upstreams":["a"]}]"#;
    let long = r#""routes":[{"name":"r","upstreams":["a","b","c","d","e","f","g","h","i"]}]"#;
    let cases: Vec<(String, &str)> = vec![
        (
            format!(r#"{{{route},"failover":"sometimes"}}"#),
            "`failover`: unknown variant `sometimes`",
        ),
        (format!(r#"{{{route},"failover":1}}"#), "`failover`"),
        (
            format!(r#"{{{route},"role":"sidecar"}}"#),
            "`role`: unknown variant `sidecar`",
        ),
        (
            format!(r#"{{{route},"role":"upstream"}}"#),
            "`role`: `upstream` and `upstream_log` run only with `failover: \"within_request\"`",
        ),
        (
            format!(r#"{{{route},"role":"upstream_log"}}"#),
            "`role`: `upstream` and `upstream_log` run only",
        ),
        (
            format!(r#"{{{route},"role":"upstream","failover":"next_request"}}"#),
            "`role`",
        ),
        (
            format!(r#"{{{long},"failover":"within_request"}}"#),
            "`routes[0].upstreams`: at most 8 upstreams",
        ),
        (
            format!(
                r#"{{{route},"failover":"within_request","role":"upstream","attempt_upstream_header":"X-Up"}}"#
            ),
            "`attempt_upstream_header`",
        ),
        (
            format!(r#"{{{route},"failover":"within_request","attempt_upstream_header":"x-up"}}"#),
            "`attempt_upstream_header`: only with `role: \"upstream\"`",
        ),
    ];
    assert_all_rejected(&cases);
    // Nine upstreams are fine for next_request.
    assert!(Config::parse(format!("{{{long}}}").as_bytes()).is_ok());
}

/// Each config is refused naming what its case wants.
fn assert_all_rejected(cases: &[(String, &str)]) {
    for (json, want) in cases {
        assert_rejected(json, want);
    }
}

/// `json` is refused with one line that starts as every config error does and
/// contains `want`.
fn assert_rejected(json: &str, want: &str) {
    let err = Config::parse(json.as_bytes()).expect_err(json).to_string();
    assert!(
        err.contains(want),
        "config {json}\n  error {err}\n  wanted {want}"
    );
    assert!(err.starts_with("invalid configuration: "), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn model_routes_chain_rewrites_and_scoped_cells() {
    let c = Config::parse(
        br#"{"models":["gpt-4o-mini"],
             "routes":[
               {"name":"gpt","match":{"path_prefix":"/v1/","models":["gpt-4o*","o3"]},
                "upstreams":["openai",{"upstream":"azure","model":"gpt-4o-az"}]},
               {"name":"rest","upstreams":["vllm"]}],
             "upstreams":{"openai":{"breaker":{"scope":"upstream_and_model"}}}}"#,
    )
    .unwrap();
    // Known models: the explicit list, exact route names, rewrite targets.
    assert_eq!(c.models, ["gpt-4o-mini", "gpt-4o-az", "o3"]);
    let gpt = &c.routes[0];
    assert_eq!(gpt.chain_models, [None, Some("gpt-4o-az".to_string())]);
    assert!(gpt.matches_request("/v1/chat/completions", Some("gpt-4o-2024")));
    assert!(gpt.matches_request("/v1/chat/completions", Some("o3")));
    assert!(!gpt.matches_request("/v1/chat/completions", Some("o3-mini")));
    assert!(!gpt.matches_request("/v1/chat/completions", None));
    assert_eq!(
        c.route_for_request("/v1/x", Some("claude-3")).map(|r| r.0),
        Some(RouteId::new(1))
    );
    // openai: one cell per known model and one for the rest; the others one each.
    assert_eq!(c.cells.len(), 4 + 1 + 1);
    assert_eq!(
        c.cell(UpstreamId::new(0), Some("gpt-4o-mini")),
        CellId::new(0)
    );
    assert_eq!(c.cell(UpstreamId::new(0), Some("o3")), CellId::new(2));
    assert_eq!(
        c.cell(UpstreamId::new(0), Some("random-model-123")),
        CellId::new(3)
    );
    assert_eq!(c.cell(UpstreamId::new(0), None), CellId::new(3));
    assert_eq!(c.cells[3].model.as_deref(), Some("*"));
    assert_eq!(
        c.cell(UpstreamId::new(1), Some("gpt-4o-az")),
        CellId::new(4)
    );
    assert_eq!(
        c.cell(UpstreamId::new(2), Some("gpt-4o-mini")),
        CellId::new(5)
    );
    assert_eq!(
        UpstreamId::all(3)
            .map(|u| c.cells_of(u).map(CellId::index).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [vec![0, 1, 2, 3], vec![4], vec![5]]
    );
    assert!(c.uses_models());
    assert!(c.needs_body("/v1/chat/completions"));
    assert!(!c.needs_body("/other"));
}

#[test]
fn invalid_model_settings_name_the_field() {
    let cases = [
        (
            r#"{"routes":[{"name":"r","match":{"models":[]},"upstreams":["a"]}]}"#,
            "`routes[0].match.models`: must list at least one model",
        ),
        (
            r#"{"routes":[{"name":"r","match":{"models":[""]},"upstreams":["a"]}]}"#,
            "`routes[0].match.models[0]`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":[{"upstream":"a","model":"gpt-*"}]}]}"#,
            "`routes[0].upstreams[0].model`: must be a model name, not a pattern",
        ),
        (
            r#"{"models":["a","a"],"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`models[1]`: duplicate model",
        ),
        (
            r#"{"model":{"source":"query"},"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`model.source`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"breaker":{"scope":"model"}}"#,
            "`breaker.scope`",
        ),
        (
            r#"{"admin":{"enabled":true,"path_prefix":"admin"},"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`admin.path_prefix`: must be a path",
        ),
        (
            r#"{"admin":{"enabled":true,"path_prefix":"/"},"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`admin.path_prefix`",
        ),
        (
            r#"{"admin":{"enabled":true,"history":0},"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`admin.history`: must be between 1 and 1000, got 0",
        ),
        (
            r#"{"admission_cache_ms":101,"routes":[{"name":"r","upstreams":["a"]}]}"#,
            "`admission_cache_ms`: must be between 0 and 100, got 101",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"probe":{"path":"health"}}}}"#,
            "`upstreams.a.probe.path`: must start with '/'",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"probe":{"path":"/h","method":"DELETE"}}}}"#,
            "`upstreams.a.probe.method`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"probe":{"path":"/h","interval_ms":10}}}}"#,
            "`upstreams.a.probe.interval_ms`: must be between 100 and 3600000, got 10",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"probe":{"path":"/h","expect_status":[]}}}}"#,
            "`upstreams.a.probe.expect_status`",
        ),
        (
            r#"{"routes":[{"name":"r","upstreams":["a"]}],"upstreams":{"a":{"probe":{"path":"/h","headers":{"X-Bad":"v"}}}}}"#,
            "`upstreams.a.probe.headers.X-Bad`",
        ),
    ];
    for (json, want) in cases {
        assert_rejected(json, want);
    }
    let many: Vec<String> = (0..=MAX_MODELS).map(|i| format!("\"m{i}\"")).collect();
    let json = format!(
        r#"{{"models":[{}],"routes":[{{"name":"r","upstreams":["a"]}}]}}"#,
        many.join(",")
    );
    assert_rejected(&json, "`models`: at most 64");
}

#[test]
fn a_probe_gets_its_pseudo_headers_and_a_host_override() {
    let c = Config::parse(
        br#"{"routes":[{"name":"r","upstreams":["openai","b"]}],
             "upstreams":{"openai":{"probe":{"method":"POST","path":"/v1/chat/completions",
               "headers":{"host":"api.openai.com","content-type":"application/json"},"body":"{}"}}}}"#,
    )
    .unwrap();
    let p = c.upstreams[0].probe.as_ref().unwrap();
    let h: Vec<(&str, &str)> = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        h,
        [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "api.openai.com"),
            ("content-type", "application/json"),
        ]
    );
    assert_eq!(
        (
            p.expect_status.as_slice(),
            p.timeout_ms.get(),
            p.interval_ms.get()
        ),
        (&[200][..], 5000, 5000)
    );
    assert_eq!(p.body, b"{}");
    assert!(c.upstreams[1].probe.is_none());
    assert!(c.admin.is_none(), "admin endpoints are off by default");
}

mod sections;
