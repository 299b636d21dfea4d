//! The webhook stage: the glue between [`crate::webhook`]'s verdicts and the host. A request
//! whose normalised path is a webhook route is held until its whole body is buffered; then the
//! signature is verified, the replay key is recorded in the seen-set (`webhook::replay`,
//! shared by all workers of one Envoy) or, in the fleet-wide mode, counted by the rate-limit
//! service (`webhook::fleet_replay`, the request waits for its answer), and the key is
//! released again when the upstream does not answer 2xx, so the provider's retry passes.
//! What the headers alone decide (no signature, a malformed one, a timestamp outside the
//! window, an unconfigured source) is refused before any body is buffered. docs/webhooks.md.

use super::{Cx, Flow, Policy, Reply, RequestCtx, Stage};
use crate::config::Environment;
use crate::events::{SecurityEvent, Severity};
use crate::host::{GrpcCall, Host, Level};
use crate::ratelimit::rls::{RateLimitRequest, RateLimitResponse, RLS_METHOD, RLS_SERVICE};
use crate::webhook::config::ReplayMode;
use crate::webhook::fleet_replay::{self, Anchor, FleetCheck, FleetVerdict};
use crate::webhook::replay::{
    replay_insert, replay_remove, Insert, STORE_ERROR_MESSAGE, STORE_ERROR_STATUS,
};
use crate::webhook::{self, sanitised_headers, Failure, Outcome, WebhookRequest, EVENT_TYPE};

/// A replay key this request recorded, released again if the delivery is not processed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordedReplay {
    source: String,
    key: String,
    /// The fleet-wide mode's anchor (the release names it); None in the local mode.
    anchor: Option<Anchor>,
}

/// A fleet-wide replay check waiting for the rate-limit service.
#[derive(Debug)]
struct PendingCheck {
    token: u32,
    source: String,
    key: String,
    check: FleetCheck,
}

/// Per-request webhook state.
#[derive(Debug, Default)]
pub(super) struct WebhookStage {
    /// The webhook source guarding this path, looked up once.
    source: Option<String>,
    /// The replay key this request recorded, released unless the upstream answers 2xx.
    recorded: Option<RecordedReplay>,
    /// The fleet-wide replay check outstanding, if any.
    pending: Option<PendingCheck>,
}

/// `aura_guard.webhook.<source>.<what>`, shown by Envoy as `wasmcustom.aura_guard.webhook...`.
fn stat_name(source: &str, what: &str) -> String {
    format!("aura_guard.webhook.{source}.{what}")
}

impl Stage for WebhookStage {
    /// Matching the normalised path means no spelling of a webhook route
    /// (`/Webhooks//stripe/`, `/webhooks/%73tripe`) reaches the upstream unverified.
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (policy, ctx) = (cx.policy, &mut *cx.req);
        self.source = ctx.path.as_ref().and_then(|p| {
            let webhook = &policy.config.webhook;
            let (name, _) = p.route_forms().find_map(|f| webhook.source_for_path(f))?;
            Some(name.to_string())
        });
        Flow::Next
    }

    fn needs_body(&self, _policy: &Policy) -> bool {
        self.source.is_some()
    }

    /// Verifies the buffered delivery and records its replay key.
    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: &[u8]) -> Flow {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        let Some(source) = self.source.clone() else {
            return Flow::Next;
        };
        let cfg = &policy.config.webhook;
        // The pipeline's copy (read once per request); owned, as `refuse` takes `ctx` too.
        let headers = ctx.headers.pairs().to_vec();
        let now = unix_now(host);
        let target = request_target(ctx);
        let req = WebhookRequest {
            headers: &headers,
            body,
            path_and_query: &target,
        };
        let verified = match webhook::evaluate(cfg, policy.config.environment, &source, &req, now) {
            Err(failure) => return refuse(policy, ctx, host, &source, failure, &headers),
            Ok(Outcome::UnverifiedDevelopment) => {
                host.count(&stat_name(&source, "unverified"));
                host.log(
                    Level::Warn,
                    &format!(
                        "aura-guard: webhook source {source} has no secret: delivery passed \
                         UNVERIFIED (development only; production and staging refuse it)"
                    ),
                );
                return Flow::Next;
            }
            Ok(Outcome::Verified(v)) => v,
        };
        if let (true, Some(key), ReplayMode::Ratelimit) =
            (cfg.replay.enabled, &verified.replay_key, cfg.replay.mode)
        {
            let tolerance = cfg
                .sources
                .get(&source)
                .map_or(0, |s| u64::from(s.tolerance_s));
            let now_s = u64::try_from(now).unwrap_or(0);
            return self.start_fleet_check(policy, host, source, key.clone(), now_s, tolerance);
        }
        if let (true, Some(key)) = (cfg.replay.enabled, verified.replay_key) {
            let max = usize::try_from(cfg.replay.max_entries).unwrap_or(usize::MAX);
            match replay_insert(host, max, &key, now, verified.replay_ttl_s) {
                Ok(Insert::New) => {
                    self.recorded = Some(RecordedReplay {
                        source: source.clone(),
                        key,
                        anchor: None,
                    })
                }
                Ok(Insert::Seen) => {
                    return refuse(policy, ctx, host, &source, Failure::Replay, &headers)
                }
                // Fail closed rather than evict an unexpired key (which would reopen a replay):
                // the provider retries the 503 once keys have expired. docs/webhooks.md.
                Ok(Insert::Full) => {
                    host.count(&stat_name(&source, "replay_store_full"));
                    host.log(
                        Level::Error,
                        &format!(
                            "aura-guard: webhook replay store full ({max} unexpired keys, \
                             webhook.replay.max_entries): delivery from {source} refused with \
                             {STORE_ERROR_STATUS}"
                        ),
                    );
                    return Flow::Reply(Reply::detail(STORE_ERROR_STATUS, STORE_ERROR_MESSAGE));
                }
                Err(e) => {
                    host.count(&stat_name(&source, "replay_store_error"));
                    host.log(
                        Level::Error,
                        &format!(
                            "aura-guard: webhook replay store {e:?} for source {source}: \
                             delivery refused with {STORE_ERROR_STATUS}"
                        ),
                    );
                    return Flow::Reply(Reply::detail(STORE_ERROR_STATUS, STORE_ERROR_MESSAGE));
                }
            }
        }
        host.count(&stat_name(&source, "verified"));
        host.log(
            Level::Debug,
            &format!(
                "aura-guard: webhook from {source} verified ({}, delivery {})",
                verified.scheme.as_str(),
                verified.delivery_id.as_deref().unwrap_or("-")
            ),
        );
        Flow::Next
    }

    /// Only a delivery that recorded a replay key has anything to do with the status.
    fn wants_status(&self) -> bool {
        self.recorded.is_some()
    }

    /// Releases the recorded replay key unless the delivery was processed (2xx), so the
    /// provider's retry after a failure is not refused as a replay.
    fn on_response(&mut self, cx: &mut Cx<'_>, status: Option<u32>) {
        let (policy, host) = (cx.policy, &mut *cx.host);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            self.recorded = None;
            return;
        }
        let Some(recorded) = self.recorded.take() else {
            return;
        };
        if let Some(anchor) = recorded.anchor {
            release_fleet(policy, host, &recorded.source, &recorded.key, anchor);
            return;
        }
        let max = usize::try_from(policy.config.webhook.replay.max_entries).unwrap_or(usize::MAX);
        match replay_remove(host, max, &recorded.key) {
            Ok(_) => host.count(&stat_name(&recorded.source, "replay_released")),
            Err(e) => {
                host.count(&stat_name(&recorded.source, "replay_store_error"));
                host.log(
                    Level::Error,
                    &format!(
                        "aura-guard: cannot release webhook replay key of {} ({e:?}): the \
                         provider's retry will be refused until the key expires",
                        recorded.source
                    ),
                );
            }
        }
    }
}

fn rls_call<'a>(policy: &'a Policy, message: &'a [u8]) -> GrpcCall<'a> {
    let rl = &policy.config.ratelimit;
    GrpcCall {
        cluster: &rl.cluster,
        service: RLS_SERVICE,
        method: RLS_METHOD,
        message,
        timeout_ms: rl.timeout_ms,
    }
}

/// Undoes one attempt of `key` fleet-wide (fire and forget: the answer never delays the
/// response).
fn release_fleet(policy: &Policy, host: &mut dyn Host, source: &str, key: &str, anchor: Anchor) {
    let req: RateLimitRequest =
        fleet_replay::plan_release(&policy.config.ratelimit.domain, key, anchor);
    let message = req.encode_to_bytes();
    if host.dispatch_grpc_detached(&rls_call(policy, &message)) {
        host.count(&stat_name(source, "replay_released"));
    } else {
        host.count(&stat_name(source, "replay_service_error"));
        host.log(
            Level::Error,
            &format!(
                "aura-guard: cannot release the webhook replay key of {source} (call not \
                 dispatched): the provider's retry will be refused until the key expires"
            ),
        );
    }
}

/// The rate-limit service gave no fleet-wide answer: `webhook.replay.failure_mode` decides
/// (by default 503 in production, the provider retries; through with a warning elsewhere).
fn fleet_unavailable(policy: &Policy, host: &mut dyn Host, source: &str, why: &str) -> Flow {
    let production = policy.config.environment == Environment::Production;
    if policy
        .config
        .webhook
        .replay
        .failure_mode
        .fails_closed(production)
    {
        host.count(&stat_name(source, "replay_service_error"));
        host.log(
            Level::Error,
            &format!(
                "aura-guard: fleet-wide webhook replay check failed for source {source} \
                 ({why}): delivery refused with {STORE_ERROR_STATUS} \
                 (webhook.replay.failure_mode)"
            ),
        );
        return Flow::Reply(Reply::detail(STORE_ERROR_STATUS, STORE_ERROR_MESSAGE));
    }
    host.count(&stat_name(source, "replay_unchecked"));
    host.count(&stat_name(source, "verified"));
    host.log(
        Level::Warn,
        &format!(
            "aura-guard: fleet-wide webhook replay check failed for source {source} ({why}): \
             delivery passed WITHOUT a replay check (webhook.replay.failure_mode)"
        ),
    );
    Flow::Next
}

fn unix_now(host: &dyn Host) -> i64 {
    i64::try_from(host.now_ms() / 1000).unwrap_or(i64::MAX)
}

/// The request target as received (Square and Twilio sign its query).
fn request_target(ctx: &RequestCtx) -> String {
    ctx.path
        .as_ref()
        .map(|p| p.raw().to_string())
        .unwrap_or_default()
}

impl WebhookStage {
    /// A fleet-wide replay check is outstanding: the request stays held.
    pub(super) fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends the fleet-wide check of a verified delivery's key and waits for the answer.
    fn start_fleet_check(
        &mut self,
        policy: &Policy,
        host: &mut dyn Host,
        source: String,
        key: String,
        now_s: u64,
        tolerance_s: u64,
    ) -> Flow {
        let rl = &policy.config.ratelimit;
        let check = match fleet_replay::plan_check(&rl.domain, &key, now_s, tolerance_s) {
            Ok(check) => check,
            Err(e) => return fleet_unavailable(policy, host, &source, &format!("{e:?}")),
        };
        let message = check.request.encode_to_bytes();
        match host.dispatch_grpc(&rls_call(policy, &message)) {
            Some(token) => {
                self.pending = Some(PendingCheck {
                    token,
                    source,
                    key,
                    check,
                });
                Flow::Wait
            }
            None => fleet_unavailable(policy, host, &source, "call not dispatched"),
        }
    }

    /// Feeds the rate-limit service's answer (`Err`: a non-OK gRPC status) for the call with
    /// `token`. None: not this stage's outstanding call.
    pub(super) fn on_grpc_response(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
        token: u32,
        result: Result<&[u8], u32>,
    ) -> Option<Flow> {
        if self.pending.as_ref().map(|p| p.token) != Some(token) {
            return None;
        }
        let PendingCheck {
            source, key, check, ..
        } = self.pending.take()?;
        let verdict = match result {
            Err(status) => Err(format!("gRPC status {status}")),
            Ok(bytes) => match RateLimitResponse::decode_bytes(bytes) {
                Err(_) => Err("undecodable answer".to_string()),
                Ok(r) => fleet_replay::decide(&check, &r.statuses).map_err(|e| format!("{e:?}")),
            },
        };
        Some(match verdict {
            Err(why) => fleet_unavailable(policy, host, &source, &why),
            Ok(FleetVerdict::New) => {
                host.count(&stat_name(&source, "verified"));
                self.recorded = Some(RecordedReplay {
                    source,
                    key,
                    anchor: Some(check.anchor),
                });
                Flow::Next
            }
            Ok(FleetVerdict::Seen) => {
                // This copy's attempt is undone, so it never stands in the way of the
                // provider's retry after a failure (docs/webhooks.md).
                release_fleet(policy, host, &source, &key, check.anchor);
                let headers = ctx.headers.pairs().to_vec();
                refuse(policy, ctx, host, &source, Failure::Replay, &headers)
            }
        })
    }

    /// Refuses, at the request headers, a delivery they alone already decide
    /// (`webhook::check_headers`): the same status, body, event and stat as after the body,
    /// without waiting for (or buffering) a body that cannot change the answer. Called by the
    /// pipeline once it holds a webhook request, after the declared-length check.
    pub(super) fn check_headers(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
    ) -> Flow {
        let Some(source) = self.source.clone() else {
            return Flow::Next;
        };
        let headers = ctx.headers.pairs().to_vec();
        let target = request_target(ctx);
        let req = WebhookRequest {
            headers: &headers,
            body: &[],
            path_and_query: &target,
        };
        let cfg = &policy.config.webhook;
        let env = policy.config.environment;
        match webhook::check_headers(cfg, env, &source, &req, unix_now(host)) {
            Ok(()) => Flow::Next,
            Err(failure) => refuse(policy, ctx, host, &source, failure, &headers),
        }
    }

    /// The webhook source whose route is this request's normalised path, if any.
    pub(super) fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The 413 of a webhook route, as a webhook failure; None off webhook routes.
    pub(super) fn body_too_large(
        &mut self,
        policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
    ) -> Option<Flow> {
        let source = self.source.clone()?;
        let headers = ctx.headers.pairs().to_vec();
        Some(refuse(
            policy,
            ctx,
            host,
            &source,
            Failure::BodyTooLarge,
            &headers,
        ))
    }
}

/// Refuses a delivery: stat per source and reason, `webhook_validation_failure` event
/// (sanitised, with the pipeline's client IP), JSON reply with the original's message.
fn refuse(
    policy: &Policy,
    ctx: &mut RequestCtx,
    host: &mut dyn Host,
    source: &str,
    failure: Failure,
    headers: &[(String, String)],
) -> Flow {
    host.count(&stat_name(source, failure.reason()));
    let path = ctx
        .path
        .as_ref()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let client_ip = ctx.client_ip(policy, host).map(|ip| ip.to_string());
    let event = SecurityEvent::new(
        EVENT_TYPE,
        Severity::Medium,
        format!(
            "Webhook validation failed for {source}: {}",
            failure.message()
        ),
        serde_json::json!({
            "source": source,
            "reason": failure.reason(),
            "path": path,
            "client_ip": client_ip,
            "headers": sanitised_headers(headers),
        }),
    );
    ctx.emit(policy, host, event);
    Flow::Reply(Reply::detail(
        u32::from(failure.status()),
        failure.message(),
    ))
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::Config;
    use crate::filter::{Action, HttpFilter, Policy};
    use crate::host::mock::MockHost;
    use crate::webhook::replay::{init_replay_store, CAS_ATTEMPTS, REPLAY_SHARED_KEY};
    use crate::webhook::sign::{sign, SignRequest};
    use crate::webhook::Scheme;
    use std::rc::Rc;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &str = "stripe-test-secret";

    /// Development unless the test names the environment (the filter's own default is
    /// production).
    fn policy(json: &str, env: &[(&str, &str)]) -> Rc<Policy> {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "ENVIRONMENT") {
            env.push(("ENVIRONMENT", "development"));
        }
        let lookup = crate::testing::env_of(&env);
        Rc::new(Policy::new(Config::load(json.as_bytes(), &lookup).unwrap()))
    }

    fn prod() -> Rc<Policy> {
        policy(
            "{}",
            &[
                ("ENVIRONMENT", "production"),
                ("WEBHOOK_SECRET_STRIPE", SECRET),
                // Production needs it for the auth rate limiter's JWT routes.
                ("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij"),
            ],
        )
    }

    fn delivery(path: &str, body: &[u8], scheme: Scheme, secret: &str) -> MockHost {
        let mut host = MockHost::default();
        host.now_ms = u64::try_from(NOW).unwrap() * 1000;
        host.downstream_address = Some("[2001:db8::7]:55123".into());
        host.request_headers.push((":method".into(), "POST".into()));
        host.request_headers.push((":path".into(), path.into()));
        host.request_headers
            .push(("content-type".into(), "application/json".into()));
        let signed = sign(&SignRequest {
            scheme,
            secret,
            body,
            now: NOW,
            url: None,
            msg_id: None,
        })
        .unwrap();
        host.request_headers.extend(signed);
        host.request_body = body.to_vec();
        host
    }

    /// A Stripe delivery of `body` to a host sharing `prev`'s replay store (a later request,
    /// possibly on another worker).
    fn next_delivery(prev: &MockHost, body: &[u8]) -> MockHost {
        let mut host = delivery("/webhooks/stripe", body, Scheme::Stripe, SECRET);
        host.shared = prev.shared.clone();
        host
    }

    /// A Stripe delivery of `body` that `p` lets through (its key is now recorded).
    fn accepted(p: &Rc<Policy>, body: &[u8]) -> MockHost {
        let mut host = delivery("/webhooks/stripe", body, Scheme::Stripe, SECRET);
        assert_eq!(
            run(&mut HttpFilter::new(p.clone()), &mut host),
            Action::Continue
        );
        host
    }

    /// Headers, then the whole body in one callback.
    fn run(f: &mut HttpFilter, host: &mut MockHost) -> Action {
        let len = host.request_body.len();
        match f.on_request_headers(host, false) {
            Action::Continue => Action::Continue,
            Action::Pause if host.reply.is_some() => Action::Pause,
            Action::Pause => f.on_request_body(host, len, true),
        }
    }

    fn reply(host: &MockHost) -> (u32, serde_json::Value) {
        let r = host.reply.clone().expect("a local reply");
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn valid_delivery_is_held_then_passes_and_is_counted() {
        let p = prod();
        let mut host = delivery("/webhooks/stripe", b"{\"a\":1}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(p);
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 3, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 7, true), Action::Continue);
        assert!(host.reply.is_none());
        assert_eq!(
            host.counters.get("aura_guard.webhook.stripe.verified"),
            Some(&1)
        );
        assert!(host.shared.contains_key(REPLAY_SHARED_KEY));
    }

    #[test]
    fn invalid_signature_is_401_with_a_sanitised_event_and_a_stat() {
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, "wrong-secret");
        host.request_headers
            .push(("authorization".into(), "Bearer abc.def".into()));
        host.request_headers
            .push(("x-request-source".into(), "tests".into()));
        let mut f = HttpFilter::new(prod());
        assert_eq!(run(&mut f, &mut host), Action::Pause);
        assert_eq!(
            reply(&host),
            (
                401,
                serde_json::json!({"detail": "Invalid webhook signature"})
            )
        );
        assert_eq!(
            host.counters
                .get("aura_guard.webhook.stripe.invalid_signature"),
            Some(&1)
        );
        assert_eq!(
            host.counters
                .get("aura_guard.events.webhook_validation_failure"),
            Some(&1)
        );
        let event = &f.events()[0];
        assert_eq!(event.event_type, EVENT_TYPE);
        let m = &event.metadata;
        assert_eq!(m["source"], "stripe");
        assert_eq!(m["reason"], "invalid_signature");
        assert_eq!(m["path"], "/webhooks/stripe");
        assert_eq!(m["client_ip"], "2001:db8::7");
        assert_eq!(m["headers"]["stripe-signature"], "[REDACTED]");
        assert_eq!(m["headers"]["authorization"], "[REDACTED]");
        assert_eq!(m["headers"]["x-request-source"], "tests");
        assert_eq!(m["headers"][":method"], "POST");
        assert!(m["headers"].get(":path").is_none());
        let text = event.metadata.to_string();
        let sig = host.request_header("stripe-signature").unwrap();
        let v1 = sig.split("v1=").nth(1).unwrap();
        assert!(!text.contains(v1), "signature leaked: {text}");
        assert!(!text.contains("abc.def"), "token leaked: {text}");
    }

    /// The event log line of a refused delivery carrying every kind of secret (credential
    /// header, signature, password in the body, token in the query) names the request and
    /// none of the secrets.
    #[test]
    fn event_log_line_is_json_without_the_requests_secrets() {
        let body = br#"{"user":"a","password":"hunter2-body-secret"}"#;
        let mut host = delivery(
            "/webhooks/stripe?token=query-token-secret",
            body,
            Scheme::Stripe,
            "wrong-secret",
        );
        host.request_headers
            .push(("authorization".into(), "Bearer header.token.secret".into()));
        host.request_headers
            .push(("x-request-id".into(), "req-evt-1".into()));
        let mut f = HttpFilter::new(prod());
        assert_eq!(run(&mut f, &mut host), Action::Pause);
        assert_eq!(reply(&host).0, 401);
        let logs = host.logs.borrow();
        let lines: Vec<&str> = logs
            .iter()
            .filter_map(|(_, m)| m.strip_prefix(crate::filter::EVENT_LOG_PREFIX))
            .collect();
        assert_eq!(lines.len(), 1, "{logs:?}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["request_id"], "req-evt-1");
        assert_eq!(line["event_type"], EVENT_TYPE);
        assert_eq!(line["severity"], "medium");
        assert_eq!(line["client_ip"], "2001:db8::7");
        assert_eq!(line["route"], "/webhooks/stripe");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["metadata"]["reason"], "invalid_signature");
        assert_eq!(line["metadata"]["headers"]["authorization"], "[REDACTED]");
        assert_eq!(
            line["metadata"]["headers"]["stripe-signature"],
            "[REDACTED]"
        );
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
        let sig = host.request_header("stripe-signature").unwrap();
        let v1 = sig.split("v1=").nth(1).unwrap();
        for secret in [
            v1,
            "header.token.secret",
            "hunter2-body-secret",
            "query-token-secret",
            SECRET,
        ] {
            assert!(!lines[0].contains(secret), "{secret} leaked: {}", lines[0]);
        }
    }

    #[test]
    fn every_spelling_of_a_webhook_route_is_verified() {
        for path in [
            "/webhooks/stripe",
            "/Webhooks//STRIPE/",
            "/webhooks/./stripe?x=1",
            "/webhooks/%73tripe",
        ] {
            let mut host = delivery(path, b"{}", Scheme::Stripe, "wrong-secret");
            let mut f = HttpFilter::new(prod());
            run(&mut f, &mut host);
            assert_eq!(reply(&host).0, 401, "{path}");
        }
    }

    #[test]
    fn a_replay_is_refused_with_its_own_message() {
        let p = prod();
        let host = accepted(&p, b"{}");
        let mut again = next_delivery(&host, b"{}");
        let mut f = HttpFilter::new(p);
        assert_eq!(run(&mut f, &mut again), Action::Pause);
        assert_eq!(
            reply(&again),
            (
                401,
                serde_json::json!({"detail": "Webhook delivery already processed"})
            )
        );
        assert_eq!(
            again.counters.get("aura_guard.webhook.stripe.replay"),
            Some(&1)
        );
        assert_eq!(f.events()[0].metadata["reason"], "replay");
    }

    fn respond(f: &mut HttpFilter, host: &mut MockHost, status: &str) {
        host.response_headers
            .push((":status".into(), status.into()));
        f.on_response_headers(host);
    }

    #[test]
    fn upstream_failure_releases_the_key_so_the_retry_passes() {
        let p = prod();
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(p.clone());
        run(&mut f, &mut host);
        respond(&mut f, &mut host, "503");
        assert_eq!(
            host.counters
                .get("aura_guard.webhook.stripe.replay_released"),
            Some(&1)
        );
        let mut retry = next_delivery(&host, b"{}");
        let mut f = HttpFilter::new(p.clone());
        assert_eq!(run(&mut f, &mut retry), Action::Continue);
        respond(&mut f, &mut retry, "200");
        // Processed now: a further copy is a replay.
        let mut third = next_delivery(&retry, b"{}");
        run(&mut HttpFilter::new(p), &mut third);
        assert_eq!(reply(&third).0, 401);
    }

    #[test]
    fn a_later_local_reply_releases_the_key() {
        let p = prod();
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(p.clone());
        run(&mut f, &mut host);
        f.reply(&mut host, Reply::json(429, &serde_json::json!({})));
        let mut retry = next_delivery(&host, b"{}");
        assert_eq!(run(&mut HttpFilter::new(p), &mut retry), Action::Continue);
    }

    #[test]
    fn cas_conflicts_are_retried() {
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        init_replay_store(&mut host);
        host.cas_conflicts = CAS_ATTEMPTS - 1;
        assert_eq!(
            run(&mut HttpFilter::new(prod()), &mut host),
            Action::Continue
        );
        assert_eq!(host.cas_conflicts, 0);
    }

    #[test]
    fn a_replay_store_that_cannot_be_updated_fails_closed_with_503() {
        for contended in [true, false] {
            let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
            init_replay_store(&mut host);
            if contended {
                host.cas_conflicts = CAS_ATTEMPTS;
            } else {
                host.shared_unavailable = true;
            }
            assert_eq!(run(&mut HttpFilter::new(prod()), &mut host), Action::Pause);
            assert_eq!(
                reply(&host),
                (503, serde_json::json!({"detail": STORE_ERROR_MESSAGE}))
            );
            assert_eq!(
                host.counters
                    .get("aura_guard.webhook.stripe.replay_store_error"),
                Some(&1)
            );
        }
    }

    #[test]
    fn a_stripe_mac_resent_with_generic_headers_is_a_replay() {
        let p = prod();
        let host = accepted(&p, b"{}");
        let sig = host.request_header("stripe-signature").unwrap();
        let mac = sig.split("v1=").nth(1).unwrap().to_string();
        let mut again = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        again
            .request_headers
            .retain(|(n, _)| n != "Stripe-Signature");
        again
            .request_headers
            .push(("X-Webhook-Signature".into(), mac));
        again
            .request_headers
            .push(("X-Webhook-Timestamp".into(), NOW.to_string()));
        again.shared = host.shared.clone();
        run(&mut HttpFilter::new(p), &mut again);
        assert_eq!(
            reply(&again),
            (
                401,
                serde_json::json!({"detail": "Webhook delivery already processed"})
            )
        );
    }

    #[test]
    fn a_full_replay_store_refuses_new_deliveries_with_503_and_keeps_every_key() {
        let p = policy(
            r#"{"environment": "production", "webhook": {"replay": {"max_entries": 1}}}"#,
            &[
                ("WEBHOOK_SECRET_STRIPE", SECRET),
                ("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij"),
            ],
        );
        let first = accepted(&p, b"{\"n\":1}");
        let mut second = next_delivery(&first, b"{\"n\":2}");
        assert_eq!(
            run(&mut HttpFilter::new(p.clone()), &mut second),
            Action::Pause
        );
        assert_eq!(
            reply(&second),
            (503, serde_json::json!({"detail": STORE_ERROR_MESSAGE}))
        );
        assert_eq!(
            second
                .counters
                .get("aura_guard.webhook.stripe.replay_store_full"),
            Some(&1)
        );
        assert!(second
            .logs
            .borrow()
            .iter()
            .any(|(l, m)| *l == Level::Error && m.contains("replay store full")));
        // The recorded key was not evicted: the first delivery is still a replay.
        let mut replay = next_delivery(&second, b"{\"n\":1}");
        run(&mut HttpFilter::new(p), &mut replay);
        assert_eq!(reply(&replay).0, 401);
    }

    #[test]
    fn builtin_provider_routes_without_a_secret_are_refused_outside_development() {
        for env in ["production", "staging"] {
            let p = policy(
                "{}",
                &[
                    ("ENVIRONMENT", env),
                    ("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij"),
                ],
            );
            for source in ["github", "shopify", "slack", "standard"] {
                let path = format!("/webhooks/{source}");
                let mut host = delivery(&path, b"{}", Scheme::Generic, "x");
                host.request_headers.retain(|(n, _)| !n.starts_with("X-"));
                assert_eq!(
                    run(&mut HttpFilter::new(p.clone()), &mut host),
                    Action::Pause
                );
                assert_eq!(
                    reply(&host),
                    (
                        401,
                        serde_json::json!({"detail": "Webhook source not configured"})
                    ),
                    "{env} {source}"
                );
            }
        }
        let dev = policy("{}", &[]);
        let mut host = delivery("/webhooks/github", b"{}", Scheme::Generic, "x");
        assert_eq!(run(&mut HttpFilter::new(dev), &mut host), Action::Continue);
        assert_eq!(
            host.counters.get("aura_guard.webhook.github.unverified"),
            Some(&1)
        );
    }

    #[test]
    fn replay_check_can_be_disabled() {
        let p = policy(
            r#"{"webhook": {"replay": {"enabled": false}}}"#,
            &[("WEBHOOK_SECRET_STRIPE", SECRET)],
        );
        for _ in 0..2 {
            let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
            host.shared_unavailable = true;
            assert_eq!(
                run(&mut HttpFilter::new(p.clone()), &mut host),
                Action::Continue
            );
        }
    }

    #[test]
    fn unconfigured_source_passes_in_development_with_a_warning_only() {
        let p = policy("{}", &[]);
        let mut host = delivery("/webhooks/toast", b"{}", Scheme::Generic, "x");
        let mut f = HttpFilter::new(p);
        assert_eq!(run(&mut f, &mut host), Action::Continue);
        assert!(host
            .logs
            .borrow()
            .iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("UNVERIFIED")));
        assert_eq!(
            host.counters.get("aura_guard.webhook.toast.unverified"),
            Some(&1)
        );
        assert!(f.events().is_empty());
    }

    #[test]
    fn unconfigured_source_is_refused_in_production() {
        let mut host = delivery("/webhooks/toast", b"{}", Scheme::Generic, "x");
        run(&mut HttpFilter::new(prod()), &mut host);
        assert_eq!(
            reply(&host),
            (
                401,
                serde_json::json!({"detail": "Webhook source not configured"})
            )
        );
        assert_eq!(
            host.counters
                .get("aura_guard.webhook.toast.source_not_configured"),
            Some(&1)
        );
    }

    #[test]
    fn webhook_routes_use_their_own_body_limit() {
        let p = policy(
            r#"{"max_body_bytes": 8, "webhook": {"max_body_bytes": 16}}"#,
            &[("WEBHOOK_SECRET_STRIPE", SECRET)],
        );
        // 12 bytes: over the global limit, within the webhook one.
        let body = b"{\"a\":123456}";
        let mut host = delivery("/webhooks/stripe", body, Scheme::Stripe, SECRET);
        assert_eq!(
            run(&mut HttpFilter::new(p.clone()), &mut host),
            Action::Continue
        );
        // Streaming past the webhook limit.
        let body = b"{\"a\":\"0123456789abcdef\"}";
        let mut host = delivery("/webhooks/stripe", body, Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(p.clone());
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 16, false), Action::Pause);
        assert!(host.reply.is_none());
        assert_eq!(f.on_request_body(&mut host, 17, false), Action::Pause);
        assert_eq!(
            reply(&host),
            (413, serde_json::json!({"detail": "Webhook body too large"}))
        );
        assert_eq!(f.events()[0].metadata["reason"], "body_too_large");
        assert_eq!(
            host.counters
                .get("aura_guard.webhook.stripe.body_too_large"),
            Some(&1)
        );
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_at_the_headers() {
        let p = policy(
            r#"{"webhook": {"max_body_bytes": 16}}"#,
            &[("WEBHOOK_SECRET_STRIPE", SECRET)],
        );
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        host.request_headers
            .push(("content-length".into(), "17".into()));
        assert_eq!(
            HttpFilter::new(p).on_request_headers(&mut host, false),
            Action::Pause
        );
        assert_eq!(reply(&host).0, 413);
    }

    #[test]
    fn trailers_end_a_webhook_body() {
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(prod());
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(f.on_request_body(&mut host, 2, false), Action::Pause);
        assert_eq!(f.on_request_trailers(&mut host), Action::Continue);
        assert!(host.reply.is_none());
    }

    /// The headers of `host`'s delivery only, declaring a 1 MiB body that has not arrived.
    fn headers_only(mut host: MockHost) -> MockHost {
        host.request_headers
            .push(("content-length".into(), "1048576".into()));
        host.request_body.clear();
        host
    }

    /// (status, detail) of a delivery refused at the request headers, with its event and stat,
    /// and nothing of the body read.
    fn refused_at_headers(p: &Rc<Policy>, host: &mut MockHost, source: &str) -> (u32, String) {
        let mut f = HttpFilter::new(p.clone());
        assert_eq!(f.on_request_headers(host, false), Action::Pause);
        let (status, body) = reply(host);
        let reason = f.events()[0].metadata["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            host.counters
                .get(&format!("aura_guard.webhook.{source}.{reason}")),
            Some(&1)
        );
        assert!(host.body_reads.borrow().is_empty());
        // Envoy may still deliver body callbacks: they change nothing.
        assert_eq!(f.on_request_body(host, 1024, false), Action::Continue);
        (status, body["detail"].as_str().unwrap().to_string())
    }

    #[test]
    fn what_the_headers_decide_is_refused_before_any_body_arrives() {
        let p = prod();
        let stripe = || delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let without = |name: &str| {
            let mut h = stripe();
            h.request_headers.retain(|(n, _)| n != name);
            h
        };
        let with = |name: &str, value: &str| {
            let mut h = without("Stripe-Signature");
            h.request_headers.push((name.into(), value.into()));
            h
        };
        let old = (NOW - 301).to_string();
        let cases = [
            // No signature header of any of the source's schemes (stripe, generic).
            (without("Stripe-Signature"), "Missing webhook signature"),
            // A malformed one.
            (
                with("Stripe-Signature", "garbage"),
                "Invalid webhook signature",
            ),
            (
                with("Stripe-Signature", "t=1,v0=ab"),
                "Webhook timestamp too old",
            ),
            (
                with("Stripe-Signature", &format!("t={NOW}")),
                "Invalid webhook signature",
            ),
            (
                with("Stripe-Signature", "v1=ab"),
                "Invalid webhook timestamp",
            ),
            // A timestamp outside the window, in either direction.
            (
                with("Stripe-Signature", &format!("t={old},v1=ab")),
                "Webhook timestamp too old",
            ),
            (
                with("Stripe-Signature", &format!("t={},v1=ab", NOW + 301)),
                "Webhook timestamp too old",
            ),
        ];
        for (host, detail) in cases {
            let mut host = headers_only(host);
            let got = refused_at_headers(&p, &mut host, "stripe");
            assert_eq!(got, (401, detail.to_string()), "{:?}", host.request_headers);
        }
        // An unconfigured source outside development.
        let mut host = headers_only(delivery("/webhooks/toast", b"{}", Scheme::Generic, "x"));
        assert_eq!(
            refused_at_headers(&p, &mut host, "toast"),
            (401, "Webhook source not configured".to_string())
        );
    }

    #[test]
    fn a_refusal_at_the_headers_is_audited_as_a_security_event() {
        let p = prod();
        let mut host = delivery("/webhooks/github", b"{}", Scheme::Generic, "x");
        host.request_headers.retain(|(n, _)| !n.starts_with("X-"));
        let mut host = headers_only(host);
        let queue = (
            "aura-guard-audit".to_string(),
            "aura_guard_audit".to_string(),
        );
        host.queues.insert(queue.clone(), Vec::new());
        let mut f = HttpFilter::new(p);
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(reply(&host).0, 401);
        host.response_code = Some(401);
        f.on_log(&mut host);
        let records: Vec<serde_json::Value> = host.queues[&queue]
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["kind"], "security_event");
        assert_eq!(records[0]["type"], EVENT_TYPE);
        assert_eq!(records[0]["outcome"], "blocked");
    }

    #[test]
    fn a_later_scheme_of_the_source_is_checked_as_verification_would() {
        let p = prod();
        // stripe accepts [stripe, generic]: no Stripe-Signature, a generic one present.
        let generic = |ts: i64| {
            let mut h = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
            h.request_headers.retain(|(n, _)| n != "Stripe-Signature");
            h.request_headers
                .push(("X-Webhook-Signature".into(), "ab".into()));
            h.request_headers
                .push(("X-Webhook-Timestamp".into(), ts.to_string()));
            headers_only(h)
        };
        // In the window: only the body can decide, so it is held.
        let mut host = generic(NOW);
        let mut f = HttpFilter::new(p.clone());
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        assert!(host.reply.is_none());
        // Its timestamp outside the window: refused at once.
        let mut host = generic(NOW - 301);
        assert_eq!(
            refused_at_headers(&p, &mut host, "stripe"),
            (401, "Webhook timestamp too old".to_string())
        );
    }

    #[test]
    fn deliveries_the_body_decides_are_held() {
        // A well-formed signature (right or wrong is up to the body), Toast (its signed
        // timestamp is in the body), and an unconfigured source in development.
        let wrong = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, "wrong-secret");
        let toast_policy = policy("{}", &[("WEBHOOK_SECRET_TOAST", "t")]);
        let toast = delivery(
            "/webhooks/toast",
            br#"{"timestamp":"2022-03-01T15:04:05Z"}"#,
            Scheme::Toast,
            "t",
        );
        let dev = delivery("/webhooks/shopify", b"{}", Scheme::Generic, "x");
        for (p, host) in [
            (prod(), wrong),
            (toast_policy, toast),
            (policy("{}", &[]), dev),
        ] {
            let mut host = headers_only(host);
            let mut f = HttpFilter::new(p);
            assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
            assert!(host.reply.is_none(), "{:?}", host.reply);
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_is_still_413_when_also_unsigned() {
        let p = policy(
            r#"{"environment": "production", "webhook": {"max_body_bytes": 16}}"#,
            &[
                ("WEBHOOK_SECRET_STRIPE", SECRET),
                ("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij"),
            ],
        );
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        host.request_headers
            .retain(|(n, _)| n != "Stripe-Signature");
        host.request_headers
            .push(("content-length".into(), "17".into()));
        HttpFilter::new(p).on_request_headers(&mut host, false);
        assert_eq!(reply(&host).0, 413);
    }

    fn github_policy(replay: bool, secrets: &[&str]) -> Rc<Policy> {
        let config = serde_json::json!({
            "environment": "production",
            "webhook": {
                "replay": {"enabled": replay},
                "sources": {"github": {"secrets": secrets, "schemes": ["github"]}},
            },
        });
        policy(
            &config.to_string(),
            &[("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij")],
        )
    }

    /// A 1 MiB GitHub delivery in 64 chunks of 16 KiB (as Envoy reports them): bytes read
    /// from the host and bytes hashed.
    fn large_github_delivery(p: &Rc<Policy>, signed_with: &str) -> (MockHost, usize) {
        let body = vec![b'x'; 1 << 20];
        let mut host = delivery("/webhooks/github", &body, Scheme::Github, signed_with);
        let mut f = HttpFilter::new(p.clone());
        crate::webhook::schemes::hashed::take();
        assert_eq!(f.on_request_headers(&mut host, false), Action::Pause);
        for chunk in 1..64 {
            assert_eq!(
                f.on_request_body(&mut host, chunk << 14, false),
                Action::Pause
            );
        }
        f.on_request_body(&mut host, 1 << 20, true);
        (host, crate::webhook::schemes::hashed::take())
    }

    #[test]
    fn a_large_delivery_is_read_from_the_host_once_and_hashed_once_per_secret() {
        const MIB: usize = 1 << 20;
        let (host, hashed) = large_github_delivery(&github_policy(false, &["gh"]), "gh");
        assert!(host.reply.is_none());
        assert_eq!(*host.body_reads.borrow(), [(0, MIB)]);
        assert_eq!(hashed, MIB, "one HMAC pass, no replay key with replay off");
        // Replay on: one more pass, for the replay key of the verified delivery.
        let (host, hashed) = large_github_delivery(&github_policy(true, &["gh"]), "gh");
        assert!(host.reply.is_none());
        assert_eq!(hashed, 2 * MIB);
        // Every secret is tried once; a refused delivery gets no replay key.
        let (host, hashed) = large_github_delivery(&github_policy(true, &["a", "b"]), "c");
        assert_eq!(reply(&host).0, 401);
        assert_eq!(*host.body_reads.borrow(), [(0, MIB)]);
        assert_eq!(hashed, 2 * MIB);
    }

    #[test]
    fn other_paths_are_not_held() {
        let mut host = delivery("/webhooks/stripe-x", b"{}", Scheme::Stripe, "wrong");
        assert_eq!(
            HttpFilter::new(prod()).on_request_headers(&mut host, false),
            Action::Continue
        );
    }

    // --- fleet-wide mode (webhook.replay.mode "ratelimit") -------------------------------

    fn fleet(env: &str) -> Rc<Policy> {
        policy(
            r#"{"webhook": {"replay": {"mode": "ratelimit"}}}"#,
            &[
                ("ENVIRONMENT", env),
                ("WEBHOOK_SECRET_STRIPE", SECRET),
                ("JWT_SECRET_KEY", "jwt-test-secret-0123456789abcdefghij"),
            ],
        )
    }

    /// The service's answer to a check: `counts` per descriptor (released/attempt pairs).
    fn answer(counts: &[u32]) -> Vec<u8> {
        use crate::ratelimit::rls::{Code, DescriptorStatus, RateLimit};
        use crate::webhook::fleet_replay::REPLAY_COUNTER_LIMIT;
        use prost::Message;
        RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: counts
                .iter()
                .map(|c| DescriptorStatus {
                    code: Code::Ok as i32,
                    current_limit: Some(RateLimit {
                        requests_per_unit: REPLAY_COUNTER_LIMIT,
                        unit: 3,
                        name: String::new(),
                    }),
                    limit_remaining: REPLAY_COUNTER_LIMIT - c,
                    duration_until_reset: None,
                })
                .collect(),
            response_headers_to_add: vec![],
            request_headers_to_add: vec![],
        }
        .encode_to_vec()
    }

    fn sent(host: &MockHost, i: usize) -> RateLimitRequest {
        use prost::Message;
        RateLimitRequest::decode(host.grpc_calls[i].message.as_slice()).unwrap()
    }

    #[test]
    fn fleet_mode_holds_the_delivery_until_the_service_counts_it_new() {
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(fleet("production"));
        assert_eq!(run(&mut f, &mut host), Action::Pause);
        assert!(host.reply.is_none());
        assert_eq!(host.grpc_calls.len(), 1);
        let call = &host.grpc_calls[0];
        assert_eq!(
            (call.cluster.as_str(), call.timeout_ms, call.token),
            ("ratelimit", 20, Some(100))
        );
        let req = sent(&host, 0);
        assert_eq!(req.domain, "aura-guard");
        assert_eq!(req.descriptors.len(), 4);
        // Nothing goes upstream while the answer is outstanding.
        assert_eq!(f.on_request_body(&mut host, 2, true), Action::Pause);
        assert!(!host.shared.contains_key(REPLAY_SHARED_KEY), "no local set");
        f.on_grpc_response(&mut host, 100, Ok(&answer(&[0, 0, 0, 1])));
        assert_eq!(host.resumed, 1);
        assert!(host.reply.is_none());
        assert_eq!(
            host.counters.get("aura_guard.webhook.stripe.verified"),
            Some(&1)
        );
        // Processed: nothing is released.
        respond(&mut f, &mut host, "200");
        assert_eq!(host.grpc_calls.len(), 1);
    }

    #[test]
    fn fleet_mode_refuses_a_copy_another_envoy_accepted_and_undoes_its_attempt() {
        for counts in [[0, 0, 0, 2], [0, 1, 0, 1], [1, 2, 0, 1]] {
            let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
            let mut f = HttpFilter::new(fleet("production"));
            run(&mut f, &mut host);
            f.on_grpc_response(&mut host, 100, Ok(&answer(&counts)));
            assert_eq!(
                reply(&host),
                (
                    401,
                    serde_json::json!({"detail": "Webhook delivery already processed"})
                ),
                "{counts:?}"
            );
            assert_eq!(host.resumed, 0);
            assert_eq!(f.events()[0].metadata["reason"], "replay");
            let release = &host.grpc_calls[1];
            assert_eq!(release.token, None, "fire and forget");
            let rel = sent(&host, 1);
            let check = sent(&host, 0);
            assert_eq!(rel.descriptors.len(), 1);
            assert_eq!(rel.descriptors[0].entries, check.descriptors[2].entries);
            assert_eq!(rel.descriptors[0].hits_addend.unwrap().value, 1);
        }
    }

    #[test]
    fn fleet_mode_releases_the_key_when_the_upstream_fails() {
        let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
        let mut f = HttpFilter::new(fleet("production"));
        run(&mut f, &mut host);
        f.on_grpc_response(&mut host, 100, Ok(&answer(&[0, 0, 0, 1])));
        respond(&mut f, &mut host, "502");
        assert_eq!(host.grpc_calls.len(), 2);
        assert_eq!(
            sent(&host, 1).descriptors[0].entries,
            sent(&host, 0).descriptors[2].entries
        );
        assert_eq!(
            host.counters
                .get("aura_guard.webhook.stripe.replay_released"),
            Some(&1)
        );
    }

    #[test]
    fn fleet_mode_without_an_answer_fails_closed_in_production_and_open_in_development() {
        // gRPC error, garbage, an answer without the replay limits, no dispatch.
        let failures: [Option<Result<Vec<u8>, u32>>; 4] = [
            Some(Err(14)),
            Some(Ok(vec![0x12, 0x10, 0x00])),
            Some(Ok(answer(&[]))),
            None,
        ];
        for env in ["production", "development"] {
            for failure in &failures {
                let mut host = delivery("/webhooks/stripe", b"{}", Scheme::Stripe, SECRET);
                host.grpc_dispatch_fails = failure.is_none();
                let mut f = HttpFilter::new(fleet(env));
                let action = run(&mut f, &mut host);
                if let Some(result) = failure {
                    assert_eq!(action, Action::Pause);
                    let result = result.as_ref().map(Vec::as_slice).map_err(|e| *e);
                    f.on_grpc_response(&mut host, 100, result);
                }
                if env == "production" {
                    assert_eq!(
                        reply(&host),
                        (
                            503,
                            serde_json::json!({"detail": "Webhook replay check unavailable"})
                        ),
                        "{failure:?}"
                    );
                    assert_eq!(
                        host.counters
                            .get("aura_guard.webhook.stripe.replay_service_error"),
                        Some(&1)
                    );
                } else {
                    assert!(host.reply.is_none(), "{failure:?}");
                    assert_eq!(
                        host.counters
                            .get("aura_guard.webhook.stripe.replay_unchecked"),
                        Some(&1)
                    );
                }
            }
        }
    }
}
