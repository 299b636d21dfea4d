//! The response phase of an allowed auth request: the upstream status charges or clears the
//! failure counters.

use serde_json::json;

use super::types::{counter_descriptor, ResponseOutcome, RlsTarget, SubjectCounts, SubjectKind};
use super::{COUNTER_CLEARED, COUNTER_FAILURES, EVENT_REPEATED_AUTH_FAILURES};
use crate::events::{SecurityEvent, Severity};
use crate::ratelimit::rls::RateLimitDescriptor;

/// What the filter remembers about an allowed auth request for the response phase.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthAttempt {
    route: String,
    target: RlsTarget,
    client_ip: String,
    subjects: Vec<SubjectCounts>,
}

impl AuthAttempt {
    pub(super) fn new(
        route: String,
        target: RlsTarget,
        client_ip: String,
        subjects: Vec<SubjectCounts>,
    ) -> Self {
        Self {
            route,
            target,
            client_ip,
            subjects,
        }
    }

    pub fn subjects(&self) -> &[SubjectCounts] {
        &self.subjects
    }

    /// The response phase. 401/403 is a failed attempt: +1 on each subject's failures
    /// counter, and an [`EVENT_REPEATED_AUTH_FAILURES`] event from 3 failures (high from 5).
    /// 2xx is a success: the cleared counter catches up with the failures counter, which
    /// restarts the failure count at 0. Other statuses change nothing.
    pub fn on_upstream_status(&self, status: u16) -> ResponseOutcome {
        let mut out = ResponseOutcome::default();
        if status == 401 || status == 403 {
            let descriptors = self
                .subjects
                .iter()
                .map(|s| counter_descriptor(&self.route, s.kind, &s.key, COUNTER_FAILURES, 1))
                .collect();
            out.call = Some(self.target.call(descriptors));
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
                    EVENT_REPEATED_AUTH_FAILURES,
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
                    Some(counter_descriptor(
                        &self.route,
                        s.kind,
                        &s.key,
                        COUNTER_CLEARED,
                        by,
                    ))
                })
                .collect();
            if !descriptors.is_empty() {
                out.call = Some(self.target.call(descriptors));
            }
        }
        out
    }
}
