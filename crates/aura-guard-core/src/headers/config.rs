//! Security-header configuration. Defaults are the original's exact values
//! (docs/original-behaviour.md#security-headers).

use crate::config::{ConfigError, Environment};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self' https://api.auraconnect.ai wss://api.auraconnect.ai; frame-ancestors 'none';";
pub const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains; preload";

/// What to do when the upstream already set a header the filter manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    /// The filter's value wins: the edge owns the security policy, so an application cannot
    /// weaken it by accident (default).
    #[default]
    Overwrite,
    /// The upstream's value is kept; the filter only fills in missing headers.
    KeepUpstream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Added in every environment.
    pub common: BTreeMap<String, String>,
    /// Added on top of `common` in development only.
    pub development: BTreeMap<String, String>,
    /// Added on top of `common` in staging only.
    pub staging: BTreeMap<String, String>,
    /// Added on top of `common` in production only.
    pub production: BTreeMap<String, String>,
    pub on_conflict: Conflict,
    /// Header carrying the request id; passed through when valid, else generated.
    pub request_id_header: String,
    /// Request headers removed before the request goes upstream: the URL and method overrides
    /// some frameworks honour, which would route the request somewhere the filter never
    /// judged (docs/request-hygiene.md). Matched case-insensitively, `_` as `-`. Empty: none.
    pub strip_request_headers: Vec<String>,
}

/// Headers that make an upstream route by another URL or method than the request line's
/// (docs/request-hygiene.md lists who honours each).
pub const DEFAULT_STRIP_REQUEST_HEADERS: [&str; 6] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            common: map(&[
                ("X-Content-Type-Options", "nosniff"),
                ("X-Frame-Options", "DENY"),
                ("X-XSS-Protection", "1; mode=block"),
                ("Referrer-Policy", "strict-origin-when-cross-origin"),
                (
                    "Permissions-Policy",
                    "geolocation=(), microphone=(), camera=()",
                ),
            ]),
            development: BTreeMap::new(),
            staging: map(&[("Strict-Transport-Security", DEFAULT_HSTS)]),
            production: map(&[
                ("Content-Security-Policy", DEFAULT_CSP),
                ("Strict-Transport-Security", DEFAULT_HSTS),
            ]),
            on_conflict: Conflict::Overwrite,
            request_id_header: "x-request-id".to_string(),
            strip_request_headers: DEFAULT_STRIP_REQUEST_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
        }
    }
}

impl HeadersConfig {
    /// The headers for one environment, names lower-cased (HTTP/2 form, as Envoy stores them).
    pub fn for_environment(&self, env: Environment) -> Vec<(String, String)> {
        let extra = match env {
            Environment::Development => &self.development,
            Environment::Staging => &self.staging,
            Environment::Production => &self.production,
        };
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in self.common.iter().chain(extra.iter()) {
            merged.insert(k.to_ascii_lowercase(), v.clone());
        }
        merged.into_iter().collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = "headers";
        let sets = [
            ("common", &self.common),
            ("development", &self.development),
            ("staging", &self.staging),
            ("production", &self.production),
        ];
        for (name, set) in sets {
            for (k, v) in set {
                if !is_token(k) {
                    return Err(ConfigError::new(
                        format!("{at}.{name}.{k}"),
                        "not a valid HTTP header name",
                    ));
                }
                if k.starts_with(':') || k.eq_ignore_ascii_case("host") {
                    return Err(ConfigError::new(
                        format!("{at}.{name}.{k}"),
                        "pseudo-headers and host cannot be set",
                    ));
                }
                if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(ConfigError::new(
                        format!("{at}.{name}.{k}"),
                        "value contains CR, LF or NUL",
                    ));
                }
            }
        }
        for (i, name) in self.strip_request_headers.iter().enumerate() {
            let field = || format!("{at}.strip_request_headers[{i}]");
            if !is_token(name) {
                return Err(ConfigError::new(field(), "not a valid HTTP header name"));
            }
            // Removing these would break the request itself, not an override.
            if ["host", "content-length", "transfer-encoding"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                return Err(ConfigError::new(
                    field(),
                    "host and the body framing headers cannot be stripped",
                ));
            }
        }
        if !is_token(&self.request_id_header) {
            return Err(ConfigError::new(
                format!("{at}.request_id_header"),
                "not a valid HTTP header name",
            ));
        }
        Ok(())
    }
}

/// The form header names are compared in: lower case, `_` as `-`. CGI-style servers (PHP,
/// Rack, WSGI) map both spellings to the same `HTTP_X_...` variable, so `X_Original_URL`
/// must be stripped as surely as `X-Original-URL`.
pub fn comparable_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

/// RFC 9110 token characters: what a header name may contain.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
