//! The audit shipper's glue: runs in the singleton service VM (bootstrap extension
//! `envoy.bootstrap.wasm`, `singleton: true`, root_id `aura-guard-audit`), one per Envoy. The
//! loop (queue, batches, answers, counters, log) is the core's
//! [`aura_guard_core::audit::service::AuditService`]; this file implements its
//! [`ServiceHost`] with proxy-wasm host calls (every `Result` handled) and forwards callbacks.

use crate::host;
use aura_guard_core::audit::service::{self, HttpCall, ServiceHost};
use aura_guard_core::host::Level;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;

/// The root_id that makes a root context the shipper.
pub const SERVICE_ROOT_ID: &str = "aura-guard-audit";

/// True in the shipper's VM (decided by the plugin's root_id).
pub fn is_service_root() -> bool {
    matches!(
        hostcalls::get_property(vec!["plugin_root_id"]),
        Ok(Some(ref id)) if id.as_slice() == SERVICE_ROOT_ID.as_bytes()
    )
}

/// [`ServiceHost`] over proxy-wasm host calls; a host status becomes its `Debug` text.
struct WasmServiceHost;

impl ServiceHost for WasmServiceHost {
    fn now_ms(&self) -> u64 {
        host::now_ms()
    }

    fn log(&mut self, level: Level, message: &str) {
        host::log_line(host::log_level(level), message);
    }

    fn random4(&mut self) -> Option<[u8; 4]> {
        let mut random = [0u8; 4];
        getrandom::getrandom(&mut random).ok().map(|()| random)
    }

    fn env_var(&self, name: &str) -> Option<String> {
        // WASI environ: Envoy passes what `vm_config.environment_variables` names.
        std::env::var(name).ok()
    }

    fn register_queue(&mut self, name: &str) -> Result<u32, String> {
        hostcalls::register_shared_queue(name).map_err(|s| format!("{s:?}"))
    }

    fn set_tick_period_ms(&mut self, period_ms: u64) -> Result<(), String> {
        hostcalls::set_tick_period(Duration::from_millis(period_ms)).map_err(|s| format!("{s:?}"))
    }

    fn dequeue(&mut self, queue_id: u32) -> Result<Option<Vec<u8>>, String> {
        hostcalls::dequeue_shared_queue(queue_id).map_err(|s| format!("{s:?}"))
    }

    fn dispatch_http(&mut self, call: &HttpCall<'_>) -> Result<u32, String> {
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.to_vec(),
            Some(call.body),
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|s| format!("{s:?}"))
    }

    fn add_counter(&mut self, name: &'static str, n: u64) {
        host::add_counter(name, n);
    }

    fn set_gauge(&mut self, name: &'static str, value: u64) {
        host::set_gauge(name, value);
    }
}

pub struct AuditService(service::AuditService);

impl AuditService {
    /// `on_configure` of the service root. None makes Envoy refuse the configuration.
    pub fn configure(raw: &[u8]) -> Option<AuditService> {
        service::AuditService::configure(&mut WasmServiceHost, raw).map(AuditService)
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        self.0.on_queue_ready(&mut WasmServiceHost, queue_id);
    }

    pub fn on_tick(&mut self) {
        self.0.on_tick(&mut WasmServiceHost);
    }

    /// The collector's answer (or Envoy's timeout/reset, which arrives without headers). Read
    /// only for the batch in flight.
    pub fn on_http_call_response(&mut self, token_id: u32, body_size: usize) {
        if !self.0.awaits(token_id) {
            return;
        }
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let detail = match service::detail_len(status, body_size) {
            0 => None,
            // The collector's error names a line and a field, never the token.
            len => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        };
        self.0
            .on_http_call_response(&mut WasmServiceHost, token_id, status.map(|s| (s, detail)));
    }
}
