//! The per-request pipeline. The glue forwards each proxy-wasm callback to [`HttpFilter`] with
//! a `Host`; every decision is taken in this crate, so the whole flow is tested natively with
//! `MockHost`.
//!
//! Each capability runs as one stage, one file each in this folder, all of one shape: a
//! [`Stage`] over the per-request [`RequestCtx`] and the host, answering with a [`Flow`]
//! (go on, reply, or wait for an asynchronous answer). The pipeline sequences them and is the
//! only place that holds, resumes or answers a request. docs/architecture.md draws the order.

mod audit;
pub mod body_hold;
#[cfg(test)]
mod cost_tests;
mod debug;
mod headers;
mod path;
mod ratelimit;
mod versions;
mod webhook;

use crate::audit::AuditPolicy;
use crate::client_ip::{client_ip, forwarded_for_before_envoy};
use crate::config::Config;
use crate::events::SecurityEvent;
use crate::headers::SecurityHeaders;
use crate::host::{Host, Level, RequestHeaders};
use crate::path::{normalise, NormalisedPath, PathError};
use crate::ratelimit::planner::RateLimiter;
use std::cell::OnceCell;
use std::net::IpAddr;
use std::rc::Rc;

/// What the glue tells Envoy after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Hold the request (or response) until the filter resumes or replies.
    Pause,
}

/// Everything derived from one configuration, built once at `on_configure` and shared by the
/// HTTP contexts of a worker.
#[derive(Debug)]
pub struct Policy {
    pub config: Config,
    pub security_headers: SecurityHeaders,
    /// Auth rate limiting, when `ratelimit` is enabled.
    pub ratelimiter: Option<RateLimiter>,
    pub audit: AuditPolicy,
}

impl Policy {
    pub fn new(config: Config) -> Self {
        let security_headers = SecurityHeaders::new(&config.headers, config.environment);
        let ratelimiter = config
            .ratelimit
            .enabled
            .then(|| RateLimiter::new(config.ratelimit.resolve(config.jwt.secret.clone())));
        let audit = AuditPolicy::new(&config.audit, config.environment, config.jwt.secret.clone());
        Policy {
            config,
            security_headers,
            audit,
            ratelimiter,
        }
    }
}

/// What starts every security-event log line; the rest of the line is one JSON object.
pub const EVENT_LOG_PREFIX: &str = "aura-guard-event ";

/// What every stage knows about the request, gathered once by the pipeline.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The request headers, read once when they arrive.
    pub headers: RequestHeaders,
    /// The client's id when valid, else a fresh UUID (also forwarded upstream).
    pub request_id: String,
    /// `:method`, read once.
    pub method: String,
    /// `:path` as received.
    pub raw_path: String,
    /// The one normalised path every decision uses (None until the headers arrive, or when
    /// normalisation refused the path: then `path_error` says why).
    pub path: Option<NormalisedPath>,
    pub path_error: Option<PathError>,
    /// The client IP by the one rule every stage uses, computed on first use.
    client_ip: OnceCell<Option<IpAddr>>,
    /// Security events emitted while handling this request.
    pub events: Vec<SecurityEvent>,
    /// Response headers decided on the request path (e.g. deprecation warnings), sent on the
    /// upstream's response or the filter's own reply.
    pub extra_response_headers: Vec<(String, String)>,
}

impl RequestCtx {
    /// The client's address: Envoy's downstream peer, or, when that peer is one of
    /// `ratelimit.trusted_proxies`, the X-Forwarded-For entry reached by walking back through
    /// at most `ratelimit.trusted_hops` trusted proxies (never a client-sent entry).
    /// Read from the host at most once per request, and only when a stage asks.
    pub fn client_ip(&self, policy: &Policy, host: &dyn Host) -> Option<IpAddr> {
        *self.client_ip.get_or_init(|| {
            let rl = &policy.config.ratelimit;
            let peer = host.downstream_address();
            let xff = self.headers.get("x-forwarded-for");
            let xff = forwarded_for_before_envoy(xff, rl.xff_appended_by_envoy);
            client_ip(
                peer.as_deref().unwrap_or_default(),
                xff.as_deref(),
                rl.trusted_hops,
                &rl.trusted_proxies,
            )
        })
    }

    /// Records a security event: logged as one JSON line (docs/operations.md#security-event-log),
    /// counted as `aura_guard.events.<type>`, and kept for the audit stage.
    pub fn emit(&mut self, policy: &Policy, host: &mut dyn Host, event: SecurityEvent) {
        let line = self.event_line(policy, &*host, &event);
        host.log(Level::Warn, &line);
        host.count(&format!("aura_guard.events.{}", event.event_type));
        self.events.push(event);
    }

    /// `aura-guard-event {json}`: the prefix lets operators find the lines in Envoy's log;
    /// metadata and description go through the audit sanitiser, as audit records do, so a
    /// capability that slipped a secret into them still logs none.
    fn event_line(&self, policy: &Policy, host: &dyn Host, event: &SecurityEvent) -> String {
        let sanitizer = &policy.audit.sanitizer;
        let mut metadata = match &event.metadata {
            serde_json::Value::Object(_) => event.metadata.clone(),
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            other => serde_json::json!({ "value": other }),
        };
        sanitizer.json(&mut metadata);
        let line = serde_json::json!({
            "ts": crate::audit::record::rfc3339_ms(host.now_ms()),
            "request_id": self.request_id,
            "event_type": event.event_type,
            "severity": event.severity.as_str(),
            "description": sanitizer.text(&event.description),
            "client_ip": self.client_ip(policy, host).map(|ip| ip.to_string()),
            "method": self.method,
            "route": self.path.as_ref().map(|p| p.as_str()),
            "metadata": metadata,
        });
        format!("{EVENT_LOG_PREFIX}{line}")
    }

    /// Adds a header to the eventual response (upstream or local reply).
    pub fn add_response_header(&mut self, name: &str, value: &str) {
        self.extra_response_headers
            .push((name.to_string(), value.to_string()));
    }
}

/// A reply the filter sends instead of the upstream's. The pipeline adds the security
/// headers, the request id and `content-type: application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(status: u32, body: &serde_json::Value) -> Self {
        Reply {
            status,
            body: body.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// `{"detail": message}`, the original's error shape.
    pub fn detail(status: u32, message: &str) -> Self {
        Reply::json(status, &serde_json::json!({ "detail": message }))
    }
}

/// What the pipeline does after a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next stage.
    Next,
    /// End the request with this reply; no later stage runs.
    Reply(Reply),
    /// An asynchronous answer is outstanding: hold the request; the stage's answer handler
    /// decides later.
    Wait,
}

/// What a stage works with during one call: the configuration, the request's context and
/// the host.
pub(super) struct Cx<'a> {
    pub policy: &'a Policy,
    pub req: &'a mut RequestCtx,
    pub host: &'a mut dyn Host,
}

/// The one shape of a pipeline stage. Every method has a default, so a stage implements the
/// phases it takes part in.
trait Stage {
    /// The request headers are complete (`req` holds the request line and path).
    fn on_request_headers(&mut self, _cx: &mut Cx<'_>) -> Flow {
        Flow::Next
    }

    /// Whether this stage must see the whole body before the request may go upstream.
    fn needs_body(&self, _policy: &Policy) -> bool {
        false
    }

    /// The whole body is buffered (only when some stage needed it).
    fn on_request_body(&mut self, _cx: &mut Cx<'_>, _body: &[u8]) -> Flow {
        Flow::Next
    }

    /// Whether `on_response` needs the status: read from the host only when some stage does.
    fn wants_status(&self) -> bool {
        false
    }

    /// The response status is known: the upstream's response headers, or the filter's own
    /// reply. `status` is None unless a stage `wants_status`.
    fn on_response(&mut self, _cx: &mut Cx<'_>, _status: Option<u32>) {}
}

/// Runs `phase` on each stage in order until one answers anything but [`Flow::Next`].
fn first_answer(
    stages: &mut [&mut dyn Stage],
    mut phase: impl FnMut(&mut dyn Stage) -> Flow,
) -> Flow {
    for stage in stages.iter_mut() {
        match phase(&mut **stage) {
            Flow::Next => {}
            flow => return flow,
        }
    }
    Flow::Next
}

/// State of one HTTP stream.
///
/// Order of the stages (each may end the request with a local reply):
/// request headers: request id → path normalisation → override headers stripped → audit
/// start → path refusal → debug endpoints → API versions → webhook route → rate-limit route;
/// then either the rate limit
/// runs at once, or (when a stage needs the body) with the whole body, held and never
/// streamed to the upstream before the decision: audit capture → webhook signature → auth
/// rate limit (asynchronous, resumed by `on_grpc_response`). Response headers: webhook replay
/// release, security headers, request id, per-request extra headers, rate-limit failure
/// counting. `on_log`: audit records are enqueued.
pub struct HttpFilter {
    policy: Rc<Policy>,
    ctx: RequestCtx,
    audit: audit::AuditStage,
    webhook: webhook::WebhookStage,
    ratelimit: ratelimit::RateLimitStage,
    /// A stage needs the whole request body before the request may go upstream.
    hold_for_body: bool,
    /// Bytes of request body seen so far (Envoy reports the cumulative size).
    body_size: usize,
    body_done: bool,
    /// The filter answered the request itself.
    replied: bool,
    #[cfg(test)]
    pub(crate) force_hold_for_body: bool,
}

impl HttpFilter {
    pub fn new(policy: Rc<Policy>) -> Self {
        HttpFilter {
            policy,
            ctx: RequestCtx::default(),
            audit: Default::default(),
            webhook: Default::default(),
            ratelimit: Default::default(),
            hold_for_body: false,
            body_size: 0,
            body_done: false,
            replied: false,
            #[cfg(test)]
            force_hold_for_body: false,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The normalised path, once the request headers have been seen.
    pub fn path(&self) -> Option<&NormalisedPath> {
        self.ctx.path.as_ref()
    }

    pub fn events(&self) -> &[SecurityEvent] {
        &self.ctx.events
    }

    /// The client IP by the pipeline's one rule.
    pub fn client_ip(&self, host: &dyn Host) -> Option<IpAddr> {
        self.ctx.client_ip(&self.policy, host)
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let policy = Rc::clone(&self.policy);
        let ctx = &mut self.ctx;
        // The request line is read and normalised once; every stage uses the result.
        ctx.headers = RequestHeaders::new(host.request_headers());
        ctx.request_id = headers::ensure_request_id(&policy, ctx, host);
        ctx.method = ctx.headers.get(":method").unwrap_or_default().to_string();
        ctx.raw_path = ctx.headers.get(":path").unwrap_or_default().to_string();
        match normalise(&ctx.raw_path) {
            Ok(p) => ctx.path = Some(p),
            Err(e) => ctx.path_error = Some(e),
        }
        // Audit starts before the stages that may answer, so their events are recorded too.
        let mut cx = Cx {
            policy: &policy,
            req: ctx,
            host: &mut *host,
        };
        let flow = first_answer(
            &mut [
                &mut headers::HeadersStage,
                &mut self.audit,
                &mut path::PathStage,
                &mut debug::DebugStage,
                &mut versions::VersionsStage,
                &mut self.webhook,
                &mut self.ratelimit,
            ],
            |stage| stage.on_request_headers(&mut cx),
        );
        if flow != Flow::Next {
            return self.after(host, flow);
        }
        self.hold_for_body = self.body_needed();
        if !self.hold_for_body {
            let flow = self.ratelimit.check(&policy, &mut self.ctx, host, None);
            return self.after(host, flow);
        }
        // A declared length over the limit is refused before anything is buffered.
        let declared = self
            .ctx
            .headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.body_limit()) {
            return self.body_too_large(host);
        }
        // A webhook delivery the headers already refuse is answered now, not after its body.
        let flow = self.webhook.check_headers(&policy, &mut self.ctx, host);
        if flow != Flow::Next {
            return self.after(host, flow);
        }
        if end_of_stream {
            return self.finish_body(host);
        }
        // Held until the body is complete (needs allow_on_headers_stop_iteration).
        Action::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        // An asynchronous decision is outstanding: Continue here would let the request go.
        if self.waiting() {
            return Action::Pause;
        }
        if !self.hold_for_body || self.body_done || self.replied {
            return Action::Continue;
        }
        self.body_size = body_size;
        if u64::try_from(body_size).unwrap_or(u64::MAX) > self.body_limit() {
            return self.body_too_large(host);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(host)
    }

    /// HTTP/2 (and chunked) requests may end with trailers: the body is then complete without
    /// a body callback marked end of stream.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        if self.waiting() {
            return Action::Pause;
        }
        if self.hold_for_body && !self.body_done && !self.replied {
            return self.finish_body(host);
        }
        Action::Continue
    }

    /// Feeds a gRPC answer (`Err` holds a non-OK gRPC status) for the call with `token`. An
    /// unknown token (a fire-and-forget call's answer, a late answer) is ignored.
    pub fn on_grpc_response(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        result: Result<&[u8], u32>,
    ) {
        let policy = Rc::clone(&self.policy);
        let flow = if let Some(flow) =
            self.webhook
                .on_grpc_response(&policy, &mut self.ctx, host, token, result)
        {
            match flow {
                // The webhook stage passed the delivery: the rate limit, the last body stage,
                // still runs on it.
                Flow::Next => self.ratelimit_after_webhook(host),
                flow => flow,
            }
        } else if let Some(flow) =
            self.ratelimit
                .on_grpc_response(&policy, &mut self.ctx, host, token, result)
        {
            flow
        } else {
            return;
        };
        if self.after(host, flow) == Action::Continue {
            host.resume_request();
        }
    }

    /// An asynchronous decision (fleet-wide replay check, rate limit) is outstanding.
    fn waiting(&self) -> bool {
        self.webhook.pending() || self.ratelimit.pending()
    }

    /// The rate-limit stage's body phase, after the webhook stage waited for the service: the
    /// body is read again from Envoy's buffer.
    fn ratelimit_after_webhook(&mut self, host: &mut dyn Host) -> Flow {
        let policy = Rc::clone(&self.policy);
        if !self.ratelimit.needs_body(&policy) {
            return self.ratelimit.check(&policy, &mut self.ctx, host, None);
        }
        let body = if self.body_size == 0 {
            Some(Vec::new())
        } else {
            host.request_body(0, self.body_size)
        };
        let Some(body) = body else {
            host.log(Level::Error, "aura-guard: request body unavailable");
            return Flow::Reply(Reply::detail(500, "Request body unavailable"));
        };
        self.ratelimit
            .check(&policy, &mut self.ctx, host, Some(&body))
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Action {
        let status = if self.webhook.wants_status() || self.ratelimit.wants_status() {
            host.response_header(":status")
                .and_then(|s| s.trim().parse::<u32>().ok())
        } else {
            None
        };
        self.respond(host, status);
        Action::Continue
    }

    /// End of the stream (proxy-wasm `on_log`): the audit entries of this request go to the
    /// shipper's queue without waiting.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        self.audit
            .on_log(&self.policy, &self.ctx, host, self.replied);
    }

    /// The response phase of every stage, for an upstream response or the filter's reply.
    fn respond(&mut self, host: &mut dyn Host, status: Option<u32>) {
        let mut cx = Cx {
            policy: &self.policy,
            req: &mut self.ctx,
            host,
        };
        let stages: [&mut dyn Stage; 3] = [
            &mut self.webhook,
            &mut headers::HeadersStage,
            &mut self.ratelimit,
        ];
        for stage in stages {
            stage.on_response(&mut cx, status);
        }
    }

    /// Carries out a stage's flow: a reply is sent, a wait holds the request.
    fn after(&mut self, host: &mut dyn Host, flow: Flow) -> Action {
        match flow {
            Flow::Next => Action::Continue,
            Flow::Wait => Action::Pause,
            Flow::Reply(reply) => {
                self.reply(host, reply);
                Action::Pause
            }
        }
    }

    /// Whether any stage needs the whole body before deciding.
    fn body_needed(&self) -> bool {
        #[cfg(test)]
        if self.force_hold_for_body {
            return true;
        }
        let policy = &self.policy;
        self.audit.needs_body(policy)
            || self.webhook.needs_body(policy)
            || self.ratelimit.needs_body(policy)
    }

    /// Largest body held: a webhook route uses `webhook.max_body_bytes`, any other held
    /// request the global `max_body_bytes`.
    fn body_limit(&self) -> u64 {
        let cfg = &self.policy.config;
        if self.webhook.source().is_some() {
            cfg.webhook.max_body_bytes
        } else {
            u64::try_from(cfg.max_body_bytes).unwrap_or(u64::MAX)
        }
    }

    /// 413: on a webhook route as a webhook failure (event, stat, its own message).
    fn body_too_large(&mut self, host: &mut dyn Host) -> Action {
        let policy = Rc::clone(&self.policy);
        let flow = match self.webhook.body_too_large(&policy, &mut self.ctx, host) {
            Some(flow) => flow,
            None => Flow::Reply(Reply::detail(413, "Request body too large")),
        };
        self.after(host, flow)
    }

    /// Runs the body stages once the whole body is buffered.
    fn finish_body(&mut self, host: &mut dyn Host) -> Action {
        self.body_done = true;
        let body = if self.body_size == 0 {
            Vec::new()
        } else {
            match host.request_body(0, self.body_size) {
                Some(b) => b,
                None => {
                    host.log(Level::Error, "aura-guard: request body unavailable");
                    let reply = Reply::detail(500, "Request body unavailable");
                    return self.after(host, Flow::Reply(reply));
                }
            }
        };
        let policy = Rc::clone(&self.policy);
        // Audit capture first, so a request a later stage refuses is recorded with its body.
        // The rate limit is last: it may wait for the service's answer.
        let mut cx = Cx {
            policy: &policy,
            req: &mut self.ctx,
            host: &mut *host,
        };
        let flow = first_answer(
            &mut [&mut self.audit, &mut self.webhook, &mut self.ratelimit],
            |stage| stage.on_request_body(&mut cx, &body),
        );
        self.after(host, flow)
    }

    /// Paused at the headers until the whole body arrives, and waiting for nothing else: what
    /// [`body_hold`] watches.
    pub fn awaiting_body(&self) -> bool {
        self.hold_for_body && !self.body_done && !self.replied && !self.waiting()
    }

    /// The answer for a request whose body Envoy never hands over ([`body_hold`]): status,
    /// headers (security headers, request id, content type) and JSON body, prepared while the
    /// request is paused, for the root context to send.
    pub fn body_hold_reply(&self) -> (u32, Vec<(String, String)>, Vec<u8>) {
        let reply = Reply::detail(body_hold::BODY_HOLD_STATUS, body_hold::BODY_HOLD_MESSAGE);
        let mut headers = headers::reply_headers(&self.policy, &self.ctx);
        headers.extend(reply.headers);
        (reply.status, headers, reply.body)
    }

    /// Ends the request with a reply from the filter. It carries the security headers and the
    /// request id itself, since Envoy may not run the response callback for a local reply.
    fn reply(&mut self, host: &mut dyn Host, reply: Reply) {
        // A later stage refusing a verified delivery: it was not processed, so a retry must pass.
        let mut cx = Cx {
            policy: &self.policy,
            req: &mut self.ctx,
            host: &mut *host,
        };
        self.webhook.on_response(&mut cx, Some(reply.status));
        let mut out = headers::reply_headers(&self.policy, &self.ctx);
        out.extend(reply.headers);
        self.replied = true;
        host.count(&format!("aura_guard.local_replies.{}", reply.status));
        host.send_reply(reply.status, &out, &reply.body);
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::Environment;
    use crate::headers::config::Conflict;
    use crate::headers::valid_request_id;
    use crate::host::mock::MockHost;

    fn request(path: &str) -> MockHost {
        let mut host = MockHost::default();
        host.now_ms = 1_700_000_000_000;
        host.request_headers.push((":method".into(), "GET".into()));
        host.request_headers.push((":path".into(), path.into()));
        host
    }

    fn filter_with(config: Config) -> HttpFilter {
        HttpFilter::new(Rc::new(Policy::new(config)))
    }

    fn filter(env: Environment, conflict: Conflict) -> HttpFilter {
        let mut config = Config {
            environment: env,
            ..Config::default()
        };
        config.headers.on_conflict = conflict;
        HttpFilter::new(Rc::new(Policy::new(config)))
    }

    #[test]
    fn response_gets_security_headers_and_the_request_id() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/x");
        host.request_headers
            .push(("x-request-id".into(), "req-1".into()));
        assert_eq!(f.on_request_headers(&mut host, true), Action::Continue);
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-request-id").as_deref(),
            Some("req-1")
        );
        assert_eq!(
            host.response_header("x-frame-options").as_deref(),
            Some("DENY")
        );
        assert!(host.response_header("content-security-policy").is_some());
    }

    #[test]
    fn invalid_client_request_id_is_replaced_and_forwarded_upstream() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = request("/x");
        host.request_headers
            .push(("x-request-id".into(), "bad id\n".into()));
        f.on_request_headers(&mut host, true);
        let forwarded = host.request_header("x-request-id").unwrap();
        assert!(valid_request_id(&forwarded));
        assert_eq!(forwarded.len(), 36);
        f.on_response_headers(&mut host);
        assert_eq!(host.response_header("x-request-id"), Some(forwarded));
    }

    #[test]
    fn overwrite_mode_replaces_a_weaker_upstream_value() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/x");
        f.on_request_headers(&mut host, true);
        host.response_headers
            .push(("x-frame-options".into(), "ALLOWALL".into()));
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-frame-options").as_deref(),
            Some("DENY")
        );
    }

    #[test]
    fn keep_upstream_mode_keeps_the_upstream_value_and_fills_the_rest() {
        let mut f = filter(Environment::Production, Conflict::KeepUpstream);
        let mut host = request("/x");
        f.on_request_headers(&mut host, true);
        host.response_headers
            .push(("x-frame-options".into(), "SAMEORIGIN".into()));
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-frame-options").as_deref(),
            Some("SAMEORIGIN")
        );
        assert_eq!(
            host.response_header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }

    #[test]
    fn held_request_pauses_until_the_body_is_complete() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        f.force_hold_for_body = true;
        let mut host = request("/x");
        host.request_body = b"hello world".to_vec();
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 5, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 11, true), Action::Continue);
        assert!(host.reply.is_none());
        // Later callbacks pass straight through.
        assert_eq!(f.on_request_trailers(&mut host), Action::Continue);
    }

    #[test]
    fn trailers_complete_a_held_body() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        f.force_hold_for_body = true;
        let mut host = request("/x");
        host.request_body = b"abc".to_vec();
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 3, false), Action::Pause);
        assert_eq!(f.on_request_trailers(&mut host), Action::Continue);
    }

    #[test]
    fn body_over_the_limit_gets_413_json() {
        let mut config = Config::default();
        config.max_body_bytes = 4;
        let mut f = HttpFilter::new(Rc::new(Policy::new(config)));
        f.force_hold_for_body = true;
        let mut host = request("/x");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 4, false), Action::Pause);
        assert!(host.reply.is_none(), "exactly the limit is fine");
        assert_eq!(f.on_request_body(&mut host, 5, false), Action::Pause);
        let reply = host.reply.clone().unwrap();
        assert_eq!(reply.status, 413);
        assert_eq!(reply.body, br#"{"detail":"Request body too large"}"#);
        // After the reply nothing else runs.
        assert_eq!(f.on_request_body(&mut host, 6, true), Action::Continue);
    }

    #[test]
    fn unheld_request_is_never_paused() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = request("/x");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        assert_eq!(f.on_request_body(&mut host, 10, false), Action::Continue);
    }

    #[test]
    fn emitted_event_is_logged_counted_and_kept() {
        use crate::events::{SecurityEvent, Severity};
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/x");
        f.ctx.emit(
            &f.policy.clone(),
            &mut host,
            SecurityEvent::new(
                "debug_endpoint_blocked",
                Severity::Medium,
                "x",
                serde_json::json!({}),
            ),
        );
        assert_eq!(
            host.counters
                .get("aura_guard.events.debug_endpoint_blocked"),
            Some(&1)
        );
        assert_eq!(f.events().len(), 1);
        assert!(host
            .logs
            .borrow()
            .iter()
            .any(|(_, m)| m.contains("debug_endpoint_blocked")));
    }

    /// One line per event: the prefix, then one JSON object with the request's id, client IP
    /// and route, and metadata sanitised as audit records are (docs/operations.md).
    #[test]
    fn event_log_line_is_prefixed_json_with_sanitised_metadata() {
        use crate::events::{SecurityEvent, Severity};
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/API/V1/./Login;p=1?password=q-secret");
        host.downstream_address = Some("198.51.100.7:4000".into());
        host.request_headers
            .push(("x-request-id".into(), "req-42".into()));
        f.on_request_headers(&mut host, true);
        host.logs.borrow_mut().clear();
        f.ctx.emit(
            &f.policy.clone(),
            &mut host,
            SecurityEvent::new(
                "auth_rate_limit_exceeded",
                Severity::High,
                "too many",
                serde_json::json!({"limit_type": "ip", "password": "m-secret",
                    "nested": {"api_key": "k-secret"}}),
            ),
        );
        let logs = host.logs.borrow();
        assert_eq!(logs.len(), 1);
        let (level, message) = &logs[0];
        assert_eq!(*level, Level::Warn);
        let json = message.strip_prefix(EVENT_LOG_PREFIX).unwrap();
        assert!(!json.contains('\n'));
        let line: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "ts": "2023-11-14T22:13:20.000Z",
                "request_id": "req-42",
                "event_type": "auth_rate_limit_exceeded",
                "severity": "high",
                "description": "too many",
                "client_ip": "198.51.100.7",
                "method": "GET",
                "route": "/api/v1/login",
                "metadata": {"limit_type": "ip", "password": "[REDACTED]",
                    "nested": {"api_key": "[REDACTED]"}},
            })
        );
        for secret in ["q-secret", "m-secret", "k-secret"] {
            assert!(!message.contains(secret), "{secret} leaked: {message}");
        }
    }

    /// A refused path has no route; the line still parses and carries the request id.
    #[test]
    fn event_log_line_without_a_route_has_route_null() {
        use crate::events::{SecurityEvent, Severity};
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("no-slash");
        f.on_request_headers(&mut host, true);
        host.logs.borrow_mut().clear();
        let id = f.ctx.request_id.clone();
        f.ctx.emit(
            &f.policy.clone(),
            &mut host,
            SecurityEvent::new("x_event", Severity::Low, "d", serde_json::Value::Null),
        );
        let logs = host.logs.borrow();
        let json = logs[0].1.strip_prefix(EVENT_LOG_PREFIX).unwrap();
        let line: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(line["route"], serde_json::Value::Null);
        assert_eq!(line["client_ip"], serde_json::Value::Null);
        assert_eq!(line["request_id"], id.as_str());
        assert_eq!(line["metadata"], serde_json::json!({}));
    }

    #[test]
    fn extra_response_headers_reach_upstream_responses_and_local_replies() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = request("/x");
        f.on_request_headers(&mut host, true);
        f.ctx
            .add_response_header("x-api-deprecation-warning", "old");
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-api-deprecation-warning").as_deref(),
            Some("old")
        );
        f.reply(&mut host, Reply::json(429, &serde_json::json!({})));
        let reply = host.reply.unwrap();
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-deprecation-warning" && v == "old"));
    }

    #[test]
    fn ambiguous_path_is_refused_with_400_before_anything_else() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/debug%2Ftoken");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Pause);
        let reply = host.reply.unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            br#"{"detail":"Ambiguous request path: encoded slash in path"}"#
        );
        assert_eq!(host.counters.get("aura_guard.path.refused"), Some(&1));
    }

    #[test]
    fn debug_endpoint_in_production_is_404_with_a_security_event() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/DEBUG//./token/");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Pause);
        let reply = host.reply.unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body, br#"{"detail":"Not found"}"#);
        assert_eq!(f.events()[0].event_type, "debug_endpoint_blocked");
        assert_eq!(host.counters.get("aura_guard.debug.blocked"), Some(&1));
    }

    #[test]
    fn debug_endpoint_in_staging_is_404_without_a_security_event() {
        let mut f = filter(Environment::Staging, Conflict::Overwrite);
        let mut host = request("/debug/token");
        f.on_request_headers(&mut host, true);
        assert_eq!(host.reply.unwrap().status, 404);
        assert!(f.events().is_empty());
    }

    #[test]
    fn debug_endpoint_in_development_passes() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = request("/debug/token");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Continue);
        assert!(host.reply.is_none());
    }

    #[test]
    fn disabled_version_gets_410_with_the_original_body_and_an_event() {
        let mut config = Config::default();
        config.versions.disabled = vec!["v0".into()];
        let mut f = filter_with(config);
        let mut host = request("/api/v0/users");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Pause);
        let reply = host.reply.unwrap();
        assert_eq!(reply.status, 410);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "API version no longer supported");
        assert_eq!(
            body["message"],
            "API v0 has been discontinued. Please upgrade to the latest version."
        );
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20");
        assert_eq!(f.events()[0].event_type, "disabled_api_version_access");
        assert_eq!(
            host.counters.get("aura_guard.versions.disabled.v0"),
            Some(&1)
        );
    }

    #[test]
    fn deprecated_version_passes_with_the_warning_header() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = request("/api/v1/orders");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Continue);
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-api-deprecation-warning").as_deref(),
            Some("API v1 is deprecated and will be removed in future releases. Please upgrade to the latest version.")
        );
    }

    #[test]
    fn local_reply_carries_security_headers_request_id_and_json() {
        let mut f = filter(Environment::Staging, Conflict::Overwrite);
        let mut host = request("/x");
        f.on_request_headers(&mut host, true);
        f.reply(&mut host, Reply::detail(404, "Not found"));
        let reply = host.reply.unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body, br#"{"detail":"Not found"}"#);
        let has = |n: &str| reply.headers.iter().any(|(k, _)| k == n);
        assert!(has("strict-transport-security"));
        assert!(has("x-request-id"));
        assert!(has("content-type"));
        assert!(!has("content-security-policy"));
    }

    fn audit_host(method: &str, path: &str, body: &[u8]) -> MockHost {
        let mut host = MockHost::default();
        host.request_headers.push((":method".into(), method.into()));
        host.request_headers.push((":path".into(), path.into()));
        host.request_headers
            .push(("content-type".into(), "application/json".into()));
        host.request_body = body.to_vec();
        host.queues.insert(
            ("aura-guard-audit".into(), "aura_guard_audit".into()),
            Vec::new(),
        );
        host
    }

    fn queued(host: &MockHost) -> Vec<serde_json::Value> {
        host.queues[&(
            "aura-guard-audit".to_string(),
            "aura_guard_audit".to_string(),
        )]
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    /// The audit record's client IP after one refund request through the pipeline.
    fn audited_client_ip(config_json: &str, peer: &str, xff: Option<&str>) -> serde_json::Value {
        let config = Config::load(config_json.as_bytes(), &|k: &str| match k {
            "ENVIRONMENT" => Some("production".to_string()),
            "JWT_SECRET_KEY" => Some("test-secret-0123456789abcdefghijklmn".to_string()),
            _ => None,
        })
        .unwrap();
        let mut f = filter_with(config);
        let mut host = audit_host("POST", "/api/v1/payments/refund", b"{}");
        host.downstream_address = Some(peer.into());
        if let Some(xff) = xff {
            host.request_headers
                .push(("x-forwarded-for".into(), xff.into()));
        }
        f.on_request_headers(&mut host, false);
        f.on_request_body(&mut host, 2, true);
        f.on_log(&mut host);
        queued(&host)[0]["client_ip"].clone()
    }

    #[test]
    fn audit_records_use_the_pipelines_one_client_ip_rule() {
        // No trusted proxy: the peer, whatever X-Forwarded-For claims.
        let ip = audited_client_ip("{}", "198.51.100.9:40000", Some("6.6.6.6, 203.0.113.5"));
        assert_eq!(ip, "198.51.100.9");
        // One trusted proxy (Envoy appends no entry here): its X-Forwarded-For entry.
        let cfg = r#"{"ratelimit": {"trusted_hops": 1, "trusted_proxies": ["198.51.100.9"],
            "xff_appended_by_envoy": false}}"#;
        let ip = audited_client_ip(cfg, "198.51.100.9:40000", Some("6.6.6.6, 203.0.113.5"));
        assert_eq!(ip, "203.0.113.5");
        // IPv6 peers are recorded without brackets or port.
        let ip = audited_client_ip("{}", "[2001:db8::1]:443", None);
        assert_eq!(ip, "2001:db8::1");
    }

    #[test]
    fn audited_operation_holds_the_body_and_enqueues_one_sanitised_record_at_the_end() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let body = br#"{"amount":10,"card_token":"tok_123","password":"pw"}"#;
        let mut host = audit_host("POST", "/api/v1/payments/refund", body);
        host.now_ms = 1000;
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(
            f.on_request_body(&mut host, body.len(), true),
            Action::Continue
        );
        assert!(
            queued(&host).is_empty(),
            "nothing before the end of the stream"
        );
        host.now_ms = 1040;
        host.response_code = Some(200);
        f.on_log(&mut host);
        let q = queued(&host);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0]["type"], "payment_refund");
        assert_eq!(q[0]["status"], 200);
        assert_eq!(q[0]["duration_ms"], 40);
        assert_eq!(
            q[0]["request_body"],
            serde_json::json!({"amount":10,"card_token":"[REDACTED]","password":"[REDACTED]"})
        );
        assert_eq!(host.counters.get("aura_guard.audit.enqueued"), Some(&1));
        assert_eq!(
            host.counters
                .get("aura_guard.audit.operations.payment_refund"),
            Some(&1)
        );
        // on_log runs once per stream; a second call adds nothing.
        f.on_log(&mut host);
        assert_eq!(queued(&host).len(), 1);
        assert_eq!(
            host.counters
                .get("aura_guard.audit.operations.payment_refund"),
            Some(&1)
        );
    }

    #[test]
    fn ordinary_request_is_not_held_and_not_recorded() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = audit_host("POST", "/api/v1/orders", b"{}");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        f.on_log(&mut host);
        assert!(queued(&host).is_empty());
        assert!(!host
            .counters
            .keys()
            .any(|k| k.starts_with("aura_guard.audit.operations.")));
    }

    #[test]
    fn audit_is_off_in_development_by_default() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = audit_host("POST", "/api/v1/payments/refund", b"{}");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        f.on_log(&mut host);
        assert!(queued(&host).is_empty());
    }

    #[test]
    fn security_events_of_a_request_become_records() {
        // The debug stage blocks /debug/token in production and emits its event.
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = audit_host("GET", "/debug/token", b"");
        assert_eq!(f.on_request_headers(&mut host, true), Action::Pause);
        assert_eq!(host.reply.as_ref().unwrap().status, 404);
        host.response_code = Some(404);
        f.on_log(&mut host);
        let q = queued(&host);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0]["kind"], "security_event");
        assert_eq!(q[0]["type"], "debug_endpoint_blocked");
        assert_eq!(q[0]["outcome"], "blocked");
        assert_eq!(q[0]["severity"], "medium");
    }

    #[test]
    fn a_record_refused_for_a_stale_shipper_heartbeat_is_counted_and_logged_as_such() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = audit_host("POST", "/api/v1/payments/refund", b"{}");
        host.shipper_stale = true;
        f.on_request_headers(&mut host, true);
        f.on_log(&mut host);
        assert!(queued(&host).is_empty());
        for counter in ["shipper_stale", "enqueue_failed", "dropped"] {
            assert_eq!(
                host.counters.get(&format!("aura_guard.audit.{counter}")),
                Some(&1),
                "{counter}"
            );
        }
        let logs = host.logs.borrow();
        assert!(
            logs.iter().any(|(l, m)| *l == Level::Error
                && m == "aura-guard: audit record operation payment_refund dropped: the audit \
                         shipper is not alive (its heartbeat aura_guard.audit.alive_until_ms has \
                         passed; counted in aura_guard.audit.shipper_stale)"),
            "{logs:?}"
        );
        assert!(
            logs.iter().all(|(_, m)| !m.contains("unavailable")),
            "{logs:?}"
        );
    }

    #[test]
    fn missing_shipper_queue_drops_and_counts_without_delaying_the_request() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = audit_host("POST", "/api/v1/payments/refund", b"{}");
        host.queues.clear();
        f.on_request_headers(&mut host, true);
        f.on_log(&mut host);
        assert_eq!(host.counters.get("aura_guard.audit.dropped"), Some(&1));
        assert_eq!(
            host.counters.get("aura_guard.audit.enqueue_failed"),
            Some(&1)
        );
        assert_eq!(host.counters.get("aura_guard.audit.shipper_stale"), None);
        assert!(host.logs.borrow().iter().any(|(_, m)| m
            == "aura-guard: audit record operation payment_refund dropped: shipper queue \
                aura-guard-audit/aura_guard_audit unavailable"));
    }
}
