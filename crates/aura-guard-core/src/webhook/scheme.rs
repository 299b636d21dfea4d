//! The signature schemes a source may accept (their configuration spelling) and the
//! decoding of scheme-specific keys.

use base64::Engine;
use serde::Deserialize;

/// A signature scheme a source accepts. Names are the serde (config) spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// The original's `X-Webhook-Signature` = hex HMAC-SHA256 of `{X-Webhook-Timestamp}.{body}`
    /// (docs/original-behaviour.md#webhooks).
    Generic,
    /// `Stripe-Signature: t=…,v1=…`.
    Stripe,
    /// `x-square-hmacsha256-signature`: base64 HMAC-SHA256 of public URL + body.
    Square,
    /// Legacy `x-square-signature` (HMAC-SHA1). Opt-in.
    SquareSha1,
    /// `X-Twilio-Signature`: base64 HMAC-SHA1 of URL + sorted form params.
    Twilio,
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Legacy `X-Hub-Signature: sha1=<hex>`. Opt-in.
    GithubSha1,
    /// `X-Shopify-Hmac-Sha256` / `shopify-hmac-sha256`: base64 HMAC-SHA256 of the body.
    Shopify,
    /// `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
    Slack,
    /// Standard Webhooks / Svix: `webhook-*` or `svix-*` headers.
    Standard,
    /// `Toast-Signature`: base64 HMAC-SHA256 of body + envelope `timestamp` (unconfirmed input).
    Toast,
    /// Clover Hosted Checkout `Clover-Signature: t=…,v1=<hex>`.
    Clover,
    /// Clover app webhooks: static `X-Clover-Auth` token. Does NOT authenticate the body.
    CloverApp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Generic => "generic",
            Scheme::Stripe => "stripe",
            Scheme::Square => "square",
            Scheme::SquareSha1 => "square-sha1",
            Scheme::Twilio => "twilio",
            Scheme::Github => "github",
            Scheme::GithubSha1 => "github-sha1",
            Scheme::Shopify => "shopify",
            Scheme::Slack => "slack",
            Scheme::Standard => "standard",
            Scheme::Toast => "toast",
            Scheme::Clover => "clover",
            Scheme::CloverApp => "clover-app",
        }
    }

    /// Schemes that sign the public URL and so need `public_url`.
    pub fn signs_url(self) -> bool {
        matches!(self, Scheme::Square | Scheme::SquareSha1 | Scheme::Twilio)
    }
}

/// Standard Webhooks key: base64 of the secret after `whsec_`; padding optional.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(b64)
        .ok()
        .filter(|k| !k.is_empty())
}
