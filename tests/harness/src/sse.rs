//! Splitting a `text/event-stream` body into its events, so tests can assert on
//! the framing of the streams the mock writes and on what a client got through
//! Envoy (how many events, whether the terminal one came).

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Parses a whole SSE body. Events end at a blank line; a trailing event without
/// one is still returned. Comments (`:`) and unknown fields are skipped.
pub fn parse(body: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let (mut event, mut data): (Option<String>, Vec<&str>) = (None, Vec::new());
    for line in body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if event.is_some() || !data.is_empty() {
                events.push(Event {
                    event: event.take(),
                    data: data.join("\n"),
                });
                data.clear();
            }
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_some() || !data.is_empty() {
        events.push(Event {
            event,
            data: data.join("\n"),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_and_fields() {
        let body = "event: ping\ndata: {\"type\": \"ping\"}\n\n: comment\ndata: a\r\ndata: b\r\n\r\ndata: [DONE]";
        assert_eq!(
            parse(body),
            [
                Event {
                    event: Some("ping".into()),
                    data: r#"{"type": "ping"}"#.into()
                },
                Event {
                    event: None,
                    data: "a\nb".into()
                },
                Event {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }
}
