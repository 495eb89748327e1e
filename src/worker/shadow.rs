//! Shadow and off modes (`"mode"`), for a safe rollout and an emergency switch.
//!
//! **Shadow**: every breaker is asked exactly as under enforcement, so breakers,
//! metrics, logs, `status` and history behave as usual, but the request goes to its
//! route's primary unchanged: no failover, no model rewrite, no all-open 503, and
//! under `within_request` the aggregate of the primary alone (`llmb|<primary>`), so
//! Envoy retries nothing elsewhere either. The primary's outcome is recorded when its
//! breaker admitted the request (closed, or a half-open probe, so an open breaker
//! still closes through probes once the provider heals); while it denies, the request
//! goes there untracked, as a `fail_open` request does. A half-open permit that
//! enforcement would have used on another upstream is given back at once. Counters
//! (`requests_would_fail_over`, `requests_would_reject`) and the response header
//! (`reason=shadow; would=…`) say what enforcement would have done.
//!
//! **Off**: requests go to their route's primary; the filter reads no breaker,
//! records nothing and writes nothing but the route header (the Envoy route reads
//! its cluster from it). The admin endpoints still answer.

use super::intake::{Intake, RequestBody};
use super::metrics::{Metric, RouteMetric, UpstreamMetric};
use super::request::{entry_cell, Routed, Routing};
use super::within::{encode_tickets, within_decision, Attempt, Order, Plan, WithinRouting};
use super::{accounting, Metrics, Worker};
use crate::aggregate::aggregate_name;
use crate::breaker::Ticket;
use crate::config::{Failover, Route};
use crate::ids::{CellId, RouteId, UpstreamId};
use crate::routing::{self, Decision, Why};
use crate::store::{self, SharedStore};

/// What enforcement would have done with a request (shadow mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Would {
    /// The upstream it would have sent the request to (`None`: the all-open 503).
    pub upstream: Option<UpstreamId>,
    /// Why (`all_open` for the 503).
    pub why: &'static str,
    /// Upstreams it would have skipped.
    pub skipped: Vec<UpstreamId>,
}

impl Would {
    /// What `decision` (enforcement's) says.
    pub fn of(decision: &Decision) -> Would {
        match decision {
            Decision::Send {
                upstream,
                why,
                skipped,
                ..
            } => Would {
                upstream: Some(*upstream),
                why: why.as_str(),
                skipped: skipped.clone(),
            },
            Decision::Reject { skipped, .. } => Would {
                upstream: None,
                why: "all_open",
                skipped: skipped.clone(),
            },
        }
    }
}

/// Counts a shadow-mode request of `route`, sent to `primary`, that enforcement
/// would have handled as `d`: as enforcement counts when it would have sent it to
/// the primary too; otherwise the primary's `requests_admitted` and the
/// `requests_would_*` counters of the upstreams enforcement would have skipped
/// (and the route's, for a would-be 503).
pub fn account<M: Metrics + ?Sized>(m: &M, route: RouteId, primary: UpstreamId, d: &Decision) {
    let up = |u, metric| m.increment(Metric::Upstream(u, metric));
    match d {
        Decision::Send { upstream, .. } if *upstream == primary => {
            accounting::decision(m, route, d)
        }
        Decision::Send { skipped, .. } => {
            up(primary, UpstreamMetric::Admitted);
            for &s in skipped {
                up(s, UpstreamMetric::WouldFailOver);
            }
        }
        Decision::Reject { skipped, .. } => {
            up(primary, UpstreamMetric::Admitted);
            m.increment(Metric::Route(route, RouteMetric::WouldReject));
            for &s in skipped {
                up(s, UpstreamMetric::WouldReject);
            }
        }
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Shadow mode, `next_request`: sends the request to `r`'s primary whatever
    /// enforcement's `decision` says, with the primary's ticket if the primary is
    /// what enforcement chose.
    pub(super) fn route_shadow(
        &self,
        route: RouteId,
        r: &Route,
        model: Option<&str>,
        decision: Decision,
        now_ms: u64,
    ) -> Option<Routing<'_>> {
        let primary = *r.chain.first()?;
        account(&self.metrics, route, primary, &decision);
        let (ticket, why) = match &decision {
            Decision::Send {
                upstream,
                ticket,
                why,
                ..
            } if *upstream == primary => (*ticket, *why),
            Decision::Send {
                upstream, ticket, ..
            } => {
                let cell = entry_cell(&self.config, r, *upstream, model);
                self.give_back(cell, *ticket, now_ms);
                (None, Why::Shadow)
            }
            Decision::Reject { .. } => (None, Why::Shadow),
        };
        // (Sent to the primary as the primary: nothing was skipped.)
        let common = why == Why::Primary;
        let name = &self.config.upstream(primary)?.name;
        let shadow = (self.config.response_header.is_some() && !common)
            .then(|| self.describe_would(name, &Would::of(&decision)));
        let routed = Routed {
            upstream: primary,
            cell: entry_cell(&self.config, r, primary, model),
            ticket,
            why,
            skipped: Vec::new(),
            start_ms: now_ms,
            shadow,
        };
        Some(Routing::Send {
            routed,
            cluster: name,
            rewrite: None,
        })
    }

    /// Shadow mode, `within_request`: a plan of the primary alone (its ticket if it
    /// admitted), whatever enforcement's attempt order `o` says; permits of the
    /// other members are given back.
    pub(super) fn route_within_shadow(
        &self,
        route: RouteId,
        r: &Route,
        model: Option<&str>,
        o: Order,
        now_ms: u64,
    ) -> Option<WithinRouting<'_>> {
        let primary = *r.chain.first()?;
        let decision = within_decision(r, &o, now_ms);
        account(&self.metrics, route, primary, &decision);
        let mut members = o.order.into_iter();
        let first = match o.before_first {
            0 => members.next(),
            _ => None,
        };
        for a in members {
            self.give_back(a.cell, a.ticket, now_ms);
        }
        let attempt = first.unwrap_or(Attempt {
            upstream: primary,
            cell: entry_cell(&self.config, r, primary, model),
            ticket: None,
        });
        let why = match &decision {
            Decision::Send { upstream, why, .. } if *upstream == primary => *why,
            _ => Why::Shadow,
        };
        let name = self.config.upstream(primary)?.name.as_str();
        let order = vec![attempt];
        Some(WithinRouting::Send {
            cluster: aggregate_name([name]).into(),
            tickets: Some(encode_tickets(route, &order)),
            plan: Plan {
                order,
                why,
                skipped: Vec::new(),
                shadow: Some(Would::of(&decision)),
                start_ms: now_ms,
                route,
            },
        })
    }

    /// Shadow mode's response header value for a request `served` by an upstream
    /// (a name, or `none`).
    pub fn describe_would(&self, served: &str, would: &Would) -> String {
        let upstream = would
            .upstream
            .and_then(|u| self.config.upstream(u))
            .map(|u| u.name.as_str());
        routing::describe_shadow(served, upstream, would.why, &self.names(&would.skipped))
    }

    /// Gives back a half-open permit that no request will use.
    fn give_back(&self, cell: CellId, ticket: Option<Ticket>, now_ms: u64) {
        let Some(t) = ticket.filter(|t| t.permit.is_some()) else {
            return;
        };
        let (Some((_, up)), Some(rec)) = (self.upstream_of(cell), self.cell(cell)) else {
            return;
        };
        let r = store::update(&self.store, &rec.key, &up.breaker, now_ms, |b| b.release(t));
        self.report_update(cell, &r, now_ms);
    }

    /// Off mode, request headers: as [`Worker::intake_headers`], except that the
    /// body is never waited for when no route matches on models (it would only be
    /// read for a rewrite, which off mode doesn't do).
    pub fn intake_off(
        &self,
        path: &str,
        eos: bool,
        header_model: impl FnOnce(&str) -> Option<Vec<u8>>,
    ) -> Intake {
        if self.config.routes.iter().any(|r| !r.models.is_empty()) {
            return self.intake_headers(path, eos, header_model);
        }
        match self.config.route_for(path) {
            Some((route, _)) => Intake::Route {
                route,
                model: None,
                body: RequestBody::None,
            },
            None => Intake::PassThrough,
        }
    }

    /// Off mode: the route header's value for a request that matched `route`: its
    /// primary's cluster (`within_request`: the aggregate of the primary alone).
    pub fn route_off(&self, route: RouteId) -> Option<String> {
        let r = self.config.routes.get(route.index())?;
        let name = &self.config.upstream(*r.chain.first()?)?.name;
        Some(match self.config.failover {
            Failover::NextRequest => name.clone(),
            Failover::WithinRequest => aggregate_name([name.as_str()]),
        })
    }
}
