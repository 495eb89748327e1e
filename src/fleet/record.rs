//! The fleet record of one breaker, as stored in etcd: small JSON with a version
//! field, so a record written by another version of the filter (or garbage written
//! by hand) is recognised and ignored instead of misread.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the record encoding; records with another `v` are ignored.
pub const VERSION: u32 = 1;

/// What the fleet says about a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetState {
    /// Traffic flows.
    Closed,
    /// Diverted until `until_ms`; then one Envoy of the fleet probes.
    Open,
    /// Forced open by an operator until released.
    Isolated,
}

impl FleetState {
    /// Name in logs and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            FleetState::Closed => "closed",
            FleetState::Open => "open",
            FleetState::Isolated => "isolated",
        }
    }
}

/// One breaker's fleet record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetRecord {
    /// Encoding version ([`VERSION`]).
    pub v: u32,
    /// The fleet's state.
    pub state: FleetState,
    /// End of the open period (unix ms; 0 unless open).
    pub until_ms: u64,
    /// When the state began on the Envoy that wrote it (unix ms): the later one wins.
    pub since_ms: u64,
    /// Why (the original reason, e.g. `consecutive_failures`).
    pub reason: String,
    /// The instance that wrote it.
    pub instance: String,
    /// Bumped on every write.
    pub generation: u64,
}

/// Why bytes under the prefix are not a record this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Not JSON of the record's shape.
    Garbage,
    /// A record of another encoding version.
    OtherVersion(u64),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Garbage => write!(f, "not a fleet record"),
            RecordError::OtherVersion(v) => {
                write!(f, "fleet record version {v}, this filter reads {VERSION}")
            }
        }
    }
}

/// Longest reason or instance kept from a record (longer ones are garbage).
const MAX_TEXT: usize = 128;

impl FleetRecord {
    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<FleetRecord, RecordError> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| RecordError::Garbage)?;
        match doc.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(RecordError::OtherVersion(v)),
            None => return Err(RecordError::Garbage),
        }
        let r: FleetRecord = serde_json::from_value(doc).map_err(|_| RecordError::Garbage)?;
        if r.reason.len() > MAX_TEXT || r.instance.len() > MAX_TEXT {
            return Err(RecordError::Garbage);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn open() -> FleetRecord {
        FleetRecord {
            v: VERSION,
            state: FleetState::Open,
            until_ms: 2000,
            since_ms: 1000,
            reason: "consecutive_failures".into(),
            instance: "envoy-a".into(),
            generation: 3,
        }
    }

    #[test]
    fn round_trips() {
        let r = open();
        let bytes = r.encode();
        assert_eq!(FleetRecord::decode(&bytes), Ok(r));
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains("\"state\":\"open\""));
    }

    #[test]
    fn other_versions_are_recognised() {
        let mut doc: serde_json::Value = serde_json::from_slice(&open().encode()).unwrap();
        doc["v"] = 2.into();
        doc["extra"] = "field of a newer version".into();
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            FleetRecord::decode(&bytes),
            Err(RecordError::OtherVersion(2))
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let long = format!(
            r#"{{"v":1,"state":"open","until_ms":1,"since_ms":1,"reason":"{}","instance":"a","generation":1}}"#,
            "x".repeat(500)
        );
        let cases: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe\x00garbage",
            b"null",
            b"[1,2]",
            b"{\"v\":\"1\"}",
            b"{\"v\":1}",
            b"{\"v\":1,\"state\":\"melted\",\"until_ms\":1,\"since_ms\":1,\"reason\":\"x\",\"instance\":\"a\",\"generation\":1}",
            b"{\"v\":1,\"state\":\"open\",\"until_ms\":-1,\"since_ms\":1,\"reason\":\"x\",\"instance\":\"a\",\"generation\":1}",
            long.as_bytes(),
        ];
        for bad in cases {
            assert_eq!(
                FleetRecord::decode(bad),
                Err(RecordError::Garbage),
                "{bad:?}"
            );
        }
        // Every prefix of a valid record too.
        let good = open().encode();
        for n in 0..good.len() {
            assert!(FleetRecord::decode(&good[..n]).is_err());
        }
    }
}
