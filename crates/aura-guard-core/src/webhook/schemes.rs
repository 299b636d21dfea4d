//! Per-scheme signed-content construction and verification. Every comparison of a computed
//! signature with a received one is constant time (`subtle`); every configured secret is tried.

use super::config::SourceConfig;
use super::scheme::{standard_webhooks_key, Scheme};
use super::{Failure, Verified, WebhookRequest};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use subtle::ConstantTimeEq;

pub(crate) const GENERIC_SIGNATURE: &str = "X-Webhook-Signature";
pub(crate) const GENERIC_TIMESTAMP: &str = "X-Webhook-Timestamp";
pub(crate) const STRIPE_SIGNATURE: &str = "Stripe-Signature";
pub(crate) const SQUARE_SIGNATURE: &str = "x-square-hmacsha256-signature";
pub(crate) const SQUARE_SHA1_SIGNATURE: &str = "x-square-signature";
pub(crate) const TWILIO_SIGNATURE: &str = "X-Twilio-Signature";
pub(crate) const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
pub(crate) const GITHUB_SHA1_SIGNATURE: &str = "X-Hub-Signature";
const GITHUB_DELIVERY: &str = "X-GitHub-Delivery";
pub(crate) const SHOPIFY_SIGNATURE: &str = "X-Shopify-Hmac-Sha256";
const SHOPIFY_SIGNATURE_EVENTS: &str = "shopify-hmac-sha256";
const SHOPIFY_WEBHOOK_ID: &str = "X-Shopify-Webhook-Id";
const SHOPIFY_WEBHOOK_ID_EVENTS: &str = "shopify-webhook-id";
pub(crate) const SLACK_SIGNATURE: &str = "X-Slack-Signature";
pub(crate) const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
pub(crate) const TOAST_SIGNATURE: &str = "Toast-Signature";
pub(crate) const CLOVER_SIGNATURE: &str = "Clover-Signature";
pub(crate) const CLOVER_AUTH: &str = "X-Clover-Auth";

/// Standard Webhooks header family; Svix sends the same with a `svix-` prefix.
pub(crate) struct StdHeaders {
    pub id: &'static str,
    pub timestamp: &'static str,
    pub signature: &'static str,
}
pub(crate) const STD_WEBHOOK: StdHeaders = StdHeaders {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};
const STD_SVIX: StdHeaders = StdHeaders {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) struct Ctx<'a> {
    pub name: &'a str,
    pub source: &'a SourceConfig,
    pub req: &'a WebhookRequest<'a>,
    pub now: i64,
    pub require_timestamp: bool,
    /// Whether the replay key is wanted: it is one more pass over the body (a SHA-256 of the
    /// signed string), so it is skipped when replay protection is off.
    pub want_key: bool,
}

pub(crate) fn signature_present(scheme: Scheme, req: &WebhookRequest<'_>) -> bool {
    match scheme {
        Scheme::Generic => req.header(GENERIC_SIGNATURE).is_some(),
        Scheme::Stripe => req.header(STRIPE_SIGNATURE).is_some(),
        Scheme::Square => req.header(SQUARE_SIGNATURE).is_some(),
        Scheme::SquareSha1 => req.header(SQUARE_SHA1_SIGNATURE).is_some(),
        Scheme::Twilio => req.header(TWILIO_SIGNATURE).is_some(),
        Scheme::Github => req.header(GITHUB_SIGNATURE).is_some(),
        Scheme::GithubSha1 => req.header(GITHUB_SHA1_SIGNATURE).is_some(),
        Scheme::Shopify => shopify_signature(req).is_some(),
        Scheme::Slack => req.header(SLACK_SIGNATURE).is_some(),
        Scheme::Standard => std_headers(req).is_some(),
        Scheme::Toast => req.header(TOAST_SIGNATURE).is_some(),
        Scheme::Clover => req.header(CLOVER_SIGNATURE).is_some(),
        Scheme::CloverApp => req.header(CLOVER_AUTH).is_some(),
    }
}

/// The checks of `scheme` that need only the request headers (signature header parsed,
/// timestamp present, well formed and inside the window, public URL known), made by the same
/// code and in the same order as [`verify_scheme`] makes them: an error here is exactly the
/// error verification would give whatever the body, so the filter answers it before any body
/// is buffered. `Ok` when the answer depends on the body.
pub(crate) fn check_headers(scheme: Scheme, ctx: &Ctx<'_>) -> Result<(), Failure> {
    match scheme {
        Scheme::Generic => generic_headers(ctx).map(drop),
        Scheme::Stripe => t_v1_headers(ctx, STRIPE_SIGNATURE).map(drop),
        Scheme::Clover => t_v1_headers(ctx, CLOVER_SIGNATURE).map(drop),
        Scheme::Square | Scheme::SquareSha1 => square_headers(ctx, scheme).map(drop),
        Scheme::Twilio => twilio_headers(ctx).map(drop),
        Scheme::Github | Scheme::GithubSha1 => github_headers(ctx, scheme).map(drop),
        Scheme::Shopify => shopify_signature(ctx.req)
            .map(drop)
            .ok_or(Failure::MissingSignature),
        Scheme::Slack => slack_headers(ctx).map(drop),
        Scheme::Standard => standard_headers(ctx).map(drop),
        Scheme::Toast => toast_headers(ctx).map(drop),
        Scheme::CloverApp => clover_app_headers(ctx).map(drop),
    }
}

pub(crate) fn verify_scheme(scheme: Scheme, ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    match scheme {
        Scheme::Generic => verify_generic(ctx),
        Scheme::Stripe => verify_t_v1(ctx, scheme, STRIPE_SIGNATURE),
        Scheme::Clover => verify_t_v1(ctx, scheme, CLOVER_SIGNATURE),
        Scheme::Square | Scheme::SquareSha1 => verify_square(ctx, scheme),
        Scheme::Twilio => verify_twilio(ctx),
        Scheme::Github | Scheme::GithubSha1 => verify_github(ctx, scheme),
        Scheme::Shopify => verify_shopify(ctx),
        Scheme::Slack => verify_slack(ctx),
        Scheme::Standard => verify_standard(ctx),
        Scheme::Toast => verify_toast(ctx),
        Scheme::CloverApp => verify_clover_app(ctx),
    }
}

// ---- primitives -------------------------------------------------------------------------

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    #[cfg(test)]
    hashed::add(parts);
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; an empty MAC can never match a received signature.
        Err(_) => Vec::new(),
    }
}

pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    #[cfg(test)]
    hashed::add(parts);
    match <Hmac<Sha1> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Constant time for equal lengths; lengths of signatures are public.
fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn parse_ts(value: &str) -> Result<i64, Failure> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| Failure::InvalidTimestamp)
}

/// The original's rule: `abs(now - ts) > tolerance` is refused; exactly `tolerance` passes.
fn check_window(ts: i64, ctx: &Ctx<'_>) -> Result<(), Failure> {
    if ts.abs_diff(ctx.now) > u64::from(ctx.source.tolerance_s) {
        Err(Failure::TimestampTooOld)
    } else {
        Ok(())
    }
}

fn ttl(ctx: &Ctx<'_>, ts: Option<i64>) -> i64 {
    let tol = i64::from(ctx.source.tolerance_s);
    match ts {
        Some(ts) => ts.saturating_add(tol).saturating_sub(ctx.now).max(0),
        None => tol,
    }
}

/// What a replay key is derived from (docs/webhooks.md#what-the-replay-key-covers). Never the
/// scheme or header set the client chose, never bytes the signature does not cover.
pub(crate) enum KeyBasis<'a> {
    /// The exact string the MAC covers, given in pieces that are concatenated: the same signed
    /// string gets the same key whichever scheme, header set, parameter order or encoding
    /// carried it, and whichever of several signatures (rotation) matched.
    Signed(&'a [&'a [u8]]),
    /// Standard Webhooks' signed `webhook-id`: the spec's idempotency key, the same for every
    /// attempt of one message.
    MessageId(&'a str),
}

/// `<source>:<hex of the first 16 bytes of sha256(tag, content)>`. The tag keeps the two
/// bases apart; the pieces of a signed string are hashed as one concatenated string, so
/// `["t", ".", body]` and `["t.body"]` are the same content.
pub(crate) fn replay_key(source: &str, basis: &KeyBasis<'_>) -> String {
    let mut h = Sha256::new();
    match basis {
        KeyBasis::Signed(parts) => {
            #[cfg(test)]
            hashed::add(parts);
            h.update(b"signed\0");
            for p in *parts {
                h.update(p);
            }
        }
        KeyBasis::MessageId(id) => {
            h.update(b"message-id\0");
            h.update(id.as_bytes());
        }
    }
    let digest = h.finalize();
    let short = digest.get(..16).unwrap_or(&[]);
    format!("{source}:{}", hex::encode(short))
}

fn verified(
    ctx: &Ctx<'_>,
    scheme: Scheme,
    ts: Option<i64>,
    basis: KeyBasis<'_>,
    delivery_id: Option<&str>,
) -> Verified {
    Verified {
        scheme,
        replay_key: ctx.want_key.then(|| replay_key(ctx.name, &basis)),
        replay_ttl_s: ttl(ctx, ts),
        delivery_id: delivery_id.map(str::to_string),
    }
}

fn any_secret(ctx: &Ctx<'_>, mut matches: impl FnMut(&[u8]) -> bool) -> Result<(), Failure> {
    // Try every secret (no early exit on the first mismatch is needed for safety: each
    // comparison is constant time, and which secret matched is not secret).
    if ctx
        .source
        .secrets
        .iter()
        .any(|s| matches(s.expose().as_bytes()))
    {
        Ok(())
    } else {
        Err(Failure::InvalidSignature)
    }
}

// ---- signed-content builders, shared with sign() ----------------------------------------

pub(crate) fn generic_signature(secret: &[u8], ts: Option<&str>, body: &[u8]) -> String {
    match ts {
        Some(ts) => hex::encode(hmac_sha256(secret, &[ts.as_bytes(), b".", body])),
        None => hex::encode(hmac_sha256(secret, &[body])),
    }
}

/// Stripe and Clover Hosted Checkout: hex HMAC-SHA256 of `{t}.{body}`.
pub(crate) fn t_dot_body_signature(secret: &[u8], t: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, &[t.as_bytes(), b".", body]))
}

pub(crate) fn square_signature(scheme: Scheme, secret: &[u8], url: &str, body: &[u8]) -> String {
    if scheme == Scheme::SquareSha1 {
        b64(&hmac_sha1(secret, &[url.as_bytes(), body]))
    } else {
        b64(&hmac_sha256(secret, &[url.as_bytes(), body]))
    }
}

/// Twilio's signed parameter string: for each param name in sorted order, each distinct value
/// sorted, name+value, with no separators (so `a=bc` and `ab=c` sign the same string).
pub(crate) fn twilio_param_string(params: &TwilioParams) -> Vec<u8> {
    let mut s = Vec::new();
    for (name, values) in params {
        for v in values {
            s.extend_from_slice(name.as_bytes());
            s.extend_from_slice(v.as_bytes());
        }
    }
    s
}

/// Twilio: base64 HMAC-SHA1 of URL + the parameter string.
pub(crate) fn twilio_signature(secret: &[u8], url: &str, params: &[u8]) -> String {
    b64(&hmac_sha1(secret, &[url.as_bytes(), params]))
}

pub(crate) type TwilioParams = BTreeMap<String, BTreeSet<String>>;

pub(crate) fn twilio_form_params(body: &[u8]) -> TwilioParams {
    let mut params = TwilioParams::new();
    for (k, v) in form_urlencoded::parse(body) {
        params
            .entry(k.into_owned())
            .or_default()
            .insert(v.into_owned());
    }
    params
}

/// The `bodySHA256` query parameter Twilio adds for non-form bodies.
pub(crate) fn twilio_body_hash(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

pub(crate) fn github_signature(scheme: Scheme, secret: &[u8], body: &[u8]) -> String {
    if scheme == Scheme::GithubSha1 {
        format!("sha1={}", hex::encode(hmac_sha1(secret, &[body])))
    } else {
        format!("sha256={}", hex::encode(hmac_sha256(secret, &[body])))
    }
}

pub(crate) fn shopify_signature_value(secret: &[u8], body: &[u8]) -> String {
    b64(&hmac_sha256(secret, &[body]))
}

pub(crate) fn slack_signature(secret: &[u8], ts: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(hmac_sha256(secret, &[b"v0:", ts.as_bytes(), b":", body]))
    )
}

/// Standard Webhooks `v1` signature value (without the `v1,` prefix).
pub(crate) fn standard_signature(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    b64(&hmac_sha256(
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    ))
}

pub(crate) fn toast_signature(secret: &[u8], body: &[u8], timestamp: &str) -> String {
    b64(&hmac_sha256(secret, &[body, timestamp.as_bytes()]))
}

#[derive(serde::Deserialize)]
pub(crate) struct ToastEnvelope {
    pub timestamp: Option<String>,
    pub guid: Option<String>,
}

/// Toast's documentation does not say where the signed timestamp comes from; we take the
/// envelope's top-level `timestamp` field (open question, see docs/webhooks.md).
pub(crate) fn toast_envelope(body: &[u8]) -> Option<ToastEnvelope> {
    serde_json::from_slice::<ToastEnvelope>(body).ok()
}

// ---- schemes ------------------------------------------------------------------------------

/// Signature, timestamp string and its value (None: the original's body-only fallback).
type GenericHeaders<'a> = (&'a str, Option<&'a str>, Option<i64>);

fn generic_headers<'a>(ctx: &Ctx<'a>) -> Result<GenericHeaders<'a>, Failure> {
    let req = ctx.req;
    let sig = req
        .header(GENERIC_SIGNATURE)
        .ok_or(Failure::MissingSignature)?;
    let ts_str = req.header(GENERIC_TIMESTAMP);
    let ts = match ts_str {
        Some(s) => {
            let ts = parse_ts(s)?;
            check_window(ts, ctx)?;
            Some(ts)
        }
        None if ctx.require_timestamp => return Err(Failure::MissingTimestamp),
        // The original's fallback (unsafe): body signed alone.
        None => None,
    };
    Ok((sig, ts_str, ts))
}

fn verify_generic(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let req = ctx.req;
    let (sig, ts_str, ts) = generic_headers(ctx)?;
    // Exact, case-sensitive comparison of the hex string, like the original's compare_digest.
    any_secret(ctx, |secret| {
        ct_eq(sig, &generic_signature(secret, ts_str, req.body))
    })?;
    // The signed string: `{ts}.{body}`, or the body alone (the original's fallback). Stripe
    // and Clover sign the same string with the same MAC, so a re-wrap gets the same key.
    let signed: &[&[u8]] = match ts_str {
        Some(t) => &[t.as_bytes(), b".", req.body],
        None => &[req.body],
    };
    Ok(verified(
        ctx,
        Scheme::Generic,
        ts,
        KeyBasis::Signed(signed),
        None,
    ))
}

/// `t=<unix>,v1=<hex>[,v1=…][,v0=…]`: only `v1` counts (v0 is Stripe's test-mode decoy;
/// accepting it would allow a downgrade).
pub(crate) struct TList<'a> {
    pub t: Option<&'a str>,
    pub v1: Vec<&'a str>,
}

pub(crate) fn parse_t_list(header: &str) -> Result<TList<'_>, Failure> {
    let mut list = TList {
        t: None,
        v1: Vec::new(),
    };
    for item in header.split(',') {
        // Like stripe-go: an item that is not key=value makes the whole header invalid.
        let (k, v) = item.split_once('=').ok_or(Failure::InvalidSignature)?;
        match k.trim() {
            "t" if list.t.is_none() => list.t = Some(v.trim()),
            "v1" => list.v1.push(v.trim()),
            _ => {}
        }
    }
    Ok(list)
}

/// The parsed `t=…,v1=…` header, its `t` string and value.
fn t_v1_headers<'a>(ctx: &Ctx<'a>, header: &str) -> Result<(TList<'a>, &'a str, i64), Failure> {
    let value = ctx.req.header(header).ok_or(Failure::MissingSignature)?;
    let list = parse_t_list(value)?;
    let t_str = list.t.ok_or(Failure::MissingTimestamp)?;
    let ts = parse_ts(t_str)?;
    // Both directions, like stripe-dotnet and the original; the SDKs' other languages only
    // refuse old ones. Clover documents no tolerance: t is signed, so we apply ours.
    check_window(ts, ctx)?;
    if list.v1.is_empty() {
        return Err(Failure::InvalidSignature);
    }
    Ok((list, t_str, ts))
}

fn verify_t_v1(ctx: &Ctx<'_>, scheme: Scheme, header: &str) -> Result<Verified, Failure> {
    let req = ctx.req;
    let (list, t_str, ts) = t_v1_headers(ctx, header)?;
    any_secret(ctx, |secret| {
        let expected = t_dot_body_signature(secret, t_str, req.body);
        list.v1.iter().any(|v| ct_eq(v, &expected))
    })?;
    Ok(verified(
        ctx,
        scheme,
        Some(ts),
        KeyBasis::Signed(&[t_str.as_bytes(), b".", req.body]),
        None,
    ))
}

/// The URL the provider signed: the configured public URL, plus the request's query string
/// when the configured URL has none.
fn signed_url(ctx: &Ctx<'_>) -> Result<String, Failure> {
    let base = ctx
        .source
        .public_url
        .as_deref()
        .ok_or(Failure::SourceNotConfigured)?;
    Ok(match ctx.req.query() {
        Some(q) if !base.contains('?') => format!("{base}?{q}"),
        _ => base.to_string(),
    })
}

fn square_headers<'a>(ctx: &Ctx<'a>, scheme: Scheme) -> Result<(&'a str, String), Failure> {
    let header = if scheme == Scheme::SquareSha1 {
        SQUARE_SHA1_SIGNATURE
    } else {
        SQUARE_SIGNATURE
    };
    let sig = ctx.req.header(header).ok_or(Failure::MissingSignature)?;
    Ok((sig, signed_url(ctx)?))
}

fn verify_square(ctx: &Ctx<'_>, scheme: Scheme) -> Result<Verified, Failure> {
    let (sig, url) = square_headers(ctx, scheme)?;
    any_secret(ctx, |secret| {
        ct_eq(sig, &square_signature(scheme, secret, &url, ctx.req.body))
    })?;
    Ok(verified(
        ctx,
        scheme,
        None,
        KeyBasis::Signed(&[url.as_bytes(), ctx.req.body]),
        None,
    ))
}

/// The URL as received, without its port, and with the scheme's default port: Twilio's
/// back end is inconsistent about ports, so its SDKs accept all three.
pub(crate) fn twilio_url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = (rest.get(..end).unwrap_or(""), rest.get(end..).unwrap_or(""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // IPv6 literals keep their colons inside brackets.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    };
    match port {
        Some(_) => out.push(format!("{scheme}://{userinfo}{host}{tail}")),
        None => {
            let default = match scheme.to_ascii_lowercase().as_str() {
                "https" => Some("443"),
                "http" => Some("80"),
                _ => None,
            };
            if let Some(p) = default {
                out.push(format!("{scheme}://{userinfo}{host}:{p}{tail}"));
            }
        }
    }
    out
}

fn twilio_headers<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, String), Failure> {
    let sig = ctx
        .req
        .header(TWILIO_SIGNATURE)
        .ok_or(Failure::MissingSignature)?;
    Ok((sig, signed_url(ctx)?))
}

fn verify_twilio(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let req = ctx.req;
    let (sig, url) = twilio_headers(ctx)?;
    let params = match twilio_body_hash(&url) {
        // Non-form body: the URL (carrying the body hash) is signed alone; the hash binds the body.
        Some(expected_hash) => {
            let actual = hex::encode(Sha256::digest(req.body));
            if !ct_eq(&expected_hash, &actual) {
                return Err(Failure::InvalidSignature);
            }
            TwilioParams::new()
        }
        None => twilio_form_params(req.body),
    };
    let param_string = twilio_param_string(&params);
    let variants = twilio_url_variants(&url);
    any_secret(ctx, |secret| {
        variants
            .iter()
            .any(|u| ct_eq(sig, &twilio_signature(secret, u, &param_string)))
    })?;
    // The decoded, sorted parameters are what is signed, not the raw body: reordered or
    // re-encoded copies of one delivery get one key. The URL before its port variants, so
    // the key does not depend on which variant (or secret) matched.
    Ok(verified(
        ctx,
        Scheme::Twilio,
        None,
        KeyBasis::Signed(&[url.as_bytes(), &param_string]),
        None,
    ))
}

fn github_headers<'a>(ctx: &Ctx<'a>, scheme: Scheme) -> Result<&'a str, Failure> {
    let header = if scheme == Scheme::GithubSha1 {
        GITHUB_SHA1_SIGNATURE
    } else {
        GITHUB_SIGNATURE
    };
    ctx.req.header(header).ok_or(Failure::MissingSignature)
}

fn verify_github(ctx: &Ctx<'_>, scheme: Scheme) -> Result<Verified, Failure> {
    let sig = github_headers(ctx, scheme)?;
    // The whole `sha256=<hex>` string is compared, as octokit does: no prefix, no match.
    any_secret(ctx, |secret| {
        ct_eq(sig, &github_signature(scheme, secret, ctx.req.body))
    })?;
    Ok(verified(
        ctx,
        scheme,
        None,
        KeyBasis::Signed(&[ctx.req.body]),
        ctx.req.header(GITHUB_DELIVERY),
    ))
}

fn shopify_signature<'a>(req: &'a WebhookRequest<'_>) -> Option<&'a str> {
    req.header(SHOPIFY_SIGNATURE)
        .or_else(|| req.header(SHOPIFY_SIGNATURE_EVENTS))
}

fn verify_shopify(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let sig = shopify_signature(ctx.req).ok_or(Failure::MissingSignature)?;
    any_secret(ctx, |secret| {
        ct_eq(sig, &shopify_signature_value(secret, ctx.req.body))
    })?;
    let id = ctx
        .req
        .header(SHOPIFY_WEBHOOK_ID)
        .or_else(|| ctx.req.header(SHOPIFY_WEBHOOK_ID_EVENTS));
    Ok(verified(
        ctx,
        Scheme::Shopify,
        None,
        KeyBasis::Signed(&[ctx.req.body]),
        id,
    ))
}

fn slack_headers<'a>(ctx: &Ctx<'a>) -> Result<(&'a str, &'a str, i64), Failure> {
    let req = ctx.req;
    let sig = req
        .header(SLACK_SIGNATURE)
        .ok_or(Failure::MissingSignature)?;
    let ts_str = req
        .header(SLACK_TIMESTAMP)
        .ok_or(Failure::MissingTimestamp)?;
    let ts = parse_ts(ts_str)?;
    check_window(ts, ctx)?;
    Ok((sig, ts_str, ts))
}

fn verify_slack(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let req = ctx.req;
    let (sig, ts_str, ts) = slack_headers(ctx)?;
    any_secret(ctx, |secret| {
        ct_eq(sig, &slack_signature(secret, ts_str, req.body))
    })?;
    Ok(verified(
        ctx,
        Scheme::Slack,
        Some(ts),
        KeyBasis::Signed(&[b"v0:", ts_str.as_bytes(), b":", req.body]),
        None,
    ))
}

/// `svix-*` when a `svix-signature` is present, else `webhook-*` (Svix libraries fall back).
fn std_headers(req: &WebhookRequest<'_>) -> Option<&'static StdHeaders> {
    [&STD_SVIX, &STD_WEBHOOK]
        .into_iter()
        .find(|h| req.header(h.signature).is_some())
}

/// The `v1` signatures of a Standard Webhooks signature header: space-separated
/// `<version>,<base64>`; unknown versions (v1a: ed25519) are skipped.
pub(crate) fn standard_v1_signatures(sigs: &str) -> Vec<&str> {
    sigs.split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(v, _)| *v == "v1")
        .map(|(_, s)| s)
        .collect()
}

/// The message id, timestamp string and value, and the `v1` signatures.
type StandardHeaders<'a> = (&'a str, &'a str, i64, Vec<&'a str>);

fn standard_headers<'a>(ctx: &Ctx<'a>) -> Result<StandardHeaders<'a>, Failure> {
    let req = ctx.req;
    let names = std_headers(req).ok_or(Failure::MissingSignature)?;
    let sigs = req
        .header(names.signature)
        .ok_or(Failure::MissingSignature)?;
    let id = req.header(names.id).ok_or(Failure::InvalidSignature)?;
    let ts_str = req
        .header(names.timestamp)
        .ok_or(Failure::MissingTimestamp)?;
    let ts = parse_ts(ts_str)?;
    check_window(ts, ctx)?;
    let v1 = standard_v1_signatures(sigs);
    if v1.is_empty() {
        return Err(Failure::InvalidSignature);
    }
    Ok((id, ts_str, ts, v1))
}

fn verify_standard(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let req = ctx.req;
    let (id, ts_str, ts, v1) = standard_headers(ctx)?;
    any_secret(ctx, |secret| {
        let Some(key) = std::str::from_utf8(secret)
            .ok()
            .and_then(standard_webhooks_key)
        else {
            return false;
        };
        let expected = standard_signature(&key, id, ts_str, req.body);
        v1.iter().any(|s| ct_eq(s, &expected))
    })?;
    // webhook-id is signed and is the spec's idempotency key: one key for svix-* and
    // webhook-* headers, for any subset of the v1 list, and for every attempt of the message.
    Ok(verified(
        ctx,
        Scheme::Standard,
        Some(ts),
        KeyBasis::MessageId(id),
        Some(id),
    ))
}

/// Only the signature: Toast's signed timestamp is in the body.
fn toast_headers<'a>(ctx: &Ctx<'a>) -> Result<&'a str, Failure> {
    ctx.req
        .header(TOAST_SIGNATURE)
        .ok_or(Failure::MissingSignature)
}

fn verify_toast(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let req = ctx.req;
    let sig = toast_headers(ctx)?;
    let envelope = toast_envelope(req.body).ok_or(Failure::MissingTimestamp)?;
    let ts = envelope
        .timestamp
        .as_deref()
        .ok_or(Failure::MissingTimestamp)?;
    // No window check: Toast documents no tolerance and the timestamp format is unconfirmed.
    any_secret(ctx, |secret| {
        ct_eq(sig, &toast_signature(secret, req.body, ts))
    })?;
    Ok(verified(
        ctx,
        Scheme::Toast,
        None,
        KeyBasis::Signed(&[req.body, ts.as_bytes()]),
        envelope.guid.as_deref(),
    ))
}

fn clover_app_headers<'a>(ctx: &Ctx<'a>) -> Result<&'a str, Failure> {
    ctx.req.header(CLOVER_AUTH).ok_or(Failure::MissingSignature)
}

fn verify_clover_app(ctx: &Ctx<'_>) -> Result<Verified, Failure> {
    let token = clover_app_headers(ctx)?;
    // A static shared token: proves the sender knows it, says nothing about the body.
    any_secret(ctx, |secret| bool::from(token.as_bytes().ct_eq(secret)))?;
    Ok(Verified {
        scheme: Scheme::CloverApp,
        replay_key: None,
        replay_ttl_s: 0,
        delivery_id: None,
    })
}

/// Bytes fed to the MAC and digest functions on this thread: tests pin how many passes over
/// the body one delivery costs (a pass is machine independent, unlike its time).
#[cfg(test)]
pub(crate) mod hashed {
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn add(parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        BYTES.with(|b| b.set(b.get().saturating_add(n)));
    }

    /// Bytes hashed since the last call.
    pub(crate) fn take() -> usize {
        BYTES.with(|b| b.replace(0))
    }
}
