//! A secret read from the environment or the plugin configuration (webhook secrets, the JWT
//! secret, the user-hash key). Its `Debug` never shows the value, so configurations can be
//! logged; deliberately no `Serialize` and no `Display`.

use serde::Deserialize;
use std::fmt;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's text (Standard Webhooks keys are decoded from it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's bytes, for MAC keys.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Reads the secret named by the environment variable `name`; empty counts as unset.
pub fn from_env(env: crate::config::EnvLookup<'_>, name: &str) -> Option<Secret> {
    env(name).filter(|s| !s.is_empty()).map(Secret::new)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", Secret::new("x")), "[REDACTED]");
        assert_eq!(
            format!("{:?}", Some(Secret::new("hunter2"))),
            "Some([REDACTED])"
        );
    }

    #[test]
    fn empty_environment_value_is_no_secret() {
        let env = |k: &str| (k == "A").then(String::new);
        assert!(from_env(&env, "A").is_none());
        let env = |k: &str| (k == "A").then(|| "s".to_string());
        assert_eq!(
            from_env(&env, "A").map(|s| s.as_bytes().to_vec()),
            Some(b"s".to_vec())
        );
    }
}
