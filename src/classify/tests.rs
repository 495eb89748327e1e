use super::flags::*;
use super::*;
use crate::inband::InBandError;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod limits;

fn policy() -> FailurePolicy {
    FailurePolicy {
        status: vec![500, 502, 503, 504, 529],
        rate_limited: vec![429],
        connect_failure: true,
        reset: true,
        timeout: true,
        in_band_error: true,
        stream_truncated: true,
        client_errors_as_failures: vec![],
    }
}

fn facts(status: Option<u16>, completed: bool, flags: u64) -> ResponseFacts {
    ResponseFacts {
        status,
        completed,
        flags,
        ttfb_ms: Some(10),
        in_band: InBand::Unknown,
        reset_in_ms: None,
        ended_by: EndedBy::Other,
    }
}

fn fail(c: FailureClass) -> Verdict {
    Verdict::Counted(Outcome {
        failure: Some(c),
        slow: false,
        reset_in_ms: None,
    })
}

const OK: Verdict = Verdict::Counted(Outcome {
    failure: None,
    slow: false,
    reset_in_ms: None,
});

#[test]
fn classifies_statuses_flags_and_truncation() {
    use FailureClass::*;
    let table: &[(Option<u16>, bool, u64, Verdict)] = &[
        (Some(200), true, 0, OK),
        (Some(201), true, 0, OK),
        (Some(500), true, 0, fail(Status)),
        (Some(502), true, 0, fail(Status)),
        (Some(529), true, 0, fail(Status)),
        (Some(429), true, 0, fail(RateLimited)),
        // Envoy's local replies, told apart by flags.
        (Some(503), true, CONNECT_FAILURE, fail(ConnectFailure)),
        (Some(503), true, NO_HEALTHY_UPSTREAM, fail(ConnectFailure)),
        (Some(504), true, UPSTREAM_TIMEOUT, fail(Timeout)),
        (Some(503), true, UPSTREAM_RESET, fail(Reset)),
        (Some(503), true, UPSTREAM_TERMINATION, fail(Reset)),
        (Some(503), true, NO_CLUSTER, Verdict::Ignored),
        (Some(503), true, UPSTREAM_OVERFLOW, Verdict::Ignored),
        (Some(429), true, RATE_LIMITED, Verdict::Ignored),
        // The client's own errors.
        (Some(400), true, 0, Verdict::ClientError(400)),
        (Some(401), true, 0, Verdict::ClientError(401)),
        (Some(404), true, 0, Verdict::ClientError(404)),
        (Some(413), true, 0, Verdict::ClientError(413)),
        (Some(422), true, 0, Verdict::ClientError(422)),
        // A stream that dies after the headers.
        (Some(200), false, UPSTREAM_RESET, fail(Reset)),
        (Some(200), false, UPSTREAM_TERMINATION, fail(Reset)),
        (Some(200), false, 0, fail(Reset)),
        (Some(200), false, DOWNSTREAM_TERMINATION, Verdict::Ignored),
        // No response at all: the client left.
        (None, false, DOWNSTREAM_TERMINATION, Verdict::Ignored),
        (None, false, 0, Verdict::Ignored),
    ];
    for (status, completed, f, want) in table {
        let got = classify(&policy(), 1000, &facts(*status, *completed, *f));
        assert_eq!(
            got, *want,
            "status {status:?} completed {completed} flags {f:#x}"
        );
    }
}

#[test]
fn disabled_classes_are_ignored_not_successes() {
    let p = FailurePolicy {
        connect_failure: false,
        timeout: false,
        reset: false,
        ..policy()
    };
    for f in [CONNECT_FAILURE, UPSTREAM_TIMEOUT, UPSTREAM_RESET] {
        assert_eq!(
            classify(&p, 1000, &facts(Some(503), true, f)),
            Verdict::Ignored
        );
    }
    assert_eq!(
        classify(&p, 1000, &facts(Some(200), false, 0)),
        Verdict::Ignored
    );
}

#[test]
fn slow_first_byte_marks_the_outcome_slow() {
    let mut f = facts(Some(200), true, 0);
    f.ttfb_ms = Some(1001);
    assert_eq!(
        classify(&policy(), 1000, &f),
        Verdict::Counted(Outcome {
            failure: None,
            slow: true,
            reset_in_ms: None,
        })
    );
    f.ttfb_ms = Some(1000);
    assert_eq!(classify(&policy(), 1000, &f), OK);
}

#[test]
fn all_lists_classes_in_discriminant_order() {
    for (i, c) in FailureClass::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
}

#[test]
fn flags_are_needed_only_for_5xx_missing_or_unfinished_responses() {
    assert!(!needs_flags(Some(200), true));
    assert!(!needs_flags(Some(404), true));
    assert!(needs_flags(Some(429), true));
    assert!(needs_flags(Some(503), true));
    assert!(needs_flags(Some(200), false));
    assert!(needs_flags(None, false));
}

#[test]
fn in_band_findings_count_only_on_otherwise_good_responses() {
    let mut f = facts(Some(200), true, 0);
    f.in_band = InBand::Error(InBandError::JsonErrorBody);
    assert_eq!(
        classify(&policy(), 1000, &f),
        fail(FailureClass::InBandError)
    );
    f.in_band = InBand::Truncated;
    assert_eq!(
        classify(&policy(), 1000, &f),
        fail(FailureClass::StreamTruncated)
    );
    // A stream cut by the upstream is a reset, whatever the body said so far.
    let mut cut = facts(Some(200), false, UPSTREAM_RESET);
    cut.in_band = InBand::Truncated;
    assert_eq!(classify(&policy(), 1000, &cut), fail(FailureClass::Reset));
    // Turned off: a plain success.
    let off = FailurePolicy {
        in_band_error: false,
        stream_truncated: false,
        ..policy()
    };
    f.in_band = InBand::Error(InBandError::JsonErrorBody);
    assert_eq!(classify(&off, 1000, &f), OK);
    // A client error stays a client error.
    let mut bad = facts(Some(400), true, 0);
    bad.in_band = InBand::Error(InBandError::JsonErrorBody);
    assert_eq!(classify(&policy(), 1000, &bad), Verdict::ClientError(400));
}

#[test]
fn chosen_client_errors_count_as_failures() {
    let p = FailurePolicy {
        client_errors_as_failures: vec![403],
        ..policy()
    };
    assert_eq!(
        classify(&p, 1000, &facts(Some(403), true, 0)),
        fail(FailureClass::Status)
    );
    assert_eq!(
        classify(&p, 1000, &facts(Some(401), true, 0)),
        Verdict::ClientError(401)
    );
}

#[test]
fn a_rate_limit_carries_its_reset_hint() {
    let mut f = facts(Some(429), true, 0);
    f.reset_in_ms = Some(2000);
    assert_eq!(
        classify(&policy(), 1000, &f),
        Verdict::Counted(Outcome {
            failure: Some(FailureClass::RateLimited),
            slow: false,
            reset_in_ms: Some(2000),
        })
    );
}
