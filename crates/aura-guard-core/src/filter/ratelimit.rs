//! The auth rate-limit stage (docs/ratelimit.md, "Glue"). The planner in
//! `crate::ratelimit::planner` decides; this stage moves its calls and answers between the
//! host and the planner, and turns its decisions into flows, events and stats.
//!
//! Stats (Envoy shows them as `wasmcustom.<name>`):
//! - `aura_guard.ratelimit.allowed.<route>`: auth requests the service allowed;
//! - `aura_guard.ratelimit.over_limit.<route>.<ip|user>`: 429s, by the limit that was hit;
//! - `aura_guard.ratelimit.service_failure.<route>.<open|closed>`: failure-mode outcomes;
//! - `aura_guard.ratelimit.failure_recorded.<route>` / `cleared.<route>`: response-phase calls;
//! - `aura_guard.ratelimit.unreadable_body.<route>`: bodies refused (400) in production because
//!   the user could not be read from them.

use super::{Cx, Flow, Policy, Reply, RequestCtx, Stage};
use crate::config::Environment;
use crate::host::{GrpcCall, Host, Level};
use crate::ratelimit::identity::IdentityInput;
use crate::ratelimit::planner::{
    AuthAttempt, AuthFacts, Check, Decision, LocalReply, RlsCall, RlsError, Step,
};
use crate::ratelimit::rls::{RLS_METHOD, RLS_SERVICE};

/// Per-request rate-limit state.
#[derive(Debug, Default)]
pub(super) struct RateLimitStage {
    /// Index of the matched auth route.
    route: Option<usize>,
    started: bool,
    /// The check waiting for the service, with its call's token.
    pending: Option<(u32, Check)>,
    /// An allowed (or failed-open) attempt, for the response phase.
    attempt: Option<AuthAttempt>,
}

impl Stage for RateLimitStage {
    /// Remembers the auth route this request is limited by, if any.
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (policy, ctx) = (cx.policy, &mut *cx.req);
        if let (Some(limiter), Some(path)) = (&policy.ratelimiter, &ctx.path) {
            self.route = path
                .route_forms()
                .find_map(|f| limiter.match_route(&ctx.method, f));
        }
        Flow::Next
    }

    /// The user comes from the body.
    fn needs_body(&self, policy: &Policy) -> bool {
        match (&policy.ratelimiter, self.route) {
            (Some(l), Some(r)) => l.needs_body(r),
            _ => false,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: &[u8]) -> Flow {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        self.check(policy, ctx, host, Some(body))
    }

    /// A 401/403 records a failure, a 2xx clears the failure count, both fire and forget (the
    /// answer never delays the response).
    fn wants_status(&self) -> bool {
        self.attempt.is_some()
    }

    fn on_response(&mut self, cx: &mut Cx<'_>, status: Option<u32>) {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let Some(status) = status.and_then(|s| u16::try_from(s).ok()) else {
            return;
        };
        let route = self.route_name(policy);
        let outcome = attempt.on_upstream_status(status);
        if let Some(call) = &outcome.call {
            let what = if (200..300).contains(&status) {
                "cleared"
            } else {
                "failure_recorded"
            };
            if host.dispatch_grpc_detached(&grpc(call)) {
                host.count(&format!("aura_guard.ratelimit.{what}.{route}"));
            } else {
                host.count(&format!(
                    "aura_guard.ratelimit.{what}_dispatch_failed.{route}"
                ));
                host.log(
                    Level::Warn,
                    "aura-guard: rate-limit response-phase call not dispatched",
                );
            }
        }
        for event in outcome.events {
            ctx.emit(policy, host, event);
        }
    }
}

impl RateLimitStage {
    /// A decision is outstanding: every request callback must hold the request.
    pub(super) fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Runs the check for a matched route (header phase without a body, or with the whole
    /// body), once.
    pub(super) fn check(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
        body: Option<&[u8]>,
    ) -> Flow {
        let (Some(route), Some(limiter)) = (self.route, &policy.ratelimiter) else {
            return Flow::Next;
        };
        if self.started {
            return Flow::Next;
        }
        self.started = true;
        let facts = AuthFacts {
            client_ip: ctx.client_ip(policy, host),
            identity: IdentityInput {
                content_type: ctx.headers.get("content-type"),
                body,
                authorization: ctx.headers.get("authorization"),
            },
            now_s: host.now_ms() / 1000,
            production: policy.config.environment == Environment::Production,
        };
        let Some((check, step)) = limiter.start(route, &facts) else {
            return Flow::Next;
        };
        self.drive(policy, ctx, host, check, step)
    }

    /// Feeds a gRPC answer (`Err` holds a non-OK gRPC status) for the call with `token`.
    /// None: not this request's outstanding call (a fire-and-forget call's answer, a late
    /// answer), ignored.
    pub(super) fn on_grpc_response(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
        token: u32,
        result: Result<&[u8], u32>,
    ) -> Option<Flow> {
        if !matches!(&self.pending, Some((pending, _)) if *pending == token) {
            host.log(
                Level::Debug,
                &format!("aura-guard: ignoring gRPC answer {token}"),
            );
            return None;
        }
        let (_, mut check) = self.pending.take()?;
        let step = check.on_rls_response(result.map_err(RlsError::GrpcStatus));
        Some(self.drive(policy, ctx, host, check, step))
    }

    /// Dispatches calls until the planner waits for an answer or decides.
    fn drive(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
        mut check: Check,
        first: Step,
    ) -> Flow {
        let mut step = first;
        loop {
            match step {
                Step::Call(call) => match host.dispatch_grpc(&grpc(&call)) {
                    Some(token) => {
                        self.pending = Some((token, check));
                        return Flow::Wait;
                    }
                    None => {
                        host.log(
                            Level::Warn,
                            &format!(
                                "aura-guard: rate-limit call to cluster {} not dispatched",
                                call.cluster
                            ),
                        );
                        step = check.on_rls_response(Err(RlsError::Dispatch));
                    }
                },
                Step::Done(decision) => return self.decide(policy, ctx, host, decision),
            }
        }
    }

    fn route_name(&self, policy: &Policy) -> String {
        policy
            .ratelimiter
            .as_ref()
            .zip(self.route)
            .and_then(|(l, r)| l.config().config.routes.get(r))
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }

    fn decide(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
        decision: Decision,
    ) -> Flow {
        let route = self.route_name(policy);
        match decision {
            Decision::Allow {
                response_headers,
                attempt,
            } => {
                host.count(&format!("aura_guard.ratelimit.allowed.{route}"));
                for (name, value) in response_headers {
                    ctx.add_response_header(&name, &value);
                }
                self.attempt = Some(attempt);
                Flow::Next
            }
            Decision::FailOpen { event, attempt } => {
                host.count(&format!(
                    "aura_guard.ratelimit.service_failure.{route}.open"
                ));
                ctx.emit(policy, host, event);
                self.attempt = Some(attempt);
                Flow::Next
            }
            Decision::Deny { reply, event } => {
                let kind = event
                    .metadata
                    .get("limit_type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("ip")
                    .to_string();
                host.count(&format!("aura_guard.ratelimit.over_limit.{route}.{kind}"));
                ctx.emit(policy, host, event);
                Flow::Reply(local_reply(reply))
            }
            Decision::FailClosed { reply, event } => {
                host.count(&format!(
                    "aura_guard.ratelimit.service_failure.{route}.closed"
                ));
                ctx.emit(policy, host, event);
                Flow::Reply(local_reply(reply))
            }
            Decision::UnreadableBody { reply, event } => {
                host.count(&format!("aura_guard.ratelimit.unreadable_body.{route}"));
                ctx.emit(policy, host, event);
                Flow::Reply(local_reply(reply))
            }
        }
    }
}

/// The planner's reply; the pipeline sets the content type itself.
fn local_reply(reply: LocalReply) -> Reply {
    Reply {
        status: u32::from(reply.status),
        body: reply.body.into_bytes(),
        headers: reply
            .headers
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
            .collect(),
    }
}

fn grpc(call: &RlsCall) -> GrpcCall<'_> {
    GrpcCall {
        cluster: &call.cluster,
        service: RLS_SERVICE,
        method: RLS_METHOD,
        message: &call.body,
        timeout_ms: call.timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::rc::Rc;

    use prost::Message;

    use super::*;
    use crate::client_ip::forwarded_for_before_envoy;
    use crate::config::Config;
    use crate::filter::{Action, HttpFilter, Policy};
    use crate::host::mock::MockHost;
    use crate::ratelimit::planner::TOO_MANY_BODY;
    use crate::ratelimit::rls::{
        Code, DescriptorStatus, RateLimit, RateLimitRequest, RateLimitResponse,
    };

    // Production refuses a JWT secret under 32 bytes.
    const SECRET: &str = "test-jwt-secret-0123456789abcdefghij";

    fn filter_in(env: &str, json: &str) -> HttpFilter {
        let lookup = |k: &str| match k {
            "JWT_SECRET_KEY" => Some(SECRET.to_string()),
            "ENVIRONMENT" => Some(env.to_string()),
            _ => None,
        };
        let config = Config::load(json.as_bytes(), &lookup).unwrap();
        HttpFilter::new(Rc::new(Policy::new(config)))
    }

    fn login(body: &str) -> MockHost {
        let mut host = MockHost {
            now_ms: 1_800_000_000_000,
            downstream_address: Some("10.1.2.3:5555".into()),
            ..MockHost::default()
        };
        for (k, v) in [
            (":method", "POST"),
            (":path", "/auth/login"),
            ("content-type", "application/x-www-form-urlencoded"),
        ] {
            host.request_headers.push((k.into(), v.into()));
        }
        host.request_body = body.as_bytes().to_vec();
        host
    }

    /// Answers a check as the service would, with the first attempt descriptor at
    /// `remaining` (over the limit when None) and every counter at 0.
    fn answer(call: &[u8], remaining: Option<u32>) -> Vec<u8> {
        let req = RateLimitRequest::decode(call).unwrap();
        let statuses = req
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let counter = d.entries.iter().any(|e| e.key == "counter");
                let (code, limit, left) = if counter {
                    (Code::Ok, u32::MAX, u32::MAX)
                } else if i == 0 && remaining.is_none() {
                    (Code::OverLimit, 5, 0)
                } else {
                    (Code::Ok, 5, remaining.unwrap_or(0))
                };
                DescriptorStatus {
                    code: code as i32,
                    current_limit: Some(RateLimit {
                        requests_per_unit: limit,
                        unit: 3,
                        name: String::new(),
                    }),
                    limit_remaining: left,
                    duration_until_reset: None,
                }
            })
            .collect();
        RateLimitResponse {
            overall_code: if remaining.is_none() {
                Code::OverLimit as i32
            } else {
                Code::Ok as i32
            },
            statuses,
            ..RateLimitResponse::default()
        }
        .encode_to_vec()
    }

    /// Runs a login up to the outstanding check; returns its token.
    fn until_check(f: &mut HttpFilter, host: &mut MockHost) -> u32 {
        assert_eq!(f.on_request_headers(host, false), Action::Pause);
        let n = host.request_body.len();
        assert_eq!(f.on_request_body(host, n, true), Action::Pause);
        let call = host.grpc_calls.last().unwrap();
        assert_eq!(call.cluster, "ratelimit");
        assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
        assert_eq!(call.method, "ShouldRateLimit");
        assert_eq!(call.timeout_ms, 20);
        call.token.unwrap()
    }

    #[test]
    fn allowed_login_resumes_and_the_response_carries_ratelimit_headers() {
        let mut f = filter_in("production", "{}");
        let mut host = login("username=test&password=wrong");
        let token = until_check(&mut f, &mut host);
        assert_eq!(host.resumed, 0);
        let bytes = answer(&host.grpc_calls[0].message, Some(3));
        f.on_grpc_response(&mut host, token, Ok(&bytes));
        assert_eq!(host.resumed, 1);
        assert!(host.reply.is_none());
        host.response_headers.push((":status".into(), "401".into()));
        f.on_response_headers(&mut host);
        let policy = host.response_header("ratelimit-policy").unwrap();
        assert!(policy.contains("\"login-ip\";q=5;w=300"), "{policy}");
        assert!(policy.contains("\"login-user\""), "{policy}");
        assert!(host
            .response_header("ratelimit")
            .unwrap()
            .contains("\"login-ip\";r=3;t="));
        // The 401 is recorded as a failure, detached from the request.
        let last = host.grpc_calls.last().unwrap();
        assert_eq!(last.token, None);
        let req = RateLimitRequest::decode(last.message.as_slice()).unwrap();
        assert_eq!(req.descriptors.len(), 2);
        assert_eq!(
            host.counters
                .get("aura_guard.ratelimit.failure_recorded.login"),
            Some(&1)
        );
        assert_eq!(
            host.counters.get("aura_guard.ratelimit.allowed.login"),
            Some(&1)
        );
    }

    #[test]
    fn over_limit_gets_429_with_retry_after_and_an_event() {
        let mut f = filter_in("development", "{}");
        let mut host = login("username=test&password=wrong");
        let token = until_check(&mut f, &mut host);
        let bytes = answer(&host.grpc_calls[0].message, None);
        f.on_grpc_response(&mut host, token, Ok(&bytes));
        assert_eq!(host.resumed, 0);
        let reply = host.reply.clone().unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(reply.body, TOO_MANY_BODY.as_bytes());
        let get = |n: &str| {
            reply
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("content-type"), vec!["application/json"]);
        let retry: u64 = get("retry-after")[0].parse().unwrap();
        assert!((1..=300).contains(&retry));
        assert_eq!(get("ratelimit-policy").len(), 1);
        assert!(!get("x-request-id").is_empty(), "local reply headers kept");
        let ev = &f.events()[0];
        assert_eq!(ev.event_type, "auth_rate_limit_exceeded");
        assert_eq!(ev.metadata["limit_type"], "ip");
        assert_eq!(
            host.counters
                .get("aura_guard.ratelimit.over_limit.login.ip"),
            Some(&1)
        );
    }

    #[test]
    fn unreadable_login_body_gets_400_in_production_without_a_check_and_is_counted() {
        let mut f = filter_in("production", "{}");
        let mut host = login("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--");
        host.request_headers.retain(|(k, _)| k != "content-type");
        host.request_headers.push((
            "content-type".into(),
            "multipart/form-data; boundary=b".into(),
        ));
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        let n = host.request_body.len();
        assert_eq!(f.on_request_body(&mut host, n, true), Action::Pause);
        assert!(host.grpc_calls.is_empty(), "nothing counted");
        let reply = host.reply.clone().unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            br#"{"detail":"Unreadable request body: malformed multipart/form-data"}"#
        );
        assert_eq!(
            host.counters
                .get("aura_guard.ratelimit.unreadable_body.login"),
            Some(&1)
        );
        assert_eq!(
            host.counters.get("aura_guard.events.unreadable_auth_body"),
            Some(&1)
        );
        assert_eq!(
            f.events()[0].metadata["content_type"],
            "multipart/form-data"
        );

        // Elsewhere the request goes on, limited per IP as anonymous.
        let mut f = filter_in("development", "{}");
        let mut host = login("{\"username\":");
        host.request_headers.retain(|(k, _)| k != "content-type");
        host.request_headers
            .push(("content-type".into(), "application/json".into()));
        until_check(&mut f, &mut host);
        let req = RateLimitRequest::decode(host.grpc_calls[0].message.as_slice()).unwrap();
        assert!(req.descriptors.iter().all(|d| d.entries[1].key == "ip"));
        assert!(host.reply.is_none());
    }

    #[test]
    fn service_failure_fails_closed_in_production_and_open_elsewhere() {
        let mut f = filter_in("production", "{}");
        let mut host = login("username=a");
        let token = until_check(&mut f, &mut host);
        f.on_grpc_response(&mut host, token, Err(14));
        let reply = host.reply.clone().unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            br#"{"detail":"Service temporarily unavailable. Please try again later."}"#
        );
        assert_eq!(
            host.counters
                .get("aura_guard.ratelimit.service_failure.login.closed"),
            Some(&1)
        );
        assert_eq!(f.events()[0].event_type, "rate_limit_service_failure");

        let mut f = filter_in("development", "{}");
        let mut host = login("username=a");
        let token = until_check(&mut f, &mut host);
        f.on_grpc_response(&mut host, token, Err(4));
        assert!(host.reply.is_none());
        assert_eq!(host.resumed, 1);
        assert_eq!(
            host.counters
                .get("aura_guard.ratelimit.service_failure.login.open"),
            Some(&1)
        );
        // Failing open adds no RateLimit headers.
        host.response_headers.push((":status".into(), "200".into()));
        f.on_response_headers(&mut host);
        assert!(host.response_header("ratelimit").is_none());
    }

    #[test]
    fn undispatchable_call_applies_the_failure_mode_at_once() {
        let mut f = filter_in("development", "{}");
        let mut host = login("username=a");
        host.grpc_dispatch_fails = true;
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 10, true), Action::Continue);
        assert!(host.reply.is_none());

        let mut f = filter_in("production", "{}");
        let mut host = login("username=a");
        host.grpc_dispatch_fails = true;
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 10, true), Action::Pause);
        assert_eq!(host.reply.unwrap().status, 503);
    }

    #[test]
    fn unknown_or_late_grpc_answers_are_ignored() {
        let mut f = filter_in("production", "{}");
        let mut host = login("username=a");
        let token = until_check(&mut f, &mut host);
        f.on_grpc_response(&mut host, token + 1, Err(14));
        f.on_grpc_response(&mut host, token + 1, Ok(b"garbage"));
        assert!(host.reply.is_none());
        assert_eq!(host.resumed, 0);
        let bytes = answer(&host.grpc_calls[0].message, Some(4));
        f.on_grpc_response(&mut host, token, Ok(&bytes));
        assert_eq!(host.resumed, 1);
        // A second answer with the same token changes nothing.
        f.on_grpc_response(&mut host, token, Err(14));
        assert_eq!(host.resumed, 1);
        assert!(host.reply.is_none());
    }

    #[test]
    fn header_phase_route_holds_body_callbacks_while_the_check_is_outstanding() {
        let json = r#"{"ratelimit": {"routes": [{"name": "me", "path": "/auth/me",
            "requests": 3, "window_s": 60, "identity": {"bearer_jwt": true}}]}}"#;
        let mut f = filter_in("development", json);
        let mut host = login("");
        host.request_headers.retain(|(k, _)| k != ":path");
        host.request_headers
            .push((":path".into(), "/auth/me?x=1".into()));
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        let token = host.grpc_calls[0].token.unwrap();
        assert_eq!(f.on_request_body(&mut host, 4, false), Action::Pause);
        assert_eq!(f.on_request_trailers(&mut host), Action::Pause);
        let bytes = answer(&host.grpc_calls[0].message, Some(2));
        f.on_grpc_response(&mut host, token, Ok(&bytes));
        assert_eq!(host.resumed, 1);
        assert_eq!(f.on_request_body(&mut host, 8, true), Action::Continue);
    }

    #[test]
    fn other_methods_and_paths_are_not_limited() {
        let mut f = filter_in("production", "{}");
        let mut host = login("username=a");
        host.request_headers.retain(|(k, _)| k != ":method");
        host.request_headers
            .push((":method".into(), "OPTIONS".into()));
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        assert!(host.grpc_calls.is_empty());
        let mut f = filter_in("production", r#"{"ratelimit": {"enabled": false}}"#);
        let mut host = login("username=a");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        assert!(host.grpc_calls.is_empty());
    }

    #[test]
    fn client_ip_ignores_envoys_own_xff_entry_and_untrusted_entries() {
        use crate::client_ip::parse_ip;
        assert_eq!(
            forwarded_for_before_envoy(Some("9.9.9.9, 10.0.0.7,192.0.2.2"), true).as_deref(),
            Some("9.9.9.9, 10.0.0.7")
        );
        assert_eq!(forwarded_for_before_envoy(Some("192.0.2.2"), true), None);
        assert_eq!(
            forwarded_for_before_envoy(Some("10.0.0.7"), false).as_deref(),
            Some("10.0.0.7")
        );
        assert_eq!(forwarded_for_before_envoy(None, true), None);

        let mut f = filter_in(
            "production",
            r#"{"ratelimit": {"trusted_hops": 1, "trusted_proxies": ["127.0.0.1"]}}"#,
        );
        let mut host = login("");
        host.downstream_address = Some("127.0.0.1:4000".into());
        host.request_headers.push((
            "x-forwarded-for".into(),
            "6.6.6.6, 10.0.0.7,192.0.2.2".into(),
        ));
        f.on_request_headers(&mut host, false);
        assert_eq!(f.client_ip(&host), parse_ip("10.0.0.7"));
        let mut f = filter_in("production", "{}");
        f.on_request_headers(&mut host, false);
        assert_eq!(f.client_ip(&host), parse_ip("127.0.0.1"));
    }

    #[test]
    fn invalid_ratelimit_config_is_refused_naming_the_field() {
        let err = Config::load(
            br#"{"ratelimit": {"routes": [{"name": "x", "path": "/x", "requests": 1, "window_s": 13}]}}"#,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(err.field, "ratelimit.routes[0].window_s");
        let err = Config::load(br#"{"ratelimit": {"bogus": 1}}"#, &|_| None).unwrap_err();
        assert_eq!(err.field, "ratelimit.bogus");
        let err = Config::load(b"{}", &|k| {
            (k == "ENVIRONMENT").then(|| "production".to_string())
        })
        .unwrap_err();
        assert_eq!(err.field, "jwt.secret_env");
    }

    #[test]
    fn xff_is_honoured_only_through_trusted_hops() {
        let mut f = filter_in(
            "production",
            r#"{"ratelimit": {"trusted_hops": 1, "trusted_proxies": ["10.1.1.1"],
                "xff_appended_by_envoy": false}}"#,
        );
        let mut host = login("");
        host.downstream_address = Some("10.1.1.1:5".into());
        host.request_headers
            .push(("x-forwarded-for".into(), "1.1.1.1, 203.0.113.50".into()));
        until_check(&mut f, &mut host);
        let call = host.grpc_calls.last().unwrap();
        let req = RateLimitRequest::decode(call.message.as_slice()).unwrap();
        assert_eq!(req.descriptors[0].entries[1].value, "203.0.113.50");
    }
}
