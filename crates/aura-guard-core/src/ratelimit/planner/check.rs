//! The check of one auth request: the ShouldRateLimit request it sends and what the answer
//! decides.

use serde_json::json;

use super::types::{
    counter_descriptor, Decision, LocalReply, RlsCall, RlsError, RlsTarget, Step, Subject,
    SubjectCounts, SubjectKind,
};
use super::{
    AuthAttempt, COUNTER_CLEARED, COUNTER_FAILURES, EVENT_AUTH_RATE_LIMIT_EXCEEDED,
    EVENT_RATE_LIMIT_SERVICE_FAILURE, EVENT_UNREADABLE_AUTH_BODY, KEY_BUCKET, KEY_LEVEL,
    TOO_MANY_BODY, UNAVAILABLE_BODY,
};
use crate::events::{SecurityEvent, Severity};
use crate::ratelimit::config::RouteConfig;
use crate::ratelimit::identity::BodyError;
use crate::ratelimit::response_headers::{
    policy_header, ratelimit_header, PolicyState, RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER,
};
use crate::ratelimit::rls::{
    Code, DescriptorStatus, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use crate::ratelimit::window::{backoff_multiplier, bucket, BACKOFF_LEVELS};

/// Descriptors per subject in the check call: one per backoff level, then failures, cleared.
const PER_SUBJECT: usize = BACKOFF_LEVELS.len() + 2;

/// An auth request being checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub(super) route: RouteConfig,
    pub(super) target: RlsTarget,
    pub(super) now_s: u64,
    pub(super) fails_closed: bool,
    pub(super) client_ip: String,
    pub(super) subjects: Vec<Subject>,
    pub(super) done: bool,
}

impl Check {
    /// The check's one call, [`Check::check_request`] encoded.
    pub(super) fn call(&self) -> RlsCall {
        self.target.call(self.descriptors())
    }

    /// The one ShouldRateLimit request: per subject, the attempt counter of the current
    /// bucket at every backoff level (+1 each: the levels nest, so every attempt belongs to
    /// each), then the failures and cleared counters (read only, hits_addend 0).
    pub fn check_request(&self) -> RateLimitRequest {
        self.target.request(self.descriptors())
    }

    fn descriptors(&self) -> Vec<RateLimitDescriptor> {
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
                descriptors.push(counter_descriptor(name, s.kind, &s.key, counter, 0));
            }
        }
        descriptors
    }

    fn attempt(&self, subjects: Vec<SubjectCounts>) -> AuthAttempt {
        AuthAttempt::new(
            self.route.name.clone(),
            self.target.clone(),
            self.client_ip.clone(),
            subjects,
        )
    }

    fn failure(&self, reason: &str) -> Step {
        let mode = if self.fails_closed { "closed" } else { "open" };
        let event = SecurityEvent::new(
            EVENT_RATE_LIMIT_SERVICE_FAILURE,
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
                reply: json_reply(503, UNAVAILABLE_BODY, Vec::new()),
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

    /// The refusal of a body that could not be read: 400 `{"detail": ...}` naming the problem,
    /// and an event with the media type (never the body).
    pub(super) fn unreadable_body(
        &self,
        problem: BodyError,
        content_type: Option<&str>,
    ) -> Decision {
        let detail = format!("Unreadable request body: {}", problem.as_str());
        let mut media_type: String = content_type
            .and_then(|ct| ct.split(';').next())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        media_type.truncate(100);
        let event = SecurityEvent::new(
            EVENT_UNREADABLE_AUTH_BODY,
            Severity::Medium,
            format!(
                "Unreadable {} request body ({}); refused",
                self.route.name,
                problem.as_str()
            ),
            json!({
                "endpoint": self.route.name,
                "reason": problem.as_str(),
                "content_type": media_type,
                "client_ip": self.client_ip,
            }),
        );
        Decision::UnreadableBody {
            reply: json_reply(400, &json!({ "detail": detail }).to_string(), Vec::new()),
            event,
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
        let mut policies = Vec::with_capacity(self.subjects.len());
        let mut counts = Vec::with_capacity(self.subjects.len());
        let mut over = Vec::new();
        for (s, chunk) in self.subjects.iter().zip(statuses.chunks(PER_SUBJECT)) {
            let read = self.read_subject(s, chunk)?;
            policies.push(read.policy);
            counts.push(read.counts);
            over.extend(read.over);
        }
        let headers = vec![
            (RATELIMIT_POLICY.to_string(), policy_header(&policies)),
            (RATELIMIT.to_string(), ratelimit_header(&policies)),
        ];
        let Some(&first) = over.first() else {
            return Ok(Step::Done(Decision::Allow {
                response_headers: headers,
                attempt: self.attempt(counts),
            }));
        };
        let retry_after = over.iter().map(|o| o.reset_s).max().unwrap_or(1).max(1);
        Ok(self.deny(first, retry_after, headers))
    }

    /// Reads one subject's chunk of statuses: its failures since the last success pick the
    /// backoff level, whose attempt counter gives the policy and whether it is over.
    fn read_subject(
        &self,
        s: &Subject,
        chunk: &[DescriptorStatus],
    ) -> Result<SubjectRead, &'static str> {
        let limit_of =
            |st: &DescriptorStatus| st.current_limit.as_ref().map(|l| l.requests_per_unit);
        // An unmatched descriptor has no limit: the YAML lacks it, so nothing is enforced.
        let (Some(failures_st), Some(cleared_st)) =
            (chunk.get(PER_SUBJECT - 2), chunk.get(PER_SUBJECT - 1))
        else {
            return Err("status count mismatch");
        };
        let count = |st: &DescriptorStatus| -> Result<u64, &'static str> {
            let limit = limit_of(st).ok_or("counter descriptor not configured in the service")?;
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
        let span = self.route.window_s.saturating_mul(u64::from(m));
        let reset = bucket(self.now_s, span)
            .map(|b| b.reset_after_s)
            .ok_or("zero window")?;
        let is_over = st.code == Code::OverLimit as i32;
        Ok(SubjectRead {
            policy: PolicyState {
                name: format!("{}-{}", self.route.name, s.kind.as_str()),
                quota: u64::from(quota),
                window_s: span,
                remaining: if is_over {
                    0
                } else {
                    u64::from(st.limit_remaining)
                },
                reset_s: reset,
            },
            counts: SubjectCounts {
                kind: s.kind,
                key: s.key.clone(),
                failures: Some(failures),
            },
            over: is_over.then_some(Over {
                kind: s.kind,
                reset_s: reset,
                multiplier: m,
            }),
        })
    }

    /// The 429 for a request over a limit: `first` names the limit in the event,
    /// `retry_after` is the longest wait among the subjects over theirs.
    fn deny(&self, first: Over, retry_after: u64, headers: Vec<(String, String)>) -> Step {
        let description = match first.kind {
            SubjectKind::Ip => format!(
                "Rate limit exceeded for {} from IP {}",
                self.route.name, self.client_ip
            ),
            SubjectKind::User => format!("Rate limit exceeded for {} for user", self.route.name),
        };
        let event = SecurityEvent::new(
            EVENT_AUTH_RATE_LIMIT_EXCEEDED,
            Severity::Medium,
            description,
            json!({
                "endpoint": self.route.name,
                "limit_type": first.kind.as_str(),
                "client_ip": self.client_ip,
                "retry_after": retry_after,
                "backoff_multiplier": first.multiplier,
            }),
        );
        let mut reply_headers = vec![(RETRY_AFTER.to_string(), retry_after.to_string())];
        reply_headers.extend(headers);
        Step::Done(Decision::Deny {
            reply: json_reply(429, TOO_MANY_BODY, reply_headers),
            event,
        })
    }
}

/// A local reply with a JSON body: content-type first, then `headers`.
fn json_reply(status: u16, body: &str, headers: Vec<(String, String)>) -> LocalReply {
    let mut all = vec![("content-type".to_string(), "application/json".to_string())];
    all.extend(headers);
    LocalReply {
        status,
        headers: all,
        body: body.to_string(),
    }
}

/// What one subject's statuses say.
struct SubjectRead {
    policy: PolicyState,
    counts: SubjectCounts,
    over: Option<Over>,
}

/// A subject over its limit at its current backoff level.
#[derive(Debug, Clone, Copy)]
struct Over {
    kind: SubjectKind,
    /// Seconds until its bucket resets.
    reset_s: u64,
    multiplier: u32,
}
