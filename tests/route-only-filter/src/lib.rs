//! The benchmark's floor for a filter that routes by header: it makes only the host
//! calls that any such circuit breaker must make on every request — read `:path` (to
//! match a route), write the routing header (to choose the cluster), read `:status`
//! (to learn the outcome) — and keeps no state. llm-breaker's closed path cannot be
//! cheaper than this; `make bench` runs it next to the no-op filter to show how far
//! the filter is from that floor. Bench-only: the header and cluster are fixed.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const ROUTE_HEADER: &str = "x-llm-breaker-upstream";
const CLUSTER: &str = "openai";
const PREFIX: &str = "/v1/";

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RouteOnly))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RouteOnly;

impl Context for RouteOnly {}

impl HttpContext for RouteOnly {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let path = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path");
        if path.ok().flatten().is_some_and(|p| p.starts_with(PREFIX)) {
            let _ =
                hostcalls::set_map_value(MapType::HttpRequestHeaders, ROUTE_HEADER, Some(CLUSTER));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        Action::Continue
    }
}
