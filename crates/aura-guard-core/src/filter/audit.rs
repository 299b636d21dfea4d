//! The audit stage: facts gathered at the request headers, the sanitised body of a sensitive
//! operation captured, and at the end of the stream the request's records (its operation and
//! its security events) enqueued for the shipper without waiting (docs/audit.md).

use super::{Cx, Flow, Policy, RequestCtx, Stage};
use crate::audit::record::Completion;
use crate::audit::{RequestAudit, RequestStart};
use crate::host::{EnqueueError, Host, Level};

/// Records not enqueued because the shipper's heartbeat had passed (docs/robustness.md).
const SHIPPER_STALE: &str = "aura_guard.audit.shipper_stale";

#[derive(Debug, Default)]
pub(super) struct AuditStage {
    /// Audit facts of this request (None when audit is off).
    audit: Option<RequestAudit>,
}

impl Stage for AuditStage {
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        if policy.audit.enabled {
            let start = RequestStart {
                start_ms: host.now_ms(),
                request_id: &ctx.request_id,
                method: &ctx.method,
                raw_path: &ctx.raw_path,
                path: ctx.path.as_ref(),
                client_ip: ctx.client_ip(policy, host),
                headers: &ctx.headers,
            };
            self.audit = RequestAudit::begin(&policy.audit, &start);
        }
        Flow::Next
    }

    fn needs_body(&self, _policy: &Policy) -> bool {
        self.audit.as_ref().is_some_and(RequestAudit::wants_body)
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: &[u8]) -> Flow {
        let policy = cx.policy;
        if let Some(audit) = self.audit.as_mut() {
            audit.capture(&policy.audit, body);
        }
        Flow::Next
    }
}

impl AuditStage {
    /// End of the stream: the entries go to the shipper's queue. Enqueueing never waits; if
    /// the shipper is missing or not alive the entries are dropped, counted and logged.
    pub(super) fn on_log(
        &mut self,
        policy: &Policy,
        ctx: &RequestCtx,
        host: &mut dyn Host,
        replied: bool,
    ) {
        let Some(audit) = self.audit.take() else {
            return;
        };
        let done = Completion {
            status: host.response_code(),
            end_ms: host.now_ms(),
            replied_locally: replied,
        };
        // One per sensitive operation, labelled by Envoy's stats_tags (docs/metrics.md): the
        // operation types are configured, [a-z0-9_], so the label stays bounded.
        if let Some(op) = audit.operation() {
            host.count(&format!("aura_guard.audit.operations.{op}"));
        }
        let cfg = &policy.audit.config;
        for entry in audit.finish(&policy.audit, &ctx.events, &done) {
            let queued = serde_json::to_vec(&entry)
                .map_err(|_| EnqueueError::QueueUnavailable)
                .and_then(|bytes| host.enqueue_shared(&cfg.queue_vm_id, &cfg.queue_name, &bytes));
            let why = match queued {
                Ok(()) => {
                    host.count("aura_guard.audit.enqueued");
                    continue;
                }
                Err(EnqueueError::ShipperStale) => {
                    host.count(SHIPPER_STALE);
                    "the audit shipper is not alive (its heartbeat aura_guard.audit.alive_until_ms \
                     has passed; counted in aura_guard.audit.shipper_stale)"
                        .to_owned()
                }
                Err(EnqueueError::QueueUnavailable) => format!(
                    "shipper queue {}/{} unavailable",
                    cfg.queue_vm_id, cfg.queue_name
                ),
            };
            host.count("aura_guard.audit.enqueue_failed");
            host.count("aura_guard.audit.dropped");
            host.log(
                Level::Error,
                &format!(
                    "aura-guard: audit record {} {} dropped: {why}",
                    entry.kind, entry.record_type
                ),
            );
        }
    }
}
