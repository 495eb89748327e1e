//! Fleet-wide failure counting: each Envoy publishes its current failure streak per
//! breaker (`<prefix>streaks/<breaker>/<instance>`, small JSON with a version field)
//! and sums the others' fresh streaks with its own. Pure: the value codec, the
//! freshness rule and the trip decision; the sync round
//! ([`crate::worker::fleet`]) reads and writes the keys.

use super::record::VERSION;
use serde::{Deserialize, Serialize};

/// Longest streak a value may say (more is garbage).
pub const MAX_STREAK: u32 = 1_000_000;

/// Longest breaker name or instance kept from a value (longer ones are garbage).
const MAX_TEXT: usize = 256;

/// The etcd key of one instance's streak for one breaker.
pub fn streak_key(prefix: &str, name: &str, instance: &str) -> String {
    format!("{prefix}streaks/{name}/{instance}")
}

/// One instance's failure streak for one breaker, as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreakValue {
    /// Encoding version (the record's [`VERSION`]).
    pub v: u32,
    /// The breaker (`upstream` or `upstream|model`).
    pub breaker: String,
    /// The instance whose streak it is.
    pub instance: String,
    /// Failures in a row there (never 0: a streak of 0 is a deleted key).
    pub streak: u32,
    /// When the last of them happened (unix ms, the writer's clock).
    pub last_ms: u64,
}

impl StreakValue {
    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a value from untrusted bytes found at `key` under `prefix`: it must be
    /// this version's JSON and name the key it is stored at. The error says why not.
    pub fn decode(bytes: &[u8], prefix: &str, key: &[u8]) -> Result<StreakValue, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| "not a streak value".to_string())?;
        match doc.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(format!("streak version {v}, this filter reads {VERSION}")),
            None => return Err("not a streak value".to_string()),
        }
        let s: StreakValue =
            serde_json::from_value(doc).map_err(|_| "not a streak value".to_string())?;
        let sane = s.streak > 0
            && s.streak <= MAX_STREAK
            && s.breaker.len() <= MAX_TEXT
            && s.instance.len() <= MAX_TEXT
            && streak_key(prefix, &s.breaker, &s.instance).as_bytes() == key;
        if sane {
            Ok(s)
        } else {
            Err("not a streak value (or not the one its key names)".to_string())
        }
    }

    /// Whether this streak still counts at `now_ms`: its last failure happened at
    /// most `ttl_ms` ago (a clock ahead by up to `ttl_ms` is tolerated).
    pub fn fresh(&self, now_ms: u64, ttl_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) <= ttl_ms
            && self.last_ms <= now_ms.saturating_add(ttl_ms)
    }
}

/// This Envoy's streak for one breaker: `(streak, last failure ms)`, streak 0 when
/// none (its key is then deleted).
pub type Mine = (u32, u64);

/// Whether the published value (`None`: no key) differs from the local streak, so
/// the round must write (or delete) it.
pub fn needs_publish(mine: Mine, published: Option<&StreakValue>) -> bool {
    match published {
        None => mine.0 > 0,
        Some(p) => mine.0 == 0 || (p.streak, p.last_ms) != mine,
    }
}

/// The fleet's streak for one breaker: the local one plus the other instances'
/// fresh ones (saturating).
pub fn fleet_streak<'a>(
    local: u32,
    others: impl IntoIterator<Item = &'a StreakValue>,
    now_ms: u64,
    ttl_ms: u64,
) -> u32 {
    others
        .into_iter()
        .filter(|s| s.fresh(now_ms, ttl_ms))
        .fold(local, |sum, s| sum.saturating_add(s.streak))
}

/// Whether a closed breaker with rule `consecutive_failures` (0: off) trips on the
/// fleet's streak. Only when other instances contribute: a local streak alone at
/// the threshold has tripped the local breaker already.
pub fn trips(threshold: u32, local: u32, fleet: u32) -> bool {
    threshold > 0 && fleet > local && fleet >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const P: &str = "/llm-breaker/";

    fn value(instance: &str, streak: u32, last_ms: u64) -> StreakValue {
        StreakValue {
            v: VERSION,
            breaker: "openai".into(),
            instance: instance.into(),
            streak,
            last_ms,
        }
    }

    #[test]
    fn round_trips_at_its_own_key() {
        let s = value("b", 2, 1_000);
        let key = streak_key(P, "openai", "b");
        assert_eq!(key, "/llm-breaker/streaks/openai/b");
        assert_eq!(
            StreakValue::decode(&s.encode(), P, key.as_bytes()),
            Ok(s.clone())
        );
        // At another key (copied by hand, or another breaker's): not trusted.
        assert!(StreakValue::decode(&s.encode(), P, b"/llm-breaker/streaks/azure/b").is_err());
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        let key = streak_key(P, "openai", "b");
        let other = br#"{"v":2,"breaker":"openai","instance":"b","streak":1,"last_ms":1}"#;
        let e = StreakValue::decode(other, P, key.as_bytes()).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        for bad in [
            &b""[..],
            b"\xff\x00",
            b"null",
            b"{\"v\":1}",
            br#"{"v":1,"breaker":"openai","instance":"b","streak":0,"last_ms":1}"#,
            br#"{"v":1,"breaker":"openai","instance":"b","streak":-1,"last_ms":1}"#,
            br#"{"v":1,"breaker":"openai","instance":"b","streak":99999999,"last_ms":1}"#,
        ] {
            assert!(
                StreakValue::decode(bad, P, key.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stale_streaks_do_not_count() {
        let others = [
            value("b", 1, 1_000),
            value("c", 1, 9_000),
            value("d", 5, 90_000),
        ];
        // At 10 000 with a 5 s ttl: b is stale, c counts, d's clock is too far ahead.
        assert_eq!(fleet_streak(1, &others, 10_000, 5_000), 2);
        assert_eq!(fleet_streak(1, &others, 10_000, 100_000), 8);
    }

    #[test]
    fn trips_only_with_help_from_others() {
        assert!(trips(3, 1, 3));
        assert!(trips(3, 0, 4));
        assert!(!trips(3, 2, 2));
        assert!(!trips(3, 3, 3), "a local trip is the local breaker's");
        assert!(!trips(0, 1, 9), "rule off");
    }

    #[test]
    fn publishes_only_changes() {
        let p = value("a", 2, 500);
        assert!(!needs_publish((0, 0), None));
        assert!(needs_publish((1, 400), None));
        assert!(!needs_publish((2, 500), Some(&p)));
        assert!(needs_publish((3, 600), Some(&p)));
        assert!(needs_publish((0, 500), Some(&p)));
    }
}
