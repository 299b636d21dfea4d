//! Helpers shared by the fuzz targets (fuzz_targets/): turning fuzz bytes into the inputs of
//! one webhook scheme, and the sign-then-verify round trip every scheme must pass.
//! docs/robustness.md#fuzzing lists the targets and what each asserts.

use arbitrary::{Result, Unstructured};
use aura_guard_core::fuzz_api;
use aura_guard_core::secret::Secret;
use aura_guard_core::webhook::{self, Scheme, SourceConfig, WebhookRequest};

/// The clock every webhook target verifies at.
pub const NOW: i64 = 1_700_000_000;
pub const TOLERANCE_S: u32 = 300;

/// Every header a scheme reads (any case): fuzzed headers draw their names from here, and the
/// round trip keeps extra headers of these names out (they would legitimately change it).
pub const SCHEME_HEADERS: &[&str] = &[
    "X-Webhook-Signature",
    "X-Webhook-Timestamp",
    "Stripe-Signature",
    "x-square-hmacsha256-signature",
    "x-square-signature",
    "X-Twilio-Signature",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-GitHub-Delivery",
    "X-Shopify-Hmac-Sha256",
    "shopify-hmac-sha256",
    "X-Shopify-Webhook-Id",
    "shopify-webhook-id",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "Toast-Signature",
    "Clover-Signature",
    "X-Clover-Auth",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
];

/// A secret as the configuration would hold it: not blank, no surrounding space (headers
/// are trimmed, so a Clover app token with spaces could never match).
pub fn secret(u: &mut Unstructured<'_>, scheme: Scheme) -> Result<String> {
    let raw: String = u.arbitrary()?;
    let s = raw.trim();
    let s = if s.is_empty() { "s" } else { s };
    Ok(match scheme {
        // Standard Webhooks keys are base64 after `whsec_`.
        Scheme::Standard => {
            use base64::Engine;
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
            )
        }
        _ => s.to_string(),
    })
}

/// Headers with names drawn from [`SCHEME_HEADERS`] (or anything) and arbitrary values.
pub fn headers(u: &mut Unstructured<'_>) -> Result<Vec<(String, String)>> {
    let n = u.int_in_range(0..=8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = if u.ratio(7, 8)? {
            let n: &&str = u.choose(SCHEME_HEADERS)?;
            if u.arbitrary()? {
                n.to_ascii_lowercase()
            } else {
                (*n).to_string()
            }
        } else {
            u.arbitrary()?
        };
        out.push((name, u.arbitrary()?));
    }
    Ok(out)
}

pub fn source(schemes: &[Scheme], secrets: &[String], public_url: Option<String>) -> SourceConfig {
    SourceConfig {
        schemes: schemes.to_vec(),
        secrets: secrets.iter().map(|s| Secret::new(s.clone())).collect(),
        public_url,
        tolerance_s: TOLERANCE_S,
        ..SourceConfig::default()
    }
}

/// A verification that passed is consistent: one of the source's schemes, a replay key for
/// the source (except the clover-app token, which signs no body), a TTL within the window.
pub fn check_verified(schemes: &[Scheme], name: &str, v: &webhook::Verified) {
    assert!(schemes.contains(&v.scheme), "{v:?} not in {schemes:?}");
    match &v.replay_key {
        Some(k) => assert!(k.starts_with(&format!("{name}:")), "{k}"),
        None => assert_eq!(v.scheme, Scheme::CloverApp),
    }
    assert!(
        (0..=2 * i64::from(TOLERANCE_S)).contains(&v.replay_ttl_s),
        "{v:?}"
    );
}

/// The fuzz case for one family of schemes:
/// 1. arbitrary headers, body and path: verification never panics, and whatever it accepts
///    is consistent ([`check_verified`]);
/// 2. the round trip: a delivery signed for `scheme` with an arbitrary secret, body,
///    timestamp within the window and URL verifies, also with a second (rotated) secret
///    configured first and with unrelated headers around it.
pub fn scheme_case(schemes: &[Scheme], data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let scheme = *u.choose(schemes)?;
    let key = secret(&mut u, scheme)?;
    let other = secret(&mut u, scheme)?;
    let body: Vec<u8> = u.arbitrary()?;
    let path_and_query: String = u.arbitrary()?;
    let public_url: Option<String> = if scheme.signs_url() || u.arbitrary()? {
        Some(u.arbitrary()?)
    } else {
        None
    };
    let fuzzed_headers = headers(&mut u)?;
    let require_timestamp: bool = u.arbitrary()?;
    let offset = i64::from(u.int_in_range(-(TOLERANCE_S as i32)..=TOLERANCE_S as i32)?);
    let extra = headers(&mut u)?;

    // 1. Arbitrary input.
    let src = source(&[scheme], &[other.clone(), key.clone()], public_url.clone());
    let req = WebhookRequest {
        headers: &fuzzed_headers,
        body: &body,
        path_and_query: &path_and_query,
    };
    if let Ok(v) = webhook::verify(&src, "fuzz", &req, NOW, require_timestamp) {
        check_verified(&[scheme], "fuzz", &v);
    }

    // 2. Round trip. The URL the provider signs: the public URL, plus the query when the
    // public URL has none (the rule in webhook/schemes.rs).
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let mut url = public_url.clone();
    if scheme == Scheme::Twilio && u.arbitrary()? {
        // Twilio signs JSON bodies through a bodySHA256 query parameter.
        url = url.map(|u| fuzz_api::twilio_json_url(&u, &body));
    }
    let Some(signed) = fuzz_api::sign(scheme, &key, &body, NOW + offset, url.as_deref(), None)
    else {
        // Only Toast without an envelope timestamp cannot be signed.
        assert!(
            scheme == Scheme::Toast && fuzz_api::toast_timestamp(&body).is_none(),
            "{scheme:?} could not be signed"
        );
        return Ok(());
    };
    let mut all = signed.clone();
    all.extend(extra.into_iter().filter(|(n, _)| {
        !SCHEME_HEADERS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(n.trim()))
    }));
    let req = WebhookRequest {
        headers: &all,
        body: &body,
        path_and_query: path,
    };
    let src = source(&[scheme], &[other, key], url);
    match webhook::verify(&src, "fuzz", &req, NOW, require_timestamp) {
        Ok(v) => check_verified(&[scheme], "fuzz", &v),
        Err(e) => panic!("{scheme:?}: a signed delivery was refused: {e:?} {signed:?}"),
    }
    Ok(())
}
