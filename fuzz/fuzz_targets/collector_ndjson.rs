//! The collector's NDJSON batch parser (crates/aura-collector/src/record.rs): arbitrary
//! bodies split into lines and each line validated. Never panics; a record accepted keeps
//! its exact line, its timestamp is already normalised (normalising again changes nothing),
//! and parsing is deterministic.
#![no_main]

use aura_collector::record::{normalise_ts, parse_line, split_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lines) = split_lines(body) {
        for (n, line) in lines {
            assert!(n >= 1 && !line.is_empty() && !line.contains('\n'));
            if let Ok(r) = parse_line(line) {
                assert_eq!(r.line, line);
                assert_eq!(normalise_ts(&r.ts).as_deref(), Ok(r.ts.as_str()));
                assert_eq!(parse_line(line), Ok(r));
            }
        }
    }
    // A single line as it is (the fuzzer reaches deeper without having to split).
    let _ = parse_line(body);
});
