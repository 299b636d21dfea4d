//! Stripe-Signature and Clover-Signature (`t=<unix>,v1=<hex>,…`): the list parser on arbitrary text, and verification
//! (arbitrary input; the sign-then-verify round trip) through aura_guard_fuzz::scheme_case.
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aura_guard_fuzz::scheme_case(&[Scheme::Stripe, Scheme::Clover], data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok((t, v1)) = aura_guard_core::fuzz_api::parse_t_list(s) {
            // Every value kept is trimmed, and came from an item of the header.
            for v in t.iter().chain(v1.iter()) {
                assert_eq!(*v, v.trim());
                assert!(s.contains(v));
            }
        }
    }
});
