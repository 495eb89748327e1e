//! Serves the operator endpoints (see [`crate::admin`]) as local replies: the
//! worker core answers (and checks the bearer token); this reads the request's
//! `authorization` header when asked, and sends the reply or the dashboard page.

use super::abi::{self, Map};
use super::Core;
use crate::admin::{Endpoint, Refusal};
use crate::worker::operator::Reply;

/// The dashboard page (self-contained: no external scripts, fonts or styles).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The dashboard's headers: no caching, and a policy allowing only its own inline
/// code and reads of this origin.
const DASHBOARD_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
    ),
];

/// Answers an admin request with a local reply.
pub fn serve(core: &Core, request: Result<Endpoint, Refusal>) {
    let authorization = || abi::header(Map::Request, "authorization");
    let (status, body, extra) = match core.answer(request, authorization, abi::now_ms()) {
        Reply::Dashboard => {
            let page = DASHBOARD.as_bytes();
            let _ = abi::send_local_response(200, "llm_breaker_admin", page, &DASHBOARD_HEADERS);
            return;
        }
        Reply::Json {
            status,
            body,
            headers,
        } => (status, body, headers),
    };
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    headers.extend_from_slice(&extra);
    let _ = abi::send_local_response(status, "llm_breaker_admin", body.as_bytes(), &headers);
}
