//! Test-only filter: a request carrying `x-test-corrupt: <key>` makes it overwrite that
//! shared-data key with bytes llm-breaker cannot decode. Loaded with llm-breaker's
//! `vm_id`, so both see the same shared data.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Corruptor))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Corruptor;

impl Context for Corruptor {}

impl HttpContext for Corruptor {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if let Some(key) = self.get_http_request_header("x-test-corrupt") {
            let _ = hostcalls::set_shared_data(&key, Some(b"\x07not a breaker state"), None);
        }
        Action::Continue
    }
}
