//! Routing one request: asks each chain entry's breaker cell (from the admission
//! cache when it can answer, else from shared data), counts the decision, and says
//! what the host must do: name the cluster (and the model to rewrite the body to),
//! or answer with the all-open 503.

use super::{accounting, Metrics, Worker};
use crate::breaker::{Admission, Ticket};
use crate::config::{Config, Mode, Route};
use crate::ids::{CellId, RouteId, UpstreamId};
use crate::routing::{self, Decision, Why};
use crate::store::{self, SharedStore};
use std::borrow::Cow;

/// A request the filter routed and still has to account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Where it went.
    pub upstream: UpstreamId,
    /// The breaker cell (the upstream, or the upstream and model).
    pub cell: CellId,
    /// The breaker's ticket, if its outcome is recorded.
    pub ticket: Option<Ticket>,
    /// Why that upstream.
    pub why: Why,
    /// Upstreams tried first that did not admit.
    pub skipped: Vec<UpstreamId>,
    /// When the request was complete (headers, end of body, or trailers): the
    /// provider's time to first byte counts from here, not from a slow upload
    /// ([`START_UNKNOWN`]: not known).
    pub start_ms: u64,
    /// Shadow mode: the response header's value, when enforcement would have done
    /// something else than send it to the primary with its breaker closed (that
    /// common value is built once).
    pub shadow: Option<String>,
}

/// [`Routed::start_ms`] of an attempt whose start the filter doesn't know (a later
/// member's answer under `within_request`: Envoy doesn't say when that attempt
/// started): it has no time to first byte and no duration.
pub const START_UNKNOWN: u64 = u64::MAX;

impl Routed {
    /// Time since the request was complete, if its start is known.
    pub fn since_start(&self, now_ms: u64) -> Option<u64> {
        (self.start_ms != START_UNKNOWN).then(|| now_ms.saturating_sub(self.start_ms))
    }
}

/// What the host does with a routed request.
#[derive(Debug)]
pub enum Routing<'w> {
    /// Send it to `cluster` (the route header's value).
    Send {
        /// The request, to account for when it ends.
        routed: Routed,
        /// The cluster name.
        cluster: &'w str,
        /// The model the chain entry asks the body to name, if any.
        rewrite: Option<&'w str>,
    },
    /// Answer with the all-open 503.
    Reject(Rejection<'w>),
}

/// The all-open local reply.
#[derive(Debug)]
pub struct Rejection<'w> {
    /// The JSON body.
    pub body: String,
    /// The `retry-after` value, in seconds.
    pub retry_after: String,
    /// The response header naming the skipped upstreams, when that header is on.
    pub info: Option<(&'w str, String)>,
}

impl Rejection<'_> {
    /// The reply's headers.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("retry-after", self.retry_after.as_str()),
        ];
        if let Some((h, value)) = &self.info {
            headers.push((h, value.as_str()));
        }
        headers
    }
}

/// The model `route` asks its chain entry for `upstream` to be sent with.
pub fn rewrite_on(route: &Route, upstream: UpstreamId) -> Option<&str> {
    let i = route.chain.iter().position(|&x| x == upstream)?;
    route.chain_models.get(i)?.as_deref()
}

/// The breaker cell a request for `model` on `route` uses at its chain entry for
/// `upstream`: the entry's own model when it rewrites, else the request's.
pub fn entry_cell(
    config: &Config,
    route: &Route,
    upstream: UpstreamId,
    model: Option<&str>,
) -> CellId {
    config.cell(upstream, rewrite_on(route, upstream).or(model))
}

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// Asks `cell`'s breaker to admit a request: from this worker's last read when
    /// it can answer ([`super::cache::Seen::admit`]), else from shared data.
    /// `None`: the state could not be read (the request goes untracked).
    pub fn admit(&self, cell: CellId, now_ms: u64) -> Option<Admission> {
        let ttl = self.config.admission_cache_ms.get();
        self.admit_cached(cell, now_ms, ttl)
    }

    /// [`Worker::admit`], with a last read saying closed and quiet answering for up to
    /// `quiet_ttl` ms (at least `admission_cache_ms`; a denial answers for that).
    pub fn admit_cached(&self, cell: CellId, now_ms: u64, quiet_ttl: u64) -> Option<Admission> {
        let (_, up) = self.upstream_of(cell)?;
        let rec = self.cell(cell)?;
        let ttl = self.config.admission_cache_ms.get();
        if let Some(a) = rec.seen().and_then(|s| s.admit_for(ttl, quiet_ttl, now_ms)) {
            return Some(a);
        }
        match store::admit(&self.store, &rec.key, &up.breaker, now_ms) {
            Ok(a) => {
                self.report(cell, a.transition.as_ref(), a.reset.as_ref(), now_ms);
                match a.admission {
                    Admission::Admitted(t) => rec.saw(t.epoch, a.quiet, now_ms),
                    Admission::Denied { retry_at_ms } => rec.saw_denied(retry_at_ms, now_ms),
                }
                Some(a.admission)
            }
            Err(e) => {
                self.report_error(cell, e);
                None
            }
        }
    }

    /// Routes a request that matched `route`, for `model` if known.
    pub fn route(&self, route: RouteId, model: Option<&str>, now_ms: u64) -> Option<Routing<'_>> {
        let r = self.config.routes.get(route.index())?;
        let decision = routing::choose(r, now_ms, |u| {
            self.admit(entry_cell(&self.config, r, u, model), now_ms)
        });
        if self.config.mode == Mode::Shadow {
            return self.route_shadow(route, r, model, decision, now_ms);
        }
        accounting::decision(&self.metrics, route, &decision);
        match decision {
            Decision::Send {
                upstream,
                ticket,
                why,
                skipped,
            } => {
                let rewrite = rewrite_on(r, upstream);
                let routed = Routed {
                    upstream,
                    cell: self.config.cell(upstream, rewrite.or(model)),
                    ticket,
                    why,
                    skipped,
                    start_ms: now_ms,
                    shadow: None,
                };
                let cluster = &self.config.upstream(upstream)?.name;
                Some(Routing::Send {
                    routed,
                    cluster,
                    rewrite,
                })
            }
            Decision::Reject {
                retry_after_s,
                skipped,
            } => Some(Routing::Reject(self.rejection(r, retry_after_s, &skipped))),
        }
    }

    /// The all-open reply of route `r`.
    pub(super) fn rejection(
        &self,
        r: &Route,
        retry_after_s: u64,
        skipped: &[UpstreamId],
    ) -> Rejection<'_> {
        let info = self.config.response_header.as_ref().map(|h| {
            let value = format!(
                "upstream=none; reason=all_open; skipped={}",
                self.names(skipped).join(",")
            );
            (h.as_str(), value)
        });
        Rejection {
            body: routing::reject_body(&r.name, retry_after_s),
            retry_after: retry_after_s.to_string(),
            info,
        }
    }

    pub(super) fn names(&self, ids: &[UpstreamId]) -> Vec<&str> {
        ids.iter()
            .filter_map(|&u| self.config.upstream(u).map(|x| x.name.as_str()))
            .collect()
    }

    /// The response header naming the serving upstream, when that header is on:
    /// its name and value (built once for the common case).
    pub fn served_header(&self, routed: &Routed) -> Option<(&str, Cow<'_, str>)> {
        let h = self.config.response_header.as_deref()?;
        if self.config.mode == Mode::Shadow {
            let value = match &routed.shadow {
                Some(v) => Cow::Owned(v.clone()),
                None => Cow::Borrowed(self.shadow_header.get(routed.upstream.index())?.as_str()),
            };
            return Some((h, value));
        }
        let common = (routed.why == Why::Primary && routed.skipped.is_empty())
            .then(|| self.primary_header.get(routed.upstream.index()))
            .flatten();
        let value = match common {
            Some(v) => Cow::Borrowed(v.as_str()),
            None => {
                let name = &self.config.upstream(routed.upstream)?.name;
                let skipped = self.names(&routed.skipped);
                Cow::Owned(routing::describe(name, routed.why, &skipped))
            }
        };
        Some((h, value))
    }
}
