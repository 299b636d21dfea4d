//! Webhook signature verification settings (the original's `WEBHOOK_SECRET_*` variables and
//! `WEBHOOK_TIMESTAMP_TOLERANCE`, docs/original-behaviour.md#webhooks).
//!
//! Sources are keyed by name (`stripe`, `github`, ...). Every built-in source (the original's
//! five, square, toast, clover, stripe, twilio, and github, shopify, slack, standard) always
//! exists, so its route is guarded (refused in production and staging) even without a secret;
//! custom sources exist once configured here or given a secret through the environment. Each
//! source defaults its route and schemes from its name.

use super::scheme::{standard_webhooks_key, Scheme};
use crate::config::{ConfigError, EnvLookup};
use crate::ratelimit::config::FailureMode;
use crate::secret::Secret;
use crate::webhook::fleet_replay::MAX_FLEET_TOLERANCE_S;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Sources whose defaults (route, schemes) are known, the original five
/// (docs/original-behaviour.md#webhooks) included. They always exist, so their routes stay
/// guarded: a route whose source has no secret must never pass unverified outside development.
pub const BUILTIN_SOURCES: [&str; 9] = [
    "square", "toast", "clover", "stripe", "twilio", "github", "shopify", "slack", "standard",
];

pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
pub const DEFAULT_TOLERANCE_S: u32 = 300;
pub const DEFAULT_REPLAY_MAX_ENTRIES: u32 = 10_000;
/// Keeps the serialised seen-set (24 bytes an entry) a reasonable size for Envoy shared data.
pub const MAX_REPLAY_MAX_ENTRIES: u32 = 1_000_000;
/// A tolerance beyond a day is almost certainly a unit mistake (ms instead of s).
pub const MAX_TOLERANCE_S: u32 = 86_400;

/// One webhook source (provider or internal sender).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Request path (without query) this source guards; default `/webhooks/<source>`.
    pub route: Option<String>,
    /// Accepted schemes, in order of preference; empty means the source's built-in defaults.
    pub schemes: Vec<Scheme>,
    /// Current secret first; more than one means a rotation is in progress, each is tried.
    pub secrets: Vec<Secret>,
    /// The externally registered URL (Square, Twilio sign it); never rebuilt from `:authority`.
    /// Without a `?`, the request's query string is appended before signing.
    pub public_url: Option<String>,
    /// Timestamp window in seconds, both directions; also the replay TTL of timestamp-less schemes.
    pub tolerance_s: u32,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            route: None,
            schemes: Vec::new(),
            secrets: Vec::new(),
            public_url: None,
            tolerance_s: DEFAULT_TOLERANCE_S,
        }
    }
}

/// Built-in default schemes for a source name; always includes the original's generic scheme.
pub fn default_schemes(source: &str) -> Vec<Scheme> {
    let specific = match source {
        "square" => Some(Scheme::Square),
        "toast" => Some(Scheme::Toast),
        "clover" => Some(Scheme::Clover),
        "stripe" => Some(Scheme::Stripe),
        "twilio" => Some(Scheme::Twilio),
        "github" => Some(Scheme::Github),
        "shopify" => Some(Scheme::Shopify),
        "slack" => Some(Scheme::Slack),
        "standard" => Some(Scheme::Standard),
        _ => None,
    };
    // The provider scheme first: it is what the provider sends; generic stays for the original's
    // callers.
    specific.into_iter().chain([Scheme::Generic]).collect()
}

impl SourceConfig {
    pub fn effective_route(&self, name: &str) -> String {
        self.route
            .clone()
            .unwrap_or_else(|| format!("/webhooks/{name}"))
    }

    pub fn effective_schemes(&self, name: &str) -> Vec<Scheme> {
        if self.schemes.is_empty() {
            default_schemes(name)
        } else {
            self.schemes.clone()
        }
    }

    /// A source without secrets cannot verify anything.
    pub fn is_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    fn validate(&self, name: &str, field: &str) -> Result<(), ConfigError> {
        if self.tolerance_s == 0 || self.tolerance_s > MAX_TOLERANCE_S {
            return Err(ConfigError::new(
                format!("{field}.tolerance_s"),
                format!("must be between 1 and {MAX_TOLERANCE_S} seconds"),
            ));
        }
        if let Some(route) = &self.route {
            if !route.starts_with('/') || route.contains('?') || route.contains('#') {
                return Err(ConfigError::new(
                    format!("{field}.route"),
                    "must be a path starting with '/' without query or fragment",
                ));
            }
            // Routes are matched against the normalised request path, so only a canonical
            // route can ever match.
            let canonical = crate::path::normalise(route).ok();
            if canonical.as_ref().map(|p| p.as_str()) != Some(route.as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.route"),
                    format!(
                        "must be canonical (lower case, no trailing slash, dot or empty \
                         segments, no escapes): {}",
                        canonical
                            .as_ref()
                            .map(|p| format!("use {:?}", p.as_str()))
                            .unwrap_or_else(|| "not a valid path".to_string())
                    ),
                ));
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('#') {
                return Err(ConfigError::new(
                    format!("{field}.public_url"),
                    "must be an absolute http(s) URL without fragment",
                ));
            }
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            if secret.expose().is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.secrets[{i}]"),
                    "must not be empty",
                ));
            }
        }
        let schemes = self.effective_schemes(name);
        for (i, scheme) in self.schemes.iter().enumerate() {
            if self.schemes.get(..i).is_some_and(|s| s.contains(scheme)) {
                return Err(ConfigError::new(
                    format!("{field}.schemes[{i}]"),
                    format!("duplicate scheme {:?}", scheme.as_str()),
                ));
            }
        }
        if schemes.contains(&Scheme::CloverApp) && schemes.len() > 1 {
            // The app token travels in clear in every request; it must not double as an HMAC key.
            return Err(ConfigError::new(
                format!("{field}.schemes"),
                "clover-app must be the only scheme of its source (use a separate source, e.g. clover-app)",
            ));
        }
        if self.is_configured() && self.public_url.is_none() {
            if let Some(s) = schemes.iter().find(|s| s.signs_url()) {
                return Err(ConfigError::new(
                    format!("{field}.public_url"),
                    format!(
                        "required by the {} scheme (set WEBHOOK_URL_{} or remove the scheme)",
                        s.as_str(),
                        env_suffix(name)
                    ),
                ));
            }
        }
        if schemes.contains(&Scheme::Standard) {
            for (i, secret) in self.secrets.iter().enumerate() {
                if standard_webhooks_key(secret.expose()).is_none() {
                    return Err(ConfigError::new(
                        format!("{field}.secrets[{i}]"),
                        "the standard scheme needs a base64 secret (whsec_<base64>)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How replayed deliveries are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    /// Per-Envoy seen-set in proxy-wasm shared data (all workers of one Envoy).
    #[default]
    Local,
    /// Fleet-wide, through the rate-limit service (`ratelimit.cluster`, `.domain`,
    /// `.timeout_ms`): at most one accepted, unreleased delivery per key and window.
    /// docs/webhooks.md#fleet-wide-replay-mode-ratelimit.
    Ratelimit,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    pub enabled: bool,
    /// Bound of the local seen-set. A full set refuses new deliveries with 503 (fail closed):
    /// an unexpired key is never evicted.
    pub max_entries: u32,
    pub mode: ReplayMode,
    /// `ratelimit` mode, when the service cannot answer: `default` refuses with 503 in
    /// production (the provider retries) and lets the delivery through elsewhere.
    pub failure_mode: FailureMode,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            enabled: true,
            max_entries: DEFAULT_REPLAY_MAX_ENTRIES,
            mode: ReplayMode::Local,
            failure_mode: FailureMode::Default,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Merged over the built-in sources, which always exist.
    #[serde(deserialize_with = "sources_with_builtins")]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Larger bodies are refused with 413 before any MAC is computed.
    pub max_body_bytes: u64,
    /// `false` restores the original's UNSAFE fallback for the generic scheme: without
    /// `X-Webhook-Timestamp` the body alone is signed, so a captured delivery replays forever
    /// (only the local replay window stops it). Keep `true` unless a legacy sender cannot send it.
    pub require_timestamp: bool,
    pub replay: ReplayConfig,
}

fn builtin_sources() -> BTreeMap<String, SourceConfig> {
    BUILTIN_SOURCES
        .iter()
        .map(|s| (s.to_string(), SourceConfig::default()))
        .collect()
}

fn sources_with_builtins<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<BTreeMap<String, SourceConfig>, D::Error> {
    let mut map = BTreeMap::<String, SourceConfig>::deserialize(de)?;
    for (name, source) in builtin_sources() {
        map.entry(name).or_insert(source);
    }
    Ok(map)
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            sources: builtin_sources(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            require_timestamp: true,
            replay: ReplayConfig::default(),
        }
    }
}

/// `stripe` -> `STRIPE`, `clover-app` -> `CLOVER_APP`.
pub fn env_suffix(source: &str) -> String {
    source.to_ascii_uppercase().replace('-', "_")
}

impl WebhookConfig {
    /// The original's variables, extended (docs/original-behaviour.md#webhooks):
    /// `WEBHOOK_SECRET_<SOURCE>` (current), `WEBHOOK_SECRET_<SOURCE>_PREVIOUS` (still accepted
    /// during a rotation), `WEBHOOK_URL_<SOURCE>` (public URL). Environment secrets go before
    /// configured ones; a built-in source named only in the environment is created with its
    /// defaults. Empty values are ignored, as the original did.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        let mut names: Vec<String> = BUILTIN_SOURCES.iter().map(|s| s.to_string()).collect();
        for name in self.sources.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let get = |key: String| env(&key).filter(|v| !v.is_empty());
        for name in names {
            let suffix = env_suffix(&name);
            let current = get(format!("WEBHOOK_SECRET_{suffix}"));
            let previous = get(format!("WEBHOOK_SECRET_{suffix}_PREVIOUS"));
            let url = get(format!("WEBHOOK_URL_{suffix}"));
            if current.is_none() && previous.is_none() && url.is_none() {
                continue;
            }
            let source = self.sources.entry(name).or_default();
            let mut secrets: Vec<Secret> = current
                .into_iter()
                .chain(previous)
                .map(Secret::new)
                .collect();
            for s in source.secrets.drain(..) {
                if !secrets.contains(&s) {
                    secrets.push(s);
                }
            }
            source.secrets = secrets;
            if url.is_some() {
                source.public_url = url;
            }
        }
        Ok(())
    }

    /// Errors name the offending setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = "webhook";
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new(
                format!("{field}.max_body_bytes"),
                "must be > 0",
            ));
        }
        if self.replay.mode == ReplayMode::Ratelimit {
            if let Some((name, _)) = self
                .sources
                .iter()
                .find(|(_, src)| src.tolerance_s > MAX_FLEET_TOLERANCE_S)
            {
                return Err(ConfigError::new(
                    format!("{field}.sources.{name}.tolerance_s"),
                    format!(
                        "must be at most {MAX_FLEET_TOLERANCE_S} seconds with \
                         webhook.replay.mode \"ratelimit\" (docs/webhooks.md)"
                    ),
                ));
            }
        }
        if self.replay.max_entries == 0 || self.replay.max_entries > MAX_REPLAY_MAX_ENTRIES {
            return Err(ConfigError::new(
                format!("{field}.replay.max_entries"),
                format!("must be between 1 and {MAX_REPLAY_MAX_ENTRIES}"),
            ));
        }
        let mut routes: BTreeMap<String, &str> = BTreeMap::new();
        for (name, source) in &self.sources {
            let sfield = format!("{field}.sources.{name}");
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
                && !name.ends_with("-previous")
                && !name.ends_with("_previous");
            if !valid_name {
                return Err(ConfigError::new(
                    sfield,
                    "source names use a-z, 0-9, '-', '_' and must not end in -previous",
                ));
            }
            source.validate(name, &sfield)?;
            let route = source.effective_route(name);
            if let Some(other) = routes.insert(route.clone(), name) {
                return Err(ConfigError::new(
                    format!("{sfield}.route"),
                    format!("{route:?} is also the route of source {other:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The source guarding `path` (the request path without its query), if any.
    pub fn source_for_path(&self, path: &str) -> Option<(&str, &SourceConfig)> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        // Compared in place: this runs on every request (effective_route allocates).
        self.sources
            .iter()
            .find(|(name, s)| match &s.route {
                Some(route) => route == path,
                None => path.strip_prefix("/webhooks/") == Some(name.as_str()),
            })
            .map(|(name, s)| (name.as_str(), s))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::env_of;

    fn parse(json: &str) -> WebhookConfig {
        serde_json::from_str(json).unwrap()
    }

    fn secrets(s: &SourceConfig) -> Vec<&str> {
        s.secrets.iter().map(Secret::expose).collect()
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = WebhookConfig::default();
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert!(c.require_timestamp);
        assert!(c.replay.enabled);
        assert_eq!(c.replay.max_entries, 10_000);
        assert_eq!(c.replay.mode, ReplayMode::Local);
        let names: Vec<&str> = c.sources.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "clover", "github", "shopify", "slack", "square", "standard", "stripe", "toast",
                "twilio"
            ]
        );
        assert!(c.sources.values().all(|s| !s.is_configured()));
        let stripe = &c.sources["stripe"];
        assert_eq!(stripe.tolerance_s, 300);
        assert_eq!(stripe.effective_route("stripe"), "/webhooks/stripe");
        assert_eq!(
            stripe.effective_schemes("stripe"),
            [Scheme::Stripe, Scheme::Generic]
        );
        assert_eq!(default_schemes("custom"), [Scheme::Generic]);
        for name in BUILTIN_SOURCES {
            assert!(default_schemes(name).contains(&Scheme::Generic), "{name}");
        }
        c.validate().unwrap();
    }

    #[test]
    fn configured_sources_are_merged_over_the_builtin_nine() {
        let c = parse(r#"{"sources": {"github": {"secrets": ["s"]}, "mine": {}}}"#);
        assert!(c.sources["github"].is_configured());
        assert!(c.sources.contains_key("square"));
        assert!(c.sources.contains_key("mine"));
        assert_eq!(c.sources.len(), 10);
        // Built-ins the configuration does not name still exist, unconfigured.
        let c = parse(r#"{"sources": {}}"#);
        for name in BUILTIN_SOURCES {
            assert!(!c.sources[name].is_configured(), "{name}");
        }
        assert_eq!(
            c.source_for_path("/webhooks/slack").map(|(n, _)| n),
            Some("slack")
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<WebhookConfig>(r#"{"bogus": 1}"#).is_err());
        assert!(
            serde_json::from_str::<WebhookConfig>(r#"{"sources": {"x": {"secret": "a"}}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<WebhookConfig>(
            r#"{"sources": {"x": {"schemes": ["nope"]}}}"#
        )
        .is_err());
    }

    #[test]
    fn scheme_names_parse_in_kebab_case() {
        let c = parse(
            r#"{"sources": {"x": {"schemes": ["generic","stripe","square","square-sha1","twilio","github","github-sha1","shopify","slack","standard","toast","clover"]},
                             "clover-app": {"schemes": ["clover-app"]}}}"#,
        );
        assert_eq!(c.sources["x"].schemes.len(), 12);
        assert_eq!(c.sources["clover-app"].schemes, [Scheme::CloverApp]);
        for s in &c.sources["x"].schemes {
            let parsed: Scheme = serde_json::from_str(&format!("{:?}", s.as_str())).unwrap();
            assert_eq!(parsed, *s);
        }
    }

    #[test]
    fn env_secrets_come_first_then_previous_then_config() {
        let mut c = parse(r#"{"sources": {"stripe": {"secrets": ["from-config", "cur"]}}}"#);
        c.apply_env(&env_of(&[
            ("WEBHOOK_SECRET_STRIPE", "cur"),
            ("WEBHOOK_SECRET_STRIPE_PREVIOUS", "prev"),
        ]))
        .unwrap();
        assert_eq!(
            secrets(&c.sources["stripe"]),
            ["cur", "prev", "from-config"]
        );
    }

    #[test]
    fn env_creates_builtin_and_custom_sources_and_sets_the_url() {
        let mut c = parse(r#"{"sources": {"clover-app": {"schemes": ["clover-app"]}}}"#);
        c.apply_env(&env_of(&[
            ("WEBHOOK_SECRET_GITHUB", "gh"),
            ("WEBHOOK_SECRET_CLOVER_APP", "tok"),
            ("WEBHOOK_SECRET_SQUARE", "sq"),
            (
                "WEBHOOK_URL_SQUARE",
                "https://api.example.com/webhooks/square",
            ),
            ("WEBHOOK_SECRET_SLACK", ""),
        ]))
        .unwrap();
        assert_eq!(secrets(&c.sources["github"]), ["gh"]);
        assert_eq!(secrets(&c.sources["clover-app"]), ["tok"]);
        assert_eq!(
            c.sources["square"].public_url.as_deref(),
            Some("https://api.example.com/webhooks/square")
        );
        assert!(!c.sources["slack"].is_configured(), "empty value ignored");
        c.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let err = |json: &str| parse(json).validate().unwrap_err().field;
        assert_eq!(err(r#"{"max_body_bytes": 0}"#), "webhook.max_body_bytes");
        assert_eq!(
            err(r#"{"replay": {"max_entries": 0}}"#),
            "webhook.replay.max_entries"
        );
        assert_eq!(
            err(r#"{"sources": {"stripe": {"tolerance_s": 0}}}"#),
            "webhook.sources.stripe.tolerance_s"
        );
        assert_eq!(
            err(r#"{"sources": {"stripe": {"route": "webhooks/stripe"}}}"#),
            "webhook.sources.stripe.route"
        );
        assert_eq!(
            err(r#"{"sources": {"a": {"route": "/webhooks/stripe"}}}"#),
            "webhook.sources.stripe.route"
        );
        assert_eq!(
            err(r#"{"sources": {"square": {"secrets": ["k"]}}}"#),
            "webhook.sources.square.public_url"
        );
        assert_eq!(
            err(r#"{"sources": {"twilio": {"secrets": ["k"], "public_url": "ftp://x"}}}"#),
            "webhook.sources.twilio.public_url"
        );
        assert_eq!(
            err(r#"{"sources": {"stripe": {"secrets": ["a", ""]}}}"#),
            "webhook.sources.stripe.secrets[1]"
        );
        assert_eq!(
            err(r#"{"sources": {"standard": {"secrets": ["whsec_!!!"]}}}"#),
            "webhook.sources.standard.secrets[0]"
        );
        assert_eq!(
            err(r#"{"sources": {"clover": {"schemes": ["clover", "clover-app"]}}}"#),
            "webhook.sources.clover.schemes"
        );
        assert_eq!(
            err(r#"{"sources": {"x": {"schemes": ["github", "github"]}}}"#),
            "webhook.sources.x.schemes[1]"
        );
        assert_eq!(err(r#"{"sources": {"Bad": {}}}"#), "webhook.sources.Bad");
        assert_eq!(
            err(r#"{"sources": {"x": {"route": "/Hooks/X"}}}"#),
            "webhook.sources.x.route"
        );
        assert_eq!(
            err(r#"{"sources": {"x": {"route": "/hooks/x/"}}}"#),
            "webhook.sources.x.route"
        );
        let msg = parse(r#"{"sources": {"stripe": {"tolerance_s": 0}}}"#)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("webhook.sources.stripe.tolerance_s: "),
            "{msg}"
        );
    }

    #[test]
    fn fleet_wide_replay_mode_is_accepted_with_its_failure_mode() {
        let c = parse(r#"{"replay": {"mode": "ratelimit", "failure_mode": "closed"}}"#);
        c.validate().unwrap();
        assert_eq!(c.replay.mode, ReplayMode::Ratelimit);
        assert_eq!(c.replay.failure_mode, FailureMode::Closed);
        assert_eq!(parse("{}").replay.failure_mode, FailureMode::Default);
        let long =
            r#"{"replay": {"mode": "ratelimit"}, "sources": {"stripe": {"tolerance_s": 10801}}}"#;
        assert_eq!(
            parse(long).validate().unwrap_err().field,
            "webhook.sources.stripe.tolerance_s"
        );
        let local = r#"{"sources": {"stripe": {"tolerance_s": 10801}}}"#;
        parse(local).validate().unwrap();
    }

    #[test]
    fn square_without_url_is_fine_when_it_only_uses_the_generic_scheme() {
        parse(r#"{"sources": {"square": {"secrets": ["k"], "schemes": ["generic"]}}}"#)
            .validate()
            .unwrap();
    }

    #[test]
    fn debug_never_prints_secrets() {
        let mut c = parse(r#"{"sources": {"stripe": {"secrets": ["whsec_top_secret_1"]}}}"#);
        c.apply_env(&env_of(&[("WEBHOOK_SECRET_GITHUB", "gh-very-secret-2")]))
            .unwrap();
        let dbg = format!("{c:?} {:#?}", c);
        assert!(!dbg.contains("top_secret_1"), "{dbg}");
        assert!(!dbg.contains("very-secret-2"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"));
        assert_eq!(format!("{:?}", Secret::new("x")), "[REDACTED]");
    }

    #[test]
    fn source_for_path_matches_the_route_without_query() {
        let c = parse(r#"{"sources": {"github": {"route": "/hooks/gh"}}}"#);
        assert_eq!(c.source_for_path("/hooks/gh?x=1").unwrap().0, "github");
        assert_eq!(c.source_for_path("/webhooks/stripe").unwrap().0, "stripe");
        assert!(c.source_for_path("/webhooks/stripe/").is_none());
        // github moved to /hooks/gh: its default route is an ordinary path again.
        assert!(c.source_for_path("/webhooks/github").is_none());
    }

    #[test]
    fn standard_key_accepts_missing_prefix_and_padding() {
        let k = standard_webhooks_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            standard_webhooks_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            k
        );
        assert_eq!(standard_webhooks_key("whsec_AAAA").unwrap().len(), 3);
        assert_eq!(standard_webhooks_key("whsec_AAA").unwrap().len(), 2);
        assert!(standard_webhooks_key("whsec_").is_none());
    }
}
