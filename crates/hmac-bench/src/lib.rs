//! The raw speed of HMAC-SHA256 inside Envoy's wasm runtime, for `make bench`
//! (docs/benchmarks.md#1-mib-webhooks). Every request is answered by the filter itself after
//! one HMAC-SHA256 over a 1 MiB buffer built once per VM, with the same `hmac`/`sha2` crates
//! as aura-guard's webhook verification. The bench's `wasm-hmac-1m` case turns its req/s into
//! MB/s (one MiB a request): the ceiling for aura-guard's body MB/s on a 1 MiB signed
//! delivery, measured in the same run, runtime and load as that case.

use hmac::{Hmac, KeyInit, Mac};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use sha2::Sha256;
use std::sync::OnceLock;

/// Bytes MACed per request: the bench's large webhook body.
pub const BUFFER_BYTES: usize = 1 << 20;
/// The bench's test secret (bench/run.py WEBHOOK_SECRET); never a real one.
const KEY: &[u8] = b"bench-only-webhook-secret";

static BUFFER: OnceLock<Vec<u8>> = OnceLock::new();

/// The buffer every request MACs: JSON-ish bytes, built once.
fn buffer() -> &'static [u8] {
    BUFFER.get_or_init(|| {
        b"{\"zen\":\"x\"}"
            .iter()
            .copied()
            .cycle()
            .take(BUFFER_BYTES)
            .collect()
    })
}

/// Hex HMAC-SHA256 of `data` under the bench key (what GitHub's scheme compares).
pub fn mac_hex(data: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(KEY) {
        Ok(mut mac) => {
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HmacRoot) });
}}

struct HmacRoot;

impl Context for HmacRoot {}

impl RootContext for HmacRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Built before the first request, so no request pays for it.
        buffer();
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HmacHttp))
    }
}

struct HmacHttp;

impl Context for HmacHttp {}

impl HttpContext for HmacHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The MAC goes into the answer, so the work cannot be optimised away, and a reader can
        // check it against `hmac.new(key, buffer, sha256)`.
        let mac = mac_hex(buffer());
        self.send_http_response(200, vec![("x-hmac-sha256", mac.as_str())], None);
        Action::Pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `hmac.new(b"bench-only-webhook-secret", buffer, hashlib.sha256)` gives in
    /// Python: the module MACs exactly the 1 MiB it claims to.
    #[test]
    fn each_request_macs_the_one_mib_buffer_with_hmac_sha256() {
        assert_eq!(buffer().len(), BUFFER_BYTES);
        assert_eq!(
            mac_hex(buffer()),
            "9663b1c5cfab59afdced4912cd30bedf102d084b4833471e1368698f40eac901"
        );
    }
}
