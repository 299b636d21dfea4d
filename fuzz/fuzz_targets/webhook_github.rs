//! X-Hub-Signature-256 (`sha256=<hex>`) and X-Hub-Signature (`sha1=<hex>`): verification of arbitrary
//! input and the sign-then-verify round trip (aura_guard_fuzz::scheme_case).
#![no_main]

use aura_guard_core::webhook::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aura_guard_fuzz::scheme_case(&[Scheme::Github, Scheme::GithubSha1], data);
});
