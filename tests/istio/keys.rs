//! The provider keys of the Istio example fit together: every provider with a
//! `credential` in `envoy/istio/gen/providers.yaml` has its SDS document in the Secret of
//! `credentials.yaml` (a generic secret named like the provider, in the format of the
//! demo's `envoy/credentials/*.yaml`), and `gateway-values.yaml` mounts that Secret
//! read-only, whole (no `subPath`, which never sees an update), at the `sds_file`
//! directory, which is also the watched directory. (In real Envoy, with these files in a
//! kubelet-style volume: `the_istio_examples_secret_keys_reach_only_their_provider_and_rotate`
//! in `envoy/gen/tests/failover.rs`.)

use super::core_kinds::is_secret;
use super::{helm_values, manifests, plugin_spec, read, str_at, GEN_PROVIDERS};
use serde_yaml::Value;
use std::collections::BTreeSet;

/// (provider, sds_file, watched directory) of every provider with a credential.
fn credentials() -> Vec<(String, String, String)> {
    let providers: Value = serde_yaml::from_str(&read(GEN_PROVIDERS)).unwrap();
    let mut out = Vec::new();
    for p in providers["providers"].as_sequence().unwrap() {
        let Some(c) = p.get("credential") else {
            continue;
        };
        let name = str_at(p, &["name"]).unwrap().to_string();
        let file = str_at(c, &["sds_file"]).unwrap().to_string();
        let dir = file.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap();
        let watched = str_at(c, &["watched_directory"]).map_or(dir, str::to_string);
        out.push((name, file, watched));
    }
    out
}

/// The demo's SDS document of `provider` with its key replaced by `key`: the format a
/// key file must have.
fn demo_format(provider: &str, key: &str) -> Value {
    let demo: Value =
        serde_yaml::from_str(&read(&format!("envoy/credentials/{provider}.yaml"))).unwrap();
    let mut doc = demo;
    let secret = &mut doc["resources"][0]["generic_secret"]["secret"];
    assert!(
        secret["inline_string"].is_string(),
        "the demo's key is inline"
    );
    secret["inline_string"] = Value::from(key);
    doc
}

#[test]
fn every_provider_key_is_in_the_secret_mounted_at_its_sds_file() {
    let creds = credentials();
    let names: Vec<&str> = creds.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["openai", "azure-openai"],
        "the example's keyed providers"
    );
    let docs = manifests();
    let secrets: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| is_secret(d))
        .collect();
    assert_eq!(secrets.len(), 1, "one Secret with the keys");
    let secret = secrets[0];
    let secret_name = str_at(secret, &["metadata", "name"]).unwrap();
    let data = secret["stringData"]
        .as_mapping()
        .expect("the keys as stringData");

    // The mount: the Secret, whole, read-only, at the sds_file directory.
    let values = &helm_values()[0].1;
    let volume = values["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| str_at(v, &["secret", "secretName"]) == Some(secret_name))
        .unwrap_or_else(|| panic!("no volume of the Secret {secret_name}"));
    let volume_name = str_at(volume, &["name"]).unwrap();
    let mounts: Vec<&Value> = values["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|m| str_at(m, &["name"]) == Some(volume_name))
        .collect();
    assert_eq!(mounts.len(), 1, "the key volume is mounted once");
    let mount = mounts[0];
    let mount_path = str_at(mount, &["mountPath"]).unwrap();
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "mounted read-only");
    assert!(
        mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
        "a subPath mount never sees a Secret update"
    );
    assert!(
        volume["secret"].get("items").is_none(),
        "every key of the Secret is a file of the mount"
    );
    // The chart labels the pod with what the WasmPlugin and EnvoyFilters select.
    assert_eq!(
        &values["labels"],
        &plugin_spec(&docs)["selector"]["matchLabels"],
        "the gateway installed with these values is the one the manifests select"
    );

    let mut used = BTreeSet::new();
    for (name, file, watched) in &creds {
        let (dir, key) = file.rsplit_once('/').unwrap();
        assert_eq!(
            dir, mount_path,
            "{name}: sds_file {file} is not in the mount"
        );
        assert_eq!(
            watched, mount_path,
            "{name}: the watched directory must be the mount (kubelet swaps `..data` there)"
        );
        let text = data
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name}: no {key} in the Secret {secret_name}"));
        let doc: Value = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{key}: {e}"));
        let resources = doc["resources"].as_sequence().expect("resources");
        assert_eq!(resources.len(), 1, "{key}: one secret");
        assert_eq!(
            str_at(&resources[0], &["name"]),
            Some(name.as_str()),
            "{key}: the secret is named like the provider (the injector asks for that name)"
        );
        let placeholder = str_at(
            &resources[0],
            &["generic_secret", "secret", "inline_string"],
        )
        .expect("an inline key");
        assert!(
            placeholder.starts_with("PLACEHOLDER"),
            "{key}: the shipped key must be a marked placeholder, not {placeholder:?}"
        );
        assert_eq!(
            doc,
            demo_format(name, placeholder),
            "{key}: not in the format of envoy/credentials/{name}.yaml"
        );
        used.insert(key.to_string());
    }
    let keys: BTreeSet<String> = data
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys, used,
        "every file of the Secret is some provider's key"
    );
}
