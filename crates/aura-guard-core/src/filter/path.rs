//! The path stage: an ambiguous path (docs/paths.md) is refused with 400 rather than guessed,
//! before any other stage decides on it.

use super::{Cx, Flow, Reply, Stage};
use crate::host::Level;

pub(super) struct PathStage;

impl Stage for PathStage {
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        let (ctx, host) = (&mut *cx.req, &mut *cx.host);
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
