//! The planner against a simulated envoyproxy/ratelimit ([`Sim`]), end to end per request.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::HashMap;

use prost::Message;

use super::*;
use crate::events::{SecurityEvent, Severity};
use crate::jwt::tests::make_token;
use crate::ratelimit::config::{FailureMode, RateLimitConfig};
use crate::ratelimit::identity::{hash_user, IdentityInput};
use crate::ratelimit::rls::{
    Code, DescriptorStatus, RateLimit, RateLimitRequest, RateLimitResponse,
};
use crate::ratelimit::service_yaml::{COUNTER_LIMIT, COUNTER_UNIT};
use crate::ratelimit::window::unit_for_span;

/// Test double of envoyproxy/ratelimit's fixed-window semantics for the YAML that
/// service_yaml renders (the real service is exercised by tests/test_ratelimit_service.py).
struct Sim {
    cfg: RateLimitConfig,
    counts: HashMap<String, u64>,
}

impl Sim {
    fn new(cfg: &RateLimitConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            counts: HashMap::new(),
        }
    }

    fn limit_for(&self, entries: &[(String, String)]) -> Option<(u32, u64)> {
        let route = self
            .cfg
            .routes
            .iter()
            .find(|r| entries.first().map(|e| e.1.as_str()) == Some(&r.name))?;
        match entries.get(2).map(|e| (e.0.as_str(), e.1.as_str())) {
            Some(("level", m)) if entries.len() == 4 => {
                let m: u64 = m.parse().ok()?;
                Some((route.requests, unit_for_span(route.window_s * m)?.seconds()))
            }
            Some(("counter", "failures" | "cleared")) if entries.len() == 3 => {
                Some((COUNTER_LIMIT, COUNTER_UNIT.seconds()))
            }
            _ => None,
        }
    }

    fn handle(&mut self, body: &[u8], now: u64) -> Vec<u8> {
        let req = RateLimitRequest::decode(body).unwrap();
        let mut statuses = Vec::new();
        let mut overall = Code::Ok;
        for d in &req.descriptors {
            let entries: Vec<(String, String)> = d
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            let Some((limit, unit)) = self.limit_for(&entries) else {
                statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                });
                continue;
            };
            let hits = d.hits_addend.map(|h| h.value).unwrap_or(1);
            let key = format!("{entries:?}_{}", now / unit * unit);
            let c = self.counts.entry(key).or_insert(0);
            *c += hits;
            let over = *c > u64::from(limit);
            if over {
                overall = Code::OverLimit;
            }
            statuses.push(DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: limit,
                    unit: 0,
                    name: String::new(),
                }),
                limit_remaining: if over {
                    0
                } else {
                    (u64::from(limit) - *c) as u32
                },
                duration_until_reset: None,
            });
        }
        RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            ..Default::default()
        }
        .encode_to_vec()
    }
}

const SECRET: &str = "jwt-secret";
// A multiple of 28800 s, hence of every bucket span used here (300 … 4800 s).
const T0: u64 = 1_800_000_000;

fn limiter_with(cfg: RateLimitConfig) -> RateLimiter {
    RateLimiter::new(cfg.resolve(Some(crate::secret::Secret::new(SECRET))))
}

fn limiter() -> RateLimiter {
    limiter_with(RateLimitConfig::default())
}

fn facts<'a>(ip: &'a str, body: Option<&'a [u8]>, now_s: u64) -> AuthFacts<'a> {
    AuthFacts {
        client_ip: crate::client_ip::parse_ip(ip),
        identity: IdentityInput {
            content_type: Some("application/x-www-form-urlencoded"),
            body,
            authorization: None,
        },
        now_s,
        production: true,
    }
}

/// Runs a full check against the sim and returns the decision.
fn run(rl: &RateLimiter, sim: &mut Sim, route: &str, f: &AuthFacts<'_>) -> Decision {
    let idx = rl
        .config()
        .config
        .routes
        .iter()
        .position(|r| r.name == route)
        .unwrap();
    let (mut check, mut step) = rl.start(idx, f).unwrap();
    loop {
        match step {
            Step::Call(call) => {
                let resp = sim.handle(&call.body, f.now_s);
                step = check.on_rls_response(Ok(&resp));
            }
            Step::Done(d) => return d,
        }
    }
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

fn allow_headers(d: &Decision) -> &[(String, String)] {
    match d {
        Decision::Allow {
            response_headers, ..
        } => response_headers,
        other => panic!("expected Allow, got {other:?}"),
    }
}

fn deny(d: &Decision) -> (&LocalReply, &SecurityEvent) {
    match d {
        Decision::Deny { reply, event } => (reply, event),
        other => panic!("expected Deny, got {other:?}"),
    }
}

fn attempt_of(d: &Decision) -> &AuthAttempt {
    match d {
        Decision::Allow { attempt, .. } | Decision::FailOpen { attempt, .. } => attempt,
        other => panic!("expected an attempt, got {other:?}"),
    }
}

#[test]
fn routes_match_on_method_and_exact_path_ignoring_query_and_trailing_slash() {
    let rl = limiter();
    assert_eq!(rl.match_route("POST", "/auth/login"), Some(0));
    assert_eq!(rl.match_route("post", "/auth/login/?next=/x"), Some(0));
    assert_eq!(rl.match_route("POST", "/auth/refresh"), Some(3));
    assert_eq!(rl.match_route("OPTIONS", "/auth/login"), None);
    assert_eq!(rl.match_route("POST", "/auth/login/extra"), None);
    assert_eq!(rl.match_route("POST", "/auth/LOGIN"), None);
    assert!(rl.needs_body(0));
    let cfg = RateLimitConfig {
        enabled: false,
        ..RateLimitConfig::default()
    };
    assert_eq!(limiter_with(cfg).match_route("POST", "/auth/login"), None);
}

#[test]
fn check_request_has_every_level_counted_and_counters_read_only() {
    let rl = limiter();
    let now = T0 + 4_799;
    let (_, step) = rl
        .start(0, &facts("203.0.113.9:4000", Some(b"username=Alice"), now))
        .unwrap();
    let Step::Call(call) = step else { panic!() };
    assert_eq!(call.cluster, "ratelimit");
    assert_eq!(call.timeout_ms, 20);
    let req = RateLimitRequest::decode(call.body.as_slice()).unwrap();
    assert_eq!(req.domain, "aura-guard");
    assert_eq!(req.descriptors.len(), 14);
    let flat: Vec<(Vec<(String, String)>, u64)> = req
        .descriptors
        .iter()
        .map(|d| {
            (
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect(),
                d.hits_addend.unwrap().value,
            )
        })
        .collect();
    let e = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let b = |m: u64| (now / (300 * m)).to_string();
    assert_eq!(
        flat[0],
        (
            e(&[
                ("route", "login"),
                ("ip", "203.0.113.9"),
                ("level", "1"),
                ("bucket", &b(1))
            ]),
            1
        )
    );
    assert_eq!(
        flat[4],
        (
            e(&[
                ("route", "login"),
                ("ip", "203.0.113.9"),
                ("level", "16"),
                ("bucket", &b(16))
            ]),
            1
        )
    );
    assert_eq!(
        flat[5],
        (
            e(&[
                ("route", "login"),
                ("ip", "203.0.113.9"),
                ("counter", "failures")
            ]),
            0
        )
    );
    assert_eq!(
        flat[6],
        (
            e(&[
                ("route", "login"),
                ("ip", "203.0.113.9"),
                ("counter", "cleared")
            ]),
            0
        )
    );
    let user = hash_user("alice", None);
    assert_eq!(
        flat[7],
        (
            e(&[
                ("route", "login"),
                ("user", &user),
                ("level", "1"),
                ("bucket", &b(1))
            ]),
            1
        )
    );
    // Bucket values at the edge: 4799 is the last second of the first 4800 s bucket.
    assert_eq!(b(16), (T0 / 4800).to_string());
    assert_eq!(b(1), (T0 / 300 + 15).to_string());
}

#[test]
fn sixth_login_in_a_window_gets_429_with_retry_after_and_ietf_headers() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    let now = T0 + 258;
    for r in (0..5).rev() {
        let d = run(&rl, &mut sim, "login", &facts("198.51.100.1:1", None, now));
        let hs = allow_headers(&d);
        assert_eq!(header(hs, "ratelimit-policy"), r#""login-ip";q=5;w=300"#);
        assert_eq!(header(hs, "ratelimit"), format!(r#""login-ip";r={r};t=42"#));
    }
    let d = run(
        &rl,
        &mut sim,
        "login",
        &facts("198.51.100.1:1", None, now + 1),
    );
    let (reply, event) = deny(&d);
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.body,
        r#"{"detail":"Too many requests. Please try again later."}"#
    );
    assert_eq!(header(&reply.headers, "retry-after"), "41");
    assert_eq!(header(&reply.headers, "content-type"), "application/json");
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        r#""login-ip";q=5;w=300"#
    );
    assert_eq!(
        header(&reply.headers, "ratelimit"),
        r#""login-ip";r=0;t=41"#
    );
    assert_eq!(event.event_type, "auth_rate_limit_exceeded");
    assert_eq!(event.severity, Severity::Medium);
    assert_eq!(
        event.description,
        "Rate limit exceeded for login from IP 198.51.100.1"
    );
    assert_eq!(event.metadata["limit_type"], "ip");
    assert_eq!(event.metadata["endpoint"], "login");
    // Another IP is unaffected; the next bucket is fresh.
    allow_headers(&run(
        &rl,
        &mut sim,
        "login",
        &facts("198.51.100.2:1", None, now),
    ));
    let next = run(
        &rl,
        &mut sim,
        "login",
        &facts("198.51.100.1:1", None, T0 + 300),
    );
    assert_eq!(
        header(allow_headers(&next), "ratelimit"),
        r#""login-ip";r=4;t=300"#
    );
}

#[test]
fn retry_after_is_positive_at_both_bucket_edges() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    for (now, want) in [(T0 + 299, "1"), (T0 + 300, "300")] {
        for _ in 0..5 {
            run(&rl, &mut sim, "login", &facts("192.0.2.1:1", None, now));
        }
        let d = run(&rl, &mut sim, "login", &facts("192.0.2.1:1", None, now));
        assert_eq!(header(&deny(&d).0.headers, "retry-after"), want);
    }
}

#[test]
fn per_user_limit_applies_across_ips() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    let body = b"username=victim&password=x";
    for i in 0..5 {
        let ip = format!("10.0.0.{i}:1");
        allow_headers(&run(&rl, &mut sim, "login", &facts(&ip, Some(body), T0)));
    }
    let d = run(
        &rl,
        &mut sim,
        "login",
        &facts("10.0.0.99:1", Some(body), T0),
    );
    let (reply, event) = deny(&d);
    assert_eq!(event.metadata["limit_type"], "user");
    assert_eq!(event.description, "Rate limit exceeded for login for user");
    assert_eq!(
        header(&reply.headers, "ratelimit"),
        r#""login-ip";r=4;t=300, "login-user";r=0;t=300"#
    );
}

#[test]
fn one_user_in_rotating_body_encodings_shares_one_counter() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    let json = r#"{"username":"victim","password":"x","n":NaN}"#;
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(json.as_bytes());
    let utf16: Vec<u8> = json.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let multipart =
        b"--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nVictim\r\n--b--\r\n";
    let bodies: [(&str, &[u8]); 5] = [
        ("application/json", &bom),
        ("Application/JSON; charset=UTF-8", &utf16),
        (
            "application/vnd.api+json",
            br#"{"username":"x","username":"victim"}"#,
        ),
        ("multipart/form-data; boundary=\"b\"", multipart),
        (
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            b"user%6Eame=victim",
        ),
    ];
    for (i, (ct, body)) in bodies.iter().enumerate() {
        let ip = format!("10.0.0.{i}:1");
        let mut f = facts(&ip, Some(body), T0);
        f.identity.content_type = Some(ct);
        allow_headers(&run(&rl, &mut sim, "login", &f));
    }
    let d = run(
        &rl,
        &mut sim,
        "login",
        &facts("10.0.0.99:1", Some(b"username=victim"), T0),
    );
    assert_eq!(deny(&d).1.metadata["limit_type"], "user");
}

#[test]
fn an_unreadable_body_is_refused_400_in_production_and_anonymous_elsewhere() {
    let rl = limiter();
    let mut f = facts("10.0.0.1:1", Some(b"{\"username\": \"victim\""), T0);
    f.identity.content_type = Some("application/json; charset=utf-8");
    let (_, step) = rl.start(0, &f).unwrap();
    let Step::Done(Decision::UnreadableBody { reply, event }) = step else {
        panic!("expected a refusal, got {step:?}");
    };
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        r#"{"detail":"Unreadable request body: invalid JSON"}"#
    );
    assert_eq!(header(&reply.headers, "content-type"), "application/json");
    assert_eq!(event.event_type, EVENT_UNREADABLE_AUTH_BODY);
    assert_eq!(event.severity, Severity::Medium);
    assert_eq!(
        event.metadata,
        serde_json::json!({"endpoint": "login", "reason": "invalid JSON",
            "content_type": "application/json", "client_ip": "10.0.0.1"})
    );
    f.production = false;
    let (check, step) = rl.start(0, &f).unwrap();
    assert!(matches!(step, Step::Call(_)));
    assert_eq!(check.check_request().descriptors.len(), 7, "IP only");
}

/// Records `n` failed logins (401) for ip/user, as the response phase would.
fn fail_n(rl: &RateLimiter, sim: &mut Sim, f: &AuthFacts<'_>, n: usize) -> Vec<SecurityEvent> {
    let mut events = Vec::new();
    for _ in 0..n {
        let d = run(rl, sim, "login", f);
        let out = attempt_of(&d).on_upstream_status(401);
        sim.handle(&out.call.unwrap().body, f.now_s);
        events.extend(out.events);
    }
    events
}

#[test]
fn repeated_failures_emit_events_medium_from_three_high_from_five() {
    let mut cfg = RateLimitConfig::default();
    cfg.routes[0].requests = 100;
    let rl = limiter_with(cfg);
    let mut sim = Sim::new(&rl.config().config);
    let f = facts("192.0.2.7:1", Some(b"username=bob"), T0);
    let events = fail_n(&rl, &mut sim, &f, 6);
    let got: Vec<(Severity, String)> = events
        .iter()
        .map(|e| (e.severity, e.description.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Severity::Medium,
                "Multiple failed login attempts (3 failures)".to_string()
            ),
            (
                Severity::Medium,
                "Multiple failed login attempts (4 failures)".to_string()
            ),
            (
                Severity::High,
                "Multiple failed login attempts (5 failures)".to_string()
            ),
            (
                Severity::High,
                "Multiple failed login attempts (6 failures)".to_string()
            ),
        ]
    );
    assert_eq!(events[0].event_type, "repeated_auth_failures");
    assert_eq!(events[0].metadata["ip_failures"], 3);
    assert_eq!(events[0].metadata["user_failures"], 3);
}

#[test]
fn backoff_stretches_the_window_while_attempts_per_window_stay_the_same() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    let f = facts("192.0.2.8:1", None, T0);
    // 5 failures in the first 300 s bucket use the whole quota: 6th is denied for 300 s...
    fail_n(&rl, &mut sim, &f, 5);
    // ...but with 5 failures the window is 300 x 16 = 4800 s, and the 5 attempts were
    // counted in that bucket too, so later 300 s buckets stay closed until T0 + 4800.
    let later = facts("192.0.2.8:1", None, T0 + 1_000);
    let d = run(&rl, &mut sim, "login", &later);
    let (reply, event) = deny(&d);
    assert_eq!(header(&reply.headers, "retry-after"), "3800");
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        r#""login-ip";q=5;w=4800"#
    );
    assert_eq!(event.metadata["backoff_multiplier"], 16);
    // After the long window: 5 attempts again (q stays 5).
    for r in (0..5).rev() {
        let d = run(
            &rl,
            &mut sim,
            "login",
            &facts("192.0.2.8:1", None, T0 + 4_800),
        );
        assert_eq!(
            header(allow_headers(&d), "ratelimit"),
            format!(r#""login-ip";r={r};t=4800"#)
        );
    }
}

#[test]
fn two_failures_double_the_window() {
    let rl = limiter();
    let mut sim = Sim::new(&rl.config().config);
    fail_n(&rl, &mut sim, &facts("192.0.2.9:1", None, T0), 2);
    let d = run(
        &rl,
        &mut sim,
        "login",
        &facts("192.0.2.9:1", None, T0 + 310),
    );
    assert_eq!(
        header(allow_headers(&d), "ratelimit-policy"),
        r#""login-ip";q=5;w=600"#
    );
    // 3 attempts so far in the 600 s bucket (2 failed + this one).
    assert_eq!(
        header(allow_headers(&d), "ratelimit"),
        r#""login-ip";r=2;t=290"#
    );
}

#[test]
fn success_restarts_the_failure_count() {
    let mut cfg = RateLimitConfig::default();
    cfg.routes[0].requests = 100;
    let rl = limiter_with(cfg);
    let mut sim = Sim::new(&rl.config().config);
    let f = facts("192.0.2.10:1", Some(b"username=carol"), T0);
    fail_n(&rl, &mut sim, &f, 4);
    let d = run(&rl, &mut sim, "login", &f);
    let a = attempt_of(&d);
    assert!(a.subjects().iter().all(|s| s.failures == Some(4)));
    let out = a.on_upstream_status(200);
    assert!(out.events.is_empty());
    let call = out.call.unwrap();
    let req = RateLimitRequest::decode(call.body.as_slice()).unwrap();
    assert!(
        req.descriptors
            .iter()
            .all(|d| d.hits_addend.unwrap().value == 4
                && d.entries.last().unwrap().value == "cleared")
    );
    sim.handle(&call.body, T0);
    let d = run(&rl, &mut sim, "login", &f);
    assert!(attempt_of(&d)
        .subjects()
        .iter()
        .all(|s| s.failures == Some(0)));
    assert!(header(allow_headers(&d), "ratelimit-policy").contains("w=300"));
    // A success with nothing to clear makes no call; other statuses do nothing.
    assert_eq!(attempt_of(&d).on_upstream_status(204).call, None);
    assert_eq!(
        attempt_of(&d).on_upstream_status(422),
        ResponseOutcome::default()
    );
    assert_eq!(
        attempt_of(&d).on_upstream_status(500),
        ResponseOutcome::default()
    );
    assert!(attempt_of(&d).on_upstream_status(403).call.is_some());
}

#[test]
fn refresh_user_comes_only_from_a_verified_token() {
    let rl = limiter();
    let good = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u7"}"#, SECRET.as_bytes());
    let forged = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u7"}"#, b"nope");
    let n_desc = |token: &str| {
        let body = format!("refresh_token={token}");
        let (_, step) = rl
            .start(3, &facts("192.0.2.11:1", Some(body.as_bytes()), T0))
            .unwrap();
        let Step::Call(call) = step else { panic!() };
        RateLimitRequest::decode(call.body.as_slice())
            .unwrap()
            .descriptors
            .len()
    };
    assert_eq!(n_desc(&good), 14);
    assert_eq!(n_desc(&forged), 7);
}

fn fail_with(mode: FailureMode, production: bool, result: Result<&[u8], RlsError>) -> Decision {
    let mut cfg = RateLimitConfig::default();
    cfg.routes[0].failure_mode = mode;
    let rl = limiter_with(cfg);
    let mut f = facts("192.0.2.12:1", None, T0);
    f.production = production;
    let (mut check, _) = rl.start(0, &f).unwrap();
    match check.on_rls_response(result) {
        Step::Done(d) => d,
        Step::Call(_) => panic!("unexpected call"),
    }
}

#[test]
fn default_failure_mode_is_closed_503_in_production_and_open_elsewhere() {
    let timeout = Err(RlsError::GrpcStatus(4));
    match fail_with(FailureMode::Default, true, timeout.clone()) {
        Decision::FailClosed { reply, event } => {
            assert_eq!(reply.status, 503);
            assert_eq!(reply.body, UNAVAILABLE_BODY);
            assert_eq!(event.metadata["error"], "timeout");
            assert_eq!(event.event_type, "rate_limit_service_failure");
        }
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        fail_with(FailureMode::Default, false, timeout.clone()),
        Decision::FailOpen { .. }
    ));
    assert!(matches!(
        fail_with(FailureMode::Open, true, timeout.clone()),
        Decision::FailOpen { .. }
    ));
    assert!(matches!(
        fail_with(FailureMode::Closed, false, timeout),
        Decision::FailClosed { .. }
    ));
}

#[test]
fn service_down_grpc_errors_unknown_and_garbage_all_trigger_the_failure_mode() {
    let unknown = RateLimitResponse::default().encode_to_vec();
    let short = RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![DescriptorStatus::default()],
        ..Default::default()
    }
    .encode_to_vec();
    // All statuses present but none carries a limit: the YAML lacks our descriptors.
    let unconfigured = RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            };
            7
        ],
        ..Default::default()
    }
    .encode_to_vec();
    let cases: [(Result<&[u8], RlsError>, &str); 6] = [
        (Err(RlsError::Dispatch), "dispatch failed"),
        (Err(RlsError::GrpcStatus(14)), "grpc status 14"),
        (Ok(&unknown), "overall_code UNKNOWN"),
        (Ok(&[0xff, 0xff]), "undecodable response"),
        (Ok(&short), "status count mismatch"),
        (
            Ok(&unconfigured),
            "counter descriptor not configured in the service",
        ),
    ];
    for (result, why) in cases {
        match fail_with(FailureMode::Default, true, result) {
            Decision::FailClosed { event, .. } => assert_eq!(event.metadata["error"], why),
            d => panic!("{why}: {d:?}"),
        }
    }
}

#[test]
fn fail_open_still_records_failures_but_cannot_clear() {
    let d = fail_with(FailureMode::Open, true, Err(RlsError::Dispatch));
    let a = attempt_of(&d);
    let out = a.on_upstream_status(401);
    assert!(out.call.is_some());
    assert!(out.events.is_empty());
    assert_eq!(a.on_upstream_status(200).call, None);
}
