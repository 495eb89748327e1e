//! The proxy's own limits against the provider's failures: every Envoy response
//! flag, and the `response.code_details` values measured in Envoy 1.40 for each
//! timeout (see docs/detection.md).

use super::super::flags::*;
use super::super::*;
use super::{fail, policy, OK};
use crate::inband::InBandError;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// The shared test facts, ended by `ended_by`.
fn facts(status: Option<u16>, completed: bool, flags: u64, ended_by: EndedBy) -> ResponseFacts {
    ResponseFacts {
        ended_by,
        ..super::facts(status, completed, flags)
    }
}

use EndedBy::{Other, TotalLimit};
use FailureClass::*;
use Verdict::{Ignored, ProxyLimit};

#[test]
fn a_total_limit_that_cuts_a_flowing_stream_is_the_proxys_not_the_providers() {
    // (status seen, completed, flags, code details, verdict): what Envoy 1.40 gave.
    let table: &[(Option<u16>, bool, u64, EndedBy, Verdict)] = &[
        // Route `timeout` after the provider's headers: UT, `response_timeout`.
        (Some(200), false, UPSTREAM_TIMEOUT, TotalLimit, ProxyLimit),
        // Route or connection-manager `max_stream_duration`: no flag at all.
        (Some(200), false, 0, TotalLimit, ProxyLimit),
        // A cluster's `max_stream_duration`: UMSDR.
        (
            Some(200),
            false,
            UPSTREAM_MAX_STREAM_DURATION,
            TotalLimit,
            ProxyLimit,
        ),
        (
            Some(200),
            false,
            UPSTREAM_MAX_STREAM_DURATION,
            Other,
            ProxyLimit,
        ),
        // The downstream connection's maximum duration: DT.
        (Some(206), false, DURATION_TIMEOUT, Other, ProxyLimit),
        // The same limits before any byte of the provider: Envoy's local 504 (or
        // nothing at all): the first byte was too late, a provider timeout.
        (Some(504), true, UPSTREAM_TIMEOUT, TotalLimit, fail(Timeout)),
        (Some(504), true, 0, TotalLimit, fail(Timeout)),
        (
            Some(504),
            true,
            UPSTREAM_MAX_STREAM_DURATION,
            TotalLimit,
            fail(Timeout),
        ),
        (None, false, UPSTREAM_TIMEOUT, TotalLimit, fail(Timeout)),
        // The provider's own error answer, cut by the limit: its status decides.
        (Some(503), false, UPSTREAM_TIMEOUT, TotalLimit, fail(Status)),
        (Some(429), false, 0, TotalLimit, fail(RateLimited)),
        (
            Some(400),
            false,
            UPSTREAM_TIMEOUT,
            TotalLimit,
            Verdict::ClientError(400),
        ),
        // Per-try timeout (`upstream_per_try_timeout`): a slow first byte.
        (Some(504), true, UPSTREAM_TIMEOUT, Other, fail(Timeout)),
        // Per-try idle timeout after the headers: a stall.
        (Some(200), false, UPSTREAM_TIMEOUT, Other, fail(Timeout)),
        // Stream idle timeout: a stall after the headers, or none came in time.
        (Some(200), false, STREAM_IDLE_TIMEOUT, Other, fail(Timeout)),
        (Some(504), true, STREAM_IDLE_TIMEOUT, Other, fail(Timeout)),
        // A reset mid-stream stays a reset.
        (Some(200), false, UPSTREAM_RESET, Other, fail(Reset)),
        (Some(200), false, 0, Other, fail(Reset)),
        // The provider's own 504, whole: a status failure.
        (Some(504), true, 0, Other, fail(Status)),
    ];
    for (status, completed, f, ended, want) in table {
        let got = classify(&policy(), 1000, &facts(*status, *completed, *f, *ended));
        assert_eq!(
            got, *want,
            "status {status:?} completed {completed} flags {f:#x} {ended:?}"
        );
    }
}

#[test]
fn every_response_flag_has_a_decision() {
    // A stream cut after 200 headers, and a local 503 before any: (flag, verdicts).
    let table: &[(u64, Verdict, Verdict)] = &[
        (FAILED_LOCAL_HEALTH_CHECK, Ignored, Ignored),
        (
            NO_HEALTHY_UPSTREAM,
            fail(ConnectFailure),
            fail(ConnectFailure),
        ),
        (UPSTREAM_TIMEOUT, fail(Timeout), fail(Timeout)),
        (LOCAL_RESET, Ignored, fail(Status)),
        (UPSTREAM_RESET, fail(Reset), fail(Reset)),
        (CONNECT_FAILURE, fail(ConnectFailure), fail(ConnectFailure)),
        (UPSTREAM_TERMINATION, fail(Reset), fail(Reset)),
        (UPSTREAM_OVERFLOW, Ignored, Ignored),
        (NO_ROUTE, Ignored, Ignored),
        (FAULT_INJECTED, Ignored, Ignored),
        (RATE_LIMITED, Ignored, Ignored),
        (UNAUTHORIZED_EXTERNAL, Ignored, Ignored),
        (RATE_LIMIT_SERVICE_ERROR, Ignored, Ignored),
        (DOWNSTREAM_TERMINATION, Ignored, fail(Status)),
        (STREAM_IDLE_TIMEOUT, fail(Timeout), fail(Timeout)),
        (INVALID_REQUEST_HEADERS, Ignored, Ignored),
        (DOWNSTREAM_PROTOCOL_ERROR, Ignored, Ignored),
        (UPSTREAM_MAX_STREAM_DURATION, ProxyLimit, fail(Timeout)),
        (FROM_CACHE, Ignored, Ignored),
        (NO_FILTER_CONFIG, Ignored, Ignored),
        (DURATION_TIMEOUT, ProxyLimit, fail(Timeout)),
        (UPSTREAM_PROTOCOL_ERROR, fail(Reset), fail(Reset)),
        (NO_CLUSTER, Ignored, Ignored),
        (OVERLOAD, Ignored, Ignored),
        (
            DNS_RESOLUTION_FAILED,
            fail(ConnectFailure),
            fail(ConnectFailure),
        ),
        (DROP_OVERLOAD, Ignored, Ignored),
        (DOWNSTREAM_REMOTE_RESET, Ignored, fail(Status)),
        (UNCONDITIONAL_DROP_OVERLOAD, Ignored, Ignored),
    ];
    for (f, cut, local) in table {
        let got = classify(&policy(), 1000, &facts(Some(200), false, *f, Other));
        assert_eq!(got, *cut, "cut stream, flags {f:#x}");
        let got = classify(&policy(), 1000, &facts(Some(503), true, *f, Other));
        assert_eq!(got, *local, "local 503, flags {f:#x}");
    }
    // URX alone names no cause: the last attempt's status or flags decide.
    let urx = |status, f| classify(&policy(), 1000, &facts(Some(status), true, f, Other));
    assert_eq!(urx(503, RETRY_LIMIT_EXCEEDED), fail(Status));
    assert_eq!(urx(200, RETRY_LIMIT_EXCEEDED), OK);
    assert_eq!(
        urx(504, RETRY_LIMIT_EXCEEDED | UPSTREAM_TIMEOUT),
        fail(Timeout)
    );
}

#[test]
fn an_error_seen_before_the_cut_still_counts() {
    let mut f = facts(Some(200), false, UPSTREAM_TIMEOUT, TotalLimit);
    f.in_band = InBand::Error(InBandError::JsonErrorBody);
    assert_eq!(classify(&policy(), 1000, &f), fail(InBandError));
    // A missing terminal event is what a cut looks like: not an error here.
    f.in_band = InBand::Truncated;
    assert_eq!(classify(&policy(), 1000, &f), ProxyLimit);
}

#[test]
fn a_late_first_byte_under_a_limit_is_ignored_when_timeouts_do_not_count() {
    let p = FailurePolicy {
        timeout: false,
        ..policy()
    };
    let late = facts(Some(504), true, 0, TotalLimit);
    assert_eq!(classify(&p, 1000, &late), Ignored);
    // The cut after the headers is the proxy's either way.
    let cut = facts(Some(200), false, UPSTREAM_TIMEOUT, TotalLimit);
    assert_eq!(classify(&p, 1000, &cut), ProxyLimit);
}

#[test]
fn code_details_name_the_total_limits_only() {
    for d in [
        "response_timeout",
        "max_duration_timeout",
        "upstream_max_stream_duration_reached",
    ] {
        assert_eq!(ended_by(d.as_bytes()), TotalLimit, "{d}");
    }
    for d in [
        "via_upstream",
        "upstream_per_try_timeout",
        "upstream_per_try_idle_timeout",
        "stream_idle_timeout",
        "upstream_reset_after_response_started{remote_reset}",
        "response_timeout ",
        "",
    ] {
        assert_eq!(ended_by(d.as_bytes()), Other, "{d:?}");
    }
}

#[test]
fn details_are_read_only_for_cut_streams_and_504s_without_a_decisive_flag() {
    let needs = |status, completed, f| needs_details(&facts(status, completed, f, Other));
    assert!(needs(Some(200), false, 0));
    assert!(needs(Some(200), false, UPSTREAM_TIMEOUT));
    assert!(needs(Some(504), true, UPSTREAM_TIMEOUT));
    assert!(needs(Some(504), true, 0));
    assert!(needs(None, false, 0));
    assert!(!needs(None, false, DOWNSTREAM_TERMINATION));
    assert!(!needs(Some(200), true, 0));
    assert!(!needs(Some(503), true, CONNECT_FAILURE));
    assert!(!needs(Some(200), false, UPSTREAM_RESET));
    assert!(!needs(Some(200), false, STREAM_IDLE_TIMEOUT));
    assert!(!needs(Some(200), false, UPSTREAM_MAX_STREAM_DURATION));
}
