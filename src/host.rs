//! The core's `Host` over proxy-wasm host calls, and the helpers every part of the glue
//! shares (logging, metrics, time). Every host call goes through `abi` (statuses mapped to
//! `Result`, never a panic) except the gRPC dispatch, see `dispatch_grpc`; a failed host call
//! is logged and turned into "absent", never unwrapped (docs/robustness.md).

use crate::abi::{self, HostError};
use aura_guard_core::audit::service;
use aura_guard_core::host::{EnqueueError, GrpcCall, Host, Level, SharedDataError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

pub(crate) fn log_line(level: LogLevel, message: &str) {
    // Nothing better to do if logging itself fails.
    let _ = abi::log(level, message);
}

pub(crate) fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

pub(crate) fn warn_failed(what: &str, status: HostError) {
    log_line(
        LogLevel::Warn,
        &format!("aura-guard: host call {what} failed: {status:?}"),
    );
}

/// Unix time in milliseconds (0 if the host cannot tell).
pub(crate) fn now_ms() -> u64 {
    match abi::current_time_ns() {
        Ok(ns) => ns / 1_000_000,
        Err(status) => {
            warn_failed("get_current_time", status);
            0
        }
    }
}

/// The host's monotonic clock in ms (any origin); None when it has none (docs/robustness.md).
pub(crate) fn monotonic_ms() -> Option<u64> {
    abi::monotonic_ns().map(|ns| ns / 1_000_000)
}

thread_local! {
    /// Metric ids by kind and name, defined on first use (one VM per worker, so per thread).
    static METRICS: RefCell<HashMap<(MetricKind, String), u32>> = RefCell::new(HashMap::new());
    /// Shared queue ids by (vm_id, name), resolved on first use.
    static QUEUES: RefCell<HashMap<(String, String), u32>> = RefCell::new(HashMap::new());
}

/// `MetricType` has no `Hash`: the cache keys on this instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
}

/// The id of the metric `name`, defined on first use; None (logged) if the host refuses.
pub(crate) fn metric_id(kind: MetricKind, name: &str) -> Option<u32> {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        let key = (kind, name.to_string());
        if let Some(id) = m.get(&key) {
            return Some(*id);
        }
        let ty = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        match abi::define_metric(ty, name) {
            Ok(id) => {
                m.insert(key, id);
                Some(id)
            }
            Err(status) => {
                warn_failed("define_metric", status);
                None
            }
        }
    })
}

/// Adds `n` to the counter `name` (defined at its first non-zero addition).
pub(crate) fn add_counter(name: &str, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(id) = metric_id(MetricKind::Counter, name) {
        if let Err(status) = abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)) {
            warn_failed("increment_metric", status);
        }
    }
}

/// Sets the gauge `name`.
pub(crate) fn set_gauge(name: &str, value: u64) {
    if let Some(id) = metric_id(MetricKind::Gauge, name) {
        if let Err(status) = abi::record_metric(id, value) {
            warn_failed("record_metric", status);
        }
    }
}

/// The value of the gauge `name` (set by whichever VM of this Envoy writes it); None if the
/// host refuses.
pub(crate) fn gauge_value(name: &str) -> Option<u64> {
    let id = metric_id(MetricKind::Gauge, name)?;
    match abi::get_metric(id) {
        Ok(v) => Some(v),
        Err(status) => {
            warn_failed("get_metric", status);
            None
        }
    }
}

/// Whether the audit shipper's heartbeat still holds (docs/robustness.md): a shipper whose
/// VM trapped or stopped ticking no longer drains its queue, and records enqueued there would
/// pile up in Envoy's unbounded queue, uncounted. Not judged when either side has no
/// monotonic clock or the gauge cannot be read.
fn audit_shipper_alive() -> bool {
    match (gauge_value(service::ALIVE_UNTIL), monotonic_ms()) {
        (Some(alive_until), Some(now)) => service::shipper_alive(alive_until, now),
        _ => true,
    }
}

/// One header value as text, converted lossily (a client can send an obs-text value at will).
/// After Envoy released the map (e.g. request headers once the request went on) the host
/// answers BadArgument: logged, and the header is absent.
fn map_value(map: MapType, name: &str, what: &str) -> Option<String> {
    match abi::get_map_value(map, name) {
        Ok(v) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(status) => {
            warn_failed(what, status);
            None
        }
    }
}

fn set_map_value(map: MapType, name: &str, value: &str, what: &str) {
    if let Err(status) = abi::replace_map_value(map, name, value.as_bytes()) {
        warn_failed(what, status);
    }
}

/// `Host` over proxy-wasm host calls. Every failure is logged and turned into "absent".
pub(crate) struct WasmHost {
    pub(crate) context_id: u32,
    /// Fire-and-forget calls are made on the root context so they outlive the request.
    pub(crate) root_context_id: u32,
}

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn random16(&mut self) -> [u8; 16] {
        let mut buf = [0u8; 16];
        if let Err(e) = getrandom::getrandom(&mut buf) {
            // WASI random_get failing is not expected; fall back to the clock so ids stay
            // unique per request even if not unpredictable.
            log_line(
                LogLevel::Warn,
                &format!("aura-guard: random_get failed: {e}"),
            );
            let t = self.now_ms().to_le_bytes();
            for (slot, byte) in buf.iter_mut().zip(t.iter().cycle()) {
                *slot = *byte;
            }
        }
        buf
    }

    fn log(&self, level: Level, message: &str) {
        log_line(log_level(level), message);
    }

    fn count(&mut self, name: &str) {
        add_counter(name, 1);
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        set_map_value(
            MapType::HttpRequestHeaders,
            name,
            value,
            "set_http_request_header",
        );
    }

    fn remove_request_header(&mut self, name: &str) {
        if let Err(e) = abi::remove_map_value(MapType::HttpRequestHeaders, name) {
            warn_failed("remove_http_request_header", e);
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(
            MapType::HttpResponseHeaders,
            name,
            "get_http_response_header",
        )
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        set_map_value(
            MapType::HttpResponseHeaders,
            name,
            value,
            "set_http_response_header",
        );
    }

    fn send_reply(&mut self, status: u32, headers: &[(String, String)], body: &[u8]) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = abi::send_local_response(status, &headers, body) {
            warn_failed("send_http_response", e);
        }
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        match abi::get_buffer(BufferType::HttpRequestBody, start, len) {
            Ok(body) => Some(body.unwrap_or_default()),
            Err(status) => {
                warn_failed("get_buffer(request body)", status);
                None
            }
        }
    }

    fn resume_request(&mut self) {
        if let Err(status) = abi::continue_request() {
            warn_failed("resume_http_request", status);
        }
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        // Values as bytes: a client can send an obs-text header value at will.
        match abi::get_map_pairs(MapType::HttpRequestHeaders) {
            Ok(pairs) => pairs
                .into_iter()
                // Valid UTF-8 (nearly every value) is taken as it is, without a copy.
                .map(|(k, v)| {
                    let v = String::from_utf8(v)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (k, v)
                })
                .collect(),
            Err(status) => {
                warn_failed("get_http_request_headers", status);
                Vec::new()
            }
        }
    }

    fn downstream_address(&self) -> Option<String> {
        match abi::get_property(&["source", "address"]) {
            Ok(v) => v.and_then(|b| String::from_utf8(b).ok()),
            Err(status) => {
                warn_failed("get_property(source.address)", status);
                None
            }
        }
    }

    fn response_code(&self) -> Option<u32> {
        match abi::get_property(&["response", "code"]) {
            Ok(v) => v.and_then(|b| aura_guard_core::audit::parse_response_code(&b)),
            Err(status) => {
                warn_failed("get_property(response.code)", status);
                None
            }
        }
    }

    fn dispatch_grpc(&mut self, call: &GrpcCall<'_>) -> Option<u32> {
        // On the SDK (it registers the token for the answer). Envoy's grpcCall answers Ok,
        // ParseFailure (a cluster missing from the Envoy config), InternalFailure (the call
        // could not start): the SDK returns those as Err, and the route's failure mode applies.
        // Its only other answers are BadArgument, when the name parses as a serialized
        // GrpcService (refused just below), and InvalidMemoryAccess, for pointers that are not
        // ours (these come from live slices). Those two the SDK would panic on.
        if parses_as_grpc_service(call.cluster) {
            log_line(
                LogLevel::Error,
                &format!(
                    "aura-guard: gRPC cluster name {:?} is read by Envoy as a serialized \
                     GrpcService, not a cluster name; not dispatched",
                    call.cluster
                ),
            );
            return None;
        }
        match hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            Vec::new(),
            Some(call.message),
            Duration::from_millis(call.timeout_ms),
        ) {
            Ok(token) => Some(token),
            Err(status) => {
                warn_failed("dispatch_grpc_call", abi::from_sdk(status));
                None
            }
        }
    }

    fn enqueue_shared(
        &mut self,
        vm_id: &str,
        queue: &str,
        data: &[u8],
    ) -> Result<(), EnqueueError> {
        // The only queue is the audit shipper's. Refused here, the filter counts the record
        // (`shipper_stale`, `enqueue_failed`, `dropped`) and logs why.
        if !audit_shipper_alive() {
            return Err(EnqueueError::ShipperStale);
        }
        let key = (vm_id.to_string(), queue.to_string());
        // Resolved once per worker; resolved again if the queue went away (service reload).
        for attempt in 0..2 {
            let id = QUEUES.with(|q| q.borrow().get(&key).copied());
            let id = match id {
                Some(id) => id,
                None => match abi::resolve_shared_queue(vm_id, queue) {
                    Ok(Some(id)) => {
                        QUEUES.with(|q| q.borrow_mut().insert(key.clone(), id));
                        id
                    }
                    Ok(None) => return Err(EnqueueError::QueueUnavailable),
                    Err(status) => {
                        warn_failed("resolve_shared_queue", status);
                        return Err(EnqueueError::QueueUnavailable);
                    }
                },
            };
            match abi::enqueue_shared_queue(id, data) {
                Ok(()) => return Ok(()),
                Err(status) => {
                    QUEUES.with(|q| q.borrow_mut().remove(&key));
                    if attempt == 1 {
                        warn_failed("enqueue_shared_queue", status);
                    }
                }
            }
        }
        Err(EnqueueError::QueueUnavailable)
    }

    fn get_shared_data(
        &self,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<u32>), SharedDataError> {
        abi::get_shared_data(key).map_err(|status| {
            warn_failed("get_shared_data", status);
            SharedDataError::Unavailable
        })
    }

    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(HostError::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(status) => {
                warn_failed("set_shared_data", status);
                Err(SharedDataError::Unavailable)
            }
        }
    }

    fn dispatch_grpc_detached(&mut self, call: &GrpcCall<'_>) -> bool {
        // Envoy cancels a context's outstanding calls when it is destroyed: made on the root
        // context, the call survives the end of the request. The effective context is
        // restored afterwards so later host calls act on the request again.
        if let Err(status) = abi::set_effective_context(self.root_context_id) {
            warn_failed("set_effective_context(root)", status);
            return false;
        }
        let sent = self.dispatch_grpc(call).is_some();
        if let Err(status) = abi::set_effective_context(self.context_id) {
            warn_failed("set_effective_context(http)", status);
        }
        sent
    }
}

/// Whether Envoy's `grpcCall` would read `cluster` as a serialized `GrpcService` proto (it
/// tries that before taking it as a cluster name): a name that parses gets BadArgument from
/// Envoy, which the SDK panics on (docs/robustness.md). Decoding it as an empty message (every
/// field unknown, skipped by wire type) accepts every byte string a protobuf parser accepts,
/// so a name refused by this check cannot be one Envoy would have taken as a cluster.
pub(crate) fn parses_as_grpc_service(cluster: &str) -> bool {
    <() as prost::Message>::decode(cluster.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::parses_as_grpc_service;

    #[test]
    fn cluster_names_that_parse_as_a_grpc_service_proto_are_recognised() {
        // The empty name is an empty message; 'a' (0x61) is field 12, fixed64: 8 more bytes
        // make a whole message.
        for name in ["", "aaaaaaaaa", "\u{8}\u{1}"] {
            assert!(parses_as_grpc_service(name), "{name:?}");
        }
    }

    #[test]
    fn ordinary_cluster_names_do_not_parse_as_a_grpc_service_proto() {
        for name in [
            "ratelimit",
            "audit_collector",
            "rate-limit",
            "outbound|8081||ratelimit.default.svc.cluster.local",
            "aaaaaaaa",
        ] {
            assert!(!parses_as_grpc_service(name), "{name:?}");
        }
    }
}
