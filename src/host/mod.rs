//! The proxy-wasm adapter: the only code that talks to Envoy. It reads the
//! configuration, builds the [`Worker`] core over Envoy shared data
//! ([`EnvoyStore`]) and stats ([`metrics::HostMetrics`]), and translates the root
//! and HTTP stream callbacks ([`http`], [`attempt`] for the upstream role) and the
//! upstream log's `on_log` (the root context's, [`Root::on_log`]) into calls on it.

pub mod abi;
mod admin;
mod attempt;
mod fleet;
mod held;
mod http;
pub mod metrics;
mod probe;

use crate::config::{Config, Mode, Role};
use crate::store::{SharedStore, StoreError};
use crate::worker::hold::BodyCallbacks;
use crate::worker::operator::Probes;
use crate::worker::Worker;
use abi::Level;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

/// Runs once per VM, from [`abi`]'s module entry point.
fn start() {
    install_logger();
    std::panic::set_hook(Box::new(|info| {
        abi::log(Level::Critical, &format!("llm-breaker: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root {
            id,
            ..Root::default()
        })
    });
}

/// The `log` facade over the host's log call.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    // The `log` macros already filtered by `max_level`.
    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        match record.args().as_str() {
            Some(s) => abi::log(level, s),
            None => abi::log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

/// Installs [`HostLogger`]; every level passes until [`use_host_log_level`].
fn install_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Reads the host's log level once (not allowed while the module initializes,
/// hence at VM start) and lets only what it would print through (all levels if
/// the host does not say).
fn use_host_log_level() {
    log::set_max_level(abi::log_filter().unwrap_or(log::LevelFilter::Trace));
}

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

/// The worker core as this adapter builds it.
pub type Core = Worker<EnvoyStore, metrics::HostMetrics>;

/// The root context: owns the configuration of one VM.
#[derive(Default)]
pub struct Root {
    core: Option<Rc<Core>>,
    /// Active probes in flight from this VM.
    probes: Probes,
    /// Requests held for their body, watched from the tick.
    holds: Rc<held::Holds>,
    /// This root context's id.
    id: u32,
    /// Fleet sync through etcd, when configured.
    fleet: fleet::Fleet,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _h: usize, body: usize, _t: usize) {
        if let Some(core) = &self.core {
            if self.fleet.owns(token) {
                self.fleet.answered(core, token, body);
            } else {
                probe::answered(core, &mut self.probes, token);
            }
        }
    }
}

/// The configuration, or why there is none (logged at error level).
fn read_config() -> Option<Config> {
    let bytes = match abi::plugin_configuration() {
        Ok(b) => b,
        Err(s) => {
            log::error!(
                "llm-breaker: cannot read the plugin configuration (status {})",
                s.0
            );
            return None;
        }
    };
    Config::parse(&bytes)
        .map_err(|e| log::error!("llm-breaker: {e}"))
        .ok()
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        use_host_log_level();
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = read_config() else {
            return false;
        };
        let metrics = metrics::HostMetrics::define(&config);
        let mut core = Worker::new(config, EnvoyStore, metrics);
        core.seed(abi::now_ms());
        let tick = u32::try_from(core.tick_period_ms()).unwrap_or(u32::MAX);
        if let Err(s) = abi::set_tick_period_ms(tick) {
            log::warn!("llm-breaker: cannot arm the flush timer (status {})", s.0);
        }
        core.load_admin_token(|name| std::env::var(name).ok());
        self.fleet = fleet::Fleet::configure(&core);
        self.core = Some(Rc::new(core));
        true
    }

    /// The upstream-log role: Envoy logs one attempt (its access-log filter passes
    /// only failed ones). Reads the attempt's upstream (endpoint metadata), its
    /// request's tickets, its response headers and flags, and records it.
    fn on_log(&mut self) {
        let Some(core) = self
            .core
            .as_ref()
            .filter(|c| c.config().role == Role::UpstreamLog && c.config().mode != Mode::Off)
        else {
            return;
        };
        let Some(name) = abi::property(&attempt::UPSTREAM_NAME) else {
            return;
        };
        let request = abi::pairs(abi::Map::Request);
        let response = abi::pairs(abi::Map::Response);
        let logged = crate::worker::within::LoggedAttempt {
            name: &name,
            tickets: request.get(crate::worker::within::TICKETS_HEADER),
            status: response.status(),
            flags: abi::property_u64(&["response", "flags"]).unwrap_or(0),
            duration_ms: abi::property_u64(&["request", "duration"]).map(|ns| ns / 1_000_000),
        };
        core.log_attempt(logged, abi::now_ms(), |h| response.value(h));
    }

    fn on_tick(&mut self) {
        let Some(core) = self.core.as_ref() else {
            return;
        };
        let now = abi::now_ms();
        // Requests held for their body are resumed in every mode (off mode may hold
        // one to match a route by model).
        self.holds.tick(core, now, self.id);
        // Off mode records nothing: no batches to write, no active probes.
        if core.config().mode != Mode::Off {
            core.tick(now);
            probe::tick(core, &mut self.probes, now);
            self.fleet.tick(core, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.core {
            // The upstream log has no streams.
            Some(core) if core.config().role == Role::UpstreamLog => {
                Some(Box::new(http::Stream::new(None)))
            }
            // Off mode: attempts pass through untouched.
            Some(core)
                if core.config().role == Role::Upstream && core.config().mode == Mode::Off =>
            {
                Some(Box::new(http::Stream::new(None)))
            }
            Some(core) if core.config().role == Role::Upstream => {
                if core.uses_models() && core.body_callbacks() == BodyCallbacks::Unknown {
                    let holds = self.holds.clone();
                    let attempt = attempt::Attempt::new(core.clone());
                    return Some(Box::new(held::Shared::new(attempt, context_id, holds)));
                }
                Some(Box::new(attempt::Attempt::new(core.clone())))
            }
            // A stream the tick may have to resume (only until this worker knows
            // whether Envoy runs body callbacks while headers are held).
            Some(core) if core.uses_models() && core.body_callbacks() == BodyCallbacks::Unknown => {
                let holds = self.holds.clone();
                let stream = http::Stream::new(Some(core.clone()));
                Some(Box::new(held::Shared::new(stream, context_id, holds)))
            }
            // Without a configuration the filter passes everything through.
            core => Some(Box::new(http::Stream::new(core.clone()))),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
