//! Standard Webhooks / Svix (`v1,<base64>` space-separated lists, `whsec_` keys): the list and
//! key parsers on arbitrary text, verification and the sign-then-verify round trip.
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aura_guard_fuzz::scheme_case(&[Scheme::Standard], data);
    if let Ok(s) = std::str::from_utf8(data) {
        for sig in aura_guard_core::fuzz_api::standard_v1_signatures(s) {
            assert!(!sig.contains(' '), "{sig:?}");
        }
        if let Some(k) = aura_guard_core::webhook::scheme::standard_webhooks_key(s) {
            assert!(!k.is_empty());
        }
    }
});
