//! The audit shipper's glue: runs in the singleton service VM (bootstrap extension
//! `envoy.bootstrap.wasm`, `singleton: true`, root_id `aura-guard-audit`), one per Envoy. The
//! loop (queue, batches, answers, counters, log) is the core's
//! [`aura_guard_core::audit::service::AuditService`]; this file implements its
//! [`ServiceHost`] with proxy-wasm host calls (every `Result` handled) and forwards callbacks.

use crate::abi;
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
        abi::get_property(&["plugin_root_id"]),
        Ok(Some(ref id)) if id.as_slice() == SERVICE_ROOT_ID.as_bytes()
    )
}

/// [`ServiceHost`] over proxy-wasm host calls; a host status becomes its `Debug` text.
struct WasmServiceHost;

impl ServiceHost for WasmServiceHost {
    fn now_ms(&self) -> u64 {
        host::now_ms()
    }

    fn monotonic_ms(&self) -> Option<u64> {
        host::monotonic_ms()
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
        abi::register_shared_queue(name).map_err(|s| format!("{s:?}"))
    }

    fn set_tick_period_ms(&mut self, period_ms: u64) -> Result<(), String> {
        let period_ms = u32::try_from(period_ms).unwrap_or(u32::MAX);
        abi::set_tick_period_ms(period_ms).map_err(|s| format!("{s:?}"))
    }

    fn dequeue(&mut self, queue_id: u32) -> Result<Option<Vec<u8>>, String> {
        abi::dequeue_shared_queue(queue_id).map_err(|s| format!("{s:?}"))
    }

    fn dispatch_http(&mut self, call: &HttpCall<'_>) -> Result<u32, String> {
        // On the SDK (it registers the token for the answer). Envoy's httpCall answers Ok,
        // BadArgument (unknown cluster, a missing :method/:path/:authority, a timeout over
        // i32::MAX ms) or InternalFailure (the request could not start): the SDK returns
        // those as Err. Its only other answer, InvalidMemoryAccess, needs pointers that are
        // not ours (these come from live slices). A failure Envoy detects inline is deferred
        // until after this call and then dropped (the token is erased), so no answer arrives
        // for a token the SDK has not registered (docs/robustness.md).
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.to_vec(),
            Some(call.body),
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|s| format!("{:?}", abi::from_sdk(s)))
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

    /// The collector's answer, read only for the batch in flight. `num_headers == 0` is no
    /// answer: Envoy's `onHttpCallFailure` (the collector reset the connection, or the answer
    /// was over the buffer limit) calls back with no response, and reading its header map
    /// would get BadArgument, the status the SDK panicked on (docs/robustness.md).
    pub fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize) {
        if !self.0.awaits(token_id) {
            return;
        }
        let status = if num_headers == 0 {
            None
        } else {
            read_status()
        };
        let detail = match service::detail_len(status, body_size) {
            0 => None,
            // The collector's error names a line and a field, never the token.
            len => abi::get_buffer(BufferType::HttpCallResponseBody, 0, len)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        };
        self.0
            .on_http_call_response(&mut WasmServiceHost, token_id, status.map(|s| (s, detail)));
    }
}

/// The answer's `:status`; None (no answer, retried) when it cannot be read or is not a number.
fn read_status() -> Option<u32> {
    match abi::get_map_value(MapType::HttpCallResponseHeaders, ":status") {
        Ok(value) => parse_status(&value?),
        Err(status) => {
            host::warn_failed("get_header_map_value(http call :status)", status);
            None
        }
    }
}

fn parse_status(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn a_status_that_is_not_a_number_is_no_answer() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"2x0"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(&[0xff]), None);
    }
}
