//! aura-guard's proxy-wasm glue: the only code that touches the host. It reads the plugin
//! configuration, implements the core's `Host` trait with proxy-wasm host calls (every
//! `Result` handled: a failed host call is logged, never unwrapped) and forwards callbacks to
//! the core's per-request pipeline.

mod audit_service;

use audit_service::AuditService;
use aura_guard_core::config::Config;
use aura_guard_core::filter::{Action as CoreAction, HttpFilter, Policy};
use aura_guard_core::host::{GrpcCall, Host, Level, SharedDataError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic traps the VM; the lints forbid them, and this makes any that slips through visible.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("aura-guard panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(AuraRoot { context_id, policy: None, audit_service: None })
    });
}}

struct AuraRoot {
    /// Fire-and-forget gRPC calls are made on the root context so they outlive the request.
    context_id: u32,
    policy: Option<Rc<Policy>>,
    /// Set in the audit shipper's service VM (root_id `aura-guard-audit`).
    audit_service: Option<AuditService>,
}

impl Context for AuraRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(service) = self.audit_service.as_mut() {
            service.on_http_call_response(token_id, body_size);
        }
    }
}

impl RootContext for AuraRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log_line(
                    LogLevel::Error,
                    &format!("aura-guard: cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        if audit_service::is_service_root() {
            self.audit_service = AuditService::configure(&raw);
            return self.audit_service.is_some();
        }
        // WASI environ: Envoy passes what `vm_config.environment_variables` names.
        let env = |key: &str| std::env::var(key).ok();
        match Config::load(&raw, &env) {
            Ok(config) => {
                log_line(
                    LogLevel::Info,
                    &format!(
                        "aura-guard: configured for environment {}",
                        config.environment.as_str()
                    ),
                );
                if config.jwt_users_anonymous() {
                    log_line(
                        LogLevel::Warn,
                        &format!(
                            "aura-guard: {} is not set: rate-limited JWT users are anonymous \
                             (limited per IP only); production refuses to start without it",
                            config.jwt.secret_env
                        ),
                    );
                }
                if config.webhook.replay.enabled {
                    // Before this worker serves requests (see init_replay_store).
                    aura_guard_core::webhook::replay::init_replay_store(&mut WasmHost {
                        context_id: self.context_id,
                        root_context_id: self.context_id,
                    });
                }
                self.policy = Some(Rc::new(Policy::new(config)));
                true
            }
            Err(err) => {
                // Returning false makes Envoy reject the configuration.
                log_line(
                    LogLevel::Error,
                    &format!("aura-guard: invalid configuration: {err}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let policy = self.policy.clone()?;
        Some(Box::new(AuraHttp {
            filter: HttpFilter::new(policy),
            host: WasmHost {
                context_id,
                root_context_id: self.context_id,
            },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        if let Some(service) = self.audit_service.as_mut() {
            service.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(service) = self.audit_service.as_mut() {
            service.on_queue_ready(queue_id);
        }
    }
}

struct AuraHttp {
    filter: HttpFilter,
    host: WasmHost,
}

fn action(a: CoreAction) -> Action {
    match a {
        CoreAction::Continue => Action::Continue,
        CoreAction::Pause => Action::Pause,
    }
}

impl Context for AuraHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // A non-zero status is the call's gRPC status (timeout, unavailable, ...).
        if status_code != 0 {
            if let Ok((_, Some(message))) = hostcalls::get_grpc_status() {
                log_line(
                    LogLevel::Debug,
                    &format!("aura-guard: gRPC call {token_id} failed: {status_code} {message}"),
                );
            }
            self.filter
                .on_grpc_response(&mut self.host, token_id, Err(status_code));
            return;
        }
        match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                self.filter
                    .on_grpc_response(&mut self.host, token_id, Ok(&body));
            }
            Err(status) => {
                WasmHost::warn_failed("get_buffer(grpc response)", status);
                // INTERNAL: the answer could not be read.
                self.filter
                    .on_grpc_response(&mut self.host, token_id, Err(13));
            }
        }
    }
}

impl HttpContext for AuraHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(
            self.filter
                .on_request_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.filter
                .on_request_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.filter.on_request_trailers(&mut self.host))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.filter.on_response_headers(&mut self.host))
    }

    fn on_log(&mut self) {
        self.filter.on_log(&mut self.host);
    }
}

fn log_line(level: LogLevel, message: &str) {
    // Nothing better to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

thread_local! {
    /// Counter ids by name, defined on first use (one VM per worker, so per thread).
    static COUNTERS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Shared queue ids by (vm_id, name), resolved on first use.
    static QUEUES: RefCell<HashMap<(String, String), u32>> = RefCell::new(HashMap::new());
}

/// `Host` over proxy-wasm host calls. Every failure is logged and turned into "absent".
struct WasmHost {
    context_id: u32,
    root_context_id: u32,
}

impl WasmHost {
    fn warn_failed(what: &str, status: proxy_wasm::types::Status) {
        log_line(
            LogLevel::Warn,
            &format!("aura-guard: host call {what} failed: {status:?}"),
        );
    }
}

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        match hostcalls::get_current_time() {
            Ok(t) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Err(status) => {
                Self::warn_failed("get_current_time", status);
                0
            }
        }
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
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        log_line(level, message);
    }

    fn count(&mut self, name: &str) {
        let id = COUNTERS.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(id) = c.get(name) {
                return Some(*id);
            }
            match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    c.insert(name.to_string(), id);
                    Some(id)
                }
                Err(status) => {
                    Self::warn_failed("define_metric", status);
                    None
                }
            }
        });
        if let Some(id) = id {
            if let Err(status) = hostcalls::increment_metric(id, 1) {
                Self::warn_failed("increment_metric", status);
            }
        }
    }

    fn request_header(&self, name: &str) -> Option<String> {
        // Bytes, converted lossily: the String variant unwraps UTF-8 (a client could trap
        // the VM with an obs-text value).
        match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            Ok(v) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(status) => {
                Self::warn_failed("get_http_request_header", status);
                None
            }
        }
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        {
            Self::warn_failed("set_http_request_header", status);
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        // Bytes, converted lossily: the String variant unwraps UTF-8 (a client could trap
        // the VM with an obs-text value).
        match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
            Ok(v) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(status) => {
                Self::warn_failed("get_http_response_header", status);
                None
            }
        }
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
        {
            Self::warn_failed("set_http_response_header", status);
        }
    }

    fn send_reply(&mut self, status: u32, headers: &[(String, String)], body: &[u8]) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = hostcalls::send_http_response(status, headers, Some(body)) {
            Self::warn_failed("send_http_response", e);
        }
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        match hostcalls::get_buffer(BufferType::HttpRequestBody, start, len) {
            Ok(body) => Some(body.unwrap_or_default()),
            Err(status) => {
                Self::warn_failed("get_buffer(request body)", status);
                None
            }
        }
    }

    fn resume_request(&mut self) {
        if let Err(status) = hostcalls::resume_http_request() {
            Self::warn_failed("resume_http_request", status);
        }
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        // The bytes variant: the SDK's String variant unwraps UTF-8 and would trap the VM on
        // an obs-text header value a client can send at will.
        match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
            Err(status) => {
                Self::warn_failed("get_http_request_headers", status);
                Vec::new()
            }
        }
    }

    fn downstream_address(&self) -> Option<String> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(v) => v.and_then(|b| String::from_utf8(b).ok()),
            Err(status) => {
                Self::warn_failed("get_property(source.address)", status);
                None
            }
        }
    }

    fn response_code(&self) -> Option<u32> {
        match hostcalls::get_property(vec!["response", "code"]) {
            Ok(v) => v.and_then(|b| aura_guard_core::audit::parse_response_code(&b)),
            Err(status) => {
                Self::warn_failed("get_property(response.code)", status);
                None
            }
        }
    }

    fn dispatch_grpc(&mut self, call: &GrpcCall<'_>) -> Option<u32> {
        // Note: proxy-wasm 0.2.5 panics (traps the VM, then FAIL_RELOAD) when Envoy answers
        // BadArgument, i.e. for a cluster missing from the Envoy config; config.cluster must
        // name a cluster of envoy.yaml.
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
                Self::warn_failed("dispatch_grpc_call", status);
                None
            }
        }
    }

    fn enqueue_shared(&mut self, vm_id: &str, queue: &str, data: &[u8]) -> bool {
        let key = (vm_id.to_string(), queue.to_string());
        // Resolved once per worker; resolved again if the queue went away (service reload).
        for attempt in 0..2 {
            let id = QUEUES.with(|q| q.borrow().get(&key).copied());
            let id = match id {
                Some(id) => id,
                None => match hostcalls::resolve_shared_queue(vm_id, queue) {
                    Ok(Some(id)) => {
                        QUEUES.with(|q| q.borrow_mut().insert(key.clone(), id));
                        id
                    }
                    Ok(None) => return false,
                    Err(status) => {
                        Self::warn_failed("resolve_shared_queue", status);
                        return false;
                    }
                },
            };
            match hostcalls::enqueue_shared_queue(id, Some(data)) {
                Ok(()) => return true,
                Err(status) => {
                    QUEUES.with(|q| q.borrow_mut().remove(&key));
                    if attempt == 1 {
                        Self::warn_failed("enqueue_shared_queue", status);
                    }
                }
            }
        }
        false
    }

    fn get_shared_data(
        &self,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<u32>), SharedDataError> {
        hostcalls::get_shared_data(key).map_err(|status| {
            Self::warn_failed("get_shared_data", status);
            SharedDataError::Unavailable
        })
    }

    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(proxy_wasm::types::Status::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(status) => {
                Self::warn_failed("set_shared_data", status);
                Err(SharedDataError::Unavailable)
            }
        }
    }

    fn dispatch_grpc_detached(&mut self, call: &GrpcCall<'_>) -> bool {
        // Envoy cancels a context's outstanding calls when it is destroyed: made on the root
        // context, the call survives the end of the request. The effective context is
        // restored afterwards so later host calls act on the request again.
        if let Err(status) = hostcalls::set_effective_context(self.root_context_id) {
            Self::warn_failed("set_effective_context(root)", status);
            return false;
        }
        let sent = self.dispatch_grpc(call).is_some();
        if let Err(status) = hostcalls::set_effective_context(self.context_id) {
            Self::warn_failed("set_effective_context(http)", status);
        }
        sent
    }
}
