//! Debug-endpoint protection settings (original: `@protect_debug_endpoint`,
//! `DEBUG_ENDPOINTS_ENABLED`, `DEBUG_ENDPOINTS_WHITELIST`).

use crate::config::{split_env_list, ConfigError, EnvLookup, Environment};
use crate::path::normalise;
use serde::{Deserialize, Serialize};

/// Where debug endpoints live and who may reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Canonical path prefixes (segment-wise) whose every path is a debug endpoint.
    pub prefixes: Vec<String>,
    /// Named endpoints with their own environments. A named endpoint also covers the paths
    /// under it, and need not lie under a prefix.
    pub endpoints: Vec<DebugEndpoint>,
    /// Environments for paths under a prefix that match no named endpoint.
    pub default_allowed_envs: Vec<Environment>,
    /// `DEBUG_ENDPOINTS_ENABLED`: opening a blocked endpoint needs this AND the whitelist.
    pub enabled: bool,
    /// `DEBUG_ENDPOINTS_WHITELIST`: endpoint names or aliases (case-insensitive), or paths
    /// (starting with `/`, compared after normalisation, exact).
    pub whitelist: Vec<String>,
}

/// A named debug endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugEndpoint {
    pub name: String,
    /// Canonical path (lower-case, no trailing slash).
    pub path: String,
    #[serde(default = "default_allowed_envs")]
    pub allowed_envs: Vec<Environment>,
    /// Other names the whitelist accepts for this endpoint, e.g. the original's Python
    /// function name `debug_token`, so existing `DEBUG_ENDPOINTS_WHITELIST` values keep working.
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn default_allowed_envs() -> Vec<Environment> {
    vec![Environment::Development]
}

impl Default for DebugConfig {
    fn default() -> Self {
        Self {
            prefixes: vec!["/debug".to_owned()],
            endpoints: vec![DebugEndpoint {
                name: "token".to_owned(),
                path: "/debug/token".to_owned(),
                allowed_envs: default_allowed_envs(),
                aliases: vec!["debug_token".to_owned()],
            }],
            default_allowed_envs: default_allowed_envs(),
            enabled: false,
            whitelist: Vec::new(),
        }
    }
}

impl DebugConfig {
    /// Applies `DEBUG_ENDPOINTS_ENABLED` (true iff the value lower-cased is exactly `true`,
    /// as in the original, so a typo fails closed) and `DEBUG_ENDPOINTS_WHITELIST` (comma
    /// list, entries trimmed, empty entries dropped; replaces the configured list). Unset
    /// variables leave the configured values alone.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(v) = env("DEBUG_ENDPOINTS_ENABLED") {
            self.enabled = v.to_lowercase() == "true";
        }
        if let Some(v) = env("DEBUG_ENDPOINTS_WHITELIST") {
            self.whitelist = split_env_list(&v);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, prefix) in self.prefixes.iter().enumerate() {
            let field = format!("debug.prefixes[{i}]");
            check_canonical(&field, prefix)?;
            if prefix == "/" {
                return Err(ConfigError::new(
                    field,
                    "must not be '/' (every request would be a debug endpoint)",
                ));
            }
        }
        let mut names: Vec<String> = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let field = format!("debug.endpoints[{i}]");
            for name in std::iter::once(&ep.name).chain(ep.aliases.iter()) {
                let trimmed = name.trim();
                if trimmed.is_empty() || trimmed != name || name.contains(',') {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{name:?}: names and aliases must be non-empty, without surrounding spaces or commas"),
                    ));
                }
                let lower = name.to_lowercase();
                if names.contains(&lower) {
                    return Err(ConfigError::new(
                        format!("{field}.name"),
                        format!("{name:?} is used by more than one endpoint"),
                    ));
                }
                names.push(lower);
            }
            check_canonical(&format!("{field}.path"), &ep.path)?;
            if ep.path == "/" {
                return Err(ConfigError::new(format!("{field}.path"), "must not be '/'"));
            }
        }
        for (i, entry) in self.whitelist.iter().enumerate() {
            let field = format!("debug.whitelist[{i}]");
            if entry.trim().is_empty() {
                return Err(ConfigError::new(field, "must not be empty"));
            }
            if entry.starts_with('/') {
                normalise(entry).map_err(|e| ConfigError::new(field, format!("{entry:?}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// Configured paths must already be canonical so that matching is a plain segment compare.
fn check_canonical(field: &str, path: &str) -> Result<(), ConfigError> {
    let normalised =
        normalise(path).map_err(|e| ConfigError::new(field, format!("{path:?}: {e}")))?;
    if normalised.as_str() != path || normalised.query().is_some() {
        return Err(ConfigError::new(
            field,
            format!(
                "{path:?} is not a canonical path; write {:?} (lower-case, no query, no trailing slash)",
                normalised.as_str()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::env_of as env;

    #[test]
    fn defaults_match_the_original() {
        let cfg = DebugConfig::default();
        assert_eq!(cfg.prefixes, vec!["/debug"]);
        assert_eq!(cfg.endpoints.len(), 1);
        assert_eq!(cfg.endpoints[0].name, "token");
        assert_eq!(cfg.endpoints[0].path, "/debug/token");
        assert_eq!(
            cfg.endpoints[0].allowed_envs,
            vec![Environment::Development]
        );
        assert_eq!(cfg.default_allowed_envs, vec![Environment::Development]);
        assert!(!cfg.enabled);
        assert!(cfg.whitelist.is_empty());
        cfg.validate().unwrap();
    }

    #[test]
    fn enabled_only_for_case_insensitive_true() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("True", true),
            ("1", false),
            ("yes", false),
            (" true", false),
            ("", false),
        ] {
            let mut cfg = DebugConfig::default();
            cfg.apply_env(&env(&[("DEBUG_ENDPOINTS_ENABLED", value)]))
                .unwrap();
            assert_eq!(cfg.enabled, expected, "value {value:?}");
        }
    }

    #[test]
    fn enabled_false_from_env_overrides_enabled_config() {
        let mut cfg = DebugConfig {
            enabled: true,
            ..DebugConfig::default()
        };
        cfg.apply_env(&env(&[("DEBUG_ENDPOINTS_ENABLED", "false")]))
            .unwrap();
        assert!(!cfg.enabled);
    }

    #[test]
    fn whitelist_from_env_is_trimmed_and_drops_empty_entries() {
        let mut cfg = DebugConfig::default();
        cfg.apply_env(&env(&[(
            "DEBUG_ENDPOINTS_WHITELIST",
            " token , /debug/info,, ",
        )]))
        .unwrap();
        assert_eq!(cfg.whitelist, vec!["token", "/debug/info"]);
        cfg.validate().unwrap();
    }

    #[test]
    fn unset_variables_keep_configured_values() {
        let mut cfg = DebugConfig {
            enabled: true,
            whitelist: vec!["token".into()],
            ..DebugConfig::default()
        };
        cfg.apply_env(&env(&[])).unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.whitelist, vec!["token"]);
    }

    #[test]
    fn empty_whitelist_variable_clears_the_list() {
        let mut cfg = DebugConfig {
            whitelist: vec!["token".into()],
            ..DebugConfig::default()
        };
        cfg.apply_env(&env(&[("DEBUG_ENDPOINTS_WHITELIST", "")]))
            .unwrap();
        assert!(cfg.whitelist.is_empty());
    }

    #[test]
    fn non_canonical_prefix_is_rejected_with_the_canonical_suggestion() {
        let cfg = DebugConfig {
            prefixes: vec!["/Debug/".into()],
            ..DebugConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "debug.prefixes[0]");
        assert!(err.message.contains("\"/debug\""), "{err}");
    }

    #[test]
    fn root_prefix_is_rejected() {
        let cfg = DebugConfig {
            prefixes: vec!["/".into()],
            ..DebugConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "debug.prefixes[0]");
    }

    #[test]
    fn endpoint_path_must_be_canonical() {
        let mut cfg = DebugConfig::default();
        cfg.endpoints[0].path = "/debug/../token".into();
        assert_eq!(cfg.validate().unwrap_err().field, "debug.endpoints[0].path");
    }

    #[test]
    fn duplicate_endpoint_names_are_rejected() {
        let mut cfg = DebugConfig::default();
        let mut second = cfg.endpoints[0].clone();
        second.name = "TOKEN".into();
        second.aliases.clear();
        second.path = "/debug/other".into();
        cfg.endpoints.push(second);
        assert_eq!(cfg.validate().unwrap_err().field, "debug.endpoints[1].name");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<DebugConfig>(r#"{"prefix":["/debug"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn partial_json_keeps_defaults_for_missing_fields() {
        let cfg: DebugConfig = serde_json::from_str(
            r#"{"endpoints":[{"name":"info","path":"/internal/info","allowed_envs":["development","staging"]}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.prefixes, vec!["/debug"]);
        assert_eq!(
            cfg.endpoints[0].allowed_envs,
            vec![Environment::Development, Environment::Staging]
        );
        cfg.validate().unwrap();
    }
}
