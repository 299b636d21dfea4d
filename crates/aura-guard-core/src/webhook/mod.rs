//! Webhook signature verification: pure functions over the buffered request.
//!
//! The glue buffers the whole body (every scheme MACs the raw bytes), refuses bodies over
//! `max_body_bytes` with 413, finds the source from the route ([`WebhookConfig::source_for_path`]),
//! calls [`evaluate`] with the current time, and on success runs the replay check
//! ([`replay::ReplaySet`] in shared data, or the rate-limit service) with
//! [`Verified::replay_key`] and [`Verified::replay_ttl_s`].

pub mod config;
pub mod fleet_replay;
pub mod replay;
pub mod scheme;
pub(crate) mod schemes;
/// Signing, the mirror of verification: tests and fuzzing only (the filter never signs).
#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod sign;

pub use config::{SourceConfig, WebhookConfig};
pub use scheme::Scheme;

use crate::config::Environment;

/// The request facts verification needs. Header names may be in any case.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub headers: &'a [(String, String)],
    /// The raw body exactly as received: never re-encoded.
    pub body: &'a [u8],
    /// `:path` as received, query included (Twilio and Square sign the query).
    pub path_and_query: &'a str,
}

impl WebhookRequest<'_> {
    /// First header of that name with a non-blank value, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    fn query(&self) -> Option<&str> {
        self.path_and_query
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q))
    }
}

/// A delivery that carried a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub scheme: Scheme,
    /// `<source>:<32 hex>`: a digest of what was verified, the exact string the MAC covers
    /// (the signed `webhook-id` for Standard Webhooks / Svix). Not the scheme, header set or
    /// signature that carried it, so a re-wrapped copy has the same key
    /// (docs/webhooks.md#what-the-replay-key-covers). Unsigned ids such as
    /// `X-GitHub-Delivery` are not used: an attacker could change them to replay. `None` for
    /// clover-app, whose body is not authenticated, so replays cannot be told apart.
    pub replay_key: Option<String>,
    /// How long the key must be remembered: until the signed timestamp leaves the window
    /// (`ts + tolerance - now`), or `tolerance_s` for schemes without a timestamp.
    pub replay_ttl_s: i64,
    /// Provider delivery id for logs/audit (`webhook-id`, `X-GitHub-Delivery`, ...), if sent.
    pub delivery_id: Option<String>,
}

/// Why a delivery is refused. `message()` is the original's client-facing text
/// (docs/original-behaviour.md#webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    SourceNotConfigured,
    MissingSignature,
    InvalidSignature,
    /// Required timestamp absent (generic with `require_timestamp`, Stripe, Slack, ...).
    MissingTimestamp,
    InvalidTimestamp,
    /// Outside the tolerance window, in either direction.
    TimestampTooOld,
    Replay,
    BodyTooLarge,
}

impl Failure {
    pub fn status(self) -> u16 {
        match self {
            Failure::BodyTooLarge => 413,
            _ => 401,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Failure::SourceNotConfigured => "Webhook source not configured",
            Failure::MissingSignature => "Missing webhook signature",
            Failure::InvalidSignature => "Invalid webhook signature",
            Failure::MissingTimestamp | Failure::InvalidTimestamp => "Invalid webhook timestamp",
            Failure::TimestampTooOld => "Webhook timestamp too old",
            Failure::Replay => "Webhook delivery already processed",
            Failure::BodyTooLarge => "Webhook body too large",
        }
    }

    /// Short code for stats and audit.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::SourceNotConfigured => "source_not_configured",
            Failure::MissingSignature => "missing_signature",
            Failure::InvalidSignature => "invalid_signature",
            Failure::MissingTimestamp => "missing_timestamp",
            Failure::InvalidTimestamp => "invalid_timestamp",
            Failure::TimestampTooOld => "timestamp_too_old",
            Failure::Replay => "replay",
            Failure::BodyTooLarge => "body_too_large",
        }
    }
}

/// Verifies one delivery for one source. The scheme used is the first of the source's schemes
/// whose signature header is present; none present is "Missing webhook signature".
/// `require_timestamp = false` is the original's unsafe generic fallback (body signed alone).
pub fn verify(
    source: &SourceConfig,
    name: &str,
    req: &WebhookRequest<'_>,
    now_unix: i64,
    require_timestamp: bool,
) -> Result<Verified, Failure> {
    let facts = Facts {
        name,
        now: now_unix,
        require_timestamp,
        want_key: true,
    };
    verify_with(source, req, &facts)
}

/// What verification needs besides the source and the request.
struct Facts<'a> {
    name: &'a str,
    now: i64,
    require_timestamp: bool,
    /// Compute the replay key (one more pass over the body); off when replay protection is.
    want_key: bool,
}

/// The scheme a delivery is verified with: the first of the source's schemes whose signature
/// header is present. Then that scheme alone decides (there is no fallback to a later one).
fn select<'a>(
    source: &'a SourceConfig,
    req: &'a WebhookRequest<'a>,
    facts: &Facts<'a>,
) -> Result<(Scheme, schemes::Ctx<'a>), Failure> {
    if !source.is_configured() {
        return Err(Failure::SourceNotConfigured);
    }
    let scheme = source
        .effective_schemes(facts.name)
        .into_iter()
        .find(|s| schemes::signature_present(*s, req))
        .ok_or(Failure::MissingSignature)?;
    let ctx = schemes::Ctx {
        name: facts.name,
        source,
        req,
        now: facts.now,
        require_timestamp: facts.require_timestamp,
        want_key: facts.want_key,
    };
    Ok((scheme, ctx))
}

fn verify_with(
    source: &SourceConfig,
    req: &WebhookRequest<'_>,
    facts: &Facts<'_>,
) -> Result<Verified, Failure> {
    let (scheme, ctx) = select(source, req, facts)?;
    schemes::verify_scheme(scheme, &ctx)
}

/// What the glue does with a delivery that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified(Verified),
    /// Development only: the source has no secret, so the delivery passes unverified. Log a
    /// warning (the original skipped verification in development altogether).
    UnverifiedDevelopment,
}

/// 413 decision: the glue refuses a body over `max_body_bytes` before buffering more.
pub fn check_body_size(config: &WebhookConfig, body_len: u64) -> Result<(), Failure> {
    if body_len > config.max_body_bytes {
        Err(Failure::BodyTooLarge)
    } else {
        Ok(())
    }
}

/// The environment policy. Production and staging require a valid signature (an unknown or
/// secret-less source is refused); development verifies where a secret is configured and lets
/// an unconfigured source pass with [`Outcome::UnverifiedDevelopment`]. Replay is checked
/// separately by the glue.
/// The replay key is computed only when `replay.enabled` (it costs a pass over the body).
pub fn evaluate(
    config: &WebhookConfig,
    env: Environment,
    source_name: &str,
    req: &WebhookRequest<'_>,
    now_unix: i64,
) -> Result<Outcome, Failure> {
    check_body_size(config, u64::try_from(req.body.len()).unwrap_or(u64::MAX))?;
    match config.sources.get(source_name) {
        Some(source) if source.is_configured() => {
            verify_with(source, req, &facts(config, source_name, now_unix)).map(Outcome::Verified)
        }
        _ if env == Environment::Development => Ok(Outcome::UnverifiedDevelopment),
        _ => Err(Failure::SourceNotConfigured),
    }
}

fn facts<'a>(config: &WebhookConfig, name: &'a str, now: i64) -> Facts<'a> {
    Facts {
        name,
        now,
        require_timestamp: config.require_timestamp,
        want_key: config.replay.enabled,
    }
}

/// What the request headers alone already decide, before any body is buffered: `Err` is the
/// refusal [`evaluate`] would give for this request whatever its body (an unknown or
/// secret-less source outside development, no signature header of any of the source's
/// schemes, a malformed signature header, a timestamp missing, malformed or outside the
/// window, a public URL missing); `Ok` when the body is needed to decide. The same selection
/// and the same per-scheme code as verification, in the same order. `req.body` is not read.
/// The body size is not checked here (the glue checks the declared length first).
pub fn check_headers(
    config: &WebhookConfig,
    env: Environment,
    source_name: &str,
    req: &WebhookRequest<'_>,
    now_unix: i64,
) -> Result<(), Failure> {
    match config.sources.get(source_name) {
        Some(source) if source.is_configured() => {
            let facts = facts(config, source_name, now_unix);
            let (scheme, ctx) = select(source, req, &facts)?;
            schemes::check_headers(scheme, &ctx)
        }
        _ if env == Environment::Development => Ok(()),
        _ => Err(Failure::SourceNotConfigured),
    }
}

/// Security event emitted for every refused delivery (the original's event type).
pub const EVENT_TYPE: &str = "webhook_validation_failure";
/// Longest header value kept in a security event.
const MAX_EVENT_HEADER_CHARS: usize = 256;

/// Request headers for a security event: signature, token, secret and credential values are
/// replaced by `[REDACTED]` (the name stays, to show the header was sent); `:path` is left out
/// (the event carries the normalised path) and long values are cut.
pub fn sanitised_headers(headers: &[(String, String)]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(':') && lower != ":method" && lower != ":authority" {
            continue;
        }
        let value = if is_sensitive_header(&lower) {
            "[REDACTED]".to_string()
        } else {
            value.chars().take(MAX_EVENT_HEADER_CHARS).collect()
        };
        out.entry(lower).or_insert(serde_json::Value::String(value));
    }
    serde_json::Value::Object(out)
}

fn is_sensitive_header(lower_name: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "signature",
        "hmac",
        "token",
        "secret",
        "auth",
        "cookie",
        "key",
        "password",
        "session",
    ];
    MARKERS.iter().any(|m| lower_name.contains(m))
}

#[cfg(test)]
mod tests;
