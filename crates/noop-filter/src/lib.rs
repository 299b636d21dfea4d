//! A proxy-wasm HTTP filter that does nothing. `make bench` loads it into Envoy next to bare
//! Envoy and aura-guard, so the cost of crossing into a wasm VM on every request (context
//! creation, the header callbacks) is measured separately from aura-guard's own work.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }
}

/// Every callback keeps its default (continue): the request and response pass untouched.
struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

// No native unit tests: the trait objects pull in every default callback, which call host
// functions that exist only inside Envoy. The bench smoke test (tests/test_bench.py) loads the
// built module into real Envoy instead.
