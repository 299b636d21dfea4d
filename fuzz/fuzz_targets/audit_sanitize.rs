//! The audit sanitiser (audit/sanitize.rs) with the default keys and card numbers on.
//! Arbitrary JSON, query strings, headers and text never panic, and a secret placed under a
//! known sensitive name (JSON key at any depth, query parameter, header) never survives into
//! the output; a card number in free text never does either.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::audit::config::default_redact_keys;
use aura_guard_core::audit::sanitize::{contains_card_number, Sanitizer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CANARY: &str = "QzCanary7f3e2d1cHidden";
const NAMES: &[&str] = &[
    "password",
    "newPassword",
    "api_key",
    "X-API-Key",
    "client_secret",
    "refresh_token",
    "Authorization",
    "card-cvc",
    "SSN",
];

/// Puts `{name: CANARY}` into every object of `v`.
fn plant(v: &mut Value, u: &mut Unstructured<'_>) -> Result<()> {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                plant(child, u)?;
            }
            m.insert(
                (*u.choose(NAMES)?).to_string(),
                Value::String(CANARY.into()),
            );
        }
        Value::Array(items) => {
            for child in items {
                plant(child, u)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let s = Sanitizer::new(&default_redact_keys(), true);
    let text: String = u.arbitrary()?;
    let query: String = u.arbitrary()?;
    let headers: Vec<(String, String)> = u.arbitrary()?;
    let json_text: String = u.arbitrary()?;
    // Inputs that spell the canary themselves are not judged (they may hold it legitimately).
    let judged = ![&text, &query, &json_text]
        .iter()
        .any(|t| t.contains(CANARY))
        && !headers
            .iter()
            .any(|(k, v)| k.contains(CANARY) || v.contains(CANARY));

    let out = s.text(&text);
    assert!(!contains_card_number(&out), "{text:?} -> {out:?}");

    let name = *u.choose(NAMES)?;
    let q = format!("{query}&{name}={CANARY}&{query}");
    let out = s.query(&q);
    if judged {
        assert!(!out.contains(CANARY), "{q:?} -> {out:?}");
    }

    let mut hs = headers.clone();
    hs.push((name.to_string(), CANARY.to_string()));
    let out = s.headers(&hs);
    if judged {
        assert!(out
            .iter()
            .all(|(k, v)| !k.contains(CANARY) && !v.contains(CANARY)));
    }

    let mut v: Value =
        serde_json::from_str(&json_text).unwrap_or_else(|_| Value::String(json_text.clone()));
    s.json(&mut v);
    let mut wrapped = serde_json::json!({ "data": v.clone() });
    plant(&mut wrapped, &mut u)?;
    s.json(&mut wrapped);
    if judged {
        let shown = wrapped.to_string();
        assert!(!shown.contains(CANARY), "{json_text:?} -> {shown}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
