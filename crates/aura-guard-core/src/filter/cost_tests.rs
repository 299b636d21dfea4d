//! What a request costs in host calls. Each `Host` call is a crossing out of the VM, and in
//! Envoy one costs about as much as the whole per-request work of a Lua filter
//! (docs/benchmarks.md#what-a-request-costs), so the number per request is pinned here.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::{Action, HttpFilter, Policy};
use crate::config::Config;
use crate::host::mock::MockHost;
use std::rc::Rc;

fn filter(config_json: &str) -> (HttpFilter, usize) {
    let env = crate::testing::env_of(&[
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET_KEY", "cost-test-jwt-secret-0123456789abcdef"),
    ]);
    let config = Config::load(config_json.as_bytes(), &env).unwrap();
    let policy = Policy::new(config);
    let security_headers = policy.security_headers.headers().len();
    (HttpFilter::new(Rc::new(policy)), security_headers)
}

/// A request as Envoy hands it over at the edge: its own x-request-id already set.
fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> MockHost {
    let mut host = MockHost {
        now_ms: 1_700_000_000_000,
        ..MockHost::default()
    };
    for (k, v) in [
        (":method", method),
        (":path", path),
        (":authority", "api.example"),
        ("user-agent", "curl/8"),
        ("x-request-id", "6c5a3a5e-8a5e-4b0e-9d0e-6b1a2f3c4d5e"),
    ]
    .iter()
    .chain(extra)
    {
        host.request_headers.push((k.to_string(), v.to_string()));
    }
    host.response_headers.push((":status".into(), "200".into()));
    host
}

fn calls(host: &MockHost) -> Vec<&'static str> {
    host.calls.borrow().clone()
}

#[test]
fn a_plain_request_reads_the_headers_once_and_writes_each_response_header_once() {
    let (mut f, n) = filter(r#"{"audit": {"enabled": false}}"#);
    let mut host = request("GET", "/api/v2/ping", &[]);
    assert_eq!(f.on_request_headers(&mut host, true), Action::Continue);
    f.on_response_headers(&mut host);
    f.on_log(&mut host);
    let mut want = vec!["request_headers"];
    // The security headers and the request id; no reads of the response (its status is
    // read only for a stage that needs it), no clock, no counter, no log line.
    want.extend(std::iter::repeat_n("set_response_header", n + 1));
    assert_eq!(calls(&host), want);
    assert!(n >= 7, "production sets the seven security headers");
    assert!(host.counters.is_empty() && host.logs.borrow().is_empty());
}

#[test]
fn a_stripped_override_header_costs_one_removal_and_one_count() {
    let (mut f, n) = filter(r#"{"audit": {"enabled": false}}"#);
    let mut host = request("GET", "/api/v2/ping", &[("x-original-url", "/debug/x")]);
    f.on_request_headers(&mut host, true);
    f.on_response_headers(&mut host);
    let mut want = vec!["request_headers", "remove_request_header", "count"];
    want.extend(std::iter::repeat_n("set_response_header", n + 1));
    assert_eq!(calls(&host), want);
}

#[test]
fn a_missing_request_id_costs_one_random_draw_and_one_request_header_write() {
    let (mut f, n) = filter(r#"{"audit": {"enabled": false}}"#);
    let mut host = request("GET", "/api/v2/ping", &[]);
    host.request_headers.retain(|(k, _)| k != "x-request-id");
    f.on_request_headers(&mut host, true);
    f.on_response_headers(&mut host);
    let mut want = vec!["request_headers", "random16", "set_request_header"];
    want.extend(std::iter::repeat_n("set_response_header", n + 1));
    assert_eq!(calls(&host), want);
}

#[test]
fn a_refusal_sends_every_header_with_the_reply_in_one_call() {
    let (mut f, _) = filter(r#"{"audit": {"enabled": false}}"#);
    let mut host = request("GET", "/debug/config", &[]);
    assert_eq!(f.on_request_headers(&mut host, true), Action::Pause);
    let c = calls(&host);
    assert_eq!(c.first(), Some(&"request_headers"));
    assert_eq!(c.iter().filter(|c| **c == "send_reply").count(), 1);
    assert!(
        !c.contains(&"set_response_header") && !c.contains(&"response_header"),
        "{c:?}"
    );
}

#[test]
fn an_auth_request_reads_the_headers_once_and_makes_one_rate_limit_call() {
    let (mut f, _) = filter(
        r#"{"audit": {"enabled": false},
            "ratelimit": {"trusted_hops": 1, "trusted_proxies": ["127.0.0.1/32"]}}"#,
    );
    let body = "username=alice&password=x";
    let len = body.len().to_string();
    let mut host = request(
        "POST",
        "/auth/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", &len),
            ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
        ],
    );
    host.downstream_address = Some("127.0.0.1:5000".into());
    host.request_body = body.as_bytes().to_vec();
    assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
    assert_eq!(
        f.on_request_body(&mut host, body.len(), true),
        Action::Pause
    );
    let c = calls(&host);
    assert_eq!(
        c.iter().filter(|c| **c == "request_headers").count(),
        1,
        "{c:?}"
    );
    assert_eq!(
        c.iter().filter(|c| **c == "request_body").count(),
        1,
        "{c:?}"
    );
    assert_eq!(
        c.iter().filter(|c| **c == "dispatch_grpc").count(),
        1,
        "{c:?}"
    );
    assert_eq!(
        c.iter().filter(|c| **c == "downstream_address").count(),
        1,
        "{c:?}"
    );
}
