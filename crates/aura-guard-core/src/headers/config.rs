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
}

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
        if !is_token(&self.request_id_header) {
            return Err(ConfigError::new(
                format!("{at}.request_id_header"),
                "not a valid HTTP header name",
            ));
        }
        Ok(())
    }
}

/// RFC 9110 token characters: what a header name may contain.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
