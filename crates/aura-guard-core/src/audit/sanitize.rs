//! Redaction of secrets before anything leaves the filter (original `sanitize_log_data`,
//! extended): sensitive keys (JSON keys, query parameters, header names) and card numbers in
//! values become `"[REDACTED]"`, recursively through objects and arrays (the original only
//! looked into lists whose first element was an object).

use percent_encoding::percent_decode_str;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitizer {
    /// Lower-cased fragments; a key containing one is sensitive.
    keys: Vec<String>,
    card_numbers: bool,
}

impl Sanitizer {
    pub fn new(keys: &[String], card_numbers: bool) -> Self {
        Sanitizer {
            keys: keys.iter().map(|k| k.to_lowercase()).collect(),
            card_numbers,
        }
    }

    /// Substring match on the lower-cased name, as the original (so `classname` matches
    /// `ssn`: redacting too much is the safe side).
    pub fn key_is_sensitive(&self, key: &str) -> bool {
        let lower = key.to_lowercase();
        self.keys.iter().any(|k| lower.contains(k.as_str()))
    }

    fn value_is_sensitive(&self, value: &str) -> bool {
        self.card_numbers && contains_card_number(value)
    }

    /// Sanitises a JSON value in place.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if self.key_is_sensitive(k) {
                        *v = Value::String(REDACTED.to_owned());
                    } else {
                        self.json(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::String(s) => {
                if self.value_is_sensitive(s) {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::Number(n) => {
                if self.card_numbers && n.as_u64().is_some_and(|u| is_card_number(&u.to_string())) {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// A raw query string with the values of sensitive parameters (by decoded name, or by a
    /// card number in the decoded value) replaced; names and order are kept.
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => {
                    let dname = decode_query_part(name);
                    let dvalue = decode_query_part(value);
                    if self.key_is_sensitive(&dname) || self.value_is_sensitive(&dvalue) {
                        format!("{name}={REDACTED}")
                    } else {
                        pair.to_owned()
                    }
                }
                None => {
                    if self.value_is_sensitive(&decode_query_part(pair)) {
                        REDACTED.to_owned()
                    } else {
                        pair.to_owned()
                    }
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Headers with sensitive names (and card numbers in values) redacted.
    pub fn headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| {
                if self.key_is_sensitive(k) || self.value_is_sensitive(v) {
                    (k.clone(), REDACTED.to_owned())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
}

fn decode_query_part(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

/// Luhn check over a digit string.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.saturating_sub(b'0'));
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn is_card_number(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    (13..=19).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) && luhn(bytes)
}

/// True when the text holds a run of 13–19 digits (single spaces or dashes allowed between
/// digits, as cards are written) that passes the Luhn check.
pub fn contains_card_number(text: &str) -> bool {
    let mut run: Vec<u8> = Vec::new();
    let mut pending_sep = false;
    let check = |run: &Vec<u8>| (13..=19).contains(&run.len()) && luhn(run);
    for b in text.bytes() {
        if b.is_ascii_digit() {
            run.push(b);
            pending_sep = false;
        } else if (b == b' ' || b == b'-') && !run.is_empty() && !pending_sep {
            pending_sep = true;
        } else {
            if check(&run) {
                return true;
            }
            run.clear();
            pending_sep = false;
        }
    }
    check(&run)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::audit::config::default_redact_keys;
    use serde_json::json;

    fn s() -> Sanitizer {
        Sanitizer::new(&default_redact_keys(), true)
    }

    #[test]
    fn original_keys_and_missed_variants_are_redacted_case_insensitively() {
        let mut v = json!({
            "Password": "a", "access_token": "b", "webhook_secret": "c", "API_KEY": "d",
            "credit_card": "e", "ssn": "f", "social_security_no": "g", "bank_account": "h",
            "routing_number": "i", "apikey": "j", "Api-Key": "k", "Authorization": "l",
            "cookie": "m", "card_token": "n", "amount": 10, "note": "keep"
        });
        s().json(&mut v);
        let o = v.as_object().unwrap();
        for (k, val) in o {
            if k == "amount" || k == "note" {
                continue;
            }
            assert_eq!(val, REDACTED, "{k}");
        }
        assert_eq!(o["amount"], 10);
        assert_eq!(o["note"], "keep");
    }

    #[test]
    fn redaction_recurses_through_objects_and_every_array() {
        let mut v = json!({
            "a": [1, {"password": "x"}],
            "b": {"c": [[{"token": {"deep": 1}}]], "ok": true},
            "list": ["plain", {"secret_answer": "y"}]
        });
        s().json(&mut v);
        assert_eq!(
            v,
            json!({
                "a": [1, {"password": REDACTED}],
                "b": {"c": [[{"token": REDACTED}]], "ok": true},
                "list": ["plain", {"secret_answer": REDACTED}]
            })
        );
    }

    #[test]
    fn card_numbers_in_values_are_redacted_only_when_luhn_valid() {
        let mut v = json!({
            "memo": "card 4111 1111 1111 1111 used",
            "dashed": "5500-0000-0000-0004",
            "num": 4111111111111111u64,
            "order": "4111111111111112",
            "short": "411111111111",
            "phone": "+1 555 123 4567"
        });
        s().json(&mut v);
        assert_eq!(v["memo"], REDACTED);
        assert_eq!(v["dashed"], REDACTED);
        assert_eq!(v["num"], REDACTED);
        assert_eq!(v["order"], "4111111111111112");
        assert_eq!(v["short"], "411111111111");
        assert_eq!(v["phone"], "+1 555 123 4567");
    }

    #[test]
    fn card_numbers_can_be_left_alone_by_configuration() {
        let mut v = json!({"memo": "4111111111111111"});
        Sanitizer::new(&default_redact_keys(), false).json(&mut v);
        assert_eq!(v["memo"], "4111111111111111");
    }

    #[test]
    fn query_values_of_sensitive_parameters_are_redacted_names_kept() {
        assert_eq!(
            s().query("a=1&access%5Ftoken=abc&Password=x&flag&card=4111111111111111"),
            "a=1&access%5Ftoken=[REDACTED]&Password=[REDACTED]&flag&card=[REDACTED]"
        );
        assert_eq!(s().query("page=2"), "page=2");
    }

    #[test]
    fn headers_are_redacted_by_name() {
        let h = vec![
            ("Authorization".to_owned(), "Bearer x".to_owned()),
            ("Cookie".to_owned(), "s=1".to_owned()),
            ("Stripe-Signature".to_owned(), "t=1,v1=ab".to_owned()),
            ("User-Agent".to_owned(), "curl".to_owned()),
        ];
        let out = s().headers(&h);
        assert_eq!(out[0].1, REDACTED);
        assert_eq!(out[1].1, REDACTED);
        assert_eq!(out[2].1, REDACTED);
        assert_eq!(out[3].1, "curl");
    }

    #[test]
    fn luhn_known_values() {
        assert!(is_card_number("4111111111111111"));
        assert!(is_card_number("378282246310005"));
        assert!(!is_card_number("1234567890123"));
        assert!(!contains_card_number(""));
    }
}
