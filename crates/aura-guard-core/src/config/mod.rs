//! Every configuration type of the filter, in one place. The plugin configuration is JSON in
//! Envoy's `PluginConfig.configuration`; the seed's environment variables override it where
//! they exist. Parsing is strict (`deny_unknown_fields`) and `Config::load` validates
//! everything, so a bad configuration is refused at `on_configure` with an error naming the field.

// Environment, ConfigError and EnvLookup are copied verbatim from the lead's config/mod.rs so the
// merge only needs the `pub mod webhook;` line.
pub mod webhook;

use serde::Deserialize;
use std::fmt;

pub use webhook::WebhookConfig;

/// Where the filter runs; decides which headers and protections apply (seed: `ENVIRONMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Staging,
    Production,
}

impl Environment {
    /// Parses the seed's `ENVIRONMENT` value (case-insensitive, surrounding space ignored).
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

/// Looks up an environment variable; the glue passes WASI environ, tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;
