//! The optional `fleet` section: breakers shared by several Envoys through etcd
//! ([`crate::fleet`]). Without it nothing changes.

use super::checks::range;
use super::error::invalid;
use super::{ConfigError, Millis};
use serde::Deserialize;

/// `fleet` as users write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// The Envoy cluster that reaches etcd's JSON gateway.
    #[serde(default)]
    pub etcd_cluster: String,
    /// Prefix of every key this filter writes in etcd.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// How often one worker of this Envoy reads the fleet records.
    #[serde(default = "default_sync_ms")]
    pub sync_ms: Millis,
    /// This Envoy's id in the fleet (default: Envoy's node id, else random per process).
    #[serde(default)]
    pub instance: Option<String>,
    /// Timeout of each etcd call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Millis,
    /// TTL of the etcd lease behind the fleet's prober key.
    #[serde(default = "default_prober_ttl_s")]
    pub prober_ttl_s: u32,
    /// How long another Envoy's published failure streak counts after its last failure.
    #[serde(default = "default_streak_ttl_ms")]
    pub streak_ttl_ms: Millis,
}

fn default_prefix() -> String {
    "/llm-breaker/".to_string()
}

fn default_sync_ms() -> Millis {
    Millis(1000)
}

fn default_timeout_ms() -> Millis {
    Millis(1000)
}

fn default_prober_ttl_s() -> u32 {
    30
}

fn default_streak_ttl_ms() -> Millis {
    Millis(30_000)
}

/// The validated `fleet` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Envoy cluster of etcd.
    pub etcd_cluster: String,
    /// Key prefix, ending in `/`.
    pub key_prefix: String,
    /// Sync period.
    pub sync_ms: Millis,
    /// Configured instance id, if any.
    pub instance: Option<String>,
    /// Per-call timeout.
    pub timeout_ms: Millis,
    /// Prober lease TTL in seconds.
    pub prober_ttl_s: u32,
    /// How long a published failure streak counts after its last failure.
    pub streak_ttl_ms: Millis,
}

fn id_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:~|+/".contains(&b))
}

impl TryFrom<RawFleet> for FleetConfig {
    type Error = ConfigError;

    fn try_from(raw: RawFleet) -> Result<Self, ConfigError> {
        if raw.etcd_cluster.is_empty() || raw.etcd_cluster.len() > 200 {
            return Err(invalid(
                "etcd_cluster",
                "required: the Envoy cluster that reaches etcd (1-200 chars)",
            ));
        }
        let p = &raw.key_prefix;
        if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 || p.len() > 128 || !id_chars(p)
        {
            return Err(invalid(
                "key_prefix",
                format!(
                    "must start and end with `/`, 2-128 chars of [A-Za-z0-9-_.:~|+/], got {p:?}"
                ),
            ));
        }
        if let Some(i) = &raw.instance {
            if i.is_empty() || i.len() > 128 || !id_chars(i) {
                return Err(invalid(
                    "instance",
                    format!("1-128 chars of [A-Za-z0-9-_.:~|+/], got {i:?}"),
                ));
            }
        }
        let ttl = u64::from(raw.prober_ttl_s);
        range("prober_ttl_s", ttl, 2, 3600)?;
        Ok(FleetConfig {
            sync_ms: raw.sync_ms.within("sync_ms", 50, 60_000)?,
            timeout_ms: raw.timeout_ms.within("timeout_ms", 10, 30_000)?,
            etcd_cluster: raw.etcd_cluster,
            key_prefix: raw.key_prefix,
            instance: raw.instance,
            prober_ttl_s: raw.prober_ttl_s,
            streak_ttl_ms: raw.streak_ttl_ms.within("streak_ttl_ms", 100, 3_600_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(fleet: &str) -> Result<Config, String> {
        let doc = format!(r#"{{"routes":[{{"name":"r","upstreams":["a"]}}],"fleet":{fleet}}}"#);
        Config::parse(doc.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_no_fleet() {
        let c = parse(r#"{"etcd_cluster":"etcd"}"#).unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(
            (
                f.key_prefix.as_str(),
                f.sync_ms.get(),
                f.timeout_ms.get(),
                f.prober_ttl_s,
                f.streak_ttl_ms.get()
            ),
            ("/llm-breaker/", 1000, 1000, 30, 30_000)
        );
        assert_eq!(f.instance, None);
        let c = Config::parse(br#"{"routes":[{"name":"r","upstreams":["a"]}]}"#).unwrap();
        assert!(c.fleet.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        for (fleet, field) in [
            (r#"{}"#, "`fleet.etcd_cluster`"),
            (
                r#"{"etcd_cluster":"e","key_prefix":"nope"}"#,
                "`fleet.key_prefix`",
            ),
            (
                r#"{"etcd_cluster":"e","key_prefix":"/a b/"}"#,
                "`fleet.key_prefix`",
            ),
            (r#"{"etcd_cluster":"e","sync_ms":10}"#, "`fleet.sync_ms`"),
            (
                r#"{"etcd_cluster":"e","timeout_ms":0}"#,
                "`fleet.timeout_ms`",
            ),
            (r#"{"etcd_cluster":"e","instance":""}"#, "`fleet.instance`"),
            (
                r#"{"etcd_cluster":"e","prober_ttl_s":1}"#,
                "`fleet.prober_ttl_s`",
            ),
            (
                r#"{"etcd_cluster":"e","streak_ttl_ms":50}"#,
                "`fleet.streak_ttl_ms`",
            ),
            (r#"{"etcd_cluster":"e","watch":true}"#, "`fleet.watch`"),
        ] {
            let e = parse(fleet).unwrap_err();
            assert!(e.contains(field), "{fleet}: {e}");
        }
    }
}
