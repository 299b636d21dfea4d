//! The path normaliser (path/): arbitrary `:path` values never panic; an accepted path's
//! canonical form starts with one `/`, has no empty, `.` or `..` segment, and normalising it
//! again gives itself (idempotent).
#![no_main]

use aura_guard_core::path::normalise;
use libfuzzer_sys::fuzz_target;

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
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{raw:?} -> {canon:?}");
        }
    }
    let _ = p.route_forms().count();
    match normalise(canon) {
        Ok(again) => assert_eq!(again.as_str(), canon, "{raw:?}"),
        Err(e) => panic!("{raw:?} -> {canon:?} refused when normalised again: {e:?}"),
    }
});
