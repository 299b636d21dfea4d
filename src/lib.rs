//! aura-guard's proxy-wasm glue: the only code that touches the host. `root` reads the plugin
//! configuration, `host` implements the core's `Host` trait with proxy-wasm host calls, and
//! each HTTP context forwards its callbacks to the core's per-request pipeline.

mod abi;
mod audit_service;
mod body_hold;
mod host;
mod root;
#[cfg(feature = "test-trap")]
mod test_trap;

use aura_guard_core::filter::{Action as CoreAction, HttpFilter};
use host::{log_line, warn_failed, WasmHost};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};
use root::AuraRoot;

proxy_wasm::main! {{
    // No `proxy_wasm::set_log_level`: it installs the `log` facade and a panic hook that
    // unwrap the SDK's `hostcalls::log` (docs/robustness.md); the glue logs through `abi`.
    // A panic traps the VM; the lints forbid them, and this makes any that slips through visible.
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(LogLevel::Critical, &format!("aura-guard panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(AuraRoot { context_id, policy: None, audit_service: None })
    });
}}

/// One HTTP stream: the core's pipeline and the host it runs on.
pub(crate) struct AuraHttp {
    /// None on a root without a policy (see `AuraRoot::create_http_context`): the stream is
    /// refused with a 503, fail closed.
    pub(crate) filter: Option<HttpFilter>,
    pub(crate) host: WasmHost,
    /// Paused at the headers for the body (`body_hold` watches it until a body callback).
    pub(crate) held: bool,
}

/// Refuses a stream that has no policy (one type for both cases: a second `HttpContext`
/// type would add a copy of every SDK default method to the module).
fn refuse_unconfigured() -> Action {
    let body = br#"{"detail": "aura-guard is not configured"}"#;
    if let Err(status) =
        abi::send_local_response(503, &[("content-type", "application/json")], body)
    {
        warn_failed("send_local_response(unconfigured)", status);
    }
    Action::Pause
}

fn action(a: CoreAction) -> Action {
    match a {
        CoreAction::Continue => Action::Continue,
        CoreAction::Pause => Action::Pause,
    }
}

impl Context for AuraHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // A non-zero status is the call's gRPC status (timeout, unavailable, ...). Its message
        // is read through `abi` as bytes: the SDK's get_grpc_status unwraps UTF-8, and the
        // message is whatever the rate-limit service (or a proxy before it) sent.
        if status_code != 0 {
            if let Ok((_, message)) = abi::get_status() {
                log_line(
                    LogLevel::Debug,
                    &format!(
                        "aura-guard: gRPC call {token_id} failed: {status_code} {}",
                        String::from_utf8_lossy(&message)
                    ),
                );
            }
            if let Some(filter) = self.filter.as_mut() {
                filter.on_grpc_response(&mut self.host, token_id, Err(status_code));
            }
            return;
        }
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        match abi::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                filter.on_grpc_response(&mut self.host, token_id, Ok(&body));
            }
            Err(status) => {
                warn_failed("get_buffer(grpc response)", status);
                // INTERNAL: the answer could not be read.
                filter.on_grpc_response(&mut self.host, token_id, Err(13));
            }
        }
    }
}

impl AuraHttp {
    /// A body (or trailers) callback of a request paused at its headers: Envoy holds headers
    /// for this filter (`allow_on_headers_stop_iteration` is on).
    fn body_arrived(&mut self) {
        if self.held {
            self.held = false;
            body_hold::body_seen();
        }
    }
}

impl HttpContext for AuraHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "test-trap")]
        test_trap::maybe_trap("request_headers");
        let Some(filter) = self.filter.as_mut() else {
            return refuse_unconfigured();
        };
        let result = filter.on_request_headers(&mut self.host, end_of_stream);
        if result == CoreAction::Pause && filter.awaiting_body() {
            self.held = true;
            body_hold::paused(self.host.context_id, filter.body_hold_reply());
        }
        action(result)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "test-trap")]
        test_trap::maybe_trap("request_body");
        self.body_arrived();
        self.filter.as_mut().map_or(Action::Pause, |filter| {
            action(filter.on_request_body(&mut self.host, body_size, end_of_stream))
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.body_arrived();
        self.filter.as_mut().map_or(Action::Pause, |filter| {
            action(filter.on_request_trailers(&mut self.host))
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.filter.as_mut().map_or(Action::Continue, |filter| {
            action(filter.on_response_headers(&mut self.host))
        })
    }

    fn on_log(&mut self) {
        if self.held {
            body_hold::done(self.host.context_id);
        }
        if let Some(filter) = self.filter.as_mut() {
            filter.on_log(&mut self.host);
        }
    }
}
