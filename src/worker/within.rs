//! Within-request failover (`failover: "within_request"`), both roles.
//!
//! The **downstream role** asks every chain entry's breaker in order and writes the
//! aggregate cluster of the admitting ones (`llmb|a|b`, see [`crate::aggregate`]);
//! Envoy's retry policy on that aggregate moves attempt k to its k-th member. The
//! breaker tickets travel to the attempts in the request header [`TICKETS_HEADER`].
//! The downstream role records no outcome; at the end it reports the attempts in
//! the response header and gives back half-open permits no attempt used.
//!
//! The **upstream role** runs once per attempt (an upstream HTTP filter of the
//! aggregates): it names the attempt's real upstream (endpoint metadata), takes its
//! ticket from the header, and records that attempt's outcome on that upstream's
//! cell through the same [`super::response::Response`] and [`Worker::finish`] as
//! `next_request` — each attempt once, on its own upstream. It tells the downstream
//! role which upstream answered through the VM's [`super::relay`] (the request's slot
//! is named at the end of the tickets), or, when the roles run in different VMs,
//! through the response header [`SERVED_HEADER`].

use super::relay::{Relayed, Token};
use super::request::{entry_cell, rewrite_on, Rejection, Routed};
use super::shadow::Would;
use super::{accounting, Metrics, Worker};
use crate::aggregate::aggregate_name;
use crate::breaker::{Admission, Ticket};
use crate::classify::flags;
use crate::config::{Mode, Route, WhenAllOpen};
use crate::ids::{CellId, RouteId, UpstreamId};
use crate::routing::{Decision, Why};
use crate::store::{self, SharedStore};
use crate::worker::metrics::{Metric, UpstreamMetric};
use std::fmt::Write as _;

/// Request header carrying the plan's tickets from the downstream role to the
/// attempts (removed by the downstream role from client requests). The upstream role
/// can't remove it: the attempts of a request share one header map, so attempt 2
/// would lose it. Providers see it, as they see the route header.
pub const TICKETS_HEADER: &str = "x-llm-breaker-tickets";

/// Response header by which the upstream role names the upstream that answered
/// (removed by the downstream role).
pub const SERVED_HEADER: &str = "x-llm-breaker-attempt";

/// One member of the attempt order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The upstream.
    pub upstream: UpstreamId,
    /// Its breaker cell for this request.
    pub cell: CellId,
    /// Its breaker's ticket (`None`: state unreadable, untracked).
    pub ticket: Option<Ticket>,
}

/// The attempt order of one request, kept by the downstream role until its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The admitting upstreams in chain order: attempt k goes to `order[k - 1]`.
    pub order: Vec<Attempt>,
    /// Why the first attempt's upstream.
    pub why: Why,
    /// Chain entries whose breaker refused.
    pub skipped: Vec<UpstreamId>,
    /// Shadow mode: what enforcement would have done (the plan is the primary alone).
    pub shadow: Option<Would>,
    /// The request's slot in the VM's [`super::relay`].
    pub token: Option<Token>,
}

impl Plan {
    /// Whether some member holds a half-open permit (that an unused one gives back).
    pub fn holds_permits(&self) -> bool {
        self.order
            .iter()
            .any(|a| a.ticket.is_some_and(|t| t.permit.is_some()))
    }
}

/// What the downstream role does with a request in `within_request` mode.
#[derive(Debug)]
pub enum WithinRouting<'w> {
    /// Write `cluster` into the route header and `tickets` into [`TICKETS_HEADER`].
    Send {
        /// Kept until the request ends.
        plan: Plan,
        /// The aggregate cluster.
        cluster: String,
        /// The [`TICKETS_HEADER`] value.
        tickets: String,
    },
    /// Answer with the all-open 503.
    Reject(Rejection<'w>),
}

/// What one attempt (upstream role) records, and the model its body must name.
#[derive(Debug)]
pub struct AttemptPlan<'w> {
    /// Routed to this attempt's upstream, with its ticket.
    pub routed: Routed,
    /// The chain entry's model for this upstream, if it has one.
    pub rewrite: Option<&'w str>,
    /// Hold the request until its body is complete: some chain entry rewrites the
    /// model, so an earlier attempt may have changed the `content-length` this
    /// attempt inherits (attempts share the request headers, not the body).
    pub hold: bool,
    /// The upstream's name, for [`SERVED_HEADER`].
    pub name: &'w str,
    /// The request's slot in this VM's relay, if this attempt found it (then it
    /// tells the downstream role through it, not [`SERVED_HEADER`]).
    pub token: Option<Token>,
    /// The route its tickets name, if they were usable.
    pub route: Option<RouteId>,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Downstream role: the attempt order for a request that matched `route`.
    pub fn route_within(
        &self,
        route: RouteId,
        model: Option<&str>,
        now_ms: u64,
    ) -> Option<WithinRouting<'_>> {
        let r = self.config.routes.get(route.index())?;
        let o = self.attempt_order(r, model, now_ms);
        if self.config.mode == Mode::Shadow {
            return self.route_within_shadow(route, r, model, o, now_ms);
        }
        let d = within_decision(r, &o, now_ms);
        accounting::decision(&self.metrics, route, &d);
        let Order {
            mut order, skipped, ..
        } = o;
        let why = match d {
            Decision::Reject {
                retry_after_s,
                skipped,
            } => {
                return Some(WithinRouting::Reject(self.rejection(
                    r,
                    retry_after_s,
                    &skipped,
                )))
            }
            // Every breaker open, `fail_open`: the primary alone, untracked.
            Decision::Send { upstream, why, .. } if order.is_empty() => {
                let cell = entry_cell(&self.config, r, upstream, model);
                order.push(Attempt {
                    upstream,
                    cell,
                    ticket: None,
                });
                why
            }
            Decision::Send { why, .. } => why,
        };
        let names = order
            .iter()
            .filter_map(|a| self.config.upstream(a.upstream).map(|u| u.name.as_str()));
        let cluster = aggregate_name(names);
        let token = self.relay.open();
        let mut tickets = encode_tickets(route, &order);
        let _ = write!(tickets, ";{}.{}", token.vm, token.seq);
        Some(WithinRouting::Send {
            plan: Plan {
                order,
                why,
                skipped,
                shadow: None,
                token: Some(token),
            },
            cluster,
            tickets,
        })
    }

    /// The chain's admitting upstreams in order (a half-open one holds its permit),
    /// the ones skipped, how many were skipped before the first, and the earliest
    /// time a skipped one admits again.
    fn attempt_order(&self, r: &Route, model: Option<&str>, now_ms: u64) -> Order {
        let mut o = Order {
            order: Vec::new(),
            skipped: Vec::new(),
            before_first: 0,
            earliest: u64::MAX,
        };
        for &upstream in &r.chain {
            let cell = entry_cell(&self.config, r, upstream, model);
            match self.admit(cell, now_ms) {
                Some(Admission::Denied { retry_at_ms }) => {
                    o.earliest = o.earliest.min(retry_at_ms);
                    o.skipped.push(upstream);
                    if o.order.is_empty() {
                        o.before_first += 1;
                    }
                }
                admitted => {
                    let ticket = match admitted {
                        Some(Admission::Admitted(t)) => Some(t),
                        _ => None,
                    };
                    o.order.push(Attempt {
                        upstream,
                        cell,
                        ticket,
                    });
                }
            }
        }
        o
    }

    /// Downstream role, response headers: how many attempts the request took (from
    /// the upstream role's [`SERVED_HEADER`], else Envoy's `x-envoy-attempt-count`,
    /// read by `envoy_attempts` only then),
    /// counts each failed attempt that was retried elsewhere, and the response
    /// header's value when that header is on.
    pub fn served_within(
        &self,
        plan: &Plan,
        served: Option<&[u8]>,
        envoy_attempts: impl FnOnce() -> Option<Vec<u8>>,
        request: Forwarded<impl FnOnce() -> Option<u16>, impl FnOnce() -> Option<u64>>,
    ) -> (Option<usize>, Option<(&str, String)>) {
        let at = served.and_then(|name| {
            plan.order.iter().position(|a| {
                self.config
                    .upstream(a.upstream)
                    .is_some_and(|u| u.name.as_bytes() == name)
            })
        });
        let attempts = at.map(|p| p + 1).or_else(|| {
            let n = std::str::from_utf8(&envoy_attempts()?)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(plan.order.len().min(n))
        });
        let failed = || at.is_none() || (request.status)().is_some_and(retriable);
        self.count_not_retried(plan, attempts, failed, request.size);
        self.summarize(plan, at, attempts)
    }

    /// Counts a request whose last attempt failed as Envoy retries (`failed`) with
    /// members left, and that was over the buffer limit: Envoy sent it once.
    /// `failed` and `size` (the request's) are asked only when members were left.
    fn count_not_retried(
        &self,
        plan: &Plan,
        attempts: Option<usize>,
        failed: impl FnOnce() -> bool,
        size: impl FnOnce() -> Option<u64>,
    ) {
        let Some(n) = attempts.filter(|&n| n >= 1 && n < plan.order.len()) else {
            return;
        };
        if failed() && size().is_some_and(|b| b > self.config.retry_buffer_limit_bytes) {
            let u = plan.order[n - 1].upstream;
            let m = Metric::Upstream(u, UpstreamMetric::NotRetriedOverBufferLimit);
            self.metrics.increment(m);
        }
    }

    /// [`Worker::served_within`] from what the attempts left in the request's relay
    /// slot (no header read).
    pub fn served_relayed(
        &self,
        plan: &Plan,
        r: Relayed,
        size: impl FnOnce() -> Option<u64>,
    ) -> (Option<usize>, Option<(&str, String)>) {
        // Attempt k went to member k: the one served is the last started.
        let n = (r.attempts as usize).min(plan.order.len());
        let at = r
            .served
            .and_then(|u| plan.order.iter().take(n).rposition(|a| a.upstream == u));
        let failed = || r.served.is_none() || r.status.is_some_and(retriable);
        self.count_not_retried(plan, Some(n), failed, size);
        self.summarize(plan, at, Some(at.map_or(n, |p| p + 1)))
    }

    /// Counts the retried attempts and builds the response header's value, from the
    /// position in the order of the member that answered (`at`) and the attempts.
    fn summarize(
        &self,
        plan: &Plan,
        at: Option<usize>,
        attempts: Option<usize>,
    ) -> (Option<usize>, Option<(&str, String)>) {
        // Attempts before the last failed; those before the one that answered (or
        // before the last, when none answered) were retried on the next member.
        let retried = match (at, attempts) {
            (Some(p), _) => p,
            (None, Some(n)) => n.saturating_sub(1),
            (None, None) => 0,
        };
        for a in plan.order.iter().take(retried) {
            let m = Metric::Upstream(a.upstream, UpstreamMetric::AttemptsFailedRetried);
            self.metrics.increment(m);
        }
        let header = self.config.response_header.as_deref().map(|h| {
            let name = |u: UpstreamId| self.config.upstream(u).map_or("?", |x| x.name.as_str());
            if let Some(would) = &plan.shadow {
                let served = at.and_then(|p| plan.order.get(p)).map(|a| name(a.upstream));
                return (h, self.describe_would(served.unwrap_or("none"), would));
            }
            let (upstream, why) = match at {
                Some(0) => (name(plan.order[0].upstream), plan.why.as_str()),
                Some(p) => (
                    plan.order.get(p).map_or("?", |a| name(a.upstream)),
                    "failover",
                ),
                None => ("none", "all_failed"),
            };
            let mut v = format!("upstream={upstream}; reason={why}");
            if let Some(n) = attempts {
                v.push_str(&format!("; attempts={n}"));
                let failed = if at.is_some() { n - 1 } else { n };
                if failed > 0 {
                    let f: Vec<&str> = plan
                        .order
                        .iter()
                        .take(failed)
                        .map(|a| name(a.upstream))
                        .collect();
                    v.push_str(&format!("; failed={}", f.join(",")));
                }
            }
            if !plan.skipped.is_empty() {
                let s: Vec<&str> = plan.skipped.iter().map(|&u| name(u)).collect();
                v.push_str(&format!("; skipped={}", s.join(",")));
            }
            (h, v)
        });
        (attempts, header)
    }

    /// Downstream role, end of the request: gives back the half-open permits of the
    /// members no attempt reached (all after the first `used`; every one when that
    /// is unknown — giving back a permit an attempt already used is a no-op).
    pub fn release_unused(&self, plan: &Plan, used: Option<usize>, now_ms: u64) {
        for a in plan.order.iter().skip(used.unwrap_or(0)) {
            let Some(t) = a.ticket.filter(|t| t.permit.is_some()) else {
                continue;
            };
            let (Some((_, up)), Some(rec)) = (self.upstream_of(a.cell), self.cell(a.cell)) else {
                continue;
            };
            let r = store::update(&self.store, &rec.key, &up.breaker, now_ms, |b| b.release(t));
            self.report_update(a.cell, &r, now_ms);
        }
    }

    /// Upstream role, request headers of one attempt to the upstream named `name`
    /// (endpoint metadata), with the downstream role's `tickets`. Without a usable
    /// ticket (no header, another config) the attempt asks the breaker itself. Counts
    /// the attempt. `None`: not an upstream of this configuration.
    pub fn attempt(
        &self,
        name: &[u8],
        tickets: Option<&[u8]>,
        now_ms: u64,
    ) -> Option<AttemptPlan<'_>> {
        let (upstream, up) = self
            .config
            .upstream_ids()
            .find(|(_, u)| u.name.as_bytes() == name)?;
        self.metrics
            .increment(Metric::Upstream(upstream, UpstreamMetric::Attempts));
        let decoded = tickets.and_then(|t| decode_tickets(t, self.config.routes.len()));
        let route = decoded
            .as_ref()
            .and_then(|(r, _)| self.config.routes.get(r.index()));
        let entry = decoded.as_ref().and_then(|(_, order)| {
            order.iter().find(|a| {
                a.upstream == upstream
                    && self.config.cells.get(a.cell.index()).map(|c| c.upstream) == Some(upstream)
            })
        });
        let (cell, ticket) = match entry {
            Some(a) => (a.cell, a.ticket),
            None => {
                let cell = self.config.cell(upstream, None);
                match self.admit(cell, now_ms) {
                    Some(Admission::Admitted(t)) => (cell, Some(t)),
                    _ => (cell, None),
                }
            }
        };
        let token = tickets.and_then(ticket_token);
        let relayed = token.filter(|&t| self.relay.attempt(t));
        if token.is_some() && relayed.is_none() {
            self.relay_missed();
        }
        // Shadow mode sends requests unchanged: no rewrite, so nothing to hold for.
        let enforce = self.config.mode == Mode::Enforce;
        Some(AttemptPlan {
            routed: Routed {
                upstream,
                cell,
                ticket,
                why: Why::Primary,
                skipped: Vec::new(),
                start_ms: now_ms,
                shadow: None,
            },
            rewrite: route
                .filter(|_| enforce)
                .and_then(|r| rewrite_on(r, upstream)),
            hold: enforce && route.is_some_and(|r| r.chain_models.iter().any(Option::is_some)),
            name: up.name.as_str(),
            token: relayed,
            route: route.and(decoded.as_ref().map(|(r, _)| *r)),
        })
    }
}

/// What the downstream role reads of the forwarded response and the request, only
/// when a failed attempt may not have been retried for the request's size.
pub struct Forwarded<St, Sz> {
    /// The response's `:status`.
    pub status: St,
    /// The request's size (`request.size`).
    pub size: Sz,
}

/// A status the generator's retry policy retries (`5xx`, retriable 429).
fn retriable(status: u16) -> bool {
    status >= 500 || status == 429
}

/// Upstream role: Envoy's flags for an attempt, which the upstream filter can't read
/// (they are the downstream stream's). An attempt that ended with no response headers
/// failed to connect (`connect_failed`: Envoy set a transport failure reason), timed
/// out (it lasted `elapsed_ms` ≥ the per-try timeout Envoy announced in
/// `x-envoy-expected-rq-timeout-ms`, `per_try_ms`), or was reset; a 2xx cut before its
/// end was reset.
pub fn attempt_flags(
    status: Option<u16>,
    elapsed_ms: u64,
    per_try_ms: Option<u64>,
    connect_failed: impl FnOnce() -> bool,
) -> u64 {
    match status {
        None if connect_failed() => flags::CONNECT_FAILURE,
        // 5 % slack: the attempt's clock starts at the end of the request body, Envoy's
        // per-try timer a little earlier.
        None if per_try_ms.is_some_and(|t| elapsed_ms + t / 20 >= t) => flags::UPSTREAM_TIMEOUT,
        None => flags::UPSTREAM_RESET,
        Some(200..=299) => flags::UPSTREAM_RESET,
        Some(_) => 0,
    }
}

/// `route;u.cell.epoch[.permit],…` (a member with no ticket: `u.cell`).
pub fn encode_tickets(route: RouteId, order: &[Attempt]) -> String {
    let mut s = route.index().to_string();
    for (i, a) in order.iter().enumerate() {
        s.push(if i == 0 { ';' } else { ',' });
        let _ = write!(s, "{}.{}", a.upstream.index(), a.cell.index());
        if let Some(t) = a.ticket {
            let _ = write!(s, ".{}", t.epoch);
            if let Some(p) = t.permit {
                let _ = write!(s, ".{p}");
            }
        }
    }
    s
}

/// The relay token the downstream role appends to the tickets (`;vm.seq`).
pub fn ticket_token(bytes: &[u8]) -> Option<Token> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (_, token) = text.rsplit_once(';')?;
    let (vm, seq) = token.split_once('.')?;
    if text.matches(';').count() != 2 {
        return None;
    }
    Some(Token {
        vm: vm.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// Reads [`encode_tickets`]'s format (and ignores a relay token after it); `None`
/// for anything else (the header is untrusted input). Route indexes must be below
/// `routes`.
pub fn decode_tickets(bytes: &[u8], routes: usize) -> Option<(RouteId, Vec<Attempt>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (route, rest) = text.split_once(';')?;
    let rest = rest.split_once(';').map_or(rest, |(members, _)| members);
    let route: usize = route.parse().ok()?;
    if route >= routes {
        return None;
    }
    let mut order = Vec::new();
    for member in rest.split(',').take(16) {
        let mut f = member.split('.');
        let upstream = UpstreamId::new(f.next()?.parse().ok()?);
        let cell = CellId::new(f.next()?.parse().ok()?);
        let epoch = f.next().map(str::parse::<u32>).transpose().ok()?;
        let permit = f.next().map(str::parse::<u64>).transpose().ok()?;
        if f.next().is_some() {
            return None;
        }
        order.push(Attempt {
            upstream,
            cell,
            ticket: epoch.map(|epoch| Ticket { epoch, permit }),
        });
    }
    Some((RouteId::new(route), order))
}

/// What walking a chain for a within-request plan found.
pub(super) struct Order {
    /// The admitting members, in chain order.
    pub(super) order: Vec<Attempt>,
    /// The refusing ones.
    pub(super) skipped: Vec<UpstreamId>,
    /// How many refused before the first admitting one.
    pub(super) before_first: usize,
    /// The earliest time a refusing one admits again.
    pub(super) earliest: u64,
}

/// Why the first attempt goes where it goes.
fn why_of(order: &[Attempt], before_first: usize) -> Why {
    match order.first() {
        Some(a) if a.ticket.is_some_and(|t| t.permit.is_some()) => Why::Probe,
        Some(_) if before_first == 0 => Why::Primary,
        Some(_) => Why::Failover,
        None => Why::FailOpen,
    }
}

/// Enforcement's decision for a `within_request` attempt order: its first member
/// (the route's `fail_open` primary, or the 503, when it is empty).
pub(super) fn within_decision(r: &Route, o: &Order, now_ms: u64) -> Decision {
    match (o.order.first(), r.when_all_open, r.chain.first()) {
        (Some(a), _, _) => Decision::Send {
            upstream: a.upstream,
            ticket: a.ticket,
            why: why_of(&o.order, o.before_first),
            skipped: o.skipped.get(..o.before_first).unwrap_or_default().to_vec(),
        },
        (None, WhenAllOpen::FailOpen, Some(&primary)) => Decision::Send {
            upstream: primary,
            ticket: None,
            why: Why::FailOpen,
            skipped: o.skipped.clone(),
        },
        _ => Decision::Reject {
            retry_after_s: o.earliest.saturating_sub(now_ms).div_ceil(1000).max(1),
            skipped: o.skipped.clone(),
        },
    }
}
