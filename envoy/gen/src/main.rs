//! `llm-breaker-gen --filter FILTER.json --providers PROVIDERS.yaml [--istio] [--template FILE] [--out FILE]`
//!
//! Writes the Envoy clusters (default), the Istio `EnvoyFilter` (`--istio`), or a whole
//! Envoy bootstrap from a template whose `# llm-breaker-gen: clusters` line is replaced
//! (`--template`). Exit status 2 with one line naming the field on bad input.

use llm_breaker_gen::{fill_template, generate, Format};
use std::process::ExitCode;

const USAGE: &str = "usage: llm-breaker-gen --filter FILTER.json --providers PROVIDERS.yaml [--istio | --template TEMPLATE.yaml] [--out FILE]";

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut filter, mut providers, mut template, mut out, mut istio) =
        (None, None, None, None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => filter = args.next(),
            "--providers" => providers = args.next(),
            "--template" => template = args.next(),
            "--out" => out = args.next(),
            "--istio" => istio = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(filter), Some(providers)) = (filter, providers) else {
        return Err(USAGE.to_string());
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let filter_json = read(&filter)?;
    let providers_yaml =
        String::from_utf8(read(&providers)?).map_err(|e| format!("{providers}: {e}"))?;
    let text = match (template, istio) {
        (Some(_), true) => return Err("--template and --istio exclude each other".into()),
        (Some(t), false) => {
            let t = String::from_utf8(read(&t)?).map_err(|e| format!("{t}: {e}"))?;
            fill_template(&t, &filter_json, &providers_yaml)
        }
        (None, true) => generate(&filter_json, &providers_yaml, Format::Istio),
        (None, false) => generate(&filter_json, &providers_yaml, Format::Envoy),
    }
    .map_err(|e| format!("llm-breaker-gen: {e}"))?;
    match out {
        Some(path) => std::fs::write(&path, text).map_err(|e| format!("{path}: {e}")),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
