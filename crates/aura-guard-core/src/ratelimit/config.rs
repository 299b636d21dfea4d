//! Auth rate limiting configuration (`ratelimit` section).
//!
//! Secrets are never part of the config: the JWT secret (and the optional user-hash key) are
//! read through an environment lookup closure by [`RateLimitConfig::resolve`].

use serde::{Deserialize, Serialize};

use crate::client_ip::Cidr;
use crate::config::{ConfigError, EnvLookup};
use crate::ratelimit::window::{unit_for_span, MAX_MULTIPLIER};
use crate::secret::{self, Secret};

/// What to do when the rate-limit service cannot answer (timeout, down, gRPC error, UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Let the request through.
    Open,
    /// Answer 503.
    Closed,
    /// Closed in production, open elsewhere.
    #[default]
    Default,
}

impl FailureMode {
    /// Whether this mode rejects requests when the service fails.
    pub fn fails_closed(self, production: bool) -> bool {
        match self {
            FailureMode::Open => false,
            FailureMode::Closed => true,
            FailureMode::Default => production,
        }
    }
}

/// Where the user of an auth request is taken from. The first source that yields a
/// non-empty identifier wins, in the order: body fields, JWT body fields, Bearer JWT.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Body fields (form-urlencoded or JSON) holding a plain identifier, e.g. `username`.
    pub body_fields: Vec<String>,
    /// Body fields holding an HS256 JWT whose `sub` is the user, e.g. `refresh_token`.
    pub jwt_body_fields: Vec<String>,
    /// Take `sub` from an `Authorization: Bearer <HS256 JWT>` header.
    pub bearer_jwt: bool,
}

impl IdentityConfig {
    pub fn uses_jwt(&self) -> bool {
        self.bearer_jwt || !self.jwt_body_fields.is_empty()
    }

    pub fn reads_body(&self) -> bool {
        !self.body_fields.is_empty() || !self.jwt_body_fields.is_empty()
    }
}

/// One rate-limited auth route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Short name used in descriptors, events and header policy names (`[a-z0-9_-]+`).
    pub name: String,
    /// Exact request path (query string ignored, one trailing slash tolerated).
    pub path: String,
    /// Methods that count; others pass untouched (e.g. CORS preflight OPTIONS).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Attempts allowed per window, per IP and per user.
    pub requests: u32,
    /// Window length in seconds; `window_s * 16` must divide a service unit.
    pub window_s: u64,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default)]
    pub identity: IdentityConfig,
}

fn default_methods() -> Vec<String> {
    vec!["POST".to_string()]
}

/// The `ratelimit` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Rate-limit service domain; the YAML must use the same.
    pub domain: String,
    /// Envoy cluster of the rate-limit service (gRPC).
    pub cluster: String,
    /// Per-call timeout for ShouldRateLimit.
    pub timeout_ms: u64,
    /// At most this many proxies in front of Envoy append to X-Forwarded-For; 0 = use the
    /// peer address. Needs `trusted_proxies`.
    pub trusted_hops: u32,
    /// The networks the trusted proxies' addresses are in (CIDR or single addresses).
    /// X-Forwarded-For is believed only from a peer in this list, and only hop by hop while
    /// each address reached is in it too (docs/ratelimit.md, "Who is limited").
    pub trusted_proxies: Vec<Cidr>,
    /// Envoy itself appends one X-Forwarded-For entry before the filter runs
    /// (`use_remote_address: true`, as in envoy/envoy.yaml): it is not a trusted proxy's entry
    /// and is skipped before counting `trusted_hops`. Set false only with
    /// `use_remote_address: false`.
    pub xff_appended_by_envoy: bool,
    /// IPv6 clients are limited per prefix of this length (one host usually owns a /64).
    pub ipv6_prefix_len: u8,
    /// Optional environment variable holding a key for hashing user identifiers (HMAC);
    /// without it, identifiers are hashed with plain SHA-256 like the original.
    pub user_hash_key_env: Option<String>,
    /// Loaded from `user_hash_key_env`; never configured directly, never printed.
    #[serde(skip)]
    pub user_hash_key: Option<Secret>,
    pub routes: Vec<RouteConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let body = |fields: &[&str]| IdentityConfig {
            body_fields: fields.iter().map(|f| f.to_string()).collect(),
            ..IdentityConfig::default()
        };
        let route = |name: &str, path: &str, requests, window_s, identity| RouteConfig {
            name: name.to_string(),
            path: path.to_string(),
            methods: default_methods(),
            requests,
            window_s,
            failure_mode: FailureMode::Default,
            identity,
        };
        Self {
            enabled: true,
            domain: "aura-guard".to_string(),
            cluster: "ratelimit".to_string(),
            timeout_ms: 20,
            trusted_hops: 0,
            trusted_proxies: Vec::new(),
            xff_appended_by_envoy: true,
            ipv6_prefix_len: 64,
            user_hash_key_env: None,
            user_hash_key: None,
            routes: vec![
                route("login", "/auth/login", 5, 300, body(&["username", "email"])),
                route(
                    "register",
                    "/auth/register",
                    3,
                    3600,
                    body(&["username", "email"]),
                ),
                route(
                    "password_reset",
                    "/auth/password-reset",
                    3,
                    3600,
                    body(&["email", "username"]),
                ),
                route(
                    "refresh",
                    "/auth/refresh",
                    10,
                    600,
                    IdentityConfig {
                        body_fields: Vec::new(),
                        jwt_body_fields: vec!["refresh_token".to_string()],
                        bearer_jwt: true,
                    },
                ),
            ],
        }
    }
}

/// What the rate limiter is built from: its section and the application's JWT secret
/// (`jwt.secret_env`, shared with audit).
#[derive(Debug, Clone)]
pub struct ResolvedRateLimitConfig {
    pub config: RateLimitConfig,
    pub jwt_secret: Option<Secret>,
    pub user_hash_key: Option<Secret>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl RateLimitConfig {
    /// Structural validation; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail =
            |field: &str, msg: &str| Err(ConfigError::new(format!("ratelimit.{field}"), msg));
        if !is_name(&self.domain) {
            return fail("domain", "must be non-empty [a-z0-9_-]");
        }
        if self.cluster.trim().is_empty() {
            return fail("cluster", "must not be empty");
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return fail("timeout_ms", "must be in 1..=10000");
        }
        if self.trusted_hops > 16 {
            return fail("trusted_hops", "must be <= 16");
        }
        // Hops without a proxy list would trust X-Forwarded-For from any peer, so a client
        // connecting to Envoy directly could pick its own identity.
        if self.trusted_hops > 0 && self.trusted_proxies.is_empty() {
            return fail(
                "trusted_proxies",
                "must list the trusted proxies' networks (e.g. [\"10.0.0.0/8\"]) when trusted_hops > 0",
            );
        }
        if self.trusted_hops == 0 && !self.trusted_proxies.is_empty() {
            return fail(
                "trusted_hops",
                "must be > 0 when trusted_proxies is set (how many proxies append to X-Forwarded-For)",
            );
        }
        if let Some(i) = self
            .trusted_proxies
            .iter()
            .position(|c| c.prefix_len() == 0)
        {
            return fail(
                &format!("trusted_proxies[{i}]"),
                "a /0 network trusts every peer; list the proxies' networks",
            );
        }
        if !(16..=128).contains(&self.ipv6_prefix_len) {
            return fail("ipv6_prefix_len", "must be in 16..=128");
        }
        if let Some(env) = &self.user_hash_key_env {
            if env.trim().is_empty() {
                return fail("user_hash_key_env", "must not be empty when set");
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = |field: &str, msg: String| {
                Err(ConfigError::new(
                    format!("ratelimit.routes[{i}].{field}"),
                    msg,
                ))
            };
            if !is_name(&r.name) {
                return at(
                    "name",
                    "must be non-empty [a-z0-9_-], at most 64 chars".into(),
                );
            }
            if self.routes.iter().take(i).any(|o| o.name == r.name) {
                return at("name", format!("duplicate route name {:?}", r.name));
            }
            if !r.path.starts_with('/') {
                return at("path", "must start with '/'".into());
            }
            if self.routes.iter().take(i).any(|o| o.path == r.path) {
                return at("path", format!("duplicate path {}", r.path));
            }
            if r.methods.is_empty()
                || r.methods
                    .iter()
                    .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return at("methods", "must be non-empty uppercase method names".into());
            }
            if r.requests == 0 {
                return at("requests", "must be > 0".into());
            }
            if r.window_s == 0 {
                return at("window_s", "must be > 0".into());
            }
            let longest = r.window_s.checked_mul(u64::from(MAX_MULTIPLIER));
            if longest.and_then(unit_for_span).is_none() {
                return at(
                    "window_s",
                    format!(
                        "{} s x {MAX_MULTIPLIER} (longest backoff window) must divide a rate-limit service unit \
                         (60, 3600, 86400, 604800, 2592000 or 31536000 s), e.g. 60, 300, 600, 900, 1800, 3600",
                        r.window_s
                    ),
                );
            }
            for (field, list) in [
                ("identity.body_fields", &r.identity.body_fields),
                ("identity.jwt_body_fields", &r.identity.jwt_body_fields),
            ] {
                if list.iter().any(|f| f.trim().is_empty()) {
                    return at(field, "field names must not be empty".into());
                }
            }
        }
        Ok(())
    }

    /// Loads the user-hash key named by `user_hash_key_env`: a named variable that is not
    /// set is an error, since hashing would silently change without it.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        self.user_hash_key = match &self.user_hash_key_env {
            Some(name) => Some(secret::from_env(env, name).ok_or_else(|| {
                ConfigError::new(
                    "ratelimit.user_hash_key_env",
                    format!("environment variable {name} is not set"),
                )
            })?),
            None => None,
        };
        Ok(())
    }

    /// Whether a route takes the user from a JWT (and so needs `jwt.secret_env`).
    pub fn reads_jwt(&self) -> bool {
        self.enabled && self.routes.iter().any(|r| r.identity.uses_jwt())
    }

    /// The rate limiter's inputs: this section and the application's JWT secret.
    pub fn resolve(&self, jwt_secret: Option<Secret>) -> ResolvedRateLimitConfig {
        ResolvedRateLimitConfig {
            config: self.clone(),
            jwt_secret,
            user_hash_key: self.user_hash_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn seed_config_has_the_issue_limits_and_validates() {
        let c = RateLimitConfig::default();
        c.validate().unwrap();
        let got: Vec<(&str, &str, u32, u64)> = c
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.path.as_str(), r.requests, r.window_s))
            .collect();
        assert_eq!(
            got,
            vec![
                ("login", "/auth/login", 5, 300),
                ("register", "/auth/register", 3, 3600),
                ("password_reset", "/auth/password-reset", 3, 3600),
                ("refresh", "/auth/refresh", 10, 600),
            ]
        );
        assert_eq!(c.timeout_ms, 20);
        assert_eq!(c.cluster, "ratelimit");
        assert_eq!(c.domain, "aura-guard");
    }

    #[test]
    fn empty_json_gives_the_seed_and_unknown_fields_are_rejected() {
        let c: RateLimitConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RateLimitConfig::default());
        assert!(serde_json::from_str::<RateLimitConfig>(r#"{"bogus": 1}"#).is_err());
        let bad_route = r#"{"routes":[{"name":"a","path":"/a","requests":1,"window_s":60,"x":1}]}"#;
        assert!(serde_json::from_str::<RateLimitConfig>(bad_route).is_err());
    }

    #[test]
    fn route_defaults_are_post_and_default_failure_mode() {
        let c: RateLimitConfig =
            serde_json::from_str(r#"{"routes":[{"name":"a","path":"/a","requests":1,"window_s":60,"failure_mode":"open"}]}"#)
                .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.methods, vec!["POST"]);
        assert_eq!(r.failure_mode, FailureMode::Open);
        assert_eq!(r.identity, IdentityConfig::default());
    }

    #[test]
    fn failure_mode_default_is_closed_in_production_only() {
        assert!(FailureMode::Default.fails_closed(true));
        assert!(!FailureMode::Default.fails_closed(false));
        assert!(FailureMode::Closed.fails_closed(false));
        assert!(!FailureMode::Open.fails_closed(true));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let check = |f: &dyn Fn(&mut RateLimitConfig), want: &str| {
            let mut c = RateLimitConfig::default();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err} does not start with {want}");
        };
        check(&|c| c.timeout_ms = 0, "ratelimit.timeout_ms:");
        check(&|c| c.domain = String::new(), "ratelimit.domain:");
        check(&|c| c.cluster = " ".into(), "ratelimit.cluster:");
        check(&|c| c.trusted_hops = 99, "ratelimit.trusted_hops:");
        check(&|c| c.trusted_hops = 1, "ratelimit.trusted_proxies:");
        check(
            &|c| c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()],
            "ratelimit.trusted_hops:",
        );
        check(
            &|c| {
                c.trusted_hops = 1;
                c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()];
            },
            "ratelimit.trusted_proxies[1]:",
        );
        check(&|c| c.ipv6_prefix_len = 0, "ratelimit.ipv6_prefix_len:");
        check(
            &|c| c.routes[0].window_s = 11,
            "ratelimit.routes[0].window_s:",
        );
        check(
            &|c| c.routes[0].window_s = 0,
            "ratelimit.routes[0].window_s:",
        );
        check(
            &|c| c.routes[1].requests = 0,
            "ratelimit.routes[1].requests:",
        );
        check(
            &|c| c.routes[1].path = "auth".into(),
            "ratelimit.routes[1].path:",
        );
        check(
            &|c| c.routes[1].path = "/auth/login".into(),
            "ratelimit.routes[1].path:",
        );
        check(
            &|c| c.routes[1].name = "login".into(),
            "ratelimit.routes[1].name:",
        );
        check(
            &|c| c.routes[2].name = "Bad Name".into(),
            "ratelimit.routes[2].name:",
        );
        check(
            &|c| c.routes[0].methods = vec![],
            "ratelimit.routes[0].methods:",
        );
        check(
            &|c| c.routes[0].identity.body_fields = vec![String::new()],
            "ratelimit.routes[0].identity.body_fields:",
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs_and_a_bad_entry_is_refused_naming_it() {
        use crate::config::Config;
        let c = Config::load(
            br#"{"ratelimit": {"trusted_hops": 2,
                 "trusted_proxies": ["10.0.0.0/8", "127.0.0.1", "::ffff:192.168.0.0/112"]}}"#,
            &crate::testing::env_of(&[("ENVIRONMENT", "development")]),
        )
        .unwrap();
        let got: Vec<String> = c
            .ratelimit
            .trusted_proxies
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.0/8", "127.0.0.1/32", "192.168.0.0/16"]);
        let err = Config::load(
            br#"{"ratelimit": {"trusted_hops": 1, "trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}}"#,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(err.field, "ratelimit.trusted_proxies[1]");
        assert!(err.message.contains("host bits"), "{err}");
        let err = Config::load(
            br#"{"ratelimit": {"trusted_hops": 1, "trusted_proxies": ["proxy.internal"]}}"#,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(err.field, "ratelimit.trusted_proxies[0]");
        // Hops without proxies: refused, naming the missing list.
        let err = Config::load(br#"{"ratelimit": {"trusted_hops": 1}}"#, &|_| None).unwrap_err();
        assert_eq!(err.field, "ratelimit.trusted_proxies");
    }

    #[test]
    fn the_hash_key_env_is_required_when_configured() {
        let mut c = RateLimitConfig {
            user_hash_key_env: Some("RL_HASH_KEY".into()),
            ..RateLimitConfig::default()
        };
        assert!(c
            .apply_env(&|_| None)
            .unwrap_err()
            .message
            .contains("RL_HASH_KEY"));
        c.apply_env(&|k| (k == "RL_HASH_KEY").then(|| "hk".into()))
            .unwrap();
        assert_eq!(c.resolve(None).user_hash_key.unwrap().expose(), "hk");
    }
}
