//! aura-guard's proxy-wasm glue: the only code that touches the host. `root` reads the plugin
//! configuration, `host` implements the core's `Host` trait with proxy-wasm host calls, and
//! each HTTP context forwards its callbacks to the core's per-request pipeline.

mod audit_service;
mod host;
mod root;

use aura_guard_core::filter::{Action as CoreAction, HttpFilter};
use host::{log_line, warn_failed, WasmHost};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};
use root::AuraRoot;

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

/// One HTTP stream: the core's pipeline and the host it runs on.
pub(crate) struct AuraHttp {
    pub(crate) filter: HttpFilter,
    pub(crate) host: WasmHost,
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
                warn_failed("get_buffer(grpc response)", status);
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
