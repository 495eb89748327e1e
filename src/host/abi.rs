//! The proxy-wasm host calls the filter uses, declared against the raw ABI so that
//! every status the host returns becomes a `Result` instead of the SDK's `panic!`
//! (a panic would kill the worker's VM). Buffers the host allocates through the
//! SDK's `proxy_on_memory_allocate` are taken back as `Vec`s, as the SDK does.
//!
//! This is the only module allowed `unsafe` (the crate root denies it): the raw
//! imports, the module's entry point (`#[no_mangle]`, from `proxy_wasm::main!`),
//! and taking back host buffers.
//!
//! One call still goes through the SDK: [`dispatch_http_call`] wraps
//! `proxy_wasm::hostcalls::dispatch_http_call`, because the SDK must register the
//! call's token in its dispatcher to route the answer to
//! `RootContext::on_http_call_response`, and that callout registry is private to
//! the SDK. That call panics (killing the VM) if the host answers a status other
//! than OK, `BadArgument` or `InternalFailure`, and if the host hands out a token
//! that is still registered ("duplicate token_id"). Envoy returns only those three
//! statuses from `proxy_http_call` and never reuses a live token.

#![allow(unsafe_code)]

use std::ptr::null_mut;
use std::time::Duration;

// The module's entry point (`_initialize`, once per VM).
proxy_wasm::main! {{
    super::start();
}}

/// A non-OK status from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

/// Status codes of the ABI.
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// No such key, header or property.
    pub const NOT_FOUND: u32 = 1;
    /// A shared-data CAS conflict.
    pub const CAS_MISMATCH: u32 = 8;
}

/// Header maps.
#[derive(Debug, Clone, Copy)]
pub enum Map {
    /// Request headers.
    Request = 0,
    /// Response headers.
    Response = 2,
    /// Headers of the answer to a `dispatch_http_call`.
    HttpCallResponse = 6,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
    /// Critical.
    Critical = 5,
}

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(ret_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
        ret_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_metric(id: u32, ret_value: *mut u64) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

fn check(code: u32) -> Result<(), HostStatus> {
    if code == status::OK {
        Ok(())
    } else {
        Err(HostStatus(code))
    }
}

/// Takes ownership of a host-allocated buffer.
///
/// # Safety
/// `data` must be null or a buffer of `size` bytes the host allocated through the
/// SDK's allocator for this call.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Runs a host call that hands back a buffer through `(data, size)` out-pointers:
/// the buffer on OK (`None` if the host gave none), `Ok(None)` if not found.
fn fetch(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, HostStatus> {
    let (mut data, mut size) = (null_mut(), 0usize);
    match call(&mut data, &mut size) {
        // Safety: on OK the host filled `data` and `size` through the SDK's allocator.
        status::OK => Ok(unsafe { take(data, size) }),
        status::NOT_FOUND => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// Writes a log line at `level`; failures are ignored (there is nowhere to report them).
pub fn log(level: Level, msg: &str) {
    unsafe {
        proxy_log(level as u32, msg.as_ptr(), msg.len());
    }
}

/// The host's log level for this plugin as a `log` filter (its critical level lets
/// no `log` record through), `None` if the host does not say.
pub fn log_filter() -> Option<log::LevelFilter> {
    use log::LevelFilter::*;
    let mut level = 0u32;
    let status = unsafe { proxy_get_log_level(&mut level) };
    let filters = [Trace, Debug, Info, Warn, Error, Off];
    (status == status::OK).then(|| filters.get(level as usize).copied())?
}

/// The `:status` of a response header map, if it is a number.
pub fn status_code(map: Map) -> Option<u16> {
    header(map, ":status").and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
}

/// Sends an HTTP call to `cluster` through the SDK (see the module docs for why,
/// and when it panics); its answer arrives in `on_http_call_response`.
pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u32, proxy_wasm::types::Status> {
    let timeout = Duration::from_millis(timeout_ms);
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout)
}

/// Wall-clock time in unix nanoseconds (0 if the host refuses).
fn now_ns() -> u64 {
    let mut ns = 0u64;
    unsafe {
        proxy_get_current_time_nanoseconds(&mut ns);
    }
    ns
}

/// Wall-clock time in unix milliseconds (0 if the host refuses).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Arms (or with 0 disarms) this VM's periodic `on_tick`.
pub fn set_tick_period_ms(ms: u32) -> Result<(), HostStatus> {
    unsafe { check(proxy_set_tick_period_milliseconds(ms)) }
}

/// The plugin configuration bytes.
pub fn plugin_configuration() -> Result<Vec<u8>, HostStatus> {
    const PLUGIN_CONFIGURATION: u32 = 7;
    let max = usize::MAX;
    fetch(|d, n| unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, max, d, n) })
        .map(Option::unwrap_or_default)
}

/// Body buffers.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// The request body (buffered so far, or the current chunk).
    Request = 0,
    /// The current response body chunk.
    Response = 1,
    /// The body of a `dispatch_http_call` answer.
    HttpCallResponse = 4,
}

/// Up to `max` bytes of a body buffer from `start`; empty if there is nothing.
pub fn body(which: Body, start: usize, max: usize) -> Vec<u8> {
    let got = fetch(|d, n| unsafe { proxy_get_buffer_bytes(which as u32, start, max, d, n) });
    got.ok().flatten().unwrap_or_default()
}

/// Replaces `size` bytes of a body buffer from `start` with `value`.
pub fn set_body(which: Body, start: usize, size: usize, value: &[u8]) -> Result<(), HostStatus> {
    unsafe {
        check(proxy_set_buffer_bytes(
            which as u32,
            start,
            size,
            value.as_ptr(),
            value.len(),
        ))
    }
}

/// A header's value, `None` if absent or not readable.
pub fn header(map: Map, name: &str) -> Option<Vec<u8>> {
    let (key, len) = (name.as_ptr(), name.len());
    fetch(|d, n| unsafe { proxy_get_header_map_value(map as u32, key, len, d, n) })
        .ok()
        .flatten()
}

/// A whole header map in one call (empty if not readable): cheaper than two reads.
pub fn pairs(map: Map) -> crate::pairs::Pairs {
    let got = fetch(|d, n| unsafe { proxy_get_header_map_pairs(map as u32, d, n) });
    crate::pairs::Pairs::new(got.ok().flatten().unwrap_or_default())
}

/// Sets a header, replacing any value a client sent.
pub fn set_header(map: Map, name: &str, value: &str) -> Result<(), HostStatus> {
    unsafe {
        check(proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ))
    }
}

/// Removes a header.
pub fn remove_header(map: Map, name: &str) -> Result<(), HostStatus> {
    unsafe {
        check(proxy_remove_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
        ))
    }
}

/// A property such as `response.flags`, given as path segments.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let serialized = path.join("\0");
    let (key, len) = (serialized.as_ptr(), serialized.len());
    fetch(|d, n| unsafe { proxy_get_property(key, len, d, n) })
        .ok()
        .flatten()
}

/// A shared-data value and its CAS token; `Ok(None)` if the key does not exist.
pub fn shared_get(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    unsafe {
        match proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) {
            status::OK => Ok(Some((take(data, size).unwrap_or_default(), cas))),
            status::NOT_FOUND => Ok(None),
            s => Err(HostStatus(s)),
        }
    }
}

/// Writes shared data if its CAS token is still `cas` (0: unconditionally).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), HostStatus> {
    unsafe {
        check(proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas,
        ))
    }
}

/// Metric kinds.
#[derive(Debug, Clone, Copy)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter = 0,
    /// Gauge.
    Gauge = 1,
    /// Histogram.
    Histogram = 2,
}

/// Defines (or looks up) a metric; `None` if the host refuses.
pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let mut id = 0u32;
    unsafe {
        match proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) {
            status::OK => Some(id),
            _ => None,
        }
    }
}

/// Adds to a counter.
pub fn increment(id: Option<u32>, by: i64) {
    if let Some(id) = id {
        unsafe {
            proxy_increment_metric(id, by);
        }
    }
}

/// Sets a gauge, or records a value in a histogram.
pub fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        unsafe {
            proxy_record_metric(id, value);
        }
    }
}

/// Reads a metric (the process-wide value).
pub fn metric(id: Option<u32>) -> Option<u64> {
    let mut value = 0u64;
    let ok = unsafe { proxy_get_metric(id?, &mut value) } == status::OK;
    ok.then_some(value)
}

/// Sends a local reply instead of forwarding the request.
pub fn send_local_response(
    code: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), HostStatus> {
    let map = crate::pairs::serialize(headers);
    unsafe {
        check(proxy_send_local_response(
            code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        ))
    }
}

/// Makes the following host calls act on context `id` (a stream, from the root
/// context's tick).
pub fn set_effective_context(id: u32) -> Result<(), HostStatus> {
    unsafe { check(proxy_set_effective_context(id)) }
}

/// Resumes the effective context's held request.
pub fn resume_request() -> Result<(), HostStatus> {
    // Stream type 0: the request (`proxy_continue_stream`, ABI 0.2.1).
    unsafe { check(proxy_continue_stream(0)) }
}

/// An integer property (`request.total_size`), if the host has it.
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let b = property(path)?;
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}
