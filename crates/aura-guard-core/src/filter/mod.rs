//! The per-request pipeline. The glue forwards each proxy-wasm callback here with a `Host`;
//! every decision is taken in this crate, so the whole flow is tested natively with `MockHost`.

use crate::audit::record::Completion;
use crate::audit::{AuditPolicy, RequestAudit, RequestStart};
use crate::config::Config;
use crate::debug::{self, DebugDecision};
use crate::events::{SecurityEvent, Severity};
use crate::headers::{uuid_v4, valid_request_id, SecurityHeaders};
use crate::host::{Host, Level};
use crate::path::{normalise, NormalisedPath, PathError};
use crate::ratelimit::planner::RateLimiter;
use crate::versions::{self, VersionDecision};
use std::cell::OnceCell;
use std::net::IpAddr;
use std::rc::Rc;

mod webhook;
pub use webhook::{
    init_replay_store, replay_insert, replay_remove, sanitised_headers, stat_name, ReplayStoreError,
};
mod ratelimit;

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
    /// Auth rate limiting, when `ratelimit` is enabled and resolved (`Config::load`).
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

/// State of one HTTP stream.
///
/// Order of the stages (each may end the request with a local reply):
/// request headers: request id → audit start → path normalisation → debug endpoints → API
/// versions → rate-limit route match → decide whether the body is needed (else the rate limit
/// runs here); then, with the whole body (held, never streamed to the upstream before the
/// decision): audit capture → webhook signature → auth rate limit (asynchronous, resumed by
/// `on_grpc_response`). Response headers: security headers, request id, per-request extra
/// headers, rate-limit headers and failure counting. `on_log`: audit records are enqueued.
pub struct HttpFilter {
    policy: Rc<Policy>,
    request_id: Option<String>,
    /// `:method`, read once.
    method: String,
    /// The one normalised path every decision uses (None until the headers arrive).
    path: Option<NormalisedPath>,
    /// The client IP by the one rule every stage uses, computed on first use.
    client_ip: OnceCell<Option<IpAddr>>,
    /// The webhook source guarding this path, looked up once.
    webhook_route: Option<String>,
    /// A stage needs the whole request body before the request may go upstream.
    hold_for_body: bool,
    /// Bytes of request body seen so far (Envoy reports the cumulative size).
    body_size: usize,
    body_done: bool,
    /// The filter answered the request itself.
    replied: bool,
    /// Security events emitted while handling this request.
    events: Vec<SecurityEvent>,
    /// Response headers decided on the request path (e.g. deprecation warnings).
    extra_response_headers: Vec<(String, String)>,
    /// Audit facts of this request (None when audit is off).
    audit: Option<RequestAudit>,
    /// The webhook replay key this request recorded, released unless the upstream answers 2xx.
    webhook_replay: Option<webhook::RecordedReplay>,
    /// Auth rate limit of this request (route, outstanding call, attempt).
    ratelimit: ratelimit::RateLimitState,
    #[cfg(test)]
    pub(crate) force_hold_for_body: bool,
}

impl HttpFilter {
    pub fn new(policy: Rc<Policy>) -> Self {
        HttpFilter {
            policy,
            request_id: None,
            method: String::new(),
            path: None,
            client_ip: OnceCell::new(),
            webhook_route: None,
            hold_for_body: false,
            body_size: 0,
            body_done: false,
            replied: false,
            events: Vec::new(),
            extra_response_headers: Vec::new(),
            audit: None,
            webhook_replay: None,
            ratelimit: Default::default(),
            #[cfg(test)]
            force_hold_for_body: false,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let request_id = self.ensure_request_id(host);
        // The request line is read and normalised once; every stage uses the result.
        self.method = host.request_header(":method").unwrap_or_default();
        let raw_path = host.request_header(":path").unwrap_or_default();
        let normalised = normalise(&raw_path);
        // Before the stages that may answer, so their security events are recorded too.
        if self.policy.audit.enabled {
            let start = RequestStart {
                start_ms: host.now_ms(),
                request_id: &request_id,
                method: &self.method,
                raw_path: &raw_path,
                path: normalised.as_ref().ok(),
                client_ip: self.client_ip(host),
            };
            self.audit = RequestAudit::begin(&self.policy.audit, host, &start);
        }
        if !self.path_stage(host, normalised)
            || !self.debug_stage(host)
            || !self.versions_stage(host)
        {
            return Action::Pause;
        }
        self.webhook_route = self.path.as_ref().and_then(|p| {
            let (name, _) = self.policy.config.webhook.source_for_path(p.as_str())?;
            Some(name.to_string())
        });
        self.ratelimit_match();
        self.hold_for_body = self.body_needed(host);
        if !self.hold_for_body {
            return self.ratelimit_stage(host, None).unwrap_or(Action::Continue);
        }
        // A declared length over the limit is refused before anything is buffered.
        let declared = host
            .request_header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.body_limit()) {
            self.body_too_large(host);
            return Action::Pause;
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
        if self.ratelimit_pending() {
            return Action::Pause;
        }
        if !self.hold_for_body || self.body_done || self.replied {
            return Action::Continue;
        }
        self.body_size = body_size;
        if u64::try_from(body_size).unwrap_or(u64::MAX) > self.body_limit() {
            self.body_too_large(host);
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(host)
    }

    /// HTTP/2 (and chunked) requests may end with trailers: the body is then complete without
    /// a body callback marked end of stream.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        if self.ratelimit_pending() {
            return Action::Pause;
        }
        if self.hold_for_body && !self.body_done && !self.replied {
            return self.finish_body(host);
        }
        Action::Continue
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Action {
        let status = host
            .response_header(":status")
            .and_then(|s| s.trim().parse::<u32>().ok());
        self.webhook_release_unless_2xx(host, status);
        for h in self.policy.security_headers.headers() {
            if h.overwrite || host.response_header(&h.name).is_none() {
                host.set_response_header(&h.name, &h.value);
            }
        }
        for (name, value) in &self.extra_response_headers {
            host.set_response_header(name, value);
        }
        if let Some(id) = &self.request_id {
            host.set_response_header(&self.policy.config.headers.request_id_header, id);
        }
        self.ratelimit_response(host);
        Action::Continue
    }

    /// The normalised path, once the request headers have been seen.
    pub fn path(&self) -> Option<&NormalisedPath> {
        self.path.as_ref()
    }

    /// Keeps the normalised `:path`; an ambiguous path is refused with 400 rather than
    /// guessed. Returns false when the request was answered.
    fn path_stage(
        &mut self,
        host: &mut dyn Host,
        normalised: Result<NormalisedPath, PathError>,
    ) -> bool {
        match normalised {
            Ok(p) => {
                self.path = Some(p);
                true
            }
            Err(e) => {
                host.count("aura_guard.path.refused");
                host.log(
                    Level::Info,
                    &format!("aura-guard: refused request path: {}", e.reason()),
                );
                self.reply_body(host, u32::from(e.status()), e.body().as_bytes(), &[]);
                false
            }
        }
    }

    /// Debug endpoints: 404 outside their environments unless enabled and whitelisted.
    fn debug_stage(&mut self, host: &mut dyn Host) -> bool {
        let policy = Rc::clone(&self.policy);
        let cfg = &policy.config;
        let Some(path) = &self.path else { return true };
        let DebugDecision::Block { endpoint } = debug::decide(&cfg.debug, cfg.environment, path)
        else {
            return true;
        };
        host.count("aura_guard.debug.blocked");
        if debug::emits_security_event(cfg.environment) {
            let event = SecurityEvent::new(
                debug::EVENT_TYPE,
                Severity::Medium,
                format!("Blocked access to debug endpoint {endpoint}"),
                serde_json::json!({"endpoint": endpoint, "path": path.as_str(),
                    "environment": cfg.environment.as_str()}),
            );
            self.emit(host, event);
        }
        self.reply_body(
            host,
            u32::from(debug::BLOCKED_STATUS),
            debug::BLOCKED_BODY.as_bytes(),
            &[],
        );
        false
    }

    /// API versions: disabled ones get 410, deprecated ones pass with warning headers.
    fn versions_stage(&mut self, host: &mut dyn Host) -> bool {
        let policy = Rc::clone(&self.policy);
        let cfg = &policy.config.versions;
        let Some(path) = &self.path else { return true };
        let header = cfg.header.as_deref().and_then(|h| host.request_header(h));
        let now = i64::try_from(host.now_ms() / 1000).unwrap_or(i64::MAX);
        match versions::decide(cfg, path, header.as_deref(), now) {
            VersionDecision::None => true,
            VersionDecision::Deprecated { version, headers } => {
                host.count(&format!("aura_guard.versions.deprecated.{version}"));
                for (name, value) in headers {
                    self.add_response_header(&name, &value);
                }
                true
            }
            VersionDecision::Disabled {
                version,
                status,
                body,
            } => {
                host.count(&format!("aura_guard.versions.disabled.{version}"));
                let event = SecurityEvent::new(
                    versions::EVENT_TYPE,
                    Severity::Medium,
                    format!("Access to disabled API version {version}"),
                    serde_json::json!({"version": version, "path": path.as_str()}),
                );
                self.emit(host, event);
                self.reply_body(host, u32::from(status), body.as_bytes(), &[]);
                false
            }
        }
    }

    /// Whether any stage needs the whole body before deciding.
    fn body_needed(&self, _host: &dyn Host) -> bool {
        #[cfg(test)]
        if self.force_hold_for_body {
            return true;
        }
        if self.audit.as_ref().is_some_and(RequestAudit::wants_body)
            || self.webhook_source().is_some()
            || self.ratelimit_needs_body()
        {
            return true;
        }
        false
    }

    /// Largest body held: a webhook route uses `webhook.max_body_bytes`, any other held
    /// request the global `max_body_bytes`.
    fn body_limit(&self) -> u64 {
        let cfg = &self.policy.config;
        if self.webhook_source().is_some() {
            cfg.webhook.max_body_bytes
        } else {
            u64::try_from(cfg.max_body_bytes).unwrap_or(u64::MAX)
        }
    }

    /// 413: on a webhook route as a webhook failure (event, stat, its own message).
    fn body_too_large(&mut self, host: &mut dyn Host) {
        if let Some(source) = self.webhook_source() {
            let headers = host.request_headers();
            self.webhook_refuse(
                host,
                &source,
                crate::webhook::Failure::BodyTooLarge,
                &headers,
            );
            return;
        }
        self.reply_json(
            host,
            413,
            &serde_json::json!({"detail": "Request body too large"}),
            &[],
        );
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
                    self.reply_json(
                        host,
                        500,
                        &serde_json::json!({"detail": "Request body unavailable"}),
                        &[],
                    );
                    return Action::Pause;
                }
            }
        };
        self.body_stages(host, &body)
    }

    fn body_stages(&mut self, host: &mut dyn Host, body: &[u8]) -> Action {
        // Audit capture first, so a request a later stage refuses is recorded with its body.
        if let Some(audit) = self.audit.as_mut() {
            audit.capture(&self.policy.audit, body);
        }
        if let Some(source) = self.webhook_source() {
            if !self.webhook_stage(host, &source, body) {
                return Action::Pause;
            }
        }
        // Auth rate limit; asynchronous: on Pause the rest runs when the service answers.
        if let Some(action) = self.ratelimit_stage(host, Some(body)) {
            return action;
        }
        Action::Continue
    }

    /// Records a security event: logged, counted as `aura_guard.events.<type>`, and kept for
    /// the audit pipeline.
    pub fn emit(&mut self, host: &mut dyn Host, event: SecurityEvent) {
        host.log(
            Level::Warn,
            &format!(
                "aura-guard security event {} ({}): {}",
                event.event_type,
                event.severity.as_str(),
                event.description
            ),
        );
        host.count(&format!("aura_guard.events.{}", event.event_type));
        self.events.push(event);
    }

    /// End of the stream (proxy-wasm `on_log`): the audit entries of this request (its
    /// sensitive operation and its security events) go to the shipper's queue. Enqueueing
    /// never waits; if the shipper is missing the entries are dropped and counted.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        let Some(audit) = self.audit.take() else {
            return;
        };
        let done = Completion {
            status: host.response_code(),
            end_ms: host.now_ms(),
            replied_locally: self.replied,
        };
        let cfg = &self.policy.audit.config;
        for entry in audit.finish(&self.policy.audit, &self.events, &done) {
            let queued = serde_json::to_vec(&entry)
                .map(|bytes| host.enqueue_shared(&cfg.queue_vm_id, &cfg.queue_name, &bytes))
                .unwrap_or(false);
            if queued {
                host.count("aura_guard.audit.enqueued");
            } else {
                host.count("aura_guard.audit.enqueue_failed");
                host.count("aura_guard.audit.dropped");
                host.log(
                    Level::Error,
                    &format!(
                        "aura-guard: audit record {} {} dropped: shipper queue {}/{} unavailable",
                        entry.kind, entry.record_type, cfg.queue_vm_id, cfg.queue_name
                    ),
                );
            }
        }
    }

    pub fn events(&self) -> &[SecurityEvent] {
        &self.events
    }

    /// Adds a header to the eventual response (upstream or local reply).
    pub fn add_response_header(&mut self, name: &str, value: &str) {
        self.extra_response_headers
            .push((name.to_string(), value.to_string()));
    }

    /// The request id: the client's when valid, else a fresh UUID, also forwarded upstream so
    /// the application logs the same id.
    fn ensure_request_id(&mut self, host: &mut dyn Host) -> String {
        if let Some(id) = &self.request_id {
            return id.clone();
        }
        let name = &self.policy.config.headers.request_id_header;
        let id = match host.request_header(name) {
            Some(id) if valid_request_id(&id) => id,
            _ => {
                let id = uuid_v4(host.random16());
                host.set_request_header(name, &id);
                id
            }
        };
        self.request_id = Some(id.clone());
        id
    }

    /// Ends the request with a JSON reply from the filter. It carries the security headers and
    /// the request id itself, since Envoy may not run the response callback for a local reply.
    pub fn reply_json(
        &mut self,
        host: &mut dyn Host,
        status: u32,
        body: &serde_json::Value,
        extra_headers: &[(String, String)],
    ) {
        self.reply_body(host, status, body.to_string().as_bytes(), extra_headers);
    }

    /// As [`HttpFilter::reply_json`], with the JSON body already serialised.
    pub fn reply_body(
        &mut self,
        host: &mut dyn Host,
        status: u32,
        body: &[u8],
        extra_headers: &[(String, String)],
    ) {
        // A later stage refusing a verified delivery: it was not processed, so a retry must pass.
        self.webhook_release_unless_2xx(host, Some(status));
        let id = self.ensure_request_id(host);
        let mut headers: Vec<(String, String)> = self
            .policy
            .security_headers
            .headers()
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        headers.push((self.policy.config.headers.request_id_header.clone(), id));
        headers.push(("content-type".to_string(), "application/json".to_string()));
        headers.extend(self.extra_response_headers.iter().cloned());
        headers.extend(extra_headers.iter().cloned());
        self.replied = true;
        host.count(&format!("aura_guard.local_replies.{status}"));
        host.send_reply(status, &headers, body);
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
        f.emit(
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

    #[test]
    fn extra_response_headers_reach_upstream_responses_and_local_replies() {
        let mut f = filter(Environment::Development, Conflict::Overwrite);
        let mut host = request("/x");
        f.on_request_headers(&mut host, true);
        f.add_response_header("x-api-deprecation-warning", "old");
        f.on_response_headers(&mut host);
        assert_eq!(
            host.response_header("x-api-deprecation-warning").as_deref(),
            Some("old")
        );
        f.reply_json(&mut host, 429, &serde_json::json!({}), &[]);
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
        f.reply_json(
            &mut host,
            404,
            &serde_json::json!({"detail": "Not found"}),
            &[],
        );
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
            "JWT_SECRET_KEY" => Some("test-secret".to_string()),
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
        let cfg = r#"{"ratelimit": {"trusted_hops": 1, "xff_appended_by_envoy": false}}"#;
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
        // on_log runs once per stream; a second call adds nothing.
        f.on_log(&mut host);
        assert_eq!(queued(&host).len(), 1);
    }

    #[test]
    fn ordinary_request_is_not_held_and_not_recorded() {
        let mut f = filter(Environment::Production, Conflict::Overwrite);
        let mut host = audit_host("POST", "/api/v1/orders", b"{}");
        assert_eq!(f.on_request_headers(&mut host, false), Action::Continue);
        f.on_log(&mut host);
        assert!(queued(&host).is_empty());
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
    }
}
