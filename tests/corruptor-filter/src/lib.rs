//! Test-only filter: a request carrying `x-test-corrupt: <key>` makes it overwrite that
//! shared-data key with bytes llm-breaker cannot decode (those of
//! `x-test-corrupt-hex`, or a default). Loaded with llm-breaker's `vm_id`, so both
//! see the same shared data.

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
            let bytes = self
                .get_http_request_header("x-test-corrupt-hex")
                .map(|h| {
                    (0..h.len() / 2)
                        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                        .collect()
                })
                .unwrap_or_else(|| b"\x07not a breaker state".to_vec());
            let _ = hostcalls::set_shared_data(&key, Some(&bytes), None);
        }
        Action::Continue
    }
}
