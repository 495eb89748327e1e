//! What the mock does with a request: the [`Behaviour`] a test sets, and how the
//! composite ones (sequences, every-nth failures, per-model rules) resolve to the
//! single concrete behaviour that answers one request, deterministically.

use std::collections::HashMap;
use std::time::Duration;

/// How the upstream answers. The response body takes the shape of the provider the
/// request path names (`…/chat/completions` OpenAI, `…/messages` Anthropic); any
/// other path gets the small generic bodies of the first versions of this mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with a completion echoing the request's `model` (an SSE stream when the
    /// request says `"stream": true`); a small JSON body naming the upstream on other
    /// paths.
    Ok,
    /// 200 with a JSON completion of about this many bytes.
    OkSized(usize),
    /// This status with the provider's error body for it (529 = overloaded).
    Status(u16),
    /// Wait this long, then answer as [`Behaviour::Ok`] (streams too).
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Close,
    /// Read the request and never answer (until the client gives up).
    Hang,
    /// Send 200 headers and part of the body, then close the connection.
    CutMidBody,
    /// `status` (normally 429) with the provider's error body and a reset hint
    /// `after` from now, written in one header form.
    RateLimited {
        /// The status to answer with.
        status: u16,
        /// Which header carries the reset hint, and how it is written.
        reset: ResetForm,
        /// How far in the future the reset is.
        after: Duration,
    },
    /// 200 whose JSON body is the provider's error object for this status.
    JsonError(u16),
    /// An SSE stream of `chunks` content events, then a provider error event, then a
    /// clean end of the HTTP response (terminating chunk) without the terminal event.
    SseError {
        /// Content events before the error.
        chunks: usize,
    },
    /// An SSE stream of `chunks` content events, then the connection closes abruptly
    /// (no terminating chunk).
    SseCut {
        /// Content events before the cut.
        chunks: usize,
    },
    /// An SSE stream of `chunks` content events, then a clean end of the HTTP
    /// response without the terminal event (`[DONE]` / `message_stop`).
    SseNoTerminal {
        /// Content events sent.
        chunks: usize,
    },
    /// An SSE stream of `chunks` content events, then silence on an open connection
    /// until the client closes it or the mock stops.
    SseStall {
        /// Content events before the stall.
        chunks: usize,
    },
    /// The i-th request (counted from the last `set`) is answered by element
    /// `i % len`; an empty sequence answers [`Behaviour::Ok`].
    Sequence(Vec<Behaviour>),
    /// Every n-th request (the n-th, 2n-th, …) is answered by `behaviour`, the others
    /// by [`Behaviour::Ok`].
    FailEvery {
        /// The period; 0 and 1 both mean every request.
        n: usize,
        /// The failing answer.
        behaviour: Box<Behaviour>,
    },
    /// Requests whose body names one of these models get its behaviour; the rest get
    /// the fallback. Each model keeps its own sequence counter.
    ByModel(Vec<(String, Behaviour)>, Box<Behaviour>),
}

/// The header (and format) a rate-limited answer carries its reset hint in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetForm {
    /// `retry-after: <whole seconds, rounded up>`
    RetryAfter,
    /// `retry-after: <IMF-fixdate>`, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    HttpDate,
    /// `retry-after-ms: <milliseconds>`
    RetryAfterMs,
    /// OpenAI's `x-ratelimit-reset-requests: 1m30s` (with limit/remaining headers).
    OpenAi,
    /// Anthropic's `anthropic-ratelimit-requests-reset: <RFC 3339 UTC>` (with
    /// limit/remaining headers).
    Anthropic,
    /// Every reset header above, each with an unparsable value.
    Garbage,
    /// No reset header at all.
    None,
}

impl ResetForm {
    /// The name used by the control query's `form=` key.
    pub fn name(self) -> &'static str {
        match self {
            ResetForm::RetryAfter => "retry-after",
            ResetForm::HttpDate => "http-date",
            ResetForm::RetryAfterMs => "retry-after-ms",
            ResetForm::OpenAi => "openai",
            ResetForm::Anthropic => "anthropic",
            ResetForm::Garbage => "garbage",
            ResetForm::None => "none",
        }
    }

    /// Every form.
    pub const ALL: [ResetForm; 7] = [
        ResetForm::RetryAfter,
        ResetForm::HttpDate,
        ResetForm::RetryAfterMs,
        ResetForm::OpenAi,
        ResetForm::Anthropic,
        ResetForm::Garbage,
        ResetForm::None,
    ];

    /// Parses a `form=` value.
    pub fn from_name(s: &str) -> Option<ResetForm> {
        ResetForm::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Per-scope request counters behind [`Behaviour::Sequence`] and
/// [`Behaviour::FailEvery`]. The scope is `""` for the server as a whole and
/// `model:<name>` inside a [`Behaviour::ByModel`] rule.
#[derive(Debug, Default)]
pub(crate) struct Counters(HashMap<String, u64>);

impl Counters {
    /// Returns the scope's count and advances it.
    fn take(&mut self, scope: &str) -> u64 {
        let n = self.0.entry(scope.to_string()).or_insert(0);
        let i = *n;
        *n += 1;
        i
    }

    /// Restarts every scope.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Restarts one model's scope.
    pub(crate) fn clear_model(&mut self, model: &str) {
        self.0.remove(&model_scope(model));
    }
}

fn model_scope(model: &str) -> String {
    format!("model:{model}")
}

impl Behaviour {
    /// The concrete behaviour that answers the next request for `model`, advancing
    /// the counters of the scope it falls in (at most once per request).
    pub(crate) fn resolve(&self, model: Option<&str>, counters: &mut Counters) -> Behaviour {
        self.resolve_in("", None, model, counters)
    }

    /// `index` is the request's position once a scope's counter has been read; a
    /// nested sequence gets the number of times its parent has come back to it.
    fn resolve_in(
        &self,
        scope: &str,
        index: Option<u64>,
        model: Option<&str>,
        counters: &mut Counters,
    ) -> Behaviour {
        match self {
            Behaviour::Sequence(steps) if steps.is_empty() => Behaviour::Ok,
            Behaviour::Sequence(steps) => {
                let i = index.unwrap_or_else(|| counters.take(scope));
                let len = steps.len() as u64;
                steps[(i % len) as usize].resolve_in(scope, Some(i / len), model, counters)
            }
            Behaviour::FailEvery { n, behaviour } => {
                let n = (*n).max(1) as u64;
                let k = index.unwrap_or_else(|| counters.take(scope)) + 1;
                if k.is_multiple_of(n) {
                    behaviour.resolve_in(scope, Some(k / n - 1), model, counters)
                } else {
                    Behaviour::Ok
                }
            }
            Behaviour::ByModel(rules, fallback) => {
                match rules.iter().find(|(m, _)| Some(m.as_str()) == model) {
                    Some((m, b)) => b.resolve_in(&model_scope(m), None, model, counters),
                    None => fallback.resolve_in(scope, index, model, counters),
                }
            }
            concrete => concrete.clone(),
        }
    }

    /// This behaviour with `model`'s rule set to `b` (added, or replacing the old
    /// one); every other model keeps what it had.
    pub fn with_model(self, model: &str, b: Behaviour) -> Behaviour {
        match self {
            Behaviour::ByModel(mut rules, fallback) => {
                match rules.iter_mut().find(|(m, _)| m == model) {
                    Some(rule) => rule.1 = b,
                    None => rules.push((model.to_string(), b)),
                }
                Behaviour::ByModel(rules, fallback)
            }
            other => Behaviour::ByModel(vec![(model.to_string(), b)], Box::new(other)),
        }
    }

    /// True for the behaviours that always answer with an SSE stream.
    pub(crate) fn is_stream_failure(&self) -> bool {
        matches!(
            self,
            Behaviour::SseError { .. }
                | Behaviour::SseCut { .. }
                | Behaviour::SseNoTerminal { .. }
                | Behaviour::SseStall { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: &Behaviour, models: &[Option<&str>]) -> Vec<Behaviour> {
        let mut c = Counters::default();
        models.iter().map(|m| b.resolve(*m, &mut c)).collect()
    }

    #[test]
    fn fail_every_second_request() {
        let b = Behaviour::FailEvery {
            n: 2,
            behaviour: Box::new(Behaviour::Status(503)),
        };
        let got = run(&b, &[None; 6]);
        let s = Behaviour::Status(503);
        let ok = Behaviour::Ok;
        assert_eq!(got, [ok.clone(), s.clone(), ok.clone(), s.clone(), ok, s]);
    }

    #[test]
    fn sequences_cycle_and_nested_sequences_advance_on_each_visit() {
        let inner = Behaviour::Sequence(vec![Behaviour::Status(500), Behaviour::Status(502)]);
        let b = Behaviour::Sequence(vec![inner, Behaviour::Ok]);
        let got = run(&b, &[None; 6]);
        let codes: Vec<_> = got
            .iter()
            .map(|b| match b {
                Behaviour::Status(c) => *c,
                _ => 200,
            })
            .collect();
        assert_eq!(codes, [500, 200, 502, 200, 500, 200]);
    }

    #[test]
    fn by_model_counts_each_model_separately() {
        let b = Behaviour::Ok
            .with_model(
                "a",
                Behaviour::FailEvery {
                    n: 2,
                    behaviour: Box::new(Behaviour::Status(529)),
                },
            )
            .with_model("b", Behaviour::Status(500));
        let got = run(&b, &[Some("a"), Some("b"), Some("x"), Some("a"), None]);
        assert_eq!(
            got,
            [
                Behaviour::Ok,
                Behaviour::Status(500),
                Behaviour::Ok,
                Behaviour::Status(529),
                Behaviour::Ok
            ]
        );
        // Replacing a rule keeps the others.
        let b = b.with_model("a", Behaviour::Hang);
        assert_eq!(
            run(&b, &[Some("a"), Some("b")]),
            [Behaviour::Hang, Behaviour::Status(500)]
        );
    }
}
