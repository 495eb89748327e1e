//! Within-request failover (`failover: "within_request"`), three roles.
//!
//! The **downstream role** asks every chain entry's breaker in order and writes the
//! aggregate cluster of the admitting ones (`llmb|a|b`, see [`crate::aggregate`]);
//! Envoy's retry policy on that aggregate moves attempt k to its k-th member. The
//! breaker tickets travel to the attempts in the request header [`TICKETS_HEADER`]
//! when one matters ([`Worker::needs_tickets`]).
//! At the response it learns from two response headers which member answered (the
//! `response_header`, or [`SERVED_HEADER`], which the generated route's
//! `response_headers_to_add` fills from the endpoint metadata) and how many attempts
//! Envoy made (`x-envoy-attempt-count`),
//! records the attempt that answered unless the upstream log records it (see
//! [`upstream_log_records`]), reports the attempts in the response header and gives
//! back half-open permits no attempt used.
//!
//! The **upstream-log role** is a wasm access logger in the router's `upstream_log`.
//! Envoy calls it only for attempts that failed the way the retry policy retries (its
//! access-log filter: status ≥ 500, 429, or no response), never for a success, so
//! the common request runs no wasm for its attempts. It records each such attempt on
//! the upstream it went to ([`Worker::log_attempt`]) with Envoy's own flags.
//!
//! The **upstream role**, an upstream HTTP filter of the aggregates, exists only where
//! attempts must be shaped per provider (credential, path, headers, model): it shapes
//! and records nothing.

use super::cache::SEEN_FRESH_MS;
use super::request::{entry_cell, rewrite_on, Rejection, Routed, START_UNKNOWN};
use super::shadow::Would;
use super::{accounting, Metrics, Worker};
use crate::aggregate::aggregate_name;
use crate::breaker::{Admission, Ticket};
use crate::config::{Mode, Route, WhenAllOpen};
use crate::ids::{CellId, RouteId, UpstreamId};
use crate::routing::{Decision, Why};
use crate::store::{self, SharedStore};
use crate::worker::metrics::{Metric, UpstreamMetric};
use std::borrow::Cow;

/// Request header carrying the plan's tickets from the downstream role to the
/// attempts (removed by the downstream role from client requests). The upstream role
/// can't remove it: the attempts of a request share one header map, so attempt 2
/// would lose it. Providers see it, as they see the route header.
pub const TICKETS_HEADER: &str = "x-llm-breaker-tickets";

/// Response header naming the upstream that answered when the filter's
/// `response_header` is off (the generated route's `response_headers_to_add` writes it
/// from the endpoint metadata, over anything a provider sent; the downstream role
/// removes it). With `response_header` on, the name goes into that
/// header, which the downstream role overwrites with its summary anyway.
pub const SERVED_HEADER: &str = "x-llm-breaker-attempt";

/// The response header the generated route names the answering upstream in: the
/// filter's `response_header` (overwritten with the summary), else [`SERVED_HEADER`].
pub fn served_header(response_header: Option<&str>) -> &str {
    response_header.unwrap_or(SERVED_HEADER)
}

/// Endpoint metadata namespace of the generator's provider clusters.
pub const METADATA_NS: &str = "llm_breaker";
/// Endpoint metadata key naming the upstream (read by the upstream role and the
/// upstream log).
pub const METADATA_UPSTREAM: &str = "upstream";
/// Endpoint metadata key of the [`served_header`]'s value: the upstream's name, with
/// [`GATEWAY_KEY_SUFFIX`] when the gateway injects its key for it.
pub const METADATA_SERVED: &str = "served";

/// Ends a [`SERVED_HEADER`] value when the gateway injected its own key for that
/// upstream (`openai;key`): the answer's 401 or 403 is then the operator's wrong key.
/// Upstream names can't hold `;`, so the suffix never cuts a real name.
pub const GATEWAY_KEY_SUFFIX: &str = ";key";

/// Whether the router's upstream log records an attempt that ended with `status`
/// (`None`: no response headers: a connect failure, reset or timeout): the statuses
/// the generator's retry policy retries. Its access-log filter (`status_code_filter`
/// ≥ 500, = 429, = 0) must select exactly these; the downstream role records the
/// answer itself otherwise.
pub fn upstream_log_records(status: Option<u16>) -> bool {
    status.map_or(true, |s| s == 0 || retriable(s))
}

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
    /// When the request was complete: the first attempt's time to first byte
    /// counts from here.
    pub start_ms: u64,
    /// The route it matched.
    pub route: RouteId,
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
    /// Write `cluster` into the route header and `tickets` into [`TICKETS_HEADER`]
    /// (`None`: no ticket matters, remove a client's).
    Send {
        /// Kept until the request ends.
        plan: Plan,
        /// The aggregate cluster.
        cluster: Cow<'w, str>,
        /// The [`TICKETS_HEADER`] value, when a ticket matters
        /// ([`Worker::needs_tickets`]).
        tickets: Option<String>,
    },
    /// Answer with the all-open 503.
    Reject(Rejection<'w>),
}

/// One attempt (upstream role, upstream log): its upstream, cell and ticket, and the
/// model its body must name.
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
        // The common case, every chain entry admitting: its name is built once.
        let whole = order.len() == r.chain.len();
        let cluster = match self.chain_clusters.get(route.index()).filter(|_| whole) {
            Some(c) => Cow::Borrowed(c.as_str()),
            None => {
                Cow::Owned(aggregate_name(order.iter().filter_map(|a| {
                    self.config.upstream(a.upstream).map(|u| u.name.as_str())
                })))
            }
        };
        let tickets = self
            .needs_tickets(&order)
            .then(|| encode_tickets(route, &order));
        Some(WithinRouting::Send {
            plan: Plan {
                order,
                why,
                skipped,
                shadow: None,
                start_ms: now_ms,
                route,
            },
            cluster,
            tickets,
        })
    }

    /// Whether the attempts need the tickets: the upstream role runs (it reads the
    /// route), the configuration has model cells or chain models, or a member holds
    /// a half-open permit or has no ticket. Otherwise (every member closed, the
    /// common case) the upstream log records a failed attempt only if its breaker is
    /// closed when the attempt ends, in the epoch it has then
    /// ([`Worker::closed_ticket`]).
    pub fn needs_tickets(&self, order: &[Attempt]) -> bool {
        self.shapes
            || self.uses_models
            || order
                .iter()
                .any(|a| a.ticket.map_or(true, |t| t.permit.is_some()))
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
        // Members after the first admitting one get an attempt only when it fails:
        // a last read saying closed and quiet answers for longer for them (a trip is
        // seen up to `SEEN_FRESH_MS` late there; a half-open one is always read, for
        // its permit, and a denial answers no longer than for the first).
        let ttl = self.config.admission_cache_ms.get();
        let later_ttl = ttl.max(SEEN_FRESH_MS);
        for &upstream in &r.chain {
            let cell = entry_cell(&self.config, r, upstream, model);
            let ttl = if o.order.is_empty() { ttl } else { later_ttl };
            match self.admit_cached(cell, now_ms, ttl) {
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

    /// Downstream role, response headers: which member answered (`served`, the
    /// [`SERVED_HEADER`], perhaps with [`GATEWAY_KEY_SUFFIX`]), how many attempts the request took (`served`'s position,
    /// else Envoy's `x-envoy-attempt-count`, `envoy_attempts`), with the response's
    /// `status`. Counts the attempts and each failed one retried elsewhere, builds
    /// the response header's value, and says which attempt this role records (the
    /// one that answered, unless the upstream log records it). `size` reads the
    /// request's size, only when a failed attempt may not have been retried for it.
    pub fn served_within(
        &self,
        plan: &Plan,
        served: Option<&[u8]>,
        envoy_attempts: Option<&[u8]>,
        status: Option<u16>,
        size: impl FnOnce() -> Option<u64>,
    ) -> Served<'_> {
        let keyed = served.and_then(|v| v.strip_suffix(GATEWAY_KEY_SUFFIX.as_bytes()));
        let at = keyed.or(served).and_then(|name| {
            plan.order.iter().position(|a| {
                self.config
                    .upstream(a.upstream)
                    .is_some_and(|u| u.name.as_bytes() == name)
            })
        });
        let attempts = at.map(|p| p + 1).or_else(|| {
            let n = std::str::from_utf8(envoy_attempts?)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(plan.order.len().min(n))
        });
        // (A 2xx always comes from a provider through the route; Envoy's own replies,
        // a 408 or 413, name none and are not worth a warning.)
        let from_provider = status.is_some_and(|s| (200..300).contains(&s));
        if at.is_none() && from_provider && !self.served_header_missed.replace(true) {
            // Neither role records such an answer: say why, once.
            log::warn!(
                "llm-breaker: a within_request answer named no member of its plan in `{}`: \
                 does the route have the generator's response_headers_to_add (and the \
                 provider clusters their endpoint metadata)? Such answers are not recorded",
                served_header(self.config.response_header.as_deref())
            );
        }
        for a in plan.order.iter().take(attempts.unwrap_or(0)) {
            let m = Metric::Upstream(a.upstream, UpstreamMetric::Attempts);
            self.metrics.increment(m);
        }
        let failed = || at.is_none() || status.is_some_and(retriable);
        self.count_not_retried(plan, attempts, failed, size);
        let record = at
            .filter(|_| !upstream_log_records(status))
            .and_then(|p| plan.order.get(p).map(|a| (p, a)))
            .map(|(p, a)| Routed {
                upstream: a.upstream,
                cell: a.cell,
                ticket: a.ticket,
                why: if p == 0 { plan.why } else { Why::Failover },
                skipped: Vec::new(),
                // A later attempt's start is not known here (Envoy does not say
                // when it started): no time to first byte, no duration.
                start_ms: if p == 0 { plan.start_ms } else { START_UNKNOWN },
                shadow: None,
            });
        let (attempts, header) = self.summarize(plan, at, attempts);
        Served {
            attempts,
            header,
            record,
            gateway_key: keyed.is_some()
                && !self.config.passes_client_credentials(Some(plan.route)),
        }
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
            // The common answer, its string built once: the primary, at once.
            let first = plan.order.first().filter(|_| {
                at == Some(0)
                    && plan.why == Why::Primary
                    && plan.skipped.is_empty()
                    && plan.shadow.is_none()
            });
            if let Some(v) = first.and_then(|a| self.primary_header.get(a.upstream.index())) {
                return (h, v.clone());
            }
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

    /// One attempt to the upstream named `name` (endpoint metadata), with the
    /// downstream role's `tickets`. Without a usable ticket (none written, another
    /// config) the upstream log, which records the attempt and says when it started
    /// (`logged_start_ms`), takes [`Worker::closed_ticket`]; the upstream role
    /// (`None`) only shapes. `None`: not an upstream of this configuration.
    pub fn attempt(
        &self,
        name: &[u8],
        tickets: Option<&[u8]>,
        now_ms: u64,
        logged_start_ms: Option<u64>,
    ) -> Option<AttemptPlan<'_>> {
        let (upstream, _) = self
            .config
            .upstream_ids()
            .find(|(_, u)| u.name.as_bytes() == name)?;
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
                // No ticket: the downstream role wrote none (every member closed),
                // or not for this attempt.
                let cell = self.config.cell(upstream, None);
                (
                    cell,
                    logged_start_ms.and_then(|s| self.closed_ticket(cell, s)),
                )
            }
        };
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
            route: route.and(decoded.as_ref().map(|(r, _)| *r)),
        })
    }
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// The ticket of an attempt that came without one and started at `started_ms`:
    /// `cell`'s breaker if it is closed now and has been since the attempt started
    /// (one shared-data read; failed attempts are rare). Never a half-open permit (an
    /// attempt without a ticket was no probe), never an epoch that began after the
    /// attempt (a request that hung through a trip and a recovery is stale, as its
    /// ticket would say).
    pub fn closed_ticket(&self, cell: CellId, started_ms: u64) -> Option<Ticket> {
        let rec = self.cell(cell)?;
        let (epoch, since_ms) = store::closed_since(&self.store, &rec.key)?;
        (since_ms <= started_ms).then_some(Ticket {
            epoch,
            permit: None,
        })
    }
}

/// What the downstream role makes of a `within_request` response
/// ([`Worker::served_within`]).
#[derive(Debug)]
pub struct Served<'w> {
    /// How many attempts the request took, if known.
    pub attempts: Option<usize>,
    /// The response header to set, if it is on.
    pub header: Option<(&'w str, String)>,
    /// The attempt the downstream role records: the one that answered, when the
    /// upstream log does not record it.
    pub record: Option<Routed>,
    /// That attempt carried the gateway's key ([`GATEWAY_KEY_SUFFIX`], and a route
    /// that does not pass the client's credentials through).
    pub gateway_key: bool,
}

/// What the upstream log hands over of one failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct LoggedAttempt<'a> {
    /// The attempt's upstream (endpoint metadata).
    pub name: &'a [u8],
    /// The [`TICKETS_HEADER`] of its request.
    pub tickets: Option<&'a [u8]>,
    /// Its response status (`None` or 0: no response headers).
    pub status: Option<u16>,
    /// Envoy's response flags of the attempt (`response.flags`).
    pub flags: u64,
    /// How long the attempt took, when Envoy says (`request.duration`).
    pub duration_ms: Option<u64>,
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Upstream-log role: records one failed attempt on its upstream, with its
    /// ticket from the request's tickets; `header` reads its response headers (the
    /// rate-limit hints of a 429). Attempts the downstream role records
    /// ([`upstream_log_records`] false) are left to it.
    pub fn log_attempt(
        &self,
        a: LoggedAttempt<'_>,
        now_ms: u64,
        header: impl Fn(&str) -> Option<Vec<u8>>,
    ) {
        let status = a.status.filter(|&s| s != 0);
        if self.config.mode == Mode::Off || !upstream_log_records(status) {
            return;
        }
        // (Envoy always says how long an attempt took; without that, it counts as
        // started now.)
        let started = now_ms.saturating_sub(a.duration_ms.unwrap_or(0));
        let Some(plan) = self.attempt(a.name, a.tickets, now_ms, Some(started)) else {
            return;
        };
        let mut routed = plan.routed;
        routed.start_ms = started;
        let mut response = super::response::Response::default();
        if status.is_some() {
            response.headers(self, &routed, status, true, now_ms, header);
        }
        let facts = response.end(|| a.flags, || None);
        // Whose key the attempt carried matters only for a 401 or 403, which the
        // upstream log never records.
        self.finish_with(&routed, facts, now_ms, false);
    }
}

/// A status the generator's retry policy retries (`5xx`, retriable 429).
fn retriable(status: u16) -> bool {
    status >= 500 || status == 429
}

/// `route;u.cell.epoch[.permit],…` (a member with no ticket: `u.cell`).
pub fn encode_tickets(route: RouteId, order: &[Attempt]) -> String {
    let mut s = String::with_capacity(8 + 24 * order.len());
    push_number(&mut s, route.index() as u64);
    for (i, a) in order.iter().enumerate() {
        s.push(if i == 0 { ';' } else { ',' });
        push_number(&mut s, a.upstream.index() as u64);
        s.push('.');
        push_number(&mut s, a.cell.index() as u64);
        if let Some(t) = a.ticket {
            s.push('.');
            push_number(&mut s, u64::from(t.epoch));
            if let Some(p) = t.permit {
                s.push('.');
                push_number(&mut s, p);
            }
        }
    }
    s
}

/// Appends `n` in decimal (without `core::fmt`: this runs on every request).
fn push_number(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
    }
}

/// Reads [`encode_tickets`]'s format (and ignores a `;…` field after it); `None`
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
