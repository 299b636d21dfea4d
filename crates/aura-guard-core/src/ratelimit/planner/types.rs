//! The planner's vocabulary: the calls and replies it hands the glue, its decisions and what
//! it remembers between the request and the response.

use crate::events::SecurityEvent;
use crate::ratelimit::identity::IdentityInput;
use crate::ratelimit::rls::{RateLimitDescriptor, RateLimitRequest};
use std::net::IpAddr;

use super::{AuthAttempt, KEY_COUNTER, KEY_ROUTE};

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

/// One subject of a check: whose counters the request is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subject {
    pub(super) kind: SubjectKind,
    /// Descriptor value: IP key or user hash.
    pub(super) key: String,
}

impl Subject {
    pub(super) fn base<'a>(&'a self, route: &'a str) -> [(&'a str, &'a str); 2] {
        [(KEY_ROUTE, route), (self.kind.as_str(), self.key.as_str())]
    }
}

/// `route, ip|user, counter=<counter>` charged `hits`: a failures or cleared counter, read
/// (0) by the check and raised by the response phase.
pub(super) fn counter_descriptor(
    route: &str,
    kind: SubjectKind,
    key: &str,
    counter: &str,
    hits: u64,
) -> RateLimitDescriptor {
    RateLimitDescriptor::with_hits(
        &[
            (KEY_ROUTE, route),
            (kind.as_str(), key),
            (KEY_COUNTER, counter),
        ],
        hits,
    )
}

/// Where the planner's ShouldRateLimit calls go. The check and the response phase both build
/// their calls here, so they cannot drift apart in domain, cluster or timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RlsTarget {
    pub(super) domain: String,
    pub(super) cluster: String,
    pub(super) timeout_ms: u64,
}

impl RlsTarget {
    /// The request for `descriptors`. Each descriptor carries its own hits_addend, so the
    /// request-wide one stays 0.
    pub(super) fn request(&self, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        }
    }

    pub(super) fn call(&self, descriptors: Vec<RateLimitDescriptor>) -> RlsCall {
        RlsCall {
            cluster: self.cluster.clone(),
            timeout_ms: self.timeout_ms,
            body: self.request(descriptors).encode_to_bytes(),
        }
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
    /// Send `reply` (429) and log `event` ([`super::EVENT_AUTH_RATE_LIMIT_EXCEEDED`]).
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
    /// Production, and the body could not be read: send `reply` (400) and log `event`
    /// ([`super::EVENT_UNREADABLE_AUTH_BODY`]). Nothing was counted.
    UnreadableBody {
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

/// Response-phase result: an optional fire-and-forget call and events to log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseOutcome {
    pub call: Option<RlsCall>,
    pub events: Vec<SecurityEvent>,
}

/// Facts about the request that the glue collects from the host.
#[derive(Debug, Clone, Copy)]
pub struct AuthFacts<'a> {
    /// The client IP by the pipeline's one rule (`crate::client_ip`), None when unknown.
    pub client_ip: Option<IpAddr>,
    pub identity: IdentityInput<'a>,
    pub now_s: u64,
    /// ENVIRONMENT=production: picks the failure mode for `failure_mode: default`.
    pub production: bool,
}
