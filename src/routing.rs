//! The routing decision: walk a route's failover chain and send the request to the
//! first upstream whose breaker admits it, or decide what to do when none does.

use crate::breaker::{Admission, Ticket};
use crate::config::{Route, WhenAllOpen};
use crate::ids::UpstreamId;

/// Why the chosen upstream was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The primary, breaker closed.
    Primary,
    /// A half-open probe (primary or not).
    Probe,
    /// An upstream later in the chain, because earlier ones did not admit.
    Failover,
    /// Every breaker was open and the route says `fail_open`: the primary anyway.
    FailOpen,
    /// Shadow mode: the primary, where enforcement would have chosen otherwise.
    Shadow,
}

impl Why {
    /// Name used in the response header and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Primary => "primary",
            Why::Probe => "probe",
            Why::Failover => "failover",
            Why::FailOpen => "fail_open",
            Why::Shadow => "shadow",
        }
    }
}

/// What to do with a request that matched a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Route it to `upstream`.
    Send {
        /// The chosen upstream.
        upstream: UpstreamId,
        /// The breaker ticket, if its outcome should be recorded.
        ticket: Option<Ticket>,
        /// Why this upstream.
        why: Why,
        /// Upstreams tried first that did not admit, in chain order.
        skipped: Vec<UpstreamId>,
    },
    /// Answer locally with 503.
    Reject {
        /// Seconds until the earliest breaker may admit again (at least 1).
        retry_after_s: u64,
        /// Every upstream of the chain.
        skipped: Vec<UpstreamId>,
    },
}

/// Walks `route`'s chain. `admit(upstream)` asks that upstream's breaker; `None`
/// means its state could not be read, and the request goes there untracked
/// rather than being failed over on a guess.
pub fn choose(
    route: &Route,
    now_ms: u64,
    mut admit: impl FnMut(UpstreamId) -> Option<Admission>,
) -> Decision {
    let mut skipped = Vec::new();
    let mut earliest = u64::MAX;
    for &upstream in &route.chain {
        match admit(upstream) {
            Some(Admission::Denied { retry_at_ms }) => {
                earliest = earliest.min(retry_at_ms);
                skipped.push(upstream);
            }
            admitted => {
                let ticket = match admitted {
                    Some(Admission::Admitted(t)) => Some(t),
                    _ => None,
                };
                let why = if ticket.is_some_and(|t| t.permit.is_some()) {
                    Why::Probe
                } else if skipped.is_empty() {
                    Why::Primary
                } else {
                    Why::Failover
                };
                return Decision::Send {
                    upstream,
                    ticket,
                    why,
                    skipped,
                };
            }
        }
    }
    match (route.when_all_open, route.chain.first()) {
        (WhenAllOpen::FailOpen, Some(&primary)) => Decision::Send {
            upstream: primary,
            ticket: None,
            why: Why::FailOpen,
            skipped,
        },
        _ => Decision::Reject {
            retry_after_s: earliest.saturating_sub(now_ms).div_ceil(1000).max(1),
            skipped,
        },
    }
}

/// Value of the response header: which upstream served and why.
pub fn describe(upstream: &str, why: Why, skipped: &[&str]) -> String {
    let mut s = format!("upstream={upstream}; reason={}", why.as_str());
    if !skipped.is_empty() {
        s.push_str("; skipped=");
        s.push_str(&skipped.join(","));
    }
    s
}

/// Shadow mode's response header value: `upstream=<served>; reason=shadow;
/// would=<upstream|none>; would_reason=<why|all_open>[; skipped=a,b]`, where the
/// `would*` and `skipped` parts say what enforcement would have done.
pub fn describe_shadow(served: &str, would: Option<&str>, why: &str, skipped: &[&str]) -> String {
    let mut s = format!(
        "upstream={served}; reason=shadow; would={}; would_reason={why}",
        would.unwrap_or("none")
    );
    if !skipped.is_empty() {
        s.push_str("; skipped=");
        s.push_str(&skipped.join(","));
    }
    s
}

/// The local reply body when every upstream is open, in OpenAI's error shape.
pub fn reject_body(route: &str, retry_after_s: u64) -> String {
    serde_json::json!({
        "error": {
            "type": "upstream_unavailable",
            "code": "circuit_open",
            "message": format!(
                "All upstreams of route '{route}' are unavailable (circuit breakers open); retry after {retry_after_s} s."
            ),
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn route(when: WhenAllOpen) -> Route {
        Route {
            name: "chat".into(),
            path_prefix: Some("/v1/".into()),
            path: None,
            chain: UpstreamId::all(3).collect(),
            chain_models: vec![None, None, None],
            models: vec![],
            when_all_open: when,
            pass_client_credentials: false,
        }
    }

    const U0: UpstreamId = UpstreamId::new(0);

    fn ids(v: &[usize]) -> Vec<UpstreamId> {
        v.iter().copied().map(UpstreamId::new).collect()
    }

    const OK: Option<Admission> = Some(Admission::Admitted(Ticket {
        epoch: 1,
        permit: None,
    }));

    fn denied(at: u64) -> Option<Admission> {
        Some(Admission::Denied { retry_at_ms: at })
    }

    #[test]
    fn healthy_primary_takes_the_request() {
        let d = choose(&route(WhenAllOpen::Reject), 0, |_| OK);
        assert!(matches!(
            d,
            Decision::Send {
                upstream: U0,
                why: Why::Primary,
                ..
            }
        ));
    }

    #[test]
    fn open_upstreams_are_skipped_in_chain_order() {
        let d = choose(&route(WhenAllOpen::Reject), 0, |u| {
            if u.index() < 2 {
                denied(5000)
            } else {
                OK
            }
        });
        assert_eq!(
            d,
            Decision::Send {
                upstream: UpstreamId::new(2),
                ticket: Some(Ticket {
                    epoch: 1,
                    permit: None
                }),
                why: Why::Failover,
                skipped: ids(&[0, 1])
            }
        );
    }

    #[test]
    fn a_probe_is_labelled_as_such() {
        let d = choose(&route(WhenAllOpen::Reject), 0, |_| {
            Some(Admission::Admitted(Ticket {
                epoch: 2,
                permit: Some(9),
            }))
        });
        assert!(matches!(
            d,
            Decision::Send {
                why: Why::Probe,
                ..
            }
        ));
    }

    #[test]
    fn all_open_rejects_with_time_to_the_earliest_half_open() {
        let d = choose(&route(WhenAllOpen::Reject), 1_000, |u| {
            denied([9_000, 3_500, 20_000][u.index()])
        });
        assert_eq!(
            d,
            Decision::Reject {
                retry_after_s: 3,
                skipped: ids(&[0, 1, 2])
            }
        );
    }

    #[test]
    fn all_open_with_fail_open_sends_to_the_primary_untracked() {
        let d = choose(&route(WhenAllOpen::FailOpen), 0, |_| denied(10));
        assert!(matches!(
            d,
            Decision::Send {
                upstream: U0,
                ticket: None,
                why: Why::FailOpen,
                ..
            }
        ));
    }

    #[test]
    fn unreadable_state_sends_untracked_rather_than_failing_over() {
        let d = choose(&route(WhenAllOpen::Reject), 0, |_| None);
        assert!(matches!(
            d,
            Decision::Send {
                upstream: U0,
                ticket: None,
                ..
            }
        ));
    }

    #[test]
    fn reject_body_is_openai_shaped_json() {
        let v: serde_json::Value = serde_json::from_str(&reject_body("chat", 7)).unwrap();
        assert_eq!(v["error"]["type"], "upstream_unavailable");
        assert!(v["error"]["message"].as_str().unwrap().contains("7 s"));
    }

    #[test]
    fn shadow_header_says_what_enforcement_would_have_done() {
        assert_eq!(
            describe_shadow("a", Some("b"), "failover", &["a"]),
            "upstream=a; reason=shadow; would=b; would_reason=failover; skipped=a"
        );
        assert_eq!(
            describe_shadow("a", None, "all_open", &["a", "b"]),
            "upstream=a; reason=shadow; would=none; would_reason=all_open; skipped=a,b"
        );
        assert_eq!(
            describe_shadow("a", Some("a"), "primary", &[]),
            "upstream=a; reason=shadow; would=a; would_reason=primary"
        );
    }

    #[test]
    fn header_lists_skipped_upstreams() {
        assert_eq!(
            describe("b", Why::Failover, &["a"]),
            "upstream=b; reason=failover; skipped=a"
        );
        assert_eq!(
            describe("a", Why::Primary, &[]),
            "upstream=a; reason=primary"
        );
    }
}
