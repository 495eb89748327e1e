//! The Prometheus alerts (`envoy/prometheus/alerts.yaml`) and the Grafana dashboard
//! (`envoy/grafana/llm-breaker.json`) against what the filter really exports: every
//! `llm_breaker_*` name they use must show up in Envoy's `/stats/prometheus` (with the
//! example `stats_tags`) after a breaker has tripped, counters where they are rated (or
//! the `_bucket` series of a histogram).
//! Also checks their shape (severity, annotations, `for:`, the datasource variable) and,
//! with promtool, that every dashboard query parses. `make alerts-test` runs this after
//! `promtool check rules` and `promtool test rules`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::envoy::Envoy;
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

const ALERTS: &str = "envoy/prometheus/alerts.yaml";
const DASHBOARD: &str = "envoy/grafana/llm-breaker.json";
/// Label names (from the stats_tags), not metrics.
const LABELS: [&str; 2] = ["llm_breaker_upstream", "llm_breaker_route"];

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn alerts() -> Yaml {
    serde_yaml::from_str(&read(ALERTS)).expect("alerts.yaml is YAML")
}

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every alerting rule of alerts.yaml.
fn rules(doc: &Yaml) -> Vec<&Yaml> {
    let groups = doc["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

fn alert_exprs(doc: &Yaml) -> Vec<String> {
    rules(doc)
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect()
}

/// Every PromQL query of the dashboard: panel targets' `expr` and the variables' queries.
fn dashboard_exprs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Json::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

fn all_dashboard_exprs() -> Vec<String> {
    let mut out = Vec::new();
    dashboard_exprs(&dashboard(), &mut out);
    out
}

/// `llm_breaker_*` identifiers in `expr`, each with whether it is the direct argument
/// of `rate(` or `increase(` (so must be a counter).
fn names(expr: &str) -> Vec<(String, bool)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = expr[i..].find("llm_breaker_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && ident(b[end]) {
            end += 1;
        }
        if start == 0 || !ident(b[start - 1]) {
            let before = &expr[..start];
            let rated = before.ends_with("rate(") || before.ends_with("increase(");
            out.push((expr[start..end].to_string(), rated));
        }
        i = end;
    }
    out
}

fn promtool() -> String {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool not found — run `make alerts-test` (it installs Debian's prometheus package)"
    );
    "promtool".into()
}

#[test]
fn alert_rules_have_severity_annotations_and_for() {
    let doc = alerts();
    let rules = rules(&doc);
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for want in [
        "LLMBreakerUpstreamOpenTooLong",
        "LLMBreakerRouteAllUpstreamsOpen",
        "LLMBreakerUpstreamFlapping",
        "LLMBreakerUpstreamIsolated",
        "LLMBreakerUpstreamSlowFirstByte",
        "LLMBreakerFleetEtcdUnreachable",
    ] {
        assert!(names.contains(want), "{ALERTS} has no alert {want}");
    }
    for r in rules {
        let name = r["alert"].as_str().expect("only alerting rules");
        assert!(r["for"].as_str().is_some(), "{name}: no `for:`");
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        for a in ["summary", "description"] {
            let text = r["annotations"][a].as_str().unwrap_or_default();
            // Fleet alerts are per Envoy, not per upstream: they name the instance.
            let names_it = text.contains("{{ $labels.llm_breaker_")
                || (name.starts_with("LLMBreakerFleet") && text.contains("{{ $labels.instance }}"));
            assert!(
                names_it,
                "{name}: annotation {a} does not name the upstream or route: {text:?}"
            );
        }
    }
}

#[test]
fn dashboard_uses_the_datasource_variable_and_maps_states() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |n: &str| vars.iter().find(|v| v["name"] == n);
    let ds = var("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let up = var("upstream").expect("an upstream variable");
    assert!(
        up["definition"].as_str().is_some_and(
            |q| q.starts_with("label_values(") && q.ends_with(", llm_breaker_upstream)")
        ),
        "$upstream is not built from label values: {up}"
    );

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut mapped = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (&g["x"], &g["y"], &g["w"], &g["h"]);
        let [x, y, w, h] = [x, y, w, h].map(|n| n.as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
        let exprs: String = targets.iter().filter_map(|t| t["expr"].as_str()).collect();
        if exprs.contains("llm_breaker_upstream_state{") {
            let m = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
            for (v, text) in [("0", "closed"), ("1", "open"), ("2", "half-open")] {
                assert_eq!(m[v]["text"], text, "{title}: value mapping of {v}");
            }
            mapped.push(p["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        mapped.iter().any(|t| t == "state-timeline"),
        "no state timeline of the breaker state: {mapped:?}"
    );

    // The panels the dashboard promises.
    let used: BTreeSet<String> = all_dashboard_exprs()
        .iter()
        .flat_map(|e| names(e))
        .map(|(n, _)| n)
        .collect();
    let mut want: Vec<String> = [
        "state",
        "isolated",
        "transitions_closed_to_open",
        "transitions_open_to_half_open",
        "transitions_half_open_to_closed",
        "transitions_half_open_to_open",
        "requests_admitted",
        "requests_failed_over",
        "requests_rejected",
        "slow_calls",
        "client_errors",
    ]
    .iter()
    .map(|m| format!("llm_breaker_upstream_{m}"))
    .collect();
    want.extend(
        [
            "status",
            "rate_limited",
            "connect_failure",
            "reset",
            "timeout",
            "in_band_error",
            "stream_truncated",
        ]
        .iter()
        .map(|c| format!("llm_breaker_upstream_failures_{c}")),
    );
    want.extend(
        ["ttfb_ms", "duration_ms"]
            .iter()
            .map(|h| format!("llm_breaker_upstream_{h}_bucket")),
    );
    for w in want {
        assert!(used.contains(&w), "the dashboard does not show {w}");
    }
    // p50 and p99 per upstream of both latency histograms.
    let exprs = all_dashboard_exprs();
    for h in ["ttfb_ms", "duration_ms"] {
        for q in ["0.5", "0.99"] {
            let want = format!("histogram_quantile({q}, sum by (llm_breaker_upstream, le) (rate(llm_breaker_upstream_{h}_bucket");
            assert!(
                exprs.iter().any(|e| e.starts_with(&want)),
                "no p{} panel of {h} per upstream",
                &q[2..]
            );
        }
    }
}

/// Every dashboard query, with Grafana's variables filled in, as a recording rule that
/// `promtool check rules` parses.
#[test]
fn dashboard_queries_parse() {
    let promtool = promtool();
    let exprs = all_dashboard_exprs();
    assert!(!exprs.is_empty(), "no queries found in {DASHBOARD}");
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let q = match e.strip_prefix("label_values(") {
            // label_values(selector, label): the selector is PromQL.
            Some(rest) => rest.rsplit_once(',').expect("label_values(sel, label)").0,
            None => e.as_str(),
        };
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$upstream", ".*")
            .replace("$instance", ".*")
            .replace("$route", ".*");
        assert!(!q.contains('$'), "unknown variable in {e}");
        let body: String = q.lines().map(|l| format!("      {l}\n")).collect();
        rules.push_str(&format!(
            "  - record: dashboard_query_{i}\n    expr: |\n{body}"
        ));
    }
    let file =
        std::env::temp_dir().join(format!("llm-breaker-dashboard-{}.yaml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_metric_of_the_alerts_and_the_dashboard_is_exported_by_the_filter() {
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let cfg = r#"{"routes":[{"name":"chat","match":{"path_prefix":"/v1/"},"upstreams":["openai","azure"]}],
                  "breaker":{"consecutive_failures":1,"open":{"base_ms":60000,"jitter":0}},
                  "fleet":{"etcd_cluster":"etcd-not-configured"}}"#;
    let e = Envoy::start_breaker(cfg, &[&a, &b]);
    // Trip openai; the next request fails over to azure.
    a.set(Behaviour::Status(529));
    for _ in 0..2 {
        e.send_recorded("/v1/chat/completions", &[], br#"{"model":"gpt-4o"}"#);
    }
    // Envoy shows histograms' samples once its stats flush (every 5 s) has merged them
    // (before that, empty).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut prom = e.prometheus();
    let last = r#"llm_breaker_upstream_duration_ms_count{llm_breaker_upstream="azure"} 1"#;
    while !prom.contains(last) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
        prom = e.prometheus();
    }
    assert!(
        prom.contains(r#"llm_breaker_upstream_state{llm_breaker_upstream="openai"} 1"#),
        "openai did not trip:\n{prom}"
    );
    // `# TYPE name counter|gauge`
    let kinds: BTreeMap<&str, &str> = prom
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .collect();

    let mut used: BTreeMap<String, (bool, BTreeSet<&str>)> = BTreeMap::new();
    for (file, exprs) in [
        (ALERTS, alert_exprs(&alerts())),
        (DASHBOARD, all_dashboard_exprs()),
    ] {
        for e in exprs {
            for (n, rated) in names(&e) {
                let u = used.entry(n).or_default();
                u.0 |= rated;
                u.1.insert(file);
            }
        }
    }
    assert!(used.len() > 20, "too few names found: {used:?}");
    let mut missing = Vec::new();
    for (name, (rated, files)) in &used {
        if LABELS.contains(&name.as_str()) {
            assert!(
                prom.contains(&format!("{{{name}=\"")) || prom.contains(&format!(",{name}=\"")),
                "label {name} (used in {files:?}) not in /stats/prometheus — stats_tags?"
            );
            continue;
        }
        // A histogram's series: `_bucket` (rated), `_sum`, `_count` of a `histogram`.
        let series = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| name.strip_suffix(x))
            .filter(|base| kinds.get(base) == Some(&"histogram"));
        if series.is_some() {
            assert!(
                prom.contains(&format!("\n{name}{{")),
                "{name} (used in {files:?}) has no series in /stats/prometheus"
            );
            continue;
        }
        match kinds.get(name.as_str()) {
            None => missing.push(format!("{name} (used in {files:?})")),
            Some(kind) => assert!(
                !rated || *kind == "counter",
                "{name} is rated in {files:?} but Envoy exports it as a {kind}"
            ),
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the filter: {missing:#?}\n/stats/prometheus:\n{prom}"
    );
    for gauge in [
        "llm_breaker_upstream_state",
        "llm_breaker_upstream_isolated",
    ] {
        assert_eq!(kinds.get(gauge), Some(&"gauge"), "{gauge}");
    }
    for histogram in [
        "llm_breaker_upstream_ttfb_ms",
        "llm_breaker_upstream_duration_ms",
    ] {
        assert_eq!(kinds.get(histogram), Some(&"histogram"), "{histogram}");
        for up in ["openai", "azure"] {
            let bucket =
                format!(r#"{histogram}_bucket{{llm_breaker_upstream="{up}",le="+Inf"}} 1"#);
            assert!(prom.contains(&bucket), "no {bucket}:\n{prom}");
        }
    }
}
