//! What the mock has been asked: totals per path and per model and the last request
//! in full, for the Rust API and for `GET /_mock/stats`. Control requests are not
//! traffic and never reach here.

use super::http::RecordedRequest;
use crate::json::quote;
use std::collections::BTreeMap;

/// Counts of the traffic a server has seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Every request.
    pub total: usize,
    /// Requests per path (query stripped).
    pub paths: BTreeMap<String, usize>,
    /// Requests per body `model`; requests without one are not counted here.
    pub models: BTreeMap<String, usize>,
    /// The last request, with the model read from its body.
    pub last: Option<(RecordedRequest, Option<String>)>,
}

impl Stats {
    /// Counts a request; returns its 1-based number.
    pub(crate) fn record(&mut self, req: &RecordedRequest, model: Option<&str>) -> usize {
        self.total += 1;
        *self.paths.entry(req.path().to_string()).or_default() += 1;
        if let Some(m) = model {
            *self.models.entry(m.to_string()).or_default() += 1;
        }
        self.last = Some((req.clone(), model.map(str::to_string)));
        self.total
    }

    /// The `/_mock/stats` document.
    pub(crate) fn to_json(&self, name: &str, behaviour: &str) -> String {
        let map = |m: &BTreeMap<String, usize>| {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{}:{v}", quote(k))).collect();
            format!("{{{}}}", items.join(","))
        };
        let last = match &self.last {
            None => "null".to_string(),
            Some((req, model)) => {
                let content_length = match req.header("content-length") {
                    None => "null".to_string(),
                    Some(v) => match v.parse::<u64>() {
                        Ok(n) => n.to_string(),
                        Err(_) => quote(v),
                    },
                };
                format!(
                    r#"{{"method":{},"path":{},"model":{},"content_length":{content_length},"transfer_encoding":{},"body_len":{}}}"#,
                    quote(&req.method),
                    quote(req.path()),
                    model.as_deref().map_or_else(|| "null".to_string(), quote),
                    req.header("transfer-encoding")
                        .map_or_else(|| "null".to_string(), quote),
                    req.body.len()
                )
            }
        };
        format!(
            r#"{{"name":{},"behaviour":{},"total":{},"paths":{},"models":{},"last":{last}}}"#,
            quote(name),
            quote(behaviour),
            self.total,
            map(&self.paths),
            map(&self.models),
        ) + "\n"
    }
}
