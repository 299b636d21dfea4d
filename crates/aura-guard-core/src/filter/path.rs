//! The path stage: an ambiguous path (docs/paths.md) is refused with 400 rather than guessed,
//! before any other stage decides on it.

use super::{Flow, Policy, Reply, RequestCtx, Stage};
use crate::host::{Host, Level};

pub(super) struct PathStage;

impl Stage for PathStage {
    fn on_request_headers(
        &mut self,
        _policy: &Policy,
        ctx: &mut RequestCtx,
        host: &mut dyn Host,
    ) -> Flow {
        let Some(e) = &ctx.path_error else {
            return Flow::Next;
        };
        host.count("aura_guard.path.refused");
        host.log(
            Level::Info,
            &format!("aura-guard: refused request path: {}", e.reason()),
        );
        Flow::Reply(Reply {
            status: u32::from(e.status()),
            body: e.body().into_bytes(),
            headers: Vec::new(),
        })
    }
}
