//! A proxy-wasm HTTP filter that does nothing, or only the host calls a header filter cannot
//! avoid. `make bench` loads it into Envoy next to bare Envoy and aura-guard:
//! - without a configuration (`noop-wasm`), it measures crossing into a wasm VM on every
//!   request (context creation, the header callbacks) apart from aura-guard's own work;
//! - with one (`wasm-floor`), it reads the request header map once and sets each configured
//!   response header, the fewest host calls that aura-guard's plain request needs
//!   (docs/benchmarks.md#what-a-request-costs). The configuration is one `name: value` per line.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { headers: Rc::new(Vec::new()) })
    });
}}

struct NoopRoot {
    /// The response headers to set (the `wasm-floor` case); empty for the no-op case.
    headers: Rc<Vec<(String, String)>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        self.headers = Rc::new(
            text.lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                // Only header names: any other configuration (the aura-guard JSON the bench's
                // smoke test gives this module in place of aura-guard's) is ignored.
                .filter(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp {
            headers: Rc::clone(&self.headers),
        }))
    }
}

struct NoopHttp {
    headers: Rc<Vec<(String, String)>>,
}

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.headers.is_empty() {
            std::hint::black_box(self.get_http_request_headers_bytes());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in self.headers.iter() {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}

// No native unit tests: the trait objects pull in every default callback, which call host
// functions that exist only inside Envoy. The bench smoke test (tests/test_bench.py) loads the
// built module into real Envoy instead.
