//! Redaction of secrets before anything leaves the filter (original `sanitize_log_data`,
//! extended; the rules are docs/audit.md §9.2): sensitive names (JSON keys, query parameters,
//! header names) and card numbers in values become `"[REDACTED]"`, recursively through objects
//! and arrays (the original only looked into lists whose first element was an object).
//!
//! Names are compared *normalised*: lower-cased with every character that is not an ASCII
//! letter or digit dropped, so `cardCvc`, `card-cvc`, `CARD_CVC` and `card.cvc` are one name. A
//! configured fragment longer than [`WORD_FRAGMENT_MAX`] characters matches anywhere in the
//! normalised name (`password` in `newPassword`); a shorter one must be whole words of the
//! name, because short fragments hide inside ordinary words (`pin` in `shipping`, `otp` in
//! `footprint`, `tin` in `setting`, `ssn` in `business_name`).

use percent_encoding::percent_decode_str;
use serde_json::{Number, Value};
use std::borrow::Cow;

pub const REDACTED: &str = "[REDACTED]";

/// Fragments of at most this many characters (normalised) are matched as whole words.
pub const WORD_FRAGMENT_MAX: usize = 4;

/// Card numbers are 13–19 digits (ISO/IEC 7812).
const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// One configured fragment, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fragment {
    /// Matches when the normalised name contains it.
    Anywhere(String),
    /// Matches when one or more consecutive words of the name, joined, equal it.
    Words(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitizer {
    fragments: Vec<Fragment>,
    card_numbers: bool,
}

/// A name lower-cased with everything but ASCII letters and digits dropped (`Card-CVC` →
/// `cardcvc`). Names that an API reads are ASCII; any other character counts as a separator,
/// so a Unicode dash or space between words changes nothing.
pub fn normalise_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Upper,
    Lower,
    Digit,
    Separator,
}

fn class_of(c: char) -> CharClass {
    if c.is_ascii_uppercase() {
        CharClass::Upper
    } else if c.is_ascii_digit() {
        CharClass::Digit
    } else if c.is_ascii_lowercase() {
        CharClass::Lower
    } else {
        CharClass::Separator
    }
}

/// The words of a name, lower-cased: split at every character that is not an ASCII letter or
/// digit,
/// at camelCase boundaries (`cardCvc` → card, cvc; `CVCCode` → cvc, code) and between letters
/// and digits (`cvv2` → cvv, 2; joined words still match `cvv2`).
pub fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<(char, CharClass)> = name.chars().map(|c| (c, class_of(c))).collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev = CharClass::Separator;
    for (i, &(c, class)) in chars.iter().enumerate() {
        let next = chars.get(i + 1).map_or(CharClass::Separator, |&(_, k)| k);
        let boundary = match (prev, class) {
            (_, CharClass::Separator) => true,
            (CharClass::Lower, CharClass::Upper) => true,
            // The last capital of an acronym starts the next word: `CVCCode`.
            (CharClass::Upper, CharClass::Upper) => next == CharClass::Lower,
            (CharClass::Digit, CharClass::Upper | CharClass::Lower) => true,
            (CharClass::Upper | CharClass::Lower, CharClass::Digit) => true,
            _ => false,
        };
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if class != CharClass::Separator {
            word.push(c.to_ascii_lowercase());
        }
        prev = class;
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Do consecutive words, joined, equal `fragment`?
fn words_match(words: &[String], fragment: &str) -> bool {
    (0..words.len()).any(|start| {
        let mut joined = String::new();
        for w in words.iter().skip(start) {
            joined.push_str(w);
            if joined.len() >= fragment.len() {
                return joined == fragment;
            }
        }
        false
    })
}

impl Sanitizer {
    /// `keys`: the configured fragments (`audit.redact_keys`); ones that normalise to nothing
    /// are ignored (configuration validation refuses them).
    pub fn new(keys: &[String], card_numbers: bool) -> Self {
        let fragments = keys
            .iter()
            .map(|k| normalise_name(k))
            .filter(|k| !k.is_empty())
            .map(|k| {
                if k.chars().count() <= WORD_FRAGMENT_MAX {
                    Fragment::Words(k)
                } else {
                    Fragment::Anywhere(k)
                }
            })
            .collect();
        Sanitizer {
            fragments,
            card_numbers,
        }
    }

    /// Is this JSON key, query parameter or header name sensitive (module comment)?
    pub fn key_is_sensitive(&self, key: &str) -> bool {
        let normalised = normalise_name(key);
        if normalised.is_empty() {
            return false;
        }
        let mut words: Option<Vec<String>> = None;
        self.fragments.iter().any(|f| match f {
            Fragment::Anywhere(k) => normalised.contains(k.as_str()),
            Fragment::Words(k) => words_match(words.get_or_insert_with(|| name_words(key)), k),
        })
    }

    fn value_is_sensitive(&self, value: &str) -> bool {
        self.card_numbers && contains_card_number(value)
    }

    /// Free text kept in a record (user agent, request id, path, description): card numbers
    /// in it are replaced, the rest kept.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.card_numbers {
            redact_card_numbers(text)
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Sanitises a JSON value in place. The value of a sensitive key is replaced whatever it is,
    /// except `true`, `false` and `null`, which hold no secret and keep flags such as
    /// `mfa_enabled` readable. A key holding a card number is replaced with its value.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                if self.card_numbers {
                    let card_keys: Vec<String> = map
                        .keys()
                        .filter(|k| contains_card_number(k))
                        .cloned()
                        .collect();
                    for key in card_keys {
                        map.remove(&key);
                        let base = redact_card_numbers(&key).into_owned();
                        let mut name = base.clone();
                        let mut n = 1;
                        while map.contains_key(&name) {
                            n += 1;
                            name = format!("{base} #{n}");
                        }
                        map.insert(name, Value::String(REDACTED.to_owned()));
                    }
                }
                for (k, v) in map.iter_mut() {
                    if self.key_is_sensitive(k) {
                        if !matches!(v, Value::Bool(_) | Value::Null) {
                            *v = Value::String(REDACTED.to_owned());
                        }
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
                if self.card_numbers && number_is_card(n) {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// A raw query string with the values of sensitive parameters (by decoded name, or by a
    /// card number in the decoded value) replaced; names and order are kept, except a name
    /// holding a card number, which is replaced with its value.
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => {
                    let dname = decode_query_part(name);
                    if self.value_is_sensitive(&dname) {
                        REDACTED.to_owned()
                    } else if self.key_is_sensitive(&dname)
                        || self.value_is_sensitive(&decode_query_part(value))
                    {
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

    /// Headers with sensitive names (and card numbers in values) redacted; a name holding a
    /// card number is replaced too.
    pub fn headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| {
                if self.value_is_sensitive(k) {
                    (REDACTED.to_owned(), REDACTED.to_owned())
                } else if self.key_is_sensitive(k) || self.value_is_sensitive(v) {
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

/// Luhn check over ASCII digits.
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
    CARD_DIGITS.contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) && luhn(bytes)
}

/// A JSON number whose integer digits are a card number (integers, negative ones, and floats
/// with an integral value such as `4111111111111111.0` or `4.111111111111111e15`).
fn number_is_card(n: &Number) -> bool {
    let digits = if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs().to_string()
    } else {
        match n.as_f64() {
            // Integral and below 10^19, so the conversion is exact (and saturates anyway).
            Some(f) if f.fract() == 0.0 && f.abs() < 1e19 => (f.abs() as u64).to_string(),
            _ => return false,
        }
    };
    is_card_number(&digits)
}

/// Characters people and programs put between the digit groups of a card number: any
/// whitespace (double spaces, tabs, no-break and thin spaces), dots, hyphens and Unicode
/// dashes, slashes, underscores, and invisible zero-width characters.
fn is_card_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '.' | '-'
                | '/'
                | '_'
                | '\u{2010}'..='\u{2015}'
                | '\u{2212}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'
                | '\u{FEFF}'
        )
}

/// Byte ranges of the card numbers in `text`: a card number is 13–19 digits in one or more
/// groups joined only by separators ([`is_card_separator`], any mix and any count), starting
/// at the start of a group and ending at the end of one, that pass the Luhn check. Where
/// several such runs of groups start at one group the longest is taken; the search goes on
/// after it. A digit group longer than 19 digits (an id) is never part of a card number.
pub fn card_number_spans(text: &str) -> Vec<(usize, usize)> {
    /// One digit group: its byte range and the range of its digits in `digits`.
    struct Group {
        start: usize,
        end: usize,
        first_digit: usize,
        end_digit: usize,
    }
    fn spans_of(groups: &[Group], digits: &[u8], out: &mut Vec<(usize, usize)>) {
        let mut i = 0;
        while let Some(first) = groups.get(i) {
            let mut found = None;
            for (j, g) in groups.iter().enumerate().skip(i) {
                let n = g.end_digit - first.first_digit;
                if n > *CARD_DIGITS.end() {
                    break;
                }
                let run = digits
                    .get(first.first_digit..g.end_digit)
                    .unwrap_or_default();
                if CARD_DIGITS.contains(&n) && luhn(run) {
                    found = Some((j, g.end));
                }
            }
            match found {
                Some((j, end)) => {
                    out.push((first.start, end));
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }

    let mut out = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut digits: Vec<u8> = Vec::new();
    let mut in_group = false;
    for (at, c) in text.char_indices() {
        if c.is_ascii_digit() {
            let b = u8::try_from(u32::from(c)).unwrap_or(b'0');
            match groups.last_mut() {
                Some(g) if in_group => {
                    g.end = at + 1;
                    g.end_digit += 1;
                }
                _ => groups.push(Group {
                    start: at,
                    end: at + 1,
                    first_digit: digits.len(),
                    end_digit: digits.len() + 1,
                }),
            }
            digits.push(b);
            in_group = true;
        } else if is_card_separator(c) {
            in_group = false;
        } else {
            spans_of(&groups, &digits, &mut out);
            groups.clear();
            digits.clear();
            in_group = false;
        }
    }
    spans_of(&groups, &digits, &mut out);
    out
}

/// True when the text holds a card number ([`card_number_spans`]).
pub fn contains_card_number(text: &str) -> bool {
    !card_number_spans(text).is_empty()
}

/// The text with each card number replaced by `[REDACTED]`.
pub fn redact_card_numbers(text: &str) -> Cow<'_, str> {
    let spans = card_number_spans(text);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (start, end) in spans {
        out.push_str(text.get(from..start).unwrap_or_default());
        out.push_str(REDACTED);
        from = end;
    }
    out.push_str(text.get(from..).unwrap_or_default());
    Cow::Owned(out)
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

    /// Every payment and identity secret kind, spelt the ways clients spell keys.
    const SECRET_KEYS: &[&str] = &[
        // card verification values and their aliases
        "cvc",
        "CVC",
        "cvv",
        "cvv2",
        "CVV2",
        "cvc2",
        "cid",
        "csc",
        "cvn",
        "cvd",
        "cav2",
        "cardCvc",
        "card-cvc",
        "CARD_CVC",
        "card.cvc",
        "cardcvc",
        "card_cvv",
        "CardCVV",
        "cvcCode",
        "CVCCode",
        "cvc_check_value",
        "security_code",
        "securityCode",
        "card-security-code",
        "cardSecurityCode",
        "card_verification",
        "cardVerificationValue",
        "card_code",
        "cardCode",
        "amex.cid",
        // PIN
        "pin",
        "PIN",
        "cardPin",
        "card_pin",
        "cardpin",
        "pinCode",
        "pin-code",
        "PINBlock",
        "pin_block",
        "pinblock",
        "userPIN",
        "pin1",
        "new_pin",
        // one-time and second-factor codes
        "otp",
        "OTP",
        "otpCode",
        "otp-code",
        "sms_otp",
        "totp",
        "totpCode",
        "hotp",
        "mfa",
        "mfaCode",
        "mfa-token",
        "2fa",
        "2faCode",
        "two_factor_code",
        "twoFactorCode",
        "one_time_code",
        "verification_code",
        "verificationCode",
        "sms_code",
        "auth_code",
        "recovery_codes",
        "backupCode",
        "otpauth_url",
        // bank accounts
        "iban",
        "IBAN",
        "payerIban",
        "customer_iban",
        "account_number",
        "accountNumber",
        "acctNum",
        "acct_number",
        "routing_number",
        "routingNumber",
        "sort_code",
        "sortCode",
        "bsb",
        "BSB",
        "transit_number",
        "bank_account",
        "bankAccountNo",
        // identity numbers
        "ssn",
        "SSN",
        "user_ssn",
        "employeeSSN",
        "ssnLast4",
        "social_security_number",
        "tin",
        "TIN",
        "taxpayer_tin",
        "itin",
        "ein",
        "sin",
        "nino",
        "nin",
        "tax_id",
        "taxId",
        "TAX-ID",
        "taxpayerId",
        "tax_identification_number",
        "tax_number",
        "national_id",
        "nationalId",
        "national_identity_number",
        "national_insurance_number",
        "social_insurance_number",
        "passportNumber",
        // card numbers and track data
        "card_number",
        "cardNumber",
        "card-num",
        "pan",
        "PAN",
        "card_pan",
        "track_data",
        "track1",
        "track2",
        "credit_card",
        "creditCard",
        "credit-card",
        // passwords, passphrases, keys
        "password",
        "newPassword",
        "passwd",
        "pwd",
        "new_pwd",
        "passphrase",
        "passPhrase",
        "passcode",
        "private_key",
        "privateKey",
        "PRIVATE-KEY",
        "signing_key",
        "client_secret",
        "clientSecret",
        "secret_key",
        "seed_phrase",
        "credentials",
        "api_key",
        "apiKey",
        "x-api-key",
        "access_token",
        "refreshToken",
        "authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "x-hub-signature-256",
    ];

    /// Ordinary names that contain a short fragment inside a word, or around a separator.
    const ORDINARY_KEYS: &[&str] = &[
        "shipping",
        "shipping_address",
        "shippingMethod",
        "opinion",
        "spin",
        "spinner",
        "pinned",
        "pinterest_url",
        "pinyin",
        "footprint",
        "hotpink",
        "photo_path",
        "autopay",
        "setting",
        "settings",
        "destination",
        "tint",
        "continent",
        "Tinder",
        "cidr",
        "decided",
        "incident_id",
        "acid",
        "lucid",
        "business_name",
        "class_name",
        "classname",
        "address_note",
        "process_name",
        "access_number",
        "mfg_date",
        "comfort",
        "span",
        "company",
        "panel",
        "expansion",
        "sinks",
        "single",
        "since",
        "being",
        "protein",
        "ninja",
        "dining",
        "nineteen",
        "discount",
        "docs_count",
        "misc",
        "amount",
        "currency",
        "reason",
        "order_id",
        "email",
        "name",
        "items",
        "quantity",
        "expiry",
        "exp_month",
        "last4",
        "brand",
        "country",
        "postal_code",
        "city",
        "ip_address",
        "user_agent",
        "request_id",
        "status",
        "description",
    ];

    /// Every secret kind whatever its case and separators; short fragments inside ordinary
    /// words never.
    #[test]
    fn secret_names_are_redacted_whatever_the_spelling_and_ordinary_names_kept() {
        let san = s();
        for (names, sensitive) in [(SECRET_KEYS, true), (ORDINARY_KEYS, false)] {
            for k in names {
                assert_eq!(san.key_is_sensitive(k), sensitive, "{k}");
            }
        }
    }

    #[test]
    fn words_split_at_separators_camel_case_acronyms_and_digits() {
        assert_eq!(name_words("cardCvc"), ["card", "cvc"]);
        assert_eq!(name_words("CVCCode"), ["cvc", "code"]);
        assert_eq!(name_words("card.cvc-2"), ["card", "cvc", "2"]);
        assert_eq!(name_words("CARD_CVV2"), ["card", "cvv", "2"]);
        assert_eq!(name_words("2faCode"), ["2", "fa", "code"]);
        assert_eq!(name_words("  x--y  "), ["x", "y"]);
        assert_eq!(name_words(""), Vec::<String>::new());
        assert_eq!(normalise_name("Card-CVC.2 "), "cardcvc2");
        // Any other character separates: a Unicode dash, a no-break space, an accent.
        assert_eq!(normalise_name("card\u{2013}cvc"), "cardcvc");
        assert_eq!(name_words("card\u{a0}PIN"), ["card", "pin"]);
    }

    #[test]
    fn fragment_length_decides_anywhere_or_whole_words() {
        let san = Sanitizer::new(
            &["pin".to_owned(), "cvv2".to_owned(), "card_cvc".to_owned()],
            false,
        );
        // "pin" (3) and "cvv2" (4): whole words, joined words allowed.
        assert!(san.key_is_sensitive("PinCode"));
        assert!(san.key_is_sensitive("card_cvv_2"));
        assert!(san.key_is_sensitive("cardCVV2"));
        assert!(!san.key_is_sensitive("shipping"));
        assert!(!san.key_is_sensitive("cvv22"));
        assert!(!san.key_is_sensitive("xcvv2"));
        // "cardcvc" (7): anywhere in the normalised name.
        assert!(san.key_is_sensitive("xCardCvcY"));
        assert!(san.key_is_sensitive("the.card-cvc"));
        // A fragment that normalises to nothing matches nothing.
        assert!(!Sanitizer::new(&["--".to_owned()], false).key_is_sensitive("--"));
    }

    #[test]
    fn query_parameters_use_the_same_name_rule() {
        assert_eq!(
            s().query("cardCvc=737&card-pin=1234&OTP=9&shipping=fast&opinion=ok&setting=1"),
            "cardCvc=[REDACTED]&card-pin=[REDACTED]&OTP=[REDACTED]&shipping=fast&opinion=ok&setting=1"
        );
        assert_eq!(
            s().query("card%2Ecvc=1&iban=DE89&tax%5Fid=1"),
            "card%2Ecvc=[REDACTED]&iban=[REDACTED]&tax%5Fid=[REDACTED]"
        );
    }

    #[test]
    fn flags_and_nulls_under_a_sensitive_key_are_kept_everything_else_redacted() {
        let mut v = json!({
            "mfa_enabled": true, "pin": null, "otp": 123456, "cvc": [7, 3, 7],
            "card": {"cvc": {"value": "737"}}, "password": false
        });
        s().json(&mut v);
        assert_eq!(
            v,
            json!({
                "mfa_enabled": true, "pin": null, "otp": REDACTED, "cvc": REDACTED,
                "card": {"cvc": REDACTED}, "password": false
            })
        );
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
    fn card_numbers_are_found_with_any_separator() {
        for text in [
            "4111.1111.1111.1111",
            "4111  1111  1111  1111",
            "4111/1111/1111/1111",
            "4111 - 1111 - 1111 - 1111",
            "4111 1111.1111-1111",
            "4111\t1111\n1111 1111",
            "4111\u{a0}1111\u{2009}1111\u{202f}1111",
            "4111\u{2013}1111\u{2014}1111\u{2212}1111",
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
            "4111_1111_1111_1111",
            "3782 822463 10005",
            "3782-822463.10005",
            "6011 0009 9013 9424 123",
            "card: 4111111111111111, exp 12/29",
            "ref 12 4111 1111 1111 1111",
            "4111 1111 1111 1111 12/29 737",
            "x4111111111111111y",
            "6304 0000 0000 0000 018",
        ] {
            assert!(contains_card_number(text), "{text:?}");
        }
    }

    #[test]
    fn dates_phones_and_ids_that_are_not_cards_are_kept() {
        for text in [
            "2024-01-15",
            "2024.01.15 10.30.00",
            "15/01/2024 - 16/01/2024",
            "+1 555 123 4567",
            "+44 20 7946 0958",
            "0049 30 1234 5678",
            "4111111111111112",
            "4111 1111 1111 1112",
            "411111111111",
            "41111111111111111111111",
            "order 1234567890123",
            "4111,1111,1111,1111",
            "v1.2.3",
            "",
            "no digits at all",
        ] {
            assert!(!contains_card_number(text), "{text:?}");
        }
    }

    #[test]
    fn card_numbers_in_free_text_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact_card_numbers("paid with 4111.1111.1111.1111 on 2024-01-15"),
            "paid with [REDACTED] on 2024-01-15"
        );
        assert_eq!(
            redact_card_numbers("/refund/5105 1051 0510 5100/x/4012888888881881"),
            "/refund/[REDACTED]/x/[REDACTED]"
        );
        assert_eq!(redact_card_numbers("nothing here 123"), "nothing here 123");
        assert_eq!(s().text("4111-1111-1111-1111"), REDACTED);
        let off = Sanitizer::new(&default_redact_keys(), false);
        assert_eq!(off.text("4111-1111-1111-1111"), "4111-1111-1111-1111");
    }

    #[test]
    fn card_numbers_in_numbers_of_every_json_form_are_redacted() {
        let mut v: Value = serde_json::from_str(
            r#"{"a": 4111111111111111, "b": -4111111111111111, "c": 4111111111111111.0,
                "d": 4.111111111111111e15, "e": 4111111111111112, "f": 1.5, "g": 12}"#,
        )
        .unwrap();
        s().json(&mut v);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(v[k], REDACTED, "{k}");
        }
        assert_eq!(v["e"], 4111111111111112u64);
        assert_eq!(v["f"], 1.5);
        assert_eq!(v["g"], 12);
    }

    #[test]
    fn a_card_number_used_as_a_key_or_parameter_name_is_replaced_with_its_value() {
        let mut v =
            json!({"4111 1111 1111 1111": "737", "5500000000000004": {"cvc": "1"}, "ok": 1});
        s().json(&mut v);
        assert_eq!(
            v,
            json!({"[REDACTED]": REDACTED, "[REDACTED] #2": REDACTED, "ok": 1})
        );
        assert_eq!(
            s().query("a=1&4111.1111.1111.1111=737&b=2"),
            "a=1&[REDACTED]&b=2"
        );
        let out = s().headers(&[("4111-1111-1111-1111".to_owned(), "737".to_owned())]);
        assert_eq!(out, [(REDACTED.to_owned(), REDACTED.to_owned())]);
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
        assert_eq!(
            s().query("card=4111.1111.1111.1111&c2=4111%20%201111%2E1111-1111&d=2024.01.15"),
            "card=[REDACTED]&c2=[REDACTED]&d=2024.01.15"
        );
    }

    #[test]
    fn headers_are_redacted_by_name() {
        let h = vec![
            ("Authorization".to_owned(), "Bearer x".to_owned()),
            ("Cookie".to_owned(), "s=1".to_owned()),
            ("Stripe-Signature".to_owned(), "t=1,v1=ab".to_owned()),
            ("User-Agent".to_owned(), "curl".to_owned()),
            // The same name rule as keys and query parameters.
            ("X-OTP".to_owned(), "123456".to_owned()),
            ("X-Card-CVC".to_owned(), "737".to_owned()),
            ("X-Shipping-Pin".to_owned(), "1".to_owned()),
            ("X-Shipping".to_owned(), "fast".to_owned()),
        ];
        let out = s().headers(&h);
        assert_eq!(out[0].1, REDACTED);
        assert_eq!(out[1].1, REDACTED);
        assert_eq!(out[2].1, REDACTED);
        assert_eq!(out[3].1, "curl");
        let values: Vec<&str> = out[4..].iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, [REDACTED, REDACTED, REDACTED, "fast"]);
    }

    #[test]
    fn luhn_known_values() {
        assert!(is_card_number("4111111111111111"));
        assert!(is_card_number("378282246310005"));
        assert!(!is_card_number("1234567890123"));
        assert!(!contains_card_number(""));
    }
}
