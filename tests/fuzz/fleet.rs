//! The fleet's parsers of bytes from etcd: records under the prefix (written by other
//! versions, or by hand), the gateway's answers, base64, and the shared-data view.

use llm_breaker::fleet::etcd::{read_grant, read_range, read_txn};
use llm_breaker::fleet::{base64, FleetRecord, FleetState, RecordError, View};
use proptest::prelude::*;

/// JSON-ish soup around the record's own field names.
fn record_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("\"v\":1,".to_string()),
            Just("\"v\":2,".to_string()),
            Just("\"state\":\"open\",".to_string()),
            Just("\"until_ms\":".to_string()),
            Just("\"reason\":\"x\",".to_string()),
            Just("\"instance\":\"a\",".to_string()),
            Just("\"generation\":".to_string()),
            "[0-9]{1,22}",
            "-?[0-9.e+]{1,8}",
            ".{0,8}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

proptest! {
    #![proptest_config(crate::cases())]

    #[test]
    fn record_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = FleetRecord::decode(&bytes);
        let _ = View::decode(&bytes);
    }

    #[test]
    fn record_soup_decodes_to_a_record_or_an_error(bytes in record_soup()) {
        if let Ok(r) = FleetRecord::decode(&bytes) {
            prop_assert_eq!(r.v, 1);
            prop_assert_eq!(FleetRecord::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn records_round_trip(until in any::<u64>(), since in any::<u64>(), generation in any::<u64>(),
                          reason in "[a-z_]{0,40}", instance in "[A-Za-z0-9._:-]{0,60}", s in 0..3u8) {
        let state = [FleetState::Closed, FleetState::Open, FleetState::Isolated][usize::from(s)];
        let r = FleetRecord { v: 1, state, until_ms: until, since_ms: since, reason, instance, generation };
        prop_assert_eq!(FleetRecord::decode(&r.encode()), Ok(r.clone()));
        let mut other: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        other["v"] = 2.into();
        prop_assert_eq!(FleetRecord::decode(&serde_json::to_vec(&other).unwrap()), Err(RecordError::OtherVersion(2)));
    }

    #[test]
    fn gateway_answers_never_panic(status in prop::option::of(100u16..600), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_range(status, &body);
        let _ = read_txn(status, &body);
        let _ = read_grant(status, &body);
    }

    #[test]
    fn base64_round_trips_and_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), text in ".{0,64}") {
        prop_assert_eq!(base64::decode(&base64::encode(&bytes)), Some(bytes));
        let _ = base64::decode(&text);
    }
}
