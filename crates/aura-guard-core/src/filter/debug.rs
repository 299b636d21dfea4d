//! The debug-endpoint stage: 404 outside their environments unless enabled and whitelisted
//! (docs/debug-and-versions.md).

use super::{Cx, Flow, Reply, Stage};
use crate::debug::{self, DebugDecision};
use crate::events::{SecurityEvent, Severity};

pub(super) struct DebugStage;

impl Stage for DebugStage {
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        let cfg = &policy.config;
        let Some(path) = &ctx.path else {
            return Flow::Next;
        };
        let DebugDecision::Block { endpoint } = debug::decide(&cfg.debug, cfg.environment, path)
        else {
            return Flow::Next;
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
            ctx.emit(policy, host, event);
        }
        Flow::Reply(Reply {
            status: u32::from(debug::BLOCKED_STATUS),
            body: debug::BLOCKED_BODY.as_bytes().to_vec(),
            headers: Vec::new(),
        })
    }
}
