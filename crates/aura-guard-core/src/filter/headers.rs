//! The security-headers stage: the environment's security headers, the request id and the
//! per-request extra headers on every response, the filter's own replies included.

use super::{Cx, Policy, RequestCtx, Stage};
use crate::headers::{uuid_v4, valid_request_id};
use crate::host::Host;

pub(super) struct HeadersStage;

impl Stage for HeadersStage {
    fn on_response(&mut self, cx: &mut Cx<'_>, _status: Option<u32>) {
        let (policy, ctx, host) = (cx.policy, &mut *cx.req, &mut *cx.host);
        for h in policy.security_headers.headers() {
            if h.overwrite || host.response_header(&h.name).is_none() {
                host.set_response_header(&h.name, &h.value);
            }
        }
        for (name, value) in &ctx.extra_response_headers {
            host.set_response_header(name, value);
        }
        if !ctx.request_id.is_empty() {
            host.set_response_header(&policy.config.headers.request_id_header, &ctx.request_id);
        }
    }
}

/// The request id: the client's when valid, else a fresh UUID, also forwarded upstream so the
/// application logs the same id.
pub(super) fn ensure_request_id(policy: &Policy, host: &mut dyn Host) -> String {
    let name = &policy.config.headers.request_id_header;
    match host.request_header(name) {
        Some(id) if valid_request_id(&id) => id,
        _ => {
            let id = uuid_v4(host.random16());
            host.set_request_header(name, &id);
            id
        }
    }
}

/// Headers of a reply made by the filter: security headers, request id, JSON content type and
/// the per-request extra headers (Envoy may not run the response callback for a local reply).
pub(super) fn reply_headers(policy: &Policy, ctx: &RequestCtx) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = policy
        .security_headers
        .headers()
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    headers.push((
        policy.config.headers.request_id_header.clone(),
        ctx.request_id.clone(),
    ));
    headers.push(("content-type".to_string(), "application/json".to_string()));
    headers.extend(ctx.extra_response_headers.iter().cloned());
    headers
}
