//! The control query (`/_mock/set?mode=…`, and the binary's `--set`/`--KEY VALUE`
//! flags): parsing it into a [`Control`]. The syntax is documented on the
//! [`upstream`](super) module.

use super::behaviour::{Behaviour, ResetForm};
use super::gate::Expect;
use std::time::Duration;

/// One parsed control request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Control {
    /// The new behaviour, if the query had a `mode`.
    pub behaviour: Option<Behaviour>,
    /// `model=`: apply the behaviour to requests for this model only.
    pub model: Option<String>,
    /// `chunk_ms=`: pause between SSE events.
    pub chunk_delay: Option<Duration>,
    /// `expect=`: the provider gate to play (`Some(None)`: `expect=none`, no gate).
    pub expect: Option<Option<Expect>>,
}

/// Every key the query may carry; anything else is a typo worth rejecting.
const KEYS: [&str; 15] = [
    "mode",
    "model",
    "chunk_ms",
    "status",
    "ms",
    "seconds",
    "form",
    "chunks",
    "bytes",
    "n",
    "fail",
    "steps",
    "expect",
    "key",
    "deployment",
];

/// Decoded `key=value` pairs, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as a number, `default` when absent.
    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.get(key) {
            Some(v) => v.parse().map_err(|_| format!("bad {key}={v:?}")),
            None => default.ok_or_else(|| format!("missing {key}=")),
        }
    }
}

impl Control {
    /// Parses a query string such as `model=gpt-4o&mode=status&status=529`.
    pub fn parse(query: &str) -> Result<Control, String> {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown key {k:?}"));
        }
        let p = Params(pairs);
        let behaviour = match p.get("mode") {
            Some(mode) => Some(behaviour(mode, &p)?),
            None => None,
        };
        let chunk_delay = match p.get("chunk_ms") {
            Some(_) => Some(Duration::from_millis(p.num("chunk_ms", None)?)),
            None => None,
        };
        let model = p.get("model").filter(|m| !m.is_empty()).map(str::to_string);
        let expect = match p.get("expect") {
            Some(e) => Some(Expect::parse(e, p.get("key"), p.get("deployment"))?),
            None => None,
        };
        let alone = chunk_delay.is_some() || expect.is_some();
        if behaviour.is_none() && (!alone || model.is_some()) {
            return Err("missing mode=".to_string());
        }
        Ok(Control {
            behaviour,
            model,
            chunk_delay,
            expect,
        })
    }
}

/// Default number of content events before a stream misbehaves.
const DEFAULT_CHUNKS: usize = 2;

fn behaviour(mode: &str, p: &Params) -> Result<Behaviour, String> {
    let chunks = || p.num("chunks", Some(DEFAULT_CHUNKS));
    Ok(match mode {
        "ok" => Behaviour::Ok,
        "sized" => Behaviour::OkSized(p.num("bytes", None)?),
        "status" => Behaviour::Status(p.num("status", None)?),
        "delay" => Behaviour::Delay(Duration::from_millis(p.num("ms", None)?)),
        "close" => Behaviour::Close,
        "hang" => Behaviour::Hang,
        "cut" => Behaviour::CutMidBody,
        "ratelimit" => {
            let form = p.get("form").unwrap_or("retry-after");
            let reset =
                ResetForm::from_name(form).ok_or_else(|| format!("unknown form={form:?}"))?;
            let after = match p.get("ms") {
                Some(_) => Duration::from_millis(p.num("ms", None)?),
                None => Duration::from_secs(p.num("seconds", Some(1))?),
            };
            Behaviour::RateLimited {
                status: p.num("status", Some(429))?,
                reset,
                after,
            }
        }
        "json-error" => Behaviour::JsonError(p.num("status", Some(529))?),
        "sse-error" => Behaviour::SseError { chunks: chunks()? },
        "sse-cut" => Behaviour::SseCut { chunks: chunks()? },
        "sse-no-terminal" => Behaviour::SseNoTerminal { chunks: chunks()? },
        "sse-stall" => Behaviour::SseStall { chunks: chunks()? },
        "fail-every" => {
            let fail = p.get("fail").unwrap_or("status");
            if matches!(fail, "fail-every" | "sequence") {
                return Err(format!("fail={fail} cannot nest"));
            }
            Behaviour::FailEvery {
                n: p.num("n", None)?,
                behaviour: Box::new(behaviour(fail, p)?),
            }
        }
        "sequence" => Behaviour::Sequence(
            p.get("steps")
                .ok_or("missing steps=")?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(step)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown mode={other:?}")),
    })
}

/// One `steps=` element: a bare status (`503`) or a mode with `;`-separated keys
/// (`sse-cut;chunks=3`).
fn step(s: &str) -> Result<Behaviour, String> {
    if let Ok(code) = s.parse::<u16>() {
        return Ok(Behaviour::Status(code));
    }
    let mut parts = s.split(';');
    let mode = parts.next().unwrap_or_default();
    let pairs = parts
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    if mode == "sequence" {
        return Err("steps cannot hold a sequence".to_string());
    }
    behaviour(mode, &Params(pairs))
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(q: &str) -> Behaviour {
        Control::parse(q).unwrap().behaviour.unwrap()
    }

    #[test]
    fn parses_every_mode() {
        let secs = Duration::from_secs;
        let cases = [
            ("mode=ok", Behaviour::Ok),
            ("mode=sized&bytes=2048", Behaviour::OkSized(2048)),
            ("mode=status&status=529", Behaviour::Status(529)),
            (
                "mode=delay&ms=500",
                Behaviour::Delay(Duration::from_millis(500)),
            ),
            ("mode=close", Behaviour::Close),
            ("mode=hang", Behaviour::Hang),
            ("mode=cut", Behaviour::CutMidBody),
            (
                "mode=ratelimit&form=http-date&seconds=2",
                Behaviour::RateLimited {
                    status: 429,
                    reset: ResetForm::HttpDate,
                    after: secs(2),
                },
            ),
            (
                "mode=ratelimit&form=retry-after-ms&ms=1500&status=503",
                Behaviour::RateLimited {
                    status: 503,
                    reset: ResetForm::RetryAfterMs,
                    after: Duration::from_millis(1500),
                },
            ),
            ("mode=json-error", Behaviour::JsonError(529)),
            ("mode=sse-error&chunks=3", Behaviour::SseError { chunks: 3 }),
            ("mode=sse-cut", Behaviour::SseCut { chunks: 2 }),
            (
                "mode=sse-no-terminal&chunks=0",
                Behaviour::SseNoTerminal { chunks: 0 },
            ),
            ("mode=sse-stall&chunks=1", Behaviour::SseStall { chunks: 1 }),
            (
                "mode=fail-every&n=2&status=503",
                Behaviour::FailEvery {
                    n: 2,
                    behaviour: Box::new(Behaviour::Status(503)),
                },
            ),
            (
                "mode=fail-every&n=3&fail=sse-cut&chunks=1",
                Behaviour::FailEvery {
                    n: 3,
                    behaviour: Box::new(Behaviour::SseCut { chunks: 1 }),
                },
            ),
            (
                "mode=sequence&steps=ok,503,sse-cut;chunks=3,ratelimit;form=openai;seconds=90",
                Behaviour::Sequence(vec![
                    Behaviour::Ok,
                    Behaviour::Status(503),
                    Behaviour::SseCut { chunks: 3 },
                    Behaviour::RateLimited {
                        status: 429,
                        reset: ResetForm::OpenAi,
                        after: secs(90),
                    },
                ]),
            ),
        ];
        for (q, want) in cases {
            assert_eq!(b(q), want, "{q}");
        }
    }

    #[test]
    fn reads_model_scope_and_chunk_delay() {
        let c = Control::parse("model=meta-llama%2FLlama-3&mode=status&status=529&chunk_ms=20")
            .unwrap();
        assert_eq!(c.model.as_deref(), Some("meta-llama/Llama-3"));
        assert_eq!(c.behaviour, Some(Behaviour::Status(529)));
        assert_eq!(c.chunk_delay, Some(Duration::from_millis(20)));
        let c = Control::parse("chunk_ms=5").unwrap();
        assert_eq!(
            (c.behaviour, c.chunk_delay),
            (None, Some(Duration::from_millis(5)))
        );
    }

    #[test]
    fn rejects_bad_queries_with_a_reason() {
        for (q, why) in [
            ("", "missing mode="),
            ("mode=status", "missing status="),
            ("mode=status&status=abc", "bad status=\"abc\""),
            ("mode=status&stauts=529", "unknown key \"stauts\""),
            ("mode=teapot", "unknown mode=\"teapot\""),
            ("mode=ratelimit&form=soon", "unknown form=\"soon\""),
            ("mode=fail-every&status=503", "missing n="),
            ("model=a&chunk_ms=3", "missing mode="),
        ] {
            assert_eq!(Control::parse(q), Err(why.to_string()), "{q}");
        }
    }
}
