//! The headers stage: on the request, the URL and method override headers are stripped before
//! any other stage runs (docs/request-hygiene.md); on every response, the filter's own replies
//! included, the environment's security headers, the request id and the per-request extra
//! headers.

use super::{Cx, Flow, Policy, RequestCtx, Stage};
use crate::headers::{uuid_v4, valid_request_id};
use crate::host::Host;

pub(super) struct HeadersStage;

impl Stage for HeadersStage {
    fn on_request_headers(&mut self, cx: &mut Cx<'_>) -> Flow {
        strip_request_headers(cx.policy, cx.req, cx.host);
        Flow::Next
    }

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

/// Removes `headers.strip_request_headers` in any spelling (case, `_` for `-`) and counts
/// the requests that carried each as `aura_guard.headers.stripped.<name>`: an upstream that
/// honours them would route the request by a URL or method the filter never judged.
fn strip_request_headers(policy: &Policy, ctx: &mut RequestCtx, host: &mut dyn Host) {
    let set = &policy.security_headers;
    if !set.strips_request_headers() {
        return;
    }
    let mut sent: Vec<String> = Vec::new();
    let mut configured: Vec<&str> = Vec::new();
    for (name, _) in ctx.headers.pairs() {
        if let Some(as_) = set.stripped_as(name) {
            if !configured.contains(&as_) {
                configured.push(as_);
            }
            if !sent.contains(name) {
                sent.push(name.clone());
            }
        }
    }
    for name in &sent {
        host.remove_request_header(name);
        ctx.headers.remove(name);
    }
    for as_ in configured {
        host.count(&format!("aura_guard.headers.stripped.{as_}"));
    }
}

/// The request id: the client's when valid, else a fresh UUID, also forwarded upstream so the
/// application logs the same id.
pub(super) fn ensure_request_id(
    policy: &Policy,
    ctx: &mut RequestCtx,
    host: &mut dyn Host,
) -> String {
    let name = &policy.config.headers.request_id_header;
    match ctx.headers.get(name) {
        Some(id) if valid_request_id(id) => id.to_string(),
        _ => {
            let id = uuid_v4(host.random16());
            host.set_request_header(name, &id);
            ctx.headers.set(name, &id);
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

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::{Action, HttpFilter, Policy};
    use crate::config::Config;
    use crate::host::mock::MockHost;
    use std::rc::Rc;

    fn run(config_json: &str, headers: &[(&str, &str)]) -> MockHost {
        let env = crate::testing::env_of(&[("ENVIRONMENT", "development")]);
        let config = Config::load(config_json.as_bytes(), &env).unwrap();
        let mut f = HttpFilter::new(Rc::new(Policy::new(config)));
        let mut host = MockHost::default();
        for (k, v) in [(":method", "GET"), (":path", "/api/v2/ping")]
            .iter()
            .chain(headers)
        {
            host.request_headers.push((k.to_string(), v.to_string()));
        }
        assert_eq!(f.on_request_headers(&mut host, true), Action::Continue);
        host
    }

    fn names(host: &MockHost) -> Vec<&str> {
        host.request_headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect()
    }

    #[test]
    fn url_and_method_overrides_are_stripped_in_every_spelling_and_counted() {
        let host = run(
            "{}",
            &[
                ("x-original-url", "/debug/token"),
                ("X-Rewrite-URL", "/debug/token"),
                ("x-http-method-override", "DELETE"),
                ("x_http_method", "DELETE"),
                ("X-HTTP-Method", "PATCH"),
                ("X_Method-Override", "PUT"),
                ("x-original-method", "DELETE"),
                ("x-original-url", "/second/value"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x-original-host", "kept.example"),
            ],
        );
        let left = names(&host);
        for gone in [
            "x-original-url",
            "X-Rewrite-URL",
            "x-http-method-override",
            "x_http_method",
            "X_Method-Override",
            "x-original-method",
        ] {
            assert!(
                !left.contains(&gone),
                "{gone} reached the upstream: {left:?}"
            );
        }
        assert!(left.contains(&"x-forwarded-for") && left.contains(&"x-original-host"));
        assert_eq!(
            host.request_header(":path").as_deref(),
            Some("/api/v2/ping")
        );
        assert_eq!(host.request_header(":method").as_deref(), Some("GET"));
        let c = |n: &str| {
            host.counters
                .get(&format!("aura_guard.headers.stripped.{n}"))
                .copied()
        };
        assert_eq!(c("x-original-url"), Some(1), "counted once per request");
        assert_eq!(c("x-rewrite-url"), Some(1));
        assert_eq!(c("x-http-method"), Some(1));
        assert_eq!(c("x-method-override"), Some(1));
    }

    #[test]
    fn an_empty_strip_list_leaves_every_header() {
        let cfg = r#"{"headers": {"strip_request_headers": []}}"#;
        let host = run(
            cfg,
            &[
                ("x-original-url", "/debug/token"),
                ("x-http-method-override", "DELETE"),
            ],
        );
        assert!(names(&host).contains(&"x-original-url"));
        assert!(names(&host).contains(&"x-http-method-override"));
        assert!(host.counters.is_empty(), "{:?}", host.counters);
    }

    #[test]
    fn a_custom_strip_list_replaces_the_default() {
        let cfg = r#"{"headers": {"strip_request_headers": ["X-Forwarded-Prefix"]}}"#;
        let host = run(
            cfg,
            &[("x-forwarded-prefix", "/admin"), ("x-original-url", "/x")],
        );
        assert!(!names(&host).contains(&"x-forwarded-prefix"));
        assert!(names(&host).contains(&"x-original-url"));
        assert_eq!(
            host.counters
                .get("aura_guard.headers.stripped.x-forwarded-prefix"),
            Some(&1)
        );
    }
}
