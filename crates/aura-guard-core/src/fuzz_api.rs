//! The narrowest view of private parsers the fuzz targets need (fuzz/, docs/robustness.md,
//! "Fuzzing"). Compiled only with the `fuzz` feature, never into the module; it forwards to
//! the code the filter runs, so what is fuzzed is what ships.

use crate::webhook::{schemes, sign, Failure, Scheme};

/// `Stripe-Signature` / `Clover-Signature`: `t=<unix>,v1=<hex>[,…]` as (first `t`, every `v1`).
pub fn parse_t_list(header: &str) -> Result<(Option<&str>, Vec<&str>), Failure> {
    schemes::parse_t_list(header).map(|l| (l.t, l.v1))
}

/// The `v1` signatures of a Standard Webhooks / Svix `webhook-signature` list.
pub fn standard_v1_signatures(sigs: &str) -> Vec<&str> {
    schemes::standard_v1_signatures(sigs)
}

/// Twilio: the URL variants (as received, without port, with the default port).
pub fn twilio_url_variants(url: &str) -> Vec<String> {
    schemes::twilio_url_variants(url)
}

/// Twilio: the `bodySHA256` query parameter of a signed URL, if any.
pub fn twilio_body_hash(url: &str) -> Option<String> {
    schemes::twilio_body_hash(url)
}

/// Twilio: the signed parameter string of a form body (decoded, sorted).
pub fn twilio_form_param_string(body: &[u8]) -> Vec<u8> {
    schemes::twilio_param_string(&schemes::twilio_form_params(body))
}

/// Toast: the envelope's `timestamp` field, if the body has one.
pub fn toast_timestamp(body: &[u8]) -> Option<String> {
    schemes::toast_envelope(body).and_then(|e| e.timestamp)
}

/// Headers that make `body` verify under `scheme` with `secret` at `now` (the tests' signer).
pub fn sign(
    scheme: Scheme,
    secret: &str,
    body: &[u8],
    now: i64,
    url: Option<&str>,
    msg_id: Option<&str>,
) -> Option<Vec<(String, String)>> {
    sign::sign(&sign::SignRequest {
        scheme,
        secret,
        body,
        now,
        url,
        msg_id,
    })
    .ok()
}

/// Twilio: `url` with the `bodySHA256` parameter a JSON body is signed with.
pub fn twilio_json_url(url: &str, body: &[u8]) -> String {
    sign::twilio_json_url(url, body)
}
