//! The remaining schemes: the original generic X-Webhook-Signature, Shopify, Toast (JSON
//! envelope timestamp) and the Clover app token: verification and the round trip.
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aura_guard_fuzz::scheme_case(
        &[
            Scheme::Generic,
            Scheme::Shopify,
            Scheme::Toast,
            Scheme::CloverApp,
        ],
        data,
    );
    let _ = aura_guard_core::fuzz_api::toast_timestamp(data);
});
