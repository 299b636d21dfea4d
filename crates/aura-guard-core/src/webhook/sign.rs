//! Producing valid signature headers for each scheme: used by `scripts/sign-webhook` and by
//! the tests (sign, then verify, must round-trip).

use super::scheme::{standard_webhooks_key, Scheme};
use super::schemes::{self, *};
use sha2::{Digest, Sha256};
use std::fmt;

/// Inputs for [`sign`]. `url` is the exact public URL (Square, Twilio; query included);
/// `msg_id` is the Standard Webhooks id (derived from the body and time when `None`).
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    pub scheme: Scheme,
    pub secret: &'a str,
    pub body: &'a [u8],
    pub now: i64,
    pub url: Option<&'a str>,
    pub msg_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// Square and Twilio sign the public URL.
    UrlRequired,
    /// The standard scheme needs a `whsec_<base64>` secret.
    InvalidStandardSecret,
    /// Toast signs the envelope's `timestamp` field; the body has none.
    ToastTimestampMissing,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignError::UrlRequired => "this scheme signs the public URL: give the URL",
            SignError::InvalidStandardSecret => "the standard scheme needs a whsec_<base64> secret",
            SignError::ToastTimestampMissing => "Toast signs the body's \"timestamp\" field",
        })
    }
}

/// Appends Twilio's `bodySHA256=<hex sha256(body)>` query parameter, as Twilio does for
/// non-form (JSON) bodies.
pub fn twilio_json_url(url: &str, body: &[u8]) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}bodySHA256={}", hex::encode(Sha256::digest(body)))
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// Headers that make `body` verify under `scheme` with `secret` at time `now`.
pub fn sign(req: &SignRequest<'_>) -> Result<Vec<(String, String)>, SignError> {
    let secret = req.secret.as_bytes();
    let body = req.body;
    let now = req.now.to_string();
    Ok(match req.scheme {
        Scheme::Generic => vec![
            h(
                GENERIC_SIGNATURE,
                generic_signature(secret, Some(&now), body),
            ),
            h(GENERIC_TIMESTAMP, now),
        ],
        Scheme::Stripe | Scheme::Clover => {
            let header = if req.scheme == Scheme::Stripe {
                STRIPE_SIGNATURE
            } else {
                CLOVER_SIGNATURE
            };
            let sig = t_dot_body_signature(secret, &now, body);
            vec![h(header, format!("t={now},v1={sig}"))]
        }
        Scheme::Square | Scheme::SquareSha1 => {
            let url = req.url.ok_or(SignError::UrlRequired)?;
            let header = if req.scheme == Scheme::Square {
                SQUARE_SIGNATURE
            } else {
                SQUARE_SHA1_SIGNATURE
            };
            vec![h(header, square_signature(req.scheme, secret, url, body))]
        }
        Scheme::Twilio => {
            let url = req.url.ok_or(SignError::UrlRequired)?;
            let params = if schemes::twilio_body_hash(url).is_some() {
                TwilioParams::new()
            } else {
                twilio_form_params(body)
            };
            let signed = twilio_param_string(&params);
            vec![h(TWILIO_SIGNATURE, twilio_signature(secret, url, &signed))]
        }
        Scheme::Github | Scheme::GithubSha1 => {
            let header = if req.scheme == Scheme::Github {
                GITHUB_SIGNATURE
            } else {
                GITHUB_SHA1_SIGNATURE
            };
            vec![h(header, github_signature(req.scheme, secret, body))]
        }
        Scheme::Shopify => vec![h(SHOPIFY_SIGNATURE, shopify_signature_value(secret, body))],
        Scheme::Slack => vec![
            h(SLACK_SIGNATURE, slack_signature(secret, &now, body)),
            h(SLACK_TIMESTAMP, now),
        ],
        Scheme::Standard => {
            let key = standard_webhooks_key(req.secret).ok_or(SignError::InvalidStandardSecret)?;
            let id = match req.msg_id {
                Some(id) => id.to_string(),
                None => {
                    let d = Sha256::new()
                        .chain_update(now.as_bytes())
                        .chain_update(body)
                        .finalize();
                    format!("msg_{}", hex::encode(d.get(..12).unwrap_or(&[])))
                }
            };
            let sig = standard_signature(&key, &id, &now, body);
            vec![
                h(STD_WEBHOOK.id, id),
                h(STD_WEBHOOK.timestamp, now),
                h(STD_WEBHOOK.signature, format!("v1,{sig}")),
            ]
        }
        Scheme::Toast => {
            let ts = toast_envelope(body)
                .and_then(|e| e.timestamp)
                .ok_or(SignError::ToastTimestampMissing)?;
            vec![h(TOAST_SIGNATURE, toast_signature(secret, body, &ts))]
        }
        Scheme::CloverApp => vec![h(CLOVER_AUTH, req.secret)],
    })
}
