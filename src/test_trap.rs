//! Test builds only (cargo feature `test-trap`, never in the shipped module): a request whose
//! `x-aura-test-trap` header names the current phase panics, so the end-to-end suite can show
//! what Envoy's `FAIL_RELOAD` does with a VM that traps (`tests/test_trap_e2e.py`,
//! docs/robustness.md, "The suite"). `scripts/build-wasm.sh` builds this feature only into a
//! target directory of its own.
#![allow(clippy::panic)]

use crate::abi;
use proxy_wasm::types::MapType;

/// The request header that asks for a trap; its value is the phase: `request_headers` or
/// `request_body` (the latter on a request the filter holds, e.g. a webhook delivery).
pub(crate) const HEADER: &str = "x-aura-test-trap";

/// Panics when the request asks for a trap in `phase`.
pub(crate) fn maybe_trap(phase: &str) {
    if let Ok(Some(value)) = abi::get_map_value(MapType::HttpRequestHeaders, HEADER) {
        if value == phase.as_bytes() {
            panic!("aura-guard test trap in {phase} (a test build of the module)");
        }
    }
}
