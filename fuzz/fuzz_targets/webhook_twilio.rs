//! The schemes that sign the public URL: Twilio (URL variants, form parameters, bodySHA256)
//! and Square. The URL and form parsers on arbitrary text, verification, the round trip.
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ =
        aura_guard_fuzz::scheme_case(&[Scheme::Twilio, Scheme::Square, Scheme::SquareSha1], data);
    if let Ok(s) = std::str::from_utf8(data) {
        let variants = aura_guard_core::fuzz_api::twilio_url_variants(s);
        // The URL as received is always tried first, and at most one other spelling.
        assert_eq!(variants.first().map(String::as_str), Some(s));
        assert!(variants.len() <= 2);
        let _ = aura_guard_core::fuzz_api::twilio_body_hash(s);
    }
    let _ = aura_guard_core::fuzz_api::twilio_form_param_string(data);
});
