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

use super::client_ip::{client_ip, ip_key};
use super::headers::{
    policy_header, ratelimit_header, PolicyState, RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER,
};
use super::identity::{extract_user, hash_user, IdentityInput};
use super::rls::{
    Code, DescriptorStatus, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use super::window::{backoff_multiplier, bucket, BACKOFF_LEVELS};
use crate::config::ratelimit::{ResolvedRateLimitConfig, RouteConfig};
use crate::events::{SecurityEvent, Severity};

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
mod tests;
