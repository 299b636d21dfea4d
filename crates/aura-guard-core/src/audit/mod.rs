//! Audit (docs/audit.md): one record per sensitive operation and per security event, sanitised,
//! handed to the shipper without delaying the request.
//!
//! - [`format`]: the record format v1 (docs/audit.md §2), shared with the collector.
//! - [`sanitize`]: redaction of sensitive keys, query parameters, headers and card numbers.
//! - [`record`]: how requests become records.
//! - [`shipper`]: the single shipper's pure logic (chain, buffer, batches, back-off, gaps).
//! - [`service`]: the shipper's service loop (queue, dispatch, answers, counters) over a host
//!   trait, which the service VM's glue implements.
//!
//! Flow: at the request headers [`RequestAudit::begin`] gathers the facts and classifies the
//! operation; a sensitive operation whose body may be JSON ([`record::BodyCapture`]) holds the
//! body (the pipeline's body-holding stage) and [`RequestAudit::capture`] keeps it sanitised;
//! at the end of the
//! stream [`RequestAudit::finish`] builds the entries, which the filter enqueues on the
//! shipper's shared queue.

pub mod config;
pub mod format;
pub mod record;
pub mod sanitize;
pub mod service;
pub mod shipper;

use crate::config::Environment;
use crate::events::SecurityEvent;
use crate::host::RequestHeaders;
use crate::jwt::bearer_sub;
use crate::path::NormalisedPath;
use crate::secret::Secret;
use config::AuditConfig;
use format::{Entry, Limits};
use record::{BodyCapture, Completion, RequestFacts};
use sanitize::Sanitizer;
use serde_json::Value;
use std::net::IpAddr;

/// Audit settings derived once per configuration.
#[derive(Debug, Clone)]
pub struct AuditPolicy {
    pub enabled: bool,
    pub sanitizer: Sanitizer,
    pub config: AuditConfig,
    /// The application's JWT secret (`jwt.secret_env`): `user_id` is the `sub` of a bearer
    /// token verified with it.
    pub jwt_secret: Option<Secret>,
}

impl AuditPolicy {
    pub fn new(config: &AuditConfig, env: Environment, jwt_secret: Option<Secret>) -> Self {
        AuditPolicy {
            enabled: config.is_enabled(env),
            sanitizer: Sanitizer::new(&config.redact_keys, config.redact_card_numbers),
            config: config.clone(),
            jwt_secret,
        }
    }
}

/// One request's audit state.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestAudit {
    facts: RequestFacts,
    operation: Option<String>,
    /// Set when the body is to be held and captured.
    capture: Option<BodyCapture>,
    body: Value,
    body_note: Option<&'static str>,
}

/// What the pipeline already knows when a request starts: read from the host once and shared
/// by every stage, so audit neither re-reads the request line nor re-derives the client IP.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart<'a> {
    pub start_ms: u64,
    pub request_id: &'a str,
    pub method: &'a str,
    /// `:path` as received (used when normalisation refused it).
    pub raw_path: &'a str,
    /// The pipeline's normalised path, when `raw_path` normalised.
    pub path: Option<&'a NormalisedPath>,
    /// The client IP by the pipeline's one rule (`HttpFilter::client_ip`).
    pub client_ip: Option<IpAddr>,
    /// The request headers, as the pipeline read them.
    pub headers: &'a RequestHeaders,
}

impl RequestAudit {
    /// Gathers the request facts (None when audit is off). The user id is the `sub` of a
    /// bearer JWT verified with the configured secret.
    pub fn begin(policy: &AuditPolicy, start: &RequestStart<'_>) -> Option<Self> {
        if !policy.enabled {
            return None;
        }
        let san = &policy.sanitizer;
        // Classified on the path itself; recorded with card numbers and the query sanitised.
        let (canonical, _) = record::split_path(start.raw_path, start.path);
        let operation = record::classify(&policy.config.operations, start.method, &canonical)
            .map(str::to_owned);
        let capture = if operation.is_some() && policy.config.capture_body {
            BodyCapture::for_content_type(start.headers.get("content-type"))
        } else {
            None
        };
        Some(RequestAudit {
            facts: RequestFacts {
                start_ms: start.start_ms,
                method: start.method.to_owned(),
                path: record::record_path(san, start.raw_path, start.path),
                client_ip: start.client_ip.map(|ip| ip.to_string()),
                user_id: verified_user(policy, start.headers, start.start_ms),
                user_agent: start
                    .headers
                    .get("user-agent")
                    .map(|ua| san.text(ua).into_owned()),
                request_id: Some(san.text(start.request_id).into_owned()),
            },
            operation,
            capture,
            body: Value::Null,
            body_note: None,
        })
    }

    /// The sensitive operation type, if the request is one.
    pub fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }

    /// A sensitive operation whose body may be JSON: the pipeline must hold the body for
    /// capture.
    pub fn wants_body(&self) -> bool {
        self.capture.is_some()
    }

    /// Keeps the sanitised body (called with the whole body).
    pub fn capture(&mut self, policy: &AuditPolicy, body: &[u8]) {
        let Some(mode) = self.capture else {
            return;
        };
        let (value, note) = record::capture_body(
            &policy.sanitizer,
            body,
            mode,
            policy.config.max_captured_body_bytes,
        );
        self.body = value;
        self.body_note = note;
    }

    /// The entries of this request: the operation (if sensitive) and one per security event.
    pub fn finish(
        &self,
        policy: &AuditPolicy,
        events: &[SecurityEvent],
        done: &Completion,
    ) -> Vec<Entry> {
        let mut out = Vec::with_capacity(events.len() + 1);
        if let Some(op) = &self.operation {
            let metadata = match self.body_note {
                Some(note) => serde_json::json!({ "request_body_omitted": note }),
                None => Value::Object(serde_json::Map::new()),
            };
            out.push(record::operation_entry(
                &self.facts,
                op,
                done,
                self.body.clone(),
                metadata,
            ));
        }
        for ev in events {
            out.push(record::event_entry(
                &self.facts,
                ev,
                done,
                &policy.sanitizer,
            ));
        }
        out
    }
}

/// The `sub` of the request's bearer JWT when it verifies (HS256, exp/nbf checked).
fn verified_user(policy: &AuditPolicy, headers: &RequestHeaders, now_ms: u64) -> Option<String> {
    let secret = policy.jwt_secret.as_ref()?;
    let auth = headers.get("authorization")?;
    bearer_sub(auth, secret, now_ms / 1000).map(|sub| record::clip(&sub, Limits::USER_ID))
}

/// Parses the `response.code` property: Envoy serialises integers as 8 little-endian bytes;
/// a decimal string is accepted too.
pub fn parse_response_code(raw: &[u8]) -> Option<u32> {
    if let Ok(bytes) = <[u8; 8]>::try_from(raw) {
        return u32::try_from(u64::from_le_bytes(bytes)).ok();
    }
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::mock::MockHost;

    /// Starts a request the way the pipeline does: method, path and peer address from the
    /// mock host (the client-IP rule itself is the pipeline's, tested in filter.rs).
    fn begin(p: &AuditPolicy, h: &MockHost, start_ms: u64, id: &str) -> Option<RequestAudit> {
        let method = h.request_header(":method").unwrap_or_default();
        let raw = h.request_header(":path").unwrap_or_default();
        let path = crate::path::normalise(&raw).ok();
        let ip = h
            .downstream_address
            .as_deref()
            .and_then(crate::client_ip::parse_ip);
        let headers = RequestHeaders::new(h.request_headers.clone());
        let start = RequestStart {
            start_ms,
            request_id: id,
            method: &method,
            raw_path: &raw,
            path: path.as_ref(),
            client_ip: ip,
            headers: &headers,
        };
        RequestAudit::begin(p, &start)
    }

    fn policy() -> AuditPolicy {
        AuditPolicy::new(&AuditConfig::default(), Environment::Production, None)
    }

    fn host(method: &str, path: &str, ct: Option<&str>) -> MockHost {
        let mut h = MockHost::default();
        h.request_headers.push((":method".into(), method.into()));
        h.request_headers.push((":path".into(), path.into()));
        h.request_headers
            .push(("user-agent".into(), "pytest".into()));
        if let Some(ct) = ct {
            h.request_headers.push(("content-type".into(), ct.into()));
        }
        h.downstream_address = Some("198.51.100.9:40000".into());
        h
    }

    #[test]
    fn disabled_audit_gathers_nothing() {
        let p = AuditPolicy::new(&AuditConfig::default(), Environment::Development, None);
        let h = host("POST", "/api/v1/payments/refund", None);
        assert!(begin(&p, &h, 0, "r").is_none());
    }

    #[test]
    fn sensitive_json_operation_wants_the_body_and_records_it_sanitised() {
        let p = policy();
        let h = host(
            "POST",
            "/api/v1/payments/refund?api_key=k",
            Some("application/json"),
        );
        let mut a = begin(&p, &h, 5, "req-9").unwrap();
        assert_eq!(a.operation(), Some("payment_refund"));
        assert!(a.wants_body());
        a.capture(
            &p,
            br#"{"amount":5,"card_token":"tok_live_x","password":"hunter2"}"#,
        );
        let entries = a.finish(
            &p,
            &[],
            &Completion {
                status: Some(200),
                end_ms: 9,
                replied_locally: false,
            },
        );
        assert_eq!(entries.len(), 1);
        let line = serde_json::to_string(&entries[0]).unwrap();
        assert!(!line.contains("tok_live_x") && !line.contains("hunter2") && !line.contains("=k"));
        let e = &entries[0];
        assert_eq!(e.client_ip.as_deref(), Some("198.51.100.9"));
        assert_eq!(e.request_id.as_deref(), Some("req-9"));
        assert_eq!(e.user_agent.as_deref(), Some("pytest"));
        assert_eq!(e.user_id, None);
        assert_eq!(
            e.path.as_deref(),
            Some("/api/v1/payments/refund?api_key=[REDACTED]")
        );
        assert_eq!(e.request_body["amount"], 5);
        assert_eq!(e.duration_ms, Some(4));
    }

    #[test]
    fn non_json_body_is_not_held() {
        let p = policy();
        let h = host(
            "POST",
            "/api/v1/payments/refund",
            Some("application/x-www-form-urlencoded"),
        );
        let a = begin(&p, &h, 0, "r").unwrap();
        assert!(!a.wants_body());
        let e = a.finish(&p, &[], &Completion::default());
        assert_eq!(e[0].request_body, Value::Null);
    }

    #[test]
    fn a_json_body_without_content_type_or_as_text_plain_is_captured_sanitised() {
        let p = policy();
        let body =
            br#"{"amount":5,"card":{"cardCvc":"737","number":"4111.1111.1111.1111"},"pin":1234}"#;
        for ct in [None, Some("text/plain;charset=UTF-8")] {
            let h = host("POST", "/api/v1/payments/refund", ct);
            let mut a = begin(&p, &h, 0, "r").unwrap();
            assert!(a.wants_body(), "{ct:?}");
            a.capture(&p, body);
            let e = a.finish(&p, &[], &Completion::default());
            assert_eq!(
                e[0].request_body,
                serde_json::json!({"amount": 5, "card": {"cardCvc": "[REDACTED]",
                    "number": "[REDACTED]"}, "pin": "[REDACTED]"}),
                "{ct:?}"
            );
            assert_eq!(e[0].metadata, serde_json::json!({}));
        }
    }

    #[test]
    fn card_numbers_in_path_user_agent_and_request_id_are_replaced_and_still_classified() {
        let p = policy();
        let mut h = host(
            "POST",
            "/api/v1/payments/refund/5105.1051.0510.5100?cardCvc=737",
            Some("application/json"),
        );
        h.request_headers.retain(|(k, _)| k != "user-agent");
        h.request_headers.push((
            "user-agent".into(),
            "app/1 (card 3566 0020 2036 0505)".into(),
        ));
        let a = begin(&p, &h, 0, "6011-0009-9013-9424").unwrap();
        assert_eq!(a.operation(), Some("payment_refund"));
        let e = a.finish(&p, &[], &Completion::default());
        assert_eq!(
            e[0].path.as_deref(),
            Some("/api/v1/payments/refund/[REDACTED]?cardCvc=[REDACTED]")
        );
        assert_eq!(e[0].user_agent.as_deref(), Some("app/1 (card [REDACTED])"));
        assert_eq!(e[0].request_id.as_deref(), Some("[REDACTED]"));
    }

    #[test]
    fn unparsable_json_body_is_noted_not_recorded() {
        let p = policy();
        // Declared JSON that is not, and a sniffed body that is not an object or array.
        for (ct, body) in [
            (Some("application/json"), &b"password=hunter2"[..]),
            (None, b"737"),
        ] {
            let h = host("POST", "/api/v1/payments/refund", ct);
            let mut a = begin(&p, &h, 0, "r").unwrap();
            a.capture(&p, body);
            let e = a.finish(&p, &[], &Completion::default());
            assert_eq!(e[0].request_body, Value::Null);
            assert_eq!(e[0].metadata["request_body_omitted"], "not_json");
        }
    }

    #[test]
    fn ordinary_request_gives_no_entry_but_its_events_do() {
        let p = policy();
        let h = host("GET", "/debug/token", None);
        let a = begin(&p, &h, 0, "r").unwrap();
        assert!(!a.wants_body());
        assert!(a.finish(&p, &[], &Completion::default()).is_empty());
        let ev = SecurityEvent::new(
            "debug_endpoint_blocked",
            crate::events::Severity::Medium,
            "blocked",
            serde_json::json!({"endpoint": "token"}),
        );
        let e = a.finish(
            &p,
            &[ev],
            &Completion {
                status: Some(404),
                end_ms: 0,
                replied_locally: true,
            },
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, "security_event");
        assert_eq!(e[0].outcome, "blocked");
        assert_eq!(e[0].status, Some(404));
    }

    fn jwt(sub: &str, secret: &[u8]) -> String {
        crate::jwt::tests::make_token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(r#"{{"sub":"{sub}"}}"#),
            secret,
        )
    }

    fn policy_with_secret() -> AuditPolicy {
        AuditPolicy::new(
            &AuditConfig::default(),
            Environment::Production,
            Some(Secret::new("jwt-secret")),
        )
    }

    #[test]
    fn user_id_is_the_sub_of_a_verified_bearer_jwt_only() {
        let p = policy_with_secret();
        let mut h = host("POST", "/api/v1/payments/refund", None);
        h.request_headers.push((
            "authorization".into(),
            format!("Bearer {}", jwt("u42", b"jwt-secret")),
        ));
        let a = begin(&p, &h, 0, "r").unwrap();
        assert_eq!(a.facts.user_id.as_deref(), Some("u42"));

        let mut forged = host("POST", "/api/v1/payments/refund", None);
        forged.request_headers.push((
            "authorization".into(),
            format!("Bearer {}", jwt("admin", b"guess")),
        ));
        let a = begin(&p, &forged, 0, "r").unwrap();
        assert_eq!(a.facts.user_id, None);

        // Without a configured secret nothing is trusted.
        let a = begin(&policy(), &h, 0, "r").unwrap();
        assert_eq!(a.facts.user_id, None);
    }

    #[test]
    fn response_code_property_forms() {
        assert_eq!(parse_response_code(&200u64.to_le_bytes()), Some(200));
        assert_eq!(parse_response_code(b"503"), Some(503));
        assert_eq!(parse_response_code(b""), None);
    }
}
