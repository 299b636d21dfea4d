//! Security headers (docs/original-behaviour.md#security-headers) and the request id. Decides
//! which headers a response gets; the pipeline applies them to upstream responses and to the
//! filter's own local replies.

use crate::headers::config::{comparable_header_name, Conflict};
pub mod config;

use crate::config::Environment;
use config::HeadersConfig;

/// A header to set on a response, and whether an existing upstream value may be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSet {
    pub name: String,
    pub value: String,
    pub overwrite: bool,
}

/// Computed once per configuration: the header list for the configured environment, and the
/// request headers stripped before the upstream.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Vec<HeaderSet>,
    /// `strip_request_headers`, in [`comparable_header_name`] form.
    strip_request: Vec<String>,
}

impl SecurityHeaders {
    pub fn new(cfg: &HeadersConfig, env: Environment) -> Self {
        let overwrite = cfg.on_conflict == Conflict::Overwrite;
        let headers = cfg
            .for_environment(env)
            .into_iter()
            .map(|(name, value)| HeaderSet {
                name,
                value,
                overwrite,
            })
            .collect();
        let mut strip_request: Vec<String> = Vec::new();
        for name in cfg
            .strip_request_headers
            .iter()
            .map(|h| comparable_header_name(h))
        {
            if !strip_request.contains(&name) {
                strip_request.push(name);
            }
        }
        SecurityHeaders {
            headers,
            strip_request,
        }
    }

    pub fn headers(&self) -> &[HeaderSet] {
        &self.headers
    }

    /// Whether any request header is to be stripped.
    pub fn strips_request_headers(&self) -> bool {
        !self.strip_request.is_empty()
    }

    /// The configured name (comparable form) a request header `name` is stripped as, if any.
    pub fn stripped_as(&self, name: &str) -> Option<&str> {
        // Compared byte by byte in the comparable form, without building it: this runs for
        // every header of every request.
        let comparable = |b: u8| match b {
            b'_' => b'-',
            b => b.to_ascii_lowercase(),
        };
        self.strip_request
            .iter()
            .find(|h| {
                h.len() == name.len()
                    && h.bytes().zip(name.bytes()).all(|(c, n)| c == comparable(n))
            })
            .map(String::as_str)
    }
}

/// Longest request id accepted from a client; anything longer is replaced.
const MAX_REQUEST_ID: usize = 128;

/// A client-supplied request id is passed through only when it is short and made of safe
/// characters, so it cannot smuggle log-forging or header-splitting input downstream.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Formats 16 random bytes as an RFC 4122 version-4 UUID.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::headers::config::{DEFAULT_CSP, DEFAULT_HSTS};

    fn names(env: Environment) -> Vec<String> {
        SecurityHeaders::new(&HeadersConfig::default(), env)
            .headers()
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    const ALWAYS: [&str; 5] = [
        "x-content-type-options",
        "x-frame-options",
        "x-xss-protection",
        "referrer-policy",
        "permissions-policy",
    ];

    #[test]
    fn development_gets_the_five_always_on_headers_only() {
        let n = names(Environment::Development);
        assert_eq!(n.len(), 5);
        for h in ALWAYS {
            assert!(n.contains(&h.to_string()), "{h}");
        }
    }

    #[test]
    fn staging_adds_hsts_but_not_csp() {
        let n = names(Environment::Staging);
        assert!(n.contains(&"strict-transport-security".to_string()));
        assert!(!n.contains(&"content-security-policy".to_string()));
        assert_eq!(n.len(), 6);
    }

    #[test]
    fn production_adds_the_exact_csp_and_hsts() {
        let set = SecurityHeaders::new(&HeadersConfig::default(), Environment::Production);
        let get = |name: &str| {
            set.headers()
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.value.clone())
        };
        assert_eq!(get("content-security-policy").as_deref(), Some(DEFAULT_CSP));
        assert_eq!(
            get("strict-transport-security").as_deref(),
            Some(DEFAULT_HSTS)
        );
        assert_eq!(get("x-xss-protection").as_deref(), Some("1; mode=block"));
        assert_eq!(set.headers().len(), 7);
        assert!(set.headers().iter().all(|h| h.overwrite));
    }

    #[test]
    fn keep_upstream_mode_marks_headers_as_fill_in_only() {
        let cfg = HeadersConfig {
            on_conflict: Conflict::KeepUpstream,
            ..HeadersConfig::default()
        };
        let set = SecurityHeaders::new(&cfg, Environment::Production);
        assert!(set.headers().iter().all(|h| !h.overwrite));
    }

    #[test]
    fn invalid_header_name_is_refused_naming_it() {
        let mut cfg = HeadersConfig::default();
        cfg.production.insert("Bad Header".into(), "x".into());
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "headers.production.Bad Header");
    }

    #[test]
    fn header_value_with_newline_is_refused() {
        let mut cfg = HeadersConfig::default();
        cfg.common.insert("X-A".into(), "a\r\nSet-Cookie: x".into());
        assert_eq!(cfg.validate().unwrap_err().field, "headers.common.X-A");
    }

    #[test]
    fn the_default_strip_list_is_the_url_and_method_overrides() {
        let set = SecurityHeaders::new(&HeadersConfig::default(), Environment::Production);
        for (sent, as_) in [
            ("X-Original-URL", "x-original-url"),
            ("x_rewrite_url", "x-rewrite-url"),
            ("X-HTTP-Method-Override", "x-http-method-override"),
            ("x-http-method", "x-http-method"),
            ("X_Method_Override", "x-method-override"),
            ("x-original-method", "x-original-method"),
        ] {
            assert_eq!(set.stripped_as(sent), Some(as_), "{sent}");
        }
        for kept in [
            "x-forwarded-for",
            "x-original-host",
            "x-http-methods",
            "x-method",
        ] {
            assert_eq!(set.stripped_as(kept), None, "{kept}");
        }
        let none = HeadersConfig {
            strip_request_headers: Vec::new(),
            ..HeadersConfig::default()
        };
        assert!(!SecurityHeaders::new(&none, Environment::Production).strips_request_headers());
    }

    #[test]
    fn strip_list_entries_must_be_header_names_and_not_framing_headers() {
        for (bad, why) in [
            ("Bad Header", "not a valid HTTP header name"),
            (":path", "not a valid HTTP header name"),
            ("", "not a valid HTTP header name"),
            ("Content-Length", "cannot be stripped"),
            ("transfer-encoding", "cannot be stripped"),
            ("Host", "cannot be stripped"),
        ] {
            let cfg = HeadersConfig {
                strip_request_headers: vec!["x-ok".into(), bad.into()],
                ..HeadersConfig::default()
            };
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.field, "headers.strip_request_headers[1]", "{bad}");
            assert!(err.message.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn request_id_passes_only_when_short_and_safe() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\nb"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    #[test]
    fn uuid_v4_has_version_and_variant_bits() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_v4([0; 16]);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }
}
