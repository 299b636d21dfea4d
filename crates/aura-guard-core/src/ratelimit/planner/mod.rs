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

mod attempt;
mod check;
#[cfg(test)]
mod tests;
mod types;

pub use attempt::AuthAttempt;
pub use check::Check;
pub use types::{
    AuthFacts, Decision, LocalReply, ResponseOutcome, RlsCall, RlsError, Step, SubjectCounts,
    SubjectKind,
};

use super::identity::{hash_user, identify};
use crate::client_ip::ip_key;
use crate::ratelimit::config::ResolvedRateLimitConfig;
use types::{RlsTarget, Subject};

/// Descriptor entry keys and fixed values; envoy/ratelimit/config.yaml must match them.
pub const KEY_ROUTE: &str = "route";
pub const KEY_LEVEL: &str = "level";
pub const KEY_BUCKET: &str = "bucket";
pub const KEY_COUNTER: &str = "counter";
pub const COUNTER_FAILURES: &str = "failures";
pub const COUNTER_CLEARED: &str = "cleared";

// The `event_type` of each security event the planner emits.
/// A request over a limit (the 429).
pub const EVENT_AUTH_RATE_LIMIT_EXCEEDED: &str = "auth_rate_limit_exceeded";
/// The service gave no usable answer, whichever way the route fails.
pub const EVENT_RATE_LIMIT_SERVICE_FAILURE: &str = "rate_limit_service_failure";
/// Three or more failures since the last success, by the IP or by the user.
pub const EVENT_REPEATED_AUTH_FAILURES: &str = "repeated_auth_failures";
/// A body the filter cannot read on a route that reads the user from it, refused (production).
pub const EVENT_UNREADABLE_AUTH_BODY: &str = "unreadable_auth_body";

pub const TOO_MANY_BODY: &str = r#"{"detail":"Too many requests. Please try again later."}"#;
pub const UNAVAILABLE_BODY: &str =
    r#"{"detail":"Service temporarily unavailable. Please try again later."}"#;

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
        let ip = facts
            .client_ip
            .map(|ip| ip_key(ip, self.cfg.config.ipv6_prefix_len))
            .unwrap_or_else(|| "unknown".to_string());
        let mut subjects = vec![Subject {
            kind: SubjectKind::Ip,
            key: ip.clone(),
        }];
        let identity = identify(
            &r.identity,
            &facts.identity,
            self.cfg.jwt_secret.as_ref(),
            facts.now_s,
        );
        if let Some(u) = &identity.user {
            subjects.push(Subject {
                kind: SubjectKind::User,
                key: hash_user(u, self.cfg.user_hash_key.as_ref()),
            });
        }
        let check = Check {
            route: r.clone(),
            target: RlsTarget {
                domain: self.cfg.config.domain.clone(),
                cluster: self.cfg.config.cluster.clone(),
                timeout_ms: self.cfg.config.timeout_ms,
            },
            now_s: facts.now_s,
            fails_closed: r.failure_mode.fails_closed(facts.production),
            client_ip: ip,
            subjects,
            done: false,
        };
        // In production a body the upstream may read as someone while this filter reads no
        // one is refused before anything is counted (docs/ratelimit.md, "Reading the body").
        let step = match identity.unreadable {
            Some(problem) if facts.production => {
                Step::Done(check.unreadable_body(problem, facts.identity.content_type))
            }
            _ => Step::Call(check.call()),
        };
        Some((check, step))
    }
}
