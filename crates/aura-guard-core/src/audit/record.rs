//! Audit record building (docs/audit.md §2, record format v1). The HTTP filter builds an
//! [`Entry`] (a record without its chain fields) per sensitive operation and per security
//! event; the shipper adds `v`, `id`, `stream`, `seq` and `prev_hash` ([`super::shipper`]).

use super::format::{Entry, Limits, GAP_TYPE, KIND_GAP, KIND_OPERATION, KIND_SECURITY_EVENT};
use super::sanitize::Sanitizer;
use crate::audit::config::OperationRule;
use crate::events::SecurityEvent;
use crate::path::NormalisedPath;
use serde_json::Value;
use std::borrow::Cow;

/// Who did what, from where: gathered at the request headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFacts {
    pub start_ms: u64,
    pub method: String,
    /// Normalised path with the query sanitised (see [`record_path`]).
    pub path: String,
    pub client_ip: Option<String>,
    pub user_id: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// How the request ended (known at the end of the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Completion {
    /// Final response status; None when the stream ended without one (reset).
    pub status: Option<u32>,
    pub end_ms: u64,
    /// The filter itself answered (the upstream never saw the request).
    pub replied_locally: bool,
}

/// The first rule matching the method and the normalised (lower-case) path.
pub fn classify<'a>(rules: &'a [OperationRule], method: &str, path: &str) -> Option<&'a str> {
    rules
        .iter()
        .find(|r| {
            r.methods.iter().any(|m| m == method)
                && path.starts_with(r.prefix.as_str())
                && r.contains.iter().all(|c| path.contains(c.as_str()))
        })
        .map(|r| r.op_type.as_str())
}

/// The path every audit rule reads and the raw query: the pipeline's canonical path
/// (crate::path) when `raw` normalised, else the raw path without query and fragment.
pub fn split_path(raw: &str, normalised: Option<&NormalisedPath>) -> (String, Option<String>) {
    match normalised {
        Some(n) => (n.as_str().to_owned(), n.query().map(str::to_owned)),
        None => {
            let before_fragment = raw.split_once('#').map_or(raw, |(p, _)| p);
            match before_fragment.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (before_fragment.to_owned(), None),
            }
        }
    }
}

/// The path as recorded: [`split_path`]'s path with card numbers replaced (a segment may be
/// one, even spread over several segments: `/4111/1111/1111/1111`), plus the sanitised query;
/// cut to the collector's limit.
pub fn record_path(
    sanitizer: &Sanitizer,
    raw: &str,
    normalised: Option<&NormalisedPath>,
) -> String {
    let (path, query) = split_path(raw, normalised);
    // A refused path is kept raw, unless its decoded form shows a card number.
    let decoded = match normalised {
        Some(_) => None,
        None => Some(percent_encoding::percent_decode_str(&path).decode_utf8_lossy()),
    };
    let path = match decoded.as_deref().map(|d| sanitizer.text(d)) {
        Some(Cow::Owned(redacted)) => redacted,
        _ => sanitizer.text(&path).into_owned(),
    };
    let full = match query {
        Some(q) if !q.is_empty() => format!("{path}?{}", sanitizer.query(&q)),
        _ => path,
    };
    clip(&full, Limits::PATH)
}

/// RFC 3339 UTC with milliseconds: `2026-03-01T10:00:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(crate::utc::rfc3339_ms)
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

fn clip_opt(s: &Option<String>, max: usize) -> Option<String> {
    s.as_deref().map(|v| clip(v, max))
}

/// Is this content type JSON (`application/json`, `application/*+json`, parameters
/// allowed)? The original captured only `application/json`.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type_essence(content_type);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn content_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// How a sensitive operation's body is captured, by its `Content-Type` (docs/audit.md §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCapture {
    /// Declared JSON: any JSON value is recorded.
    Json,
    /// No (or an empty) `Content-Type`, which FastAPI parses as JSON, or `text/plain`, which
    /// clients use to skip the CORS preflight and `request.json()` reads all the same: recorded
    /// when it is a JSON object or array.
    Sniff,
}

impl BodyCapture {
    /// None for every other content type (forms, multipart, binary): never held, never recorded.
    pub fn for_content_type(content_type: Option<&str>) -> Option<BodyCapture> {
        let Some(ct) = content_type.filter(|ct| !ct.trim().is_empty()) else {
            return Some(BodyCapture::Sniff);
        };
        if is_json_content_type(ct) {
            Some(BodyCapture::Json)
        } else if content_type_essence(ct) == "text/plain" {
            Some(BodyCapture::Sniff)
        } else {
            None
        }
    }
}

/// The captured body: sanitised JSON, or null with the reason it is absent (`not_json`: not
/// JSON, or a sniffed body that is not an object or array; `too_large`).
pub fn capture_body(
    sanitizer: &Sanitizer,
    body: &[u8],
    mode: BodyCapture,
    max_bytes: usize,
) -> (Value, Option<&'static str>) {
    if body.is_empty() {
        return (Value::Null, None);
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return (Value::Null, Some("not_json"));
    };
    if mode == BodyCapture::Sniff && !(value.is_object() || value.is_array()) {
        return (Value::Null, Some("not_json"));
    }
    sanitizer.json(&mut value);
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
    if size > max_bytes {
        return (Value::Null, Some("too_large"));
    }
    (value, None)
}

fn base(facts: &RequestFacts, done: &Completion) -> Entry {
    Entry {
        ts: rfc3339_ms(facts.start_ms),
        kind: String::new(),
        record_type: String::new(),
        severity: String::new(),
        method: Some(clip(&facts.method, Limits::METHOD)),
        path: Some(clip(&facts.path, Limits::PATH)),
        // Envoy's statuses are three digits; one outside the format's range would get the whole
        // batch refused, so it is recorded as unknown instead.
        status: done.status.and_then(|s| u16::try_from(s).ok()),
        duration_ms: Some(done.end_ms.saturating_sub(facts.start_ms)),
        client_ip: clip_opt(&facts.client_ip, Limits::CLIENT_IP),
        user_id: clip_opt(&facts.user_id, Limits::USER_ID),
        user_agent: clip_opt(&facts.user_agent, Limits::USER_AGENT),
        request_id: clip_opt(&facts.request_id, Limits::REQUEST_ID),
        outcome: String::new(),
        request_body: Value::Null,
        metadata: Value::Object(serde_json::Map::new()),
        description: None,
    }
}

/// A sensitive operation. Outcome: `blocked` when the filter answered, `failed` without a
/// response or with a 5xx (the original's AUDIT_FAILURE is a handler error), else `completed`
/// (any other status, as the original's AUDIT_COMPLETE).
pub fn operation_entry(
    facts: &RequestFacts,
    op_type: &str,
    done: &Completion,
    request_body: Value,
    metadata: Value,
) -> Entry {
    let outcome = if done.replied_locally {
        "blocked"
    } else {
        match done.status {
            None => "failed",
            Some(s) if s >= 500 => "failed",
            Some(_) => "completed",
        }
    };
    Entry {
        kind: KIND_OPERATION.to_owned(),
        record_type: op_type.to_owned(),
        severity: "info".to_owned(),
        outcome: outcome.to_owned(),
        request_body,
        metadata,
        ..base(facts, done)
    }
}

/// A security event emitted by a capability. Its metadata is sanitised again here (the
/// capabilities promise not to put secrets in it; this makes sure). Outcome: `blocked` when
/// the filter answered the request, else `allowed`.
pub fn event_entry(
    facts: &RequestFacts,
    event: &SecurityEvent,
    done: &Completion,
    sanitizer: &Sanitizer,
) -> Entry {
    let mut metadata = match &event.metadata {
        Value::Object(_) => event.metadata.clone(),
        Value::Null => Value::Object(serde_json::Map::new()),
        other => serde_json::json!({ "value": other }),
    };
    sanitizer.json(&mut metadata);
    let record_type = if crate::audit::config::valid_type(&event.event_type) {
        event.event_type.clone()
    } else {
        "security_event".to_owned()
    };
    Entry {
        kind: KIND_SECURITY_EVENT.to_owned(),
        record_type,
        severity: event.severity.as_str().to_owned(),
        outcome: if done.replied_locally {
            "blocked"
        } else {
            "allowed"
        }
        .to_owned(),
        metadata,
        description: Some(clip(
            &sanitizer.text(&event.description),
            Limits::DESCRIPTION,
        )),
        ..base(facts, done)
    }
}

/// A gap record: `dropped` records were lost for `reason` (docs/audit.md "Gap records").
pub fn gap_entry(now_ms: u64, dropped: u64, reason: &str) -> Entry {
    Entry {
        ts: rfc3339_ms(now_ms),
        kind: KIND_GAP.to_owned(),
        record_type: GAP_TYPE.to_owned(),
        severity: "high".to_owned(),
        method: None,
        path: None,
        status: None,
        duration_ms: None,
        client_ip: None,
        user_id: None,
        user_agent: None,
        request_id: None,
        outcome: "dropped".to_owned(),
        request_body: Value::Null,
        metadata: serde_json::json!({ "dropped": dropped, "reason": reason }),
        description: None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::audit::config::{default_operations, default_redact_keys};
    use crate::events::Severity;
    use serde_json::json;

    /// As the pipeline calls it: with its normalisation of the raw path.
    fn path_of(raw: &str) -> String {
        let n = crate::path::normalise(raw).ok();
        record_path(&san(), raw, n.as_ref())
    }

    fn san() -> Sanitizer {
        Sanitizer::new(&default_redact_keys(), true)
    }

    #[test]
    fn the_eleven_original_mappings_classify() {
        let r = default_operations();
        let cases = [
            ("POST", "/api/v1/auth/users", "user_create"),
            ("DELETE", "/api/v1/auth/users/7", "user_delete"),
            ("PUT", "/api/v1/auth/users/role", "user_role_change"),
            ("PATCH", "/api/v1/auth/users/role/3", "user_role_change"),
            ("POST", "/api/v1/payments/process", "payment_process"),
            ("POST", "/api/v1/payments/refund", "payment_refund"),
            ("POST", "/api/v1/payroll/process", "payroll_process"),
            ("POST", "/api/v1/payroll/export", "payroll_export"),
            ("PUT", "/api/v1/settings/general", "settings_update"),
            ("DELETE", "/api/v1/webhooks/9", "webhook_config_change"),
            ("POST", "/api/v1/export", "data_export"),
            ("POST", "/api/v1/import/csv", "data_import"),
        ];
        for (m, p, t) in cases {
            assert_eq!(classify(&r, m, p), Some(t), "{m} {p}");
        }
    }

    #[test]
    fn fallbacks_classify_and_other_requests_do_not() {
        let r = default_operations();
        assert_eq!(
            classify(&r, "DELETE", "/api/v2/users/5"),
            Some("user_delete")
        );
        assert_eq!(
            classify(&r, "PATCH", "/api/v2/users/5/role"),
            Some("user_role_change")
        );
        assert_eq!(
            classify(&r, "POST", "/api/v2/payroll/42/process"),
            Some("payroll_process")
        );
        assert_eq!(
            classify(&r, "POST", "/api/v2/payroll/42/export"),
            Some("payroll_export")
        );
        assert_eq!(classify(&r, "GET", "/api/v1/payments/refund"), None);
        assert_eq!(classify(&r, "POST", "/api/v1/orders"), None);
        // First match wins: the prefix rule before the fallback.
        assert_eq!(
            classify(&r, "PUT", "/api/v1/auth/users/role"),
            Some("user_role_change")
        );
    }

    #[test]
    fn recorded_path_is_canonical_with_a_sanitised_query() {
        assert_eq!(
            path_of("/API/v1//Payments/refund/?token=abc&x=1"),
            "/api/v1/payments/refund?token=[REDACTED]&x=1"
        );
        // A path the normaliser refuses is still recorded (raw), query sanitised.
        assert_eq!(path_of("/a/../b?password=p"), "/a/../b?password=[REDACTED]");
        assert_eq!(path_of("/x?"), "/x");
    }

    #[test]
    fn card_numbers_in_the_recorded_path_are_replaced() {
        assert_eq!(
            path_of("/api/v1/payments/refund/4111.1111.1111.1111?n=1"),
            "/api/v1/payments/refund/[REDACTED]?n=1"
        );
        // Spread over segments, and percent-encoded separators (the path is decoded first).
        assert_eq!(
            path_of("/api/v1/payments/refund/4111/1111/1111/1111"),
            "/api/v1/payments/refund/[REDACTED]"
        );
        assert_eq!(
            path_of("/api/v1/payments/refund/4111%20%201111.1111-1111/x"),
            "/api/v1/payments/refund/[REDACTED]/x"
        );
        // Refused by the normaliser: recorded raw, card still replaced (decoded if need be).
        assert_eq!(
            path_of("/a/../4111-1111-1111-1111?cvc=1"),
            "/a/../[REDACTED]?cvc=[REDACTED]"
        );
        assert_eq!(
            path_of("/a/../4111%2D1111%2D1111%2D1111"),
            "/a/../[REDACTED]"
        );
        assert_eq!(path_of("/a/../b%2Dc"), "/a/../b%2Dc");
        // Ids that are not card numbers stay.
        assert_eq!(
            path_of("/api/v1/orders/4111111111111112"),
            "/api/v1/orders/4111111111111112"
        );
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_772_359_200_123), "2026-03-01T10:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_body_is_captured_sanitised_and_other_bodies_are_not() {
        let (v, why) = capture_body(
            &san(),
            br#"{"amount":10,"card_token":"tok_1","password":"p"}"#,
            BodyCapture::Json,
            1000,
        );
        assert_eq!(why, None);
        assert_eq!(
            v,
            json!({"amount":10,"card_token":"[REDACTED]","password":"[REDACTED]"})
        );
        assert_eq!(
            capture_body(&san(), b"a=b", BodyCapture::Json, 1000),
            (Value::Null, Some("not_json"))
        );
        assert_eq!(
            capture_body(&san(), br#"{"a":"0123456789"}"#, BodyCapture::Json, 5),
            (Value::Null, Some("too_large"))
        );
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("Application/Problem+JSON"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
    }

    #[test]
    fn a_body_without_content_type_or_as_text_plain_is_sniffed_others_are_not_captured() {
        use BodyCapture::{Json, Sniff};
        let cases: [(Option<&str>, Option<BodyCapture>); 10] = [
            (None, Some(Sniff)),
            (Some(""), Some(Sniff)),
            (Some("  "), Some(Sniff)),
            (Some("text/plain"), Some(Sniff)),
            (Some("Text/Plain; charset=utf-8"), Some(Sniff)),
            (Some("application/json"), Some(Json)),
            (Some("application/vnd.api+json"), Some(Json)),
            (Some("application/x-www-form-urlencoded"), None),
            (Some("multipart/form-data; boundary=x"), None),
            (Some("application/octet-stream"), None),
        ];
        for (ct, want) in cases {
            assert_eq!(BodyCapture::for_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn a_sniffed_body_is_recorded_only_as_a_json_object_or_array() {
        let (v, why) = capture_body(
            &san(),
            br#"{"cvc":"737","amount":5}"#,
            BodyCapture::Sniff,
            1000,
        );
        assert_eq!((v, why), (json!({"cvc": "[REDACTED]", "amount": 5}), None));
        let (v, why) = capture_body(&san(), br#"[{"pin":"1234"}]"#, BodyCapture::Sniff, 1000);
        assert_eq!((v, why), (json!([{"pin": "[REDACTED]"}]), None));
        // Plain text, and JSON scalars that cannot be judged by a key, are not recorded.
        for body in "hunter2 \"hunter2\" 1234 true password=x".split(' ') {
            let body = body.as_bytes();
            assert_eq!(
                capture_body(&san(), body, BodyCapture::Sniff, 1000),
                (Value::Null, Some("not_json")),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            capture_body(&san(), b"", BodyCapture::Sniff, 1000),
            (Value::Null, None)
        );
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            start_ms: 1_772_359_200_000,
            method: "POST".into(),
            path: "/api/v1/payments/refund".into(),
            client_ip: Some("203.0.113.7".into()),
            user_id: None,
            user_agent: Some("curl/8".into()),
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn operation_outcomes() {
        let f = facts();
        let mk = |status, local| {
            operation_entry(
                &f,
                "payment_refund",
                &Completion {
                    status,
                    end_ms: f.start_ms + 41,
                    replied_locally: local,
                },
                Value::Null,
                json!({}),
            )
        };
        let e = mk(Some(200), false);
        assert_eq!(e.outcome, "completed");
        assert_eq!(e.duration_ms, Some(41));
        assert_eq!(e.kind, "operation");
        assert_eq!(e.ts, "2026-03-01T10:00:00.000Z");
        assert_eq!(mk(Some(404), false).outcome, "completed");
        assert_eq!(mk(Some(502), false).outcome, "failed");
        assert_eq!(mk(None, false).outcome, "failed");
        assert_eq!(mk(Some(413), true).outcome, "blocked");
    }

    #[test]
    fn security_event_becomes_a_record_with_sanitised_metadata() {
        let ev = SecurityEvent::new(
            "webhook_validation_failure",
            Severity::High,
            "bad signature",
            json!({"source": "stripe", "headers": {"Stripe-Signature": "t=1,v1=x"}}),
        );
        let e = event_entry(
            &facts(),
            &ev,
            &Completion {
                status: Some(401),
                end_ms: facts().start_ms,
                replied_locally: true,
            },
            &san(),
        );
        assert_eq!(e.kind, "security_event");
        assert_eq!(e.record_type, "webhook_validation_failure");
        assert_eq!(e.severity, "high");
        assert_eq!(e.outcome, "blocked");
        assert_eq!(e.description.as_deref(), Some("bad signature"));
        assert_eq!(e.metadata["headers"]["Stripe-Signature"], "[REDACTED]");
        assert_eq!(e.metadata["source"], "stripe");
        assert_eq!(e.request_body, Value::Null);
        // A card number in the description is replaced too.
        let card = SecurityEvent::new("x", Severity::Low, "card 4111 1111 1111 1111", json!({}));
        let e = event_entry(&facts(), &card, &Completion::default(), &san());
        assert_eq!(e.description.as_deref(), Some("card [REDACTED]"));
    }

    #[test]
    fn entry_serialises_every_required_field_and_round_trips() {
        use crate::audit::format::{FIELDS, OPTIONAL_FIELD};
        // The chain fields are the shipper's; every other field of the format is the entry's.
        const CHAIN: [&str; 5] = ["v", "id", "stream", "seq", "prev_hash"];
        let e = gap_entry(0, 3, "queue_full");
        let v: Value = serde_json::to_value(&e).unwrap();
        for k in FIELDS
            .iter()
            .filter(|f| !CHAIN.contains(f) && **f != OPTIONAL_FIELD)
        {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v.get("description").is_none());
        assert_eq!(v["metadata"], json!({"dropped": 3, "reason": "queue_full"}));
        let back: Entry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn long_values_are_cut_to_the_collector_limits() {
        let mut f = facts();
        f.user_agent = Some("é".repeat(1000));
        let e = operation_entry(&f, "x", &Completion::default(), Value::Null, json!({}));
        let ua = e.user_agent.unwrap();
        assert!(ua.len() <= 1024);
        assert!(ua.chars().all(|c| c == 'é'));
    }
}
