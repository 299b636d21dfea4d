//! The auth rate-limit state machine. The glue only moves bytes:
//!
//! 1. [`RateLimiter::match_route`] on request headers; if it matches, buffer the body when
//!    [`RateLimiter::needs_body`] says so.
//! 2. [`RateLimiter::start`] with the request facts gives a [`Check`] and a [`Step`]. For
//!    `Step::Call` dispatch `call.body` as a gRPC call to `call.cluster`
//!    (`RLS_SERVICE`/`RLS_METHOD`) with `call.timeout_ms`, then feed the response bytes (or the
//!    error) to [`Check::on_rls_response`], which gives the next `Step`.
//! 3. On `Step::Done(Decision)`: `Allow` resumes the request and adds `response_headers` to the
//!    response; `Deny`/`FailClosed` send the local reply; `FailOpen` resumes.
//! 4. On the upstream response status, [`AuthAttempt::on_upstream_status`] gives an optional
//!    fire-and-forget RLS call (failure count or clearing) and events.
//!
//! One round trip per auth request: every descriptor the decision needs (attempt counters at
//! each backoff level, failure and cleared counters) goes in a single ShouldRateLimit call.

use serde_json::json;

use super::identity::{extract_user, hash_user, IdentityInput};
use super::response_headers::{
    policy_header, ratelimit_header, PolicyState, RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER,
};
use super::rls::{
    Code, DescriptorStatus, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use super::window::{backoff_multiplier, bucket, BACKOFF_LEVELS};
use crate::client_ip::{client_ip, ip_key};
use crate::events::{SecurityEvent, Severity};
use crate::ratelimit::config::{ResolvedRateLimitConfig, RouteConfig};

/// Descriptor entry keys and fixed values; envoy/ratelimit/config.yaml must match them.
pub const KEY_ROUTE: &str = "route";
pub const KEY_LEVEL: &str = "level";
pub const KEY_BUCKET: &str = "bucket";
pub const KEY_COUNTER: &str = "counter";
pub const COUNTER_FAILURES: &str = "failures";
pub const COUNTER_CLEARED: &str = "cleared";

pub const TOO_MANY_BODY: &str = r#"{"detail":"Too many requests. Please try again later."}"#;
pub const UNAVAILABLE_BODY: &str =
    r#"{"detail":"Service temporarily unavailable. Please try again later."}"#;

/// Whose counter: the client address or the (hashed) user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Ip,
    User,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Ip => "ip",
            SubjectKind::User => "user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: SubjectKind,
    /// Descriptor value: IP key or user hash.
    key: String,
}

impl Subject {
    fn base<'a>(&'a self, route: &'a str) -> [(&'a str, &'a str); 2] {
        [(KEY_ROUTE, route), (self.kind.as_str(), self.key.as_str())]
    }
}

/// A ShouldRateLimit call for the glue to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsCall {
    pub cluster: String,
    pub timeout_ms: u64,
    /// Encoded `RateLimitRequest`.
    pub body: Vec<u8>,
}

/// Why the service gave no usable answer. The glue maps host results onto these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RlsError {
    /// The call could not be dispatched (unknown cluster, …).
    Dispatch,
    /// A non-OK gRPC status (DEADLINE_EXCEEDED=4 for the timeout, UNAVAILABLE=14, …).
    GrpcStatus(u32),
}

/// A local reply for the glue to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The final word on an auth request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Forward; add `response_headers` to the upstream response.
    Allow {
        response_headers: Vec<(String, String)>,
        attempt: AuthAttempt,
    },
    /// Send `reply` (429) and log `event` (`auth_rate_limit_exceeded`).
    Deny {
        reply: LocalReply,
        event: SecurityEvent,
    },
    /// The service failed and the route fails open: forward without headers.
    FailOpen {
        event: SecurityEvent,
        attempt: AuthAttempt,
    },
    /// The service failed and the route fails closed: send `reply` (503).
    FailClosed {
        reply: LocalReply,
        event: SecurityEvent,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(RlsCall),
    Done(Decision),
}

/// Counts read for one subject, remembered until the upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectCounts {
    pub kind: SubjectKind,
    pub key: String,
    /// Failures since the last success, i.e. `failures - cleared` (None when unknown: the
    /// service failed). On success `cleared` is raised by this much.
    pub failures: Option<u64>,
}

/// What the filter remembers about an allowed auth request for the response phase.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthAttempt {
    route: String,
    domain: String,
    cluster: String,
    timeout_ms: u64,
    client_ip: String,
    subjects: Vec<SubjectCounts>,
}

/// Response-phase result: an optional fire-and-forget call and events to log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseOutcome {
    pub call: Option<RlsCall>,
    pub events: Vec<SecurityEvent>,
}

/// Facts about the request that the glue collects from the host.
#[derive(Debug, Clone, Copy)]
pub struct AuthFacts<'a> {
    /// Envoy's downstream (peer) address, `source.address`.
    pub downstream_address: &'a str,
    /// All X-Forwarded-For values joined with ",".
    pub xff: Option<&'a str>,
    pub identity: IdentityInput<'a>,
    pub now_s: u64,
    /// ENVIRONMENT=production: picks the failure mode for `failure_mode: default`.
    pub production: bool,
}

/// The rate limiter over a resolved config.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    cfg: ResolvedRateLimitConfig,
}

fn strip_path(path: &str) -> &str {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    match p.strip_suffix('/') {
        Some(s) if !s.is_empty() => s,
        _ => p,
    }
}

impl RateLimiter {
    pub fn new(cfg: ResolvedRateLimitConfig) -> Self {
        Self { cfg }
    }

    pub fn config(&self) -> &ResolvedRateLimitConfig {
        &self.cfg
    }

    /// Index of the route this request is limited by, if any. `path` should be the
    /// normalised path (query is ignored here, one trailing slash tolerated).
    pub fn match_route(&self, method: &str, path: &str) -> Option<usize> {
        if !self.cfg.config.enabled {
            return None;
        }
        let p = strip_path(path);
        self.cfg.config.routes.iter().position(|r| {
            strip_path(&r.path) == p && r.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        })
    }

    /// Whether the whole request body must be buffered before `start` (the pipeline's
    /// global `max_body_bytes` applies: larger bodies get 413, so padding a body cannot make
    /// a request anonymous).
    pub fn needs_body(&self, route: usize) -> bool {
        self.cfg
            .config
            .routes
            .get(route)
            .is_some_and(|r| r.identity.reads_body())
    }

    /// Starts the check of an auth request on `route`. None for an unknown route index.
    pub fn start(&self, route: usize, facts: &AuthFacts<'_>) -> Option<(Check, Step)> {
        let r = self.cfg.config.routes.get(route)?;
        let ip = client_ip(
            facts.downstream_address,
            facts.xff,
            self.cfg.config.trusted_hops,
        )
        .map(|ip| ip_key(ip, self.cfg.config.ipv6_prefix_len))
        .unwrap_or_else(|| "unknown".to_string());
        let mut subjects = vec![Subject {
            kind: SubjectKind::Ip,
            key: ip.clone(),
        }];
        if let Some(u) = extract_user(
            &r.identity,
            &facts.identity,
            self.cfg.jwt_secret.as_ref(),
            facts.now_s,
        ) {
            subjects.push(Subject {
                kind: SubjectKind::User,
                key: hash_user(&u, self.cfg.user_hash_key.as_ref()),
            });
        }
        let check = Check {
            route: r.clone(),
            domain: self.cfg.config.domain.clone(),
            cluster: self.cfg.config.cluster.clone(),
            timeout_ms: self.cfg.config.timeout_ms,
            now_s: facts.now_s,
            fails_closed: r.failure_mode.fails_closed(facts.production),
            client_ip: ip,
            subjects,
            done: false,
        };
        let step = Step::Call(check.call(check.check_request()));
        Some((check, step))
    }
}

/// Descriptors per subject in the check call: one per backoff level, then failures, cleared.
const PER_SUBJECT: usize = BACKOFF_LEVELS.len() + 2;

/// An auth request being checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    route: RouteConfig,
    domain: String,
    cluster: String,
    timeout_ms: u64,
    now_s: u64,
    fails_closed: bool,
    client_ip: String,
    subjects: Vec<Subject>,
    done: bool,
}

impl Check {
    fn call(&self, req: RateLimitRequest) -> RlsCall {
        RlsCall {
            cluster: self.cluster.clone(),
            timeout_ms: self.timeout_ms,
            body: req.encode_to_bytes(),
        }
    }

    /// The one ShouldRateLimit request: per subject, the attempt counter of the current
    /// bucket at every backoff level (+1 each: the levels nest, so every attempt belongs to
    /// each), then the failures and cleared counters (read only, hits_addend 0).
    pub fn check_request(&self) -> RateLimitRequest {
        let name = self.route.name.as_str();
        let mut descriptors = Vec::with_capacity(self.subjects.len() * PER_SUBJECT);
        for s in &self.subjects {
            let [route, who] = s.base(name);
            for m in BACKOFF_LEVELS {
                let span = self.route.window_s.saturating_mul(u64::from(m));
                let idx = bucket(self.now_s, span)
                    .map(|b| b.index)
                    .unwrap_or(0)
                    .to_string();
                let level = m.to_string();
                descriptors.push(RateLimitDescriptor::with_hits(
                    &[route, who, (KEY_LEVEL, &level), (KEY_BUCKET, &idx)],
                    1,
                ));
            }
            for counter in [COUNTER_FAILURES, COUNTER_CLEARED] {
                descriptors.push(RateLimitDescriptor::with_hits(
                    &[route, who, (KEY_COUNTER, counter)],
                    0,
                ));
            }
        }
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        }
    }

    fn attempt(&self, subjects: Vec<SubjectCounts>) -> AuthAttempt {
        AuthAttempt {
            route: self.route.name.clone(),
            domain: self.domain.clone(),
            cluster: self.cluster.clone(),
            timeout_ms: self.timeout_ms,
            client_ip: self.client_ip.clone(),
            subjects,
        }
    }

    fn failure(&self, reason: &str) -> Step {
        let mode = if self.fails_closed { "closed" } else { "open" };
        let event = SecurityEvent::new(
            "rate_limit_service_failure",
            if self.fails_closed {
                Severity::Medium
            } else {
                Severity::High
            },
            format!(
                "Rate-limit service failed for {} ({reason}); failing {mode}",
                self.route.name
            ),
            json!({"endpoint": self.route.name, "error": reason, "failure_mode": mode}),
        );
        if self.fails_closed {
            Step::Done(Decision::FailClosed {
                reply: LocalReply {
                    status: 503,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: UNAVAILABLE_BODY.to_string(),
                },
                event,
            })
        } else {
            let unknown = self
                .subjects
                .iter()
                .map(|s| SubjectCounts {
                    kind: s.kind,
                    key: s.key.clone(),
                    failures: None,
                })
                .collect();
            Step::Done(Decision::FailOpen {
                event,
                attempt: self.attempt(unknown),
            })
        }
    }

    /// Feeds the result of the last `Step::Call`; returns the next step.
    pub fn on_rls_response(&mut self, result: Result<&[u8], RlsError>) -> Step {
        if self.done {
            return self.failure("unexpected extra response");
        }
        self.done = true;
        let bytes = match result {
            Ok(b) => b,
            Err(RlsError::Dispatch) => return self.failure("dispatch failed"),
            Err(RlsError::GrpcStatus(4)) => return self.failure("timeout"),
            Err(RlsError::GrpcStatus(code)) => return self.failure(&format!("grpc status {code}")),
        };
        let Ok(resp) = RateLimitResponse::decode_bytes(bytes) else {
            return self.failure("undecodable response");
        };
        if resp.overall_code == Code::Unknown as i32 {
            return self.failure("overall_code UNKNOWN");
        }
        if resp.statuses.len() != self.subjects.len() * PER_SUBJECT {
            return self.failure("status count mismatch");
        }
        match self.decide(&resp.statuses) {
            Ok(step) => step,
            Err(reason) => self.failure(reason),
        }
    }

    fn decide(&self, statuses: &[DescriptorStatus]) -> Result<Step, &'static str> {
        let window = self.route.window_s;
        let mut policies = Vec::new();
        let mut counts = Vec::new();
        // (kind, retry_after) of each subject over its limit.
        let mut over: Vec<(SubjectKind, u64, u32)> = Vec::new();
        for (s, chunk) in self.subjects.iter().zip(statuses.chunks(PER_SUBJECT)) {
            let limit_of =
                |st: &DescriptorStatus| st.current_limit.as_ref().map(|l| l.requests_per_unit);
            // An unmatched descriptor has no limit: the YAML lacks it, so nothing is enforced.
            let (Some(failures_st), Some(cleared_st)) =
                (chunk.get(PER_SUBJECT - 2), chunk.get(PER_SUBJECT - 1))
            else {
                return Err("status count mismatch");
            };
            let count = |st: &DescriptorStatus| -> Result<u64, &'static str> {
                let limit =
                    limit_of(st).ok_or("counter descriptor not configured in the service")?;
                if st.code == Code::OverLimit as i32 {
                    return Ok(u64::from(limit));
                }
                Ok(u64::from(limit.saturating_sub(st.limit_remaining)))
            };
            let failures_total = count(failures_st)?;
            let cleared = count(cleared_st)?;
            let failures = failures_total.saturating_sub(cleared);
            let m = backoff_multiplier(failures);
            let level = BACKOFF_LEVELS
                .iter()
                .position(|l| *l == m)
                .ok_or("bad level")?;
            let st = chunk.get(level).ok_or("status count mismatch")?;
            let quota = limit_of(st).ok_or("attempt descriptor not configured in the service")?;
            if chunk
                .iter()
                .take(BACKOFF_LEVELS.len())
                .any(|s| limit_of(s).is_none())
            {
                return Err("attempt descriptor not configured in the service");
            }
            let span = window.saturating_mul(u64::from(m));
            let reset = bucket(self.now_s, span)
                .map(|b| b.reset_after_s)
                .ok_or("zero window")?;
            let is_over = st.code == Code::OverLimit as i32;
            if is_over {
                over.push((s.kind, reset, m));
            }
            policies.push(PolicyState {
                name: format!("{}-{}", self.route.name, s.kind.as_str()),
                quota: u64::from(quota),
                window_s: span,
                remaining: if is_over {
                    0
                } else {
                    u64::from(st.limit_remaining)
                },
                reset_s: reset,
            });
            counts.push(SubjectCounts {
                kind: s.kind,
                key: s.key.clone(),
                failures: Some(failures),
            });
        }
        let headers = vec![
            (RATELIMIT_POLICY.to_string(), policy_header(&policies)),
            (RATELIMIT.to_string(), ratelimit_header(&policies)),
        ];
        let Some(&(kind, _, m)) = over.first() else {
            return Ok(Step::Done(Decision::Allow {
                response_headers: headers,
                attempt: self.attempt(counts),
            }));
        };
        let retry_after = over.iter().map(|(_, r, _)| *r).max().unwrap_or(1).max(1);
        let description = match kind {
            SubjectKind::Ip => format!(
                "Rate limit exceeded for {} from IP {}",
                self.route.name, self.client_ip
            ),
            SubjectKind::User => format!("Rate limit exceeded for {} for user", self.route.name),
        };
        let event = SecurityEvent::new(
            "auth_rate_limit_exceeded",
            Severity::Medium,
            description,
            json!({
                "endpoint": self.route.name,
                "limit_type": kind.as_str(),
                "client_ip": self.client_ip,
                "retry_after": retry_after,
                "backoff_multiplier": m,
            }),
        );
        let mut reply_headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            (RETRY_AFTER.to_string(), retry_after.to_string()),
        ];
        reply_headers.extend(headers);
        Ok(Step::Done(Decision::Deny {
            reply: LocalReply {
                status: 429,
                headers: reply_headers,
                body: TOO_MANY_BODY.to_string(),
            },
            event,
        }))
    }
}

impl AuthAttempt {
    pub fn subjects(&self) -> &[SubjectCounts] {
        &self.subjects
    }

    /// The response phase. 401/403 is a failed attempt: +1 on each subject's failures
    /// counter, and a `repeated_auth_failures` event from 3 failures (high from 5).
    /// 2xx is a success: the cleared counter catches up with the failures counter, which
    /// restarts the failure count at 0. Other statuses change nothing.
    pub fn on_upstream_status(&self, status: u16) -> ResponseOutcome {
        let mut out = ResponseOutcome::default();
        if status == 401 || status == 403 {
            let descriptors = self
                .subjects
                .iter()
                .map(|s| {
                    RateLimitDescriptor::with_hits(
                        &[
                            (KEY_ROUTE, &self.route),
                            (s.kind.as_str(), &s.key),
                            (KEY_COUNTER, COUNTER_FAILURES),
                        ],
                        1,
                    )
                })
                .collect();
            out.call = Some(self.call(descriptors));
            let now_failing = |k: SubjectKind| {
                self.subjects
                    .iter()
                    .find(|s| s.kind == k)
                    .and_then(|s| s.failures)
                    .map(|n| n.saturating_add(1))
            };
            let (ip_n, user_n) = (now_failing(SubjectKind::Ip), now_failing(SubjectKind::User));
            let n = ip_n.unwrap_or(0).max(user_n.unwrap_or(0));
            if n >= 3 {
                out.events.push(SecurityEvent::new(
                    "repeated_auth_failures",
                    if n >= 5 {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                    format!("Multiple failed {} attempts ({n} failures)", self.route),
                    json!({
                        "endpoint": self.route,
                        "ip_failures": ip_n,
                        "user_failures": user_n,
                        "client_ip": self.client_ip,
                    }),
                ));
            }
        } else if (200..300).contains(&status) {
            let descriptors: Vec<RateLimitDescriptor> = self
                .subjects
                .iter()
                .filter_map(|s| {
                    let by = s.failures.filter(|n| *n > 0)?;
                    Some(RateLimitDescriptor::with_hits(
                        &[
                            (KEY_ROUTE, &self.route),
                            (s.kind.as_str(), &s.key),
                            (KEY_COUNTER, COUNTER_CLEARED),
                        ],
                        by,
                    ))
                })
                .collect();
            if !descriptors.is_empty() {
                out.call = Some(self.call(descriptors));
            }
        }
        out
    }

    fn call(&self, descriptors: Vec<RateLimitDescriptor>) -> RlsCall {
        let req = RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        };
        RlsCall {
            cluster: self.cluster.clone(),
            timeout_ms: self.timeout_ms,
            body: req.encode_to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::collections::HashMap;

    use prost::Message;

    use super::*;
    use crate::jwt::tests::make_token;
    use crate::ratelimit::config::{FailureMode, RateLimitConfig};
    use crate::ratelimit::rls::{RateLimit, RateLimitResponse};
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
            downstream_address: ip,
            xff: None,
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
        assert!(req
            .descriptors
            .iter()
            .all(|d| d.hits_addend.unwrap().value == 4
                && d.entries.last().unwrap().value == "cleared"));
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

    #[test]
    fn xff_is_honoured_only_through_trusted_hops() {
        let cfg = RateLimitConfig {
            trusted_hops: 1,
            ..RateLimitConfig::default()
        };
        let rl = limiter_with(cfg);
        let mut f = facts("10.1.1.1:5", None, T0);
        f.xff = Some("1.1.1.1, 203.0.113.50");
        let (_, step) = rl.start(0, &f).unwrap();
        let Step::Call(call) = step else { panic!() };
        let req = RateLimitRequest::decode(call.body.as_slice()).unwrap();
        assert_eq!(req.descriptors[0].entries[1].value, "203.0.113.50");
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
}
