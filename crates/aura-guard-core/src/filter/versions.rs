//! The API-version stage: disabled versions get 410, ambiguous version spellings get 400 while
//! a version is disabled, deprecated ones pass with warning headers
//! (docs/debug-and-versions.md).

use super::{Cx, Flow, Reply, Stage};
use crate::events::{SecurityEvent, Severity};
use crate::host::Level;
use crate::versions::{self, VersionDecision};

pub(super) struct VersionsStage;

impl Stage for VersionsStage {
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        let cfg = &policy.config.versions;
        let Some(path) = &ctx.path else {
            return Flow::Next;
        };
        let header = cfg.header.as_deref().and_then(|h| ctx.headers.get(h));
        let now = || i64::try_from(host.now_ms() / 1000).unwrap_or(i64::MAX);
        match versions::decide_with(cfg, path, header, now) {
            VersionDecision::None => Flow::Next,
            VersionDecision::Ambiguous => {
                host.count("aura_guard.versions.ambiguous");
                host.log(Level::Info, "aura-guard: refused an ambiguous API version");
                Flow::Reply(Reply {
                    status: u32::from(versions::AMBIGUOUS_STATUS),
                    body: versions::AMBIGUOUS_BODY.as_bytes().to_vec(),
                    headers: Vec::new(),
                })
            }
            VersionDecision::Deprecated { version, headers } => {
                host.count(&format!("aura_guard.versions.deprecated.{version}"));
                for (name, value) in headers {
                    ctx.add_response_header(&name, &value);
                }
                Flow::Next
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
                ctx.emit(policy, host, event);
                Flow::Reply(Reply {
                    status: u32::from(status),
                    body: body.into_bytes(),
                    headers: Vec::new(),
                })
            }
        }
    }
}
