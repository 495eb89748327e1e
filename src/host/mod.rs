//! The proxy-wasm adapter: the only code that talks to Envoy. It reads the
//! configuration, keeps breaker state in shared data through [`EnvoyStore`], and
//! wires the pure core into the HTTP stream callbacks ([`http`]).

pub mod abi;
mod http;
pub mod metrics;

use crate::breaker::Transition;
use crate::config::Config;
use crate::store::{self, SharedStore, StoreError, Updated};
use abi::Level;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    std::panic::set_hook(Box::new(|info| {
        abi::log(Level::Critical, &format!("llm-breaker: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Envoy shared data as a [`SharedStore`].
pub struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::shared_get(key).map_err(|s| StoreError::Host(s.0))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        abi::shared_set(key, value, cas).map_err(|s| match s.0 {
            abi::status::CAS_MISMATCH => StoreError::CasMismatch,
            other => StoreError::Host(other),
        })
    }
}

/// What every HTTP context of one configuration shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Metric ids.
    pub metrics: metrics::Metrics,
}

impl Shared {
    /// Reports what an update did: transition log line and metrics, reset warning.
    pub fn report<T>(&self, upstream: usize, result: &Result<Updated<T>, store::UpdateError>) {
        let name = self
            .config
            .upstreams
            .get(upstream)
            .map_or("?", |u| u.name.as_str());
        let m = self.metrics.upstream(upstream);
        match result {
            Ok(u) => {
                if let Some(e) = &u.reset {
                    abi::log(
                        Level::Warn,
                        &format!("llm-breaker: shared state of upstream {name} did not decode ({e}); reset to closed"),
                    );
                    abi::increment(m.and_then(|m| m.state_resets), 1);
                }
                if let Some(t) = &u.transition {
                    log_transition(name, t);
                    self.metrics.transition(upstream, t);
                }
            }
            Err(e) => {
                abi::log(
                    Level::Warn,
                    &format!("llm-breaker: breaker update for upstream {name} dropped: {e}"),
                );
                abi::increment(m.and_then(|m| m.update_errors), 1);
            }
        }
    }
}

fn log_transition(upstream: &str, t: &Transition) {
    let open = t
        .open_ms
        .map(|ms| format!(" open_ms={ms}"))
        .unwrap_or_default();
    abi::log(
        Level::Info,
        &format!(
            "llm-breaker: upstream={upstream} from={} to={} reason={}{open}",
            t.from.as_str(),
            t.to.as_str(),
            t.reason.as_str()
        ),
    );
}

/// The root context: owns the configuration of one VM.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match abi::plugin_configuration() {
            Ok(b) => b,
            Err(s) => {
                abi::log(
                    Level::Error,
                    &format!(
                        "llm-breaker: cannot read the plugin configuration (status {})",
                        s.0
                    ),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                abi::log(Level::Error, &format!("llm-breaker: {e}"));
                return false;
            }
        };
        let now = abi::now_ms();
        let metrics = metrics::Metrics::define(&config);
        for (i, u) in config.upstreams.iter().enumerate() {
            // Creating keys here keeps the request path away from the non-atomic
            // "create if absent"; idempotent, so the canary VM may run it too.
            if let Err(e) = store::seed(&EnvoyStore, &u.name, &u.breaker, now) {
                abi::log(
                    Level::Warn,
                    &format!("llm-breaker: cannot seed shared state of {}: {e}", u.name),
                );
            }
            if let Ok(state) = store::peek(&EnvoyStore, &u.name, &u.breaker, now) {
                abi::record(
                    metrics.upstream(i).and_then(|m| m.state),
                    state.kind().gauge(),
                );
            }
        }
        abi::log(
            Level::Info,
            &format!(
                "llm-breaker: configured {} route(s), {} upstream(s)",
                config.routes.len(),
                config.upstreams.len()
            ),
        );
        self.shared = Some(Rc::new(Shared { config, metrics }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration the filter passes everything through.
        Some(Box::new(http::Stream::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
