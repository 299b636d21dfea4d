//! The filter's configuration: [`Config`] gathers each capability's section (defined in that
//! capability's `config.rs`). The plugin configuration is JSON in Envoy's
//! `PluginConfig.configuration`; the original's environment variables override it where they
//! exist (docs/original-behaviour.md). Parsing is strict (`deny_unknown_fields`) and
//! `Config::load` validates everything and loads the secrets, so a bad configuration is
//! refused at `on_configure` with an error naming the field.

use crate::audit::config::AuditConfig;
use crate::debug::config::DebugConfig;
use crate::headers::config::HeadersConfig;
use crate::jwt::JwtConfig;
use crate::ratelimit::config::RateLimitConfig;
use crate::versions::config::VersionsConfig;
use crate::webhook::config::WebhookConfig;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where the filter runs; decides which headers and protections apply (the original's
/// `ENVIRONMENT`, docs/original-behaviour.md#environment).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Staging,
    Production,
}

impl Environment {
    /// Parses the original's `ENVIRONMENT` value (case-insensitive, surrounding space ignored).
    pub fn parse(value: &str) -> Option<Environment> {
        match value.trim().to_ascii_lowercase().as_str() {
            "development" => Some(Environment::Development),
            "staging" => Some(Environment::Staging),
            "production" => Some(Environment::Production),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a comma list from an environment variable: entries trimmed, empty entries dropped.
/// (The original did not trim; trimming means `a, b` works as an operator expects.)
pub fn split_env_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A configuration problem: `field` is the dotted path of the offending setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Looks up an environment variable; the glue passes WASI environ, tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The filter's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Overridden by `ENVIRONMENT`.
    pub environment: Environment,
    pub headers: HeadersConfig,
    /// Largest request body the filter buffers when a stage needs the whole body (auth
    /// identities, audited operations); larger gets 413. Webhook routes use
    /// `webhook.max_body_bytes` instead. Envoy's own buffer limit (1 MiB by default) must not
    /// be smaller than either.
    pub max_body_bytes: usize,
    /// Debug-endpoint protection (docs/original-behaviour.md#debug-endpoints);
    /// `DEBUG_ENDPOINTS_*` override it.
    pub debug: DebugConfig,
    /// API-version security (docs/original-behaviour.md#api-versions);
    /// `DEPRECATED_API_VERSIONS` / `DISABLED_API_VERSIONS`.
    pub versions: VersionsConfig,
    /// Audit records (docs/original-behaviour.md#audit); `AUDIT_LOG_ENABLED` overrides
    /// `audit.enabled`.
    pub audit: AuditConfig,
    /// Webhook signature verification (docs/original-behaviour.md#webhooks and the providers'
    /// schemes).
    pub webhook: WebhookConfig,
    /// Auth rate limiting (docs/original-behaviour.md#rate-limiting) through envoyproxy/ratelimit;
    /// docs/ratelimit.md.
    pub ratelimit: RateLimitConfig,
    /// The application's JWT secret, read by rate limiting and audit alike.
    pub jwt: JwtConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            environment: Environment::default(),
            headers: HeadersConfig::default(),
            max_body_bytes: 1024 * 1024,
            debug: DebugConfig::default(),
            versions: VersionsConfig::default(),
            audit: AuditConfig::default(),
            webhook: WebhookConfig::default(),
            ratelimit: RateLimitConfig::default(),
            jwt: JwtConfig::default(),
        }
    }
}

impl Config {
    /// Parses the plugin configuration (empty means all defaults), applies the environment
    /// variables (secrets included), and validates. The error names the offending field.
    pub fn load(json: &[u8], env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut config = Config::parse(json)?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        if json.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Config::default());
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "configuration".to_string()
            } else {
                path
            };
            ConfigError::new(field, e.into_inner().to_string())
        })
    }

    fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(value) = env("ENVIRONMENT") {
            self.environment = Environment::parse(&value).ok_or_else(|| {
                ConfigError::new(
                    "ENVIRONMENT",
                    format!("unknown environment {value:?} (development | staging | production)"),
                )
            })?;
        }
        self.debug.apply_env(env)?;
        self.versions.apply_env(env)?;
        self.audit.apply_env(env)?;
        self.webhook.apply_env(env)?;
        self.ratelimit.apply_env(env)?;
        self.jwt.apply_env(env)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be greater than 0"));
        }
        self.headers.validate()?;
        self.debug.validate()?;
        self.versions.validate()?;
        self.audit.validate()?;
        self.webhook.validate()?;
        self.ratelimit.validate()?;
        self.jwt.validate()?;
        // Outside production a missing secret is tolerated: JWT users are then anonymous
        // (limited per IP only), and the glue warns (`jwt_users_anonymous`).
        if self.environment == Environment::Production
            && self.ratelimit.reads_jwt()
            && self.jwt.secret.is_none()
        {
            return Err(ConfigError::new(
                "jwt.secret_env",
                format!(
                    "environment variable {} is not set (a rate-limit route takes the user from a JWT)",
                    self.jwt.secret_env
                ),
            ));
        }
        Ok(())
    }

    /// A rate-limit route takes the user from a JWT but no secret was found (tolerated
    /// outside production): such users are anonymous. The glue logs a warning.
    pub fn jwt_users_anonymous(&self) -> bool {
        self.ratelimit.reads_jwt() && self.jwt.secret.is_none()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::env_of;

    #[test]
    fn empty_configuration_means_defaults_in_development() {
        let c = Config::load(b"", &env_of(&[])).unwrap();
        assert_eq!(c.environment, Environment::Development);
        let c = Config::load(b"{}", &env_of(&[])).unwrap();
        assert_eq!(c.environment, Environment::Development);
    }

    #[test]
    fn unknown_field_is_refused_naming_the_field() {
        let err = Config::load(br#"{"headers": {"bogus": 1}}"#, &env_of(&[])).unwrap_err();
        assert_eq!(err.field, "headers.bogus");
        assert!(err.message.contains("unknown field `bogus`"), "{err}");
        let err = Config::load(br#"{"nope": true}"#, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let err =
            Config::load(br#"{"headers": {"common": {"X-A": 5}}}"#, &env_of(&[])).unwrap_err();
        assert_eq!(err.field, "headers.common.X-A");
    }

    #[test]
    fn environment_variable_overrides_the_configuration() {
        let c = Config::load(
            br#"{"environment": "staging"}"#,
            &env_of(&[("ENVIRONMENT", " Production "), ("JWT_SECRET_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(c.environment, Environment::Production);
    }

    #[test]
    fn env_list_trims_and_drops_empty_entries() {
        assert_eq!(split_env_list(" a, b ,,c ,"), vec!["a", "b", "c"]);
        assert!(split_env_list("").is_empty());
        assert!(split_env_list(" , ").is_empty());
    }

    #[test]
    fn seed_variables_reach_debug_and_versions() {
        let c = Config::load(
            b"{}",
            &env_of(&[
                ("DEBUG_ENDPOINTS_ENABLED", "true"),
                ("DEBUG_ENDPOINTS_WHITELIST", "token"),
                ("DISABLED_API_VERSIONS", "v0"),
            ]),
        )
        .unwrap();
        assert!(c.debug.enabled);
        assert_eq!(c.debug.whitelist, vec!["token"]);
        assert_eq!(c.versions.disabled, vec!["v0"]);
    }

    #[test]
    fn the_jwt_secret_is_loaded_once_and_never_printed() {
        let c = Config::load(b"{}", &env_of(&[("JWT_SECRET_KEY", "s3cret-value")])).unwrap();
        assert_eq!(c.jwt.secret.as_ref().unwrap().expose(), "s3cret-value");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret-value"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"));
    }

    #[test]
    fn production_without_the_jwt_secret_fails_naming_the_setting_and_the_variable() {
        let err = Config::load(b"{}", &env_of(&[("ENVIRONMENT", "production")])).unwrap_err();
        assert!(
            err.field == "jwt.secret_env" && err.message.contains("JWT_SECRET_KEY"),
            "{err}"
        );
        // Without JWT routes the secret is optional.
        let no_jwt_routes = br#"{"ratelimit": {"routes": [
            {"name": "login", "path": "/auth/login", "requests": 5, "window_s": 300}]}}"#;
        let c = Config::load(no_jwt_routes, &env_of(&[("ENVIRONMENT", "production")])).unwrap();
        assert!(c.jwt.secret.is_none());
        assert!(!c.jwt_users_anonymous());
    }

    #[test]
    fn missing_jwt_secret_outside_production_makes_jwt_users_anonymous() {
        let c = Config::load(b"{}", &env_of(&[])).unwrap();
        assert!(c.jwt_users_anonymous());
        let c = Config::load(b"{}", &env_of(&[("JWT_SECRET_KEY", "k")])).unwrap();
        assert!(!c.jwt_users_anonymous());
        let err = Config::load(br#"{"jwt": {"secret_env": " "}}"#, &env_of(&[])).unwrap_err();
        assert_eq!(err.field, "jwt.secret_env");
    }

    #[test]
    fn unknown_environment_value_is_refused() {
        let err = Config::load(b"{}", &env_of(&[("ENVIRONMENT", "prod")])).unwrap_err();
        assert_eq!(err.field, "ENVIRONMENT");
        let err = Config::load(br#"{"environment": "prod"}"#, &env_of(&[])).unwrap_err();
        assert_eq!(err.field, "environment");
    }
}
