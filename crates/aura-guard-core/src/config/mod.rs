//! Configuration types, one submodule per capability. Every type is serde with
//! `deny_unknown_fields` and has a `validate()` whose error names the offending field.

pub mod debug;
pub mod versions;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Deployment environment, from the `ENVIRONMENT` variable (lower-cased, default development),
/// as in the original `core/security_config.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Staging,
    Production,
}

impl Environment {
    /// Parses an `ENVIRONMENT` value. Unset gives development (the original's default);
    /// an unknown value is an error rather than a silent development, so a typo such as
    /// `prod` cannot open the debug endpoints.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Self::Development),
            Some(v) => match v.as_str() {
                "" | "development" => Ok(Self::Development),
                "staging" => Ok(Self::Staging),
                "production" => Ok(Self::Production),
                _ => Err(ConfigError::new(
                    "ENVIRONMENT",
                    format!(
                        "unknown environment {v:?}; expected development, staging or production"
                    ),
                )),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration error naming the field, displayed as `field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
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

    #[test]
    fn environment_defaults_to_development_when_unset_or_empty() {
        assert_eq!(
            Environment::from_env_value(None).unwrap(),
            Environment::Development
        );
        assert_eq!(
            Environment::from_env_value(Some("")).unwrap(),
            Environment::Development
        );
    }

    #[test]
    fn environment_is_case_insensitive_and_trimmed() {
        assert_eq!(
            Environment::from_env_value(Some(" Production ")).unwrap(),
            Environment::Production
        );
        assert_eq!(
            Environment::from_env_value(Some("STAGING")).unwrap(),
            Environment::Staging
        );
    }

    #[test]
    fn unknown_environment_is_an_error_naming_the_variable() {
        let err = Environment::from_env_value(Some("prod")).unwrap_err();
        assert_eq!(err.field, "ENVIRONMENT");
    }

    #[test]
    fn environment_serde_is_lower_case() {
        assert_eq!(
            serde_json::to_string(&Environment::Staging).unwrap(),
            "\"staging\""
        );
        let e: Environment = serde_json::from_str("\"production\"").unwrap();
        assert_eq!(e, Environment::Production);
    }

    #[test]
    fn env_list_trims_and_drops_empty_entries() {
        assert_eq!(split_env_list(" a, b ,,c ,"), vec!["a", "b", "c"]);
        assert!(split_env_list("").is_empty());
        assert!(split_env_list(" , ").is_empty());
    }
}
