//! The filter's configuration: [`Config`] gathers each capability's section (defined in that
//! capability's `config.rs`). The plugin configuration is JSON in Envoy's
//! `PluginConfig.configuration`; the original's environment variables override it where they
//! exist (docs/original-behaviour.md). Parsing is strict (`deny_unknown_fields`) and
//! `Config::load` validates everything and loads the secrets, so a bad configuration is
//! refused at `on_configure` with an error naming the field. Nothing named means production
//! (README, "Configuration"): a deployment that forgets `ENVIRONMENT` gets every protection.

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
/// `ENVIRONMENT`, docs/original-behaviour.md#environment). The default is production: the
/// original defaulted to development, which opened debug endpoints, skipped webhook
/// verification, failed the rate limiter open and audited nothing wherever the variable was
/// forgotten.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    #[default]
    Production,
}

/// What named [`Config::environment`]; the glue warns when nothing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvironmentSource {
    /// Neither `ENVIRONMENT` nor the plugin configuration: production.
    #[default]
    Unset,
    Configuration,
    Variable,
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

/// The shortest JWT secret production accepts: an HS256 key must be at least as long as the
/// hash output, 256 bits (RFC 7518 §3.2); shorter ones are within reach of offline guessing
/// from any one token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// JWT secrets from demos and documentation, refused in production whatever their length
/// (compared lower-cased and trimmed): `make run`'s former fallback, deploy/README.md's former
/// placeholder, jwt.io's example key, and common framework placeholders.
const DEMO_JWT_SECRETS: &[&str] = &[
    "demo-jwt-secret",
    "change-me-to-a-long-random-secret",
    "your-256-bit-secret",
    "your-secret-key",
    "your-jwt-secret",
    "secret",
    "secretkey",
    "jwt-secret",
    "supersecret",
];

/// Placeholder words (compared lower-cased, without `-` and `_`): a secret containing one was
/// copied from a template, not generated.
const PLACEHOLDER_WORDS: &[&str] = &["changeme", "replaceme", "changethis"];

/// Why production refuses `secret` as the JWT key, if it does. The answer never contains it.
fn weak_jwt_secret(secret: &str) -> Option<String> {
    let lower = secret.trim().to_ascii_lowercase();
    let squashed: String = lower.chars().filter(|c| !matches!(c, '-' | '_')).collect();
    if DEMO_JWT_SECRETS.contains(&lower.as_str())
        || PLACEHOLDER_WORDS.iter().any(|w| squashed.contains(w))
    {
        return Some(
            "is a known demo or placeholder value; production refuses it (generate one, e.g. \
             `openssl rand -hex 32`)"
                .to_string(),
        );
    }
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Some(format!(
            "is shorter than {MIN_JWT_SECRET_BYTES} bytes (HS256 needs a 256-bit key, RFC 7518 \
             section 3.2); production refuses it"
        ));
    }
    None
}

/// The filter's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the filter runs, resolved by [`Config::load`]: `ENVIRONMENT`, else the plugin
    /// configuration's `environment`, else production.
    #[serde(skip)]
    pub environment: Environment,
    /// The plugin configuration's `environment` as written (`None`: not named). Read
    /// `environment` instead.
    #[serde(rename = "environment")]
    pub configured_environment: Option<Environment>,
    /// What named `environment` (set by [`Config::load`], not configurable).
    #[serde(skip)]
    pub environment_source: EnvironmentSource,
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

/// Production with nothing named: what `Config::load` makes of an empty configuration without
/// variables (unit tests that need another environment say so).
impl Default for Config {
    fn default() -> Self {
        Config {
            environment: Environment::default(),
            configured_environment: None,
            environment_source: EnvironmentSource::default(),
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
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "configuration".to_string()
            } else {
                path
            };
            ConfigError::new(field, e.into_inner().to_string())
        })?;
        if let Some(environment) = config.configured_environment {
            config.environment = environment;
            config.environment_source = EnvironmentSource::Configuration;
        }
        Ok(config)
    }

    fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(value) = env("ENVIRONMENT") {
            self.environment = Environment::parse(&value).ok_or_else(|| {
                ConfigError::new(
                    "ENVIRONMENT",
                    format!("unknown environment {value:?} (development | staging | production)"),
                )
            })?;
            self.environment_source = EnvironmentSource::Variable;
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
        // A demo or short secret lets anyone who knows or guesses it sign tokens as any user
        // (charging their rate-limit counters, naming them in audit records).
        if self.environment == Environment::Production {
            if let Some(reason) = self
                .jwt
                .secret
                .as_ref()
                .and_then(|s| weak_jwt_secret(s.expose()))
            {
                return Err(ConfigError::new(
                    "jwt.secret_env",
                    format!("the secret in {} {reason}", self.jwt.secret_env),
                ));
            }
        }
        Ok(())
    }

    /// The configure-time warning when nothing named the environment, naming `ENVIRONMENT`.
    pub fn environment_warning(&self) -> Option<String> {
        (self.environment_source == EnvironmentSource::Unset).then(|| {
            format!(
                "aura-guard: ENVIRONMENT is not set (nor the plugin configuration's \
                 `environment`): running as {}; set ENVIRONMENT=development for a development \
                 stack",
                self.environment
            )
        })
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

    /// A secret production accepts (40 bytes, not a demo value).
    const GOOD_SECRET: &str = "unit-test-jwt-secret-0123456789abcdefghi";

    #[test]
    fn no_environment_anywhere_means_production_with_a_warning_naming_environment() {
        for json in [&b""[..], b" ", b"{}", br#"{"headers": {}}"#] {
            let c = Config::load(json, &env_of(&[("JWT_SECRET_KEY", GOOD_SECRET)])).unwrap();
            assert_eq!(c.environment, Environment::Production);
            assert_eq!(c.environment_source, EnvironmentSource::Unset);
            let warning = c.environment_warning().unwrap();
            assert!(
                warning.contains("ENVIRONMENT is not set") && warning.contains("production"),
                "{warning}"
            );
        }
        // Production's rules apply to the default: no JWT secret is refused.
        let err = Config::load(b"{}", &env_of(&[])).unwrap_err();
        assert_eq!(err.field, "jwt.secret_env");
    }

    #[test]
    fn a_named_environment_is_kept_without_the_warning() {
        let c = Config::load(br#"{"environment": "development"}"#, &env_of(&[])).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.environment_source, EnvironmentSource::Configuration);
        assert_eq!(c.environment_warning(), None);
        let c = Config::load(b"", &env_of(&[("ENVIRONMENT", "development")])).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.environment_source, EnvironmentSource::Variable);
        assert_eq!(c.environment_warning(), None);
        // Named production is production without the warning.
        let c = Config::load(
            br#"{"environment": "production"}"#,
            &env_of(&[("JWT_SECRET_KEY", GOOD_SECRET)]),
        )
        .unwrap();
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.environment_warning(), None);
    }

    #[test]
    fn the_environment_key_is_found_only_at_the_top_level() {
        // A nested "environment" (here a header name) names nothing.
        let json = br#"{"headers": {"common": {"environment": "development"}}}"#;
        let c = Config::load(json, &env_of(&[("JWT_SECRET_KEY", GOOD_SECRET)])).unwrap();
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.environment_source, EnvironmentSource::Unset);
    }

    #[test]
    fn production_refuses_a_short_jwt_secret_without_printing_it() {
        let short = "a-31-byte-secret-0123456789abcd";
        assert_eq!(short.len(), MIN_JWT_SECRET_BYTES - 1);
        for env in [
            env_of(&[("JWT_SECRET_KEY", short)]),
            env_of(&[("ENVIRONMENT", "production"), ("JWT_SECRET_KEY", short)]),
        ] {
            let err = Config::load(b"{}", &env).unwrap_err();
            assert_eq!(err.field, "jwt.secret_env");
            assert!(err.message.contains("shorter than 32 bytes"), "{err}");
            assert!(err.message.contains("JWT_SECRET_KEY"), "{err}");
            assert!(!err.to_string().contains(short), "{err}");
        }
        // Exactly 32 bytes is enough; so is a multi-byte secret of 32 bytes.
        let exact = "a-32-byte-secret-0123456789abcde";
        assert_eq!(exact.len(), MIN_JWT_SECRET_BYTES);
        assert!(Config::load(b"{}", &env_of(&[("JWT_SECRET_KEY", exact)])).is_ok());
        // Even without a JWT route the secret is checked (audit reads user ids with it).
        let no_jwt_routes = br#"{"ratelimit": {"routes": [
            {"name": "login", "path": "/auth/login", "requests": 5, "window_s": 300}]}}"#;
        let err = Config::load(no_jwt_routes, &env_of(&[("JWT_SECRET_KEY", short)])).unwrap_err();
        assert_eq!(err.field, "jwt.secret_env");
    }

    #[test]
    fn production_refuses_demo_and_placeholder_jwt_secrets_whatever_their_length() {
        for demo in [
            "demo-jwt-secret",
            "change-me-to-a-long-random-secret",
            " Change-Me-To-A-Long-Random-Secret ",
            "your-256-bit-secret",
            "secret",
            "CHANGE_ME_0123456789abcdef0123456789abcdef",
            "please-replace-me-with-a-generated-secret",
            "changethis-0123456789abcdef0123456789abcdef",
        ] {
            let err = Config::load(b"{}", &env_of(&[("JWT_SECRET_KEY", demo)])).unwrap_err();
            assert_eq!(err.field, "jwt.secret_env", "{demo}");
            assert!(err.message.contains("demo or placeholder"), "{demo}: {err}");
            // ("secret" is a word of the message itself.)
            if demo != "secret" {
                assert!(!err.to_string().contains(demo.trim()), "{err}");
            }
        }
    }

    #[test]
    fn outside_production_demo_and_short_secrets_are_accepted() {
        for env in ["development", "staging"] {
            for secret in ["demo-jwt-secret", "k"] {
                let c = Config::load(
                    b"{}",
                    &env_of(&[("ENVIRONMENT", env), ("JWT_SECRET_KEY", secret)]),
                )
                .unwrap();
                assert_eq!(c.jwt.secret.as_ref().unwrap().expose(), secret);
            }
        }
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
            &env_of(&[
                ("ENVIRONMENT", " Production "),
                ("JWT_SECRET_KEY", GOOD_SECRET),
            ]),
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
                ("ENVIRONMENT", "development"),
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
        let c = Config::load(
            b"{}",
            &env_of(&[
                ("ENVIRONMENT", "development"),
                ("JWT_SECRET_KEY", "s3cret-value"),
            ]),
        )
        .unwrap();
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
        let dev = br#"{"environment": "development"}"#;
        let c = Config::load(dev, &env_of(&[])).unwrap();
        assert!(c.jwt_users_anonymous());
        let c = Config::load(dev, &env_of(&[("JWT_SECRET_KEY", "k")])).unwrap();
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
