//! What the mock has been asked: totals per path and per model and the last request
//! in full, for the Rust API and for `GET /_mock/stats`. Control requests are not
//! traffic and never reach here.

use super::http::RecordedRequest;
use serde_json::json;
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
    /// Every distinct credential header (`authorization`, `api-key`, `x-api-key`,
    /// `x-llm-breaker-credential-*`) and value received, so a test can say which keys
    /// ever reached this provider.
    pub credentials: std::collections::BTreeSet<(String, String)>,
}

/// Whether a request header carries a key.
fn is_credential(name: &str) -> bool {
    matches!(name, "authorization" | "api-key" | "x-api-key")
        || name.starts_with("x-llm-breaker-credential-")
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
        for (k, v) in req.headers.iter().filter(|(k, _)| is_credential(k)) {
            self.credentials.insert((k.clone(), v.clone()));
        }
        self.total
    }

    /// The `/_mock/stats` document.
    pub(crate) fn to_json(&self, name: &str, behaviour: &str) -> String {
        let last = self.last.as_ref().map(|(req, model)| {
            // A number when it is one; otherwise as sent, so a bad one shows.
            let content_length = req
                .header("content-length")
                .map(|v| v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)));
            json!({
                "method": req.method,
                "path": req.path(),
                "model": model,
                "content_length": content_length,
                "transfer_encoding": req.header("transfer-encoding"),
                "body_len": req.body.len(),
            })
        });
        let doc = json!({
            "name": name,
            "behaviour": behaviour,
            "total": self.total,
            "paths": self.paths,
            "models": self.models,
            "last": last,
        });
        format!("{doc}\n")
    }
}
