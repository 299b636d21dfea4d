//! Debug-endpoint protection (original `@protect_debug_endpoint`).
//!
//! A request is a debug request when its normalised path is under a named endpoint's path
//! (longest match wins) or, failing that, under one of the prefixes; such unnamed paths use
//! `default_allowed_envs` and are named by their canonical path. A format suffix on the last
//! segment does not hide it (`/debug.json`, `/debug/token.json`: see
//! [`NormalisedPath::is_route_under`]). In an environment outside the
//! endpoint's allowed list the answer is 404 `{"detail":"Not found"}` unless
//! `DEBUG_ENDPOINTS_ENABLED` is true AND the endpoint is whitelisted: both, never either.
//!
//! The whitelist accepts an endpoint's name or alias (case-insensitive, so the original's
//! function name `debug_token` works through the default alias), or a path starting with `/`,
//! normalised and compared exactly with the endpoint's configured path (named endpoints) or the
//! request's canonical path (unnamed ones). A whitelisted path does not open the paths below it.

pub mod config;

use crate::config::Environment;
use crate::path::{normalise, NormalisedPath};
use config::{DebugConfig, DebugEndpoint};

/// Status of a blocked debug request: it must look like a route that does not exist.
pub const BLOCKED_STATUS: u16 = 404;
/// Body of a blocked debug request, byte-for-byte the original FastAPI body.
pub const BLOCKED_BODY: &str = r#"{"detail":"Not found"}"#;
/// Security event type for a blocked attempt (logged in production; see [`emits_security_event`]).
pub const EVENT_TYPE: &str = "debug_endpoint_blocked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugDecision {
    /// Not a debug path: other policies decide.
    NotDebug,
    /// A debug path reachable in this environment (or opened by enabled + whitelist).
    Allow,
    /// Answer [`BLOCKED_STATUS`] with [`BLOCKED_BODY`]; `endpoint` is the endpoint's name, or
    /// the canonical path for an unnamed path under a prefix.
    Block { endpoint: String },
}

pub fn decide(cfg: &DebugConfig, env: Environment, path: &NormalisedPath) -> DebugDecision {
    let named = cfg
        .endpoints
        .iter()
        .filter(|ep| path.is_route_under(&ep.path))
        .max_by_key(|ep| ep.path.len());

    let (allowed_envs, endpoint_name, endpoint_path) = match named {
        Some(ep) => (&ep.allowed_envs, ep.name.as_str(), ep.path.as_str()),
        None if cfg.prefixes.iter().any(|p| path.is_route_under(p)) => {
            (&cfg.default_allowed_envs, path.as_str(), path.as_str())
        }
        None => return DebugDecision::NotDebug,
    };

    if allowed_envs.contains(&env) {
        return DebugDecision::Allow;
    }
    if cfg.enabled && whitelisted(cfg, named, endpoint_path) {
        return DebugDecision::Allow;
    }
    DebugDecision::Block {
        endpoint: endpoint_name.to_owned(),
    }
}

/// The issue asks for a security event for blocked attempts in production; blocks in other
/// environments are counted (stat) but not logged as security events.
pub fn emits_security_event(env: Environment) -> bool {
    env == Environment::Production
}

fn whitelisted(cfg: &DebugConfig, named: Option<&DebugEndpoint>, endpoint_path: &str) -> bool {
    cfg.whitelist.iter().any(|entry| {
        let entry = entry.trim();
        if entry.starts_with('/') {
            normalise(entry).is_ok_and(|p| p.as_str() == endpoint_path)
        } else {
            named.is_some_and(|ep| {
                std::iter::once(&ep.name)
                    .chain(ep.aliases.iter())
                    .any(|n| n.eq_ignore_ascii_case(entry))
            })
        }
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use Environment::{Development, Production, Staging};

    const ALL_ENVS: [Environment; 3] = [Development, Staging, Production];

    fn p(raw: &str) -> NormalisedPath {
        normalise(raw).unwrap()
    }

    fn block(name: &str) -> DebugDecision {
        DebugDecision::Block {
            endpoint: name.to_owned(),
        }
    }

    fn cfg_with(enabled: bool, whitelist: &[&str]) -> DebugConfig {
        DebugConfig {
            enabled,
            whitelist: whitelist.iter().map(|s| (*s).to_owned()).collect(),
            ..DebugConfig::default()
        }
    }

    #[test]
    fn token_endpoint_is_allowed_only_in_development_by_default() {
        let cfg = DebugConfig::default();
        assert_eq!(
            decide(&cfg, Development, &p("/debug/token")),
            DebugDecision::Allow
        );
        assert_eq!(decide(&cfg, Staging, &p("/debug/token")), block("token"));
        assert_eq!(decide(&cfg, Production, &p("/debug/token")), block("token"));
    }

    #[test]
    fn non_debug_paths_are_not_debug_in_any_environment() {
        let cfg = DebugConfig::default();
        for env in ALL_ENVS {
            for path in [
                "/",
                "/api/v1/debug",
                "/debugger",
                "/debug-token",
                "/api/debug/token",
            ] {
                assert_eq!(
                    decide(&cfg, env, &p(path)),
                    DebugDecision::NotDebug,
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn unnamed_paths_under_a_prefix_use_default_envs_and_are_named_by_path() {
        let cfg = DebugConfig::default();
        assert_eq!(
            decide(&cfg, Development, &p("/debug/vars")),
            DebugDecision::Allow
        );
        assert_eq!(
            decide(&cfg, Production, &p("/debug/vars")),
            block("/debug/vars")
        );
        assert_eq!(decide(&cfg, Production, &p("/debug")), block("/debug"));
        assert_eq!(
            decide(&cfg, Staging, &p("/DEBUG/Vars/")),
            block("/debug/vars")
        );
    }

    #[test]
    fn format_suffixed_and_case_folded_spellings_are_the_endpoint() {
        let cfg = DebugConfig::default();
        for (path, env, expected) in [
            ("/debug/to%E2%84%AAen", Production, block("token")), // Kelvin sign
            ("/debug/token.json", Production, block("token")),
            ("/debug/Token.JSON;x=1/", Production, block("token")),
            ("/debug/token/x.json", Production, block("token")),
            ("/debug.json", Production, block("/debug.json")),
            ("/debug/token.json", Development, DebugDecision::Allow),
            ("/debugger.json", Production, DebugDecision::NotDebug),
            ("/debug-x.json", Production, DebugDecision::NotDebug),
            ("/api/debug.json", Production, DebugDecision::NotDebug),
        ] {
            assert_eq!(decide(&cfg, env, &p(path)), expected, "{path} in {env:?}");
        }
    }

    #[test]
    fn compatibility_look_alikes_of_debug_are_refused_before_any_decision() {
        for raw in ["/%E1%B5%88ebug/token", "/%E2%93%93ebug", "/debug%C2%A0"] {
            assert!(normalise(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn paths_below_a_named_endpoint_belong_to_it() {
        let cfg = DebugConfig::default();
        assert_eq!(
            decide(&cfg, Production, &p("/debug/token/x")),
            block("token")
        );
    }

    #[test]
    fn named_endpoint_outside_prefixes_and_with_own_envs() {
        let mut cfg = DebugConfig::default();
        cfg.endpoints.push(DebugEndpoint {
            name: "info".into(),
            path: "/internal/info".into(),
            allowed_envs: vec![Development, Staging],
            aliases: vec![],
        });
        cfg.validate().unwrap();
        assert_eq!(
            decide(&cfg, Staging, &p("/internal/info")),
            DebugDecision::Allow
        );
        assert_eq!(
            decide(&cfg, Production, &p("/internal/info")),
            block("info")
        );
        assert_eq!(
            decide(&cfg, Production, &p("/internal")),
            DebugDecision::NotDebug
        );
    }

    #[test]
    fn longest_named_endpoint_wins() {
        let mut cfg = DebugConfig::default();
        cfg.endpoints.push(DebugEndpoint {
            name: "token-admin".into(),
            path: "/debug/token/admin".into(),
            allowed_envs: vec![],
            aliases: vec![],
        });
        assert_eq!(
            decide(&cfg, Development, &p("/debug/token/admin")),
            block("token-admin")
        );
        assert_eq!(
            decide(&cfg, Development, &p("/debug/token")),
            DebugDecision::Allow
        );
    }

    #[test]
    fn only_enabled_and_whitelisted_together_open_a_blocked_endpoint() {
        let path = p("/debug/token");
        for env in [Staging, Production] {
            assert_eq!(decide(&cfg_with(false, &[]), env, &path), block("token"));
            assert_eq!(decide(&cfg_with(true, &[]), env, &path), block("token"));
            assert_eq!(
                decide(&cfg_with(false, &["token"]), env, &path),
                block("token")
            );
            assert_eq!(
                decide(&cfg_with(true, &["token"]), env, &path),
                DebugDecision::Allow
            );
        }
    }

    #[test]
    fn whitelist_matches_name_alias_or_path() {
        let path = p("/debug/token");
        for entry in [
            "token",
            "TOKEN",
            "debug_token",
            "/debug/token",
            "/Debug/Token/",
            " token ",
        ] {
            assert_eq!(
                decide(&cfg_with(true, &[entry]), Production, &path),
                DebugDecision::Allow,
                "entry {entry:?}"
            );
        }
        for entry in ["tok", "/debug", "/debug/token/x", "debug", "/debug%2ftoken"] {
            assert_eq!(
                decide(&cfg_with(true, &[entry]), Production, &path),
                block("token"),
                "entry {entry:?}"
            );
        }
    }

    #[test]
    fn whitelist_from_env_is_trimmed_before_matching() {
        let mut cfg = DebugConfig::default();
        cfg.apply_env(&|k| match k {
            "DEBUG_ENDPOINTS_ENABLED" => Some("TRUE".into()),
            "DEBUG_ENDPOINTS_WHITELIST" => Some("other ,  token  ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            decide(&cfg, Production, &p("/debug/token")),
            DebugDecision::Allow
        );
    }

    #[test]
    fn unnamed_paths_are_whitelisted_by_exact_path_only() {
        let cfg = cfg_with(true, &["/debug/vars"]);
        assert_eq!(
            decide(&cfg, Production, &p("/debug/vars")),
            DebugDecision::Allow
        );
        assert_eq!(
            decide(&cfg, Production, &p("/debug/vars/x")),
            block("/debug/vars/x")
        );
        assert_eq!(decide(&cfg, Production, &p("/debug/token")), block("token"));
    }

    #[test]
    fn whitelisted_path_of_named_endpoint_covers_its_subpaths() {
        let cfg = cfg_with(true, &["/debug/token"]);
        assert_eq!(
            decide(&cfg, Production, &p("/debug/token/x")),
            DebugDecision::Allow
        );
    }

    #[test]
    fn allowed_environment_needs_no_whitelist() {
        let cfg = cfg_with(false, &[]);
        assert_eq!(
            decide(&cfg, Development, &p("/debug/token")),
            DebugDecision::Allow
        );
    }

    #[test]
    fn security_event_only_in_production() {
        assert!(emits_security_event(Production));
        assert!(!emits_security_event(Staging));
        assert!(!emits_security_event(Development));
    }

    #[test]
    fn blocked_body_is_the_original_fastapi_body() {
        assert_eq!(BLOCKED_STATUS, 404);
        let v: serde_json::Value = serde_json::from_str(BLOCKED_BODY).unwrap();
        assert_eq!(v, serde_json::json!({"detail": "Not found"}));
    }
}
