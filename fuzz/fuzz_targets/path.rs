//! The path normaliser (path/): arbitrary `:path` values never panic; an accepted path's
//! canonical form starts with one `/`, has no empty, `.` or `..` segment, and normalising it
//! again, each segment percent-encoded (it is decoded: a space or `%` in it is not valid raw
//! input), gives itself (docs/paths.md).
#![no_main]

use aura_guard_core::path::normalise;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalise(raw) else {
        return;
    };
    let canon = p.as_str();
    assert!(canon.starts_with('/'), "{raw:?} -> {canon:?}");
    if canon != "/" {
        for seg in canon[1..].split('/') {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "{raw:?} -> {canon:?}"
            );
        }
    }
    let _ = p.route_forms().count();
    let raw_again: String = p
        .segments()
        .iter()
        .map(|seg| format!("/{}", utf8_percent_encode(seg, NON_ALPHANUMERIC)))
        .collect();
    let raw_again = if raw_again.is_empty() {
        "/".to_string()
    } else {
        raw_again
    };
    match normalise(&raw_again) {
        Ok(again) => assert_eq!(again.as_str(), canon, "{raw:?}"),
        Err(e) => panic!("{raw:?} -> {canon:?} refused when normalised again: {e:?}"),
    }
});
