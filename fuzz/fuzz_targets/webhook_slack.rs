//! X-Slack-Signature (`v0=<hex>` over `v0:{ts}:{body}`) with X-Slack-Request-Timestamp:
//! verification of arbitrary input and the sign-then-verify round trip.
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aura_guard_fuzz::scheme_case(&[Scheme::Slack], data);
});
