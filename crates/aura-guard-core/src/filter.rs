//! The per-request pipeline. The glue forwards each proxy-wasm callback here with a `Host`;
//! every decision is taken in this crate, so the whole flow is tested natively with `MockHost`.

use crate::config::Config;
use crate::headers::{uuid_v4, valid_request_id, SecurityHeaders};
use crate::host::Host;
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
}

impl Policy {
    pub fn new(config: Config) -> Self {
        let security_headers = SecurityHeaders::new(&config.headers, config.environment);
        Policy {
            config,
            security_headers,
        }
    }
}

/// State of one HTTP stream.
pub struct HttpFilter {
    policy: Rc<Policy>,
    request_id: Option<String>,
}

impl HttpFilter {
    pub fn new(policy: Rc<Policy>) -> Self {
        HttpFilter {
            policy,
            request_id: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Action {
        self.ensure_request_id(host);
        Action::Continue
    }

    pub fn on_request_body(
        &mut self,
        _host: &mut dyn Host,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Action {
        Action::Continue
    }

    pub fn on_request_trailers(&mut self, _host: &mut dyn Host) -> Action {
        Action::Continue
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Action {
        for h in self.policy.security_headers.headers() {
            if h.overwrite || host.response_header(&h.name).is_none() {
                host.set_response_header(&h.name, &h.value);
            }
        }
        if let Some(id) = &self.request_id {
            host.set_response_header(&self.policy.config.headers.request_id_header, id);
        }
        Action::Continue
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
        headers.extend(extra_headers.iter().cloned());
        host.send_reply(status, &headers, body.to_string().as_bytes());
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::headers::Conflict;
    use crate::config::Environment;
    use crate::host::mock::MockHost;

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
        let mut host = MockHost::default();
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
        let mut host = MockHost::default();
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
        let mut host = MockHost::default();
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
        let mut host = MockHost::default();
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
    fn local_reply_carries_security_headers_request_id_and_json() {
        let mut f = filter(Environment::Staging, Conflict::Overwrite);
        let mut host = MockHost::default();
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
}
