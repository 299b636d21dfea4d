//! Every vector of `data/webhook_vectors.json` (copied from the project's reference material)
//! through the core, with the vector's `now`: the verdict must equal `expected_valid`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use aura_guard_core::config::Environment;
use aura_guard_core::secret::Secret;
use aura_guard_core::webhook::config::{default_schemes, SourceConfig};
use aura_guard_core::webhook::scheme::Scheme;
use aura_guard_core::webhook::WebhookConfig;
use aura_guard_core::webhook::{check_headers, evaluate, Failure, Outcome, WebhookRequest};
use serde::Deserialize;
use std::collections::BTreeMap;

const VECTORS: &str = include_str!("data/webhook_vectors.json");
const EXPECTED_COUNT: usize = 64;

#[derive(Deserialize)]
struct BodyRepeat {
    char: String,
    count: usize,
}

// deny_unknown_fields: a new field in the vectors file must be handled here, not ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Vector {
    id: String,
    provider: String,
    scheme: String,
    origin: String,
    source: serde_json::Value,
    secret: String,
    headers: BTreeMap<String, String>,
    method: String,
    url: String,
    body: Option<String>,
    body_repeat: Option<BodyRepeat>,
    form_params: Option<Vec<(String, String)>>,
    signed_timestamp: Option<String>,
    now: Option<i64>,
    tolerance_s: Option<u32>,
    expected_valid: bool,
    verified: serde_json::Value,
    verified_by: serde_json::Value,
    note: String,
}

/// (source name, scheme) for a vector's `scheme` label.
fn scheme_of(label: &str) -> (&'static str, Scheme) {
    match label {
        "stripe-v1" => ("stripe", Scheme::Stripe),
        "github-sha256" => ("github", Scheme::Github),
        "github-sha1-legacy" => ("github", Scheme::GithubSha1),
        "square-hmacsha256" => ("square", Scheme::Square),
        "square-sha1-legacy" => ("square", Scheme::SquareSha1),
        "twilio-hmacsha1" => ("twilio", Scheme::Twilio),
        "slack-v0" => ("slack", Scheme::Slack),
        "standard-webhooks-v1" | "svix-v1" => ("standard", Scheme::Standard),
        "shopify-hmacsha256" => ("shopify", Scheme::Shopify),
        "toast-hmacsha256" => ("toast", Scheme::Toast),
        "clover-hosted-checkout" => ("clover", Scheme::Clover),
        "clover-app-auth-code" => ("clover-app", Scheme::CloverApp),
        other => panic!("unknown scheme label {other}"),
    }
}

fn body_of(v: &Vector) -> Vec<u8> {
    match (&v.body, &v.body_repeat) {
        (Some(b), None) => b.as_bytes().to_vec(),
        (None, Some(r)) => r.char.repeat(r.count).into_bytes(),
        _ => panic!("{}: exactly one of body/body_repeat", v.id),
    }
}

/// Splits the vector URL into the configured public URL (no query) and the request's
/// `:path` (query included), as the glue would see them.
fn split_url(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let path_and_query = match &rest[path_start..] {
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let public = url.split('?').next().unwrap().to_string();
    let _ = scheme;
    (public, path_and_query)
}

/// Clover Hosted Checkout vectors give no `now` ("timestamp check not applied"): inject the
/// header's own `t`, which makes our window check vacuous, as the vector intends.
fn now_of(v: &Vector) -> i64 {
    if let Some(now) = v.now {
        return now;
    }
    if let Some(sig) = v.headers.get("Clover-Signature") {
        let t = sig.split(',').find_map(|i| i.strip_prefix("t=")).unwrap();
        return t.parse().unwrap();
    }
    // Schemes without a signed timestamp must not depend on the clock at all.
    0
}

/// A vector as the filter sees it: its source's configuration and its request.
struct Prepared {
    name: &'static str,
    scheme: Scheme,
    config: WebhookConfig,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    path_and_query: String,
}

impl Prepared {
    fn request(&self) -> WebhookRequest<'_> {
        WebhookRequest {
            headers: &self.headers,
            body: &self.body,
            path_and_query: &self.path_and_query,
        }
    }
}

fn check(v: &Vector) -> Result<(), String> {
    let p = prepare(v)?;
    let (name, scheme, config) = (p.name, p.scheme, &p.config);
    let req = p.request();
    let result = evaluate(config, Environment::Production, name, &req, now_of(v));
    let valid = match &result {
        Ok(Outcome::Verified(ver)) => {
            if ver.scheme != scheme {
                return Err(format!(
                    "verified under {:?}, expected {scheme:?}",
                    ver.scheme
                ));
            }
            true
        }
        Ok(Outcome::UnverifiedDevelopment) => return Err("unverified pass in production".into()),
        Err(_) => false,
    };
    if valid == v.expected_valid {
        Ok(())
    } else {
        Err(format!(
            "verdict {valid}, expected {} ({result:?})",
            v.expected_valid
        ))
    }
}

fn prepare(v: &Vector) -> Result<Prepared, String> {
    let (name, scheme) = scheme_of(&v.scheme);
    let body = body_of(v);
    let (public_url, path_and_query) = split_url(&v.url);

    if let Some(params) = &v.form_params {
        let decoded: Vec<(String, String)> = form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if &decoded != params {
            return Err(format!(
                "form_params differ from the decoded body: {decoded:?}"
            ));
        }
    }
    if let Some(ts) = &v.signed_timestamp {
        // Our Toast choice: the signed timestamp is the envelope's `timestamp` field.
        let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if envelope["timestamp"].as_str() != Some(ts.as_str()) {
            return Err("signed_timestamp is not the envelope timestamp".into());
        }
    }

    let mut source = SourceConfig {
        secrets: vec![Secret::new(v.secret.clone())],
        public_url: Some(public_url),
        tolerance_s: v.tolerance_s.unwrap_or(300),
        ..SourceConfig::default()
    };
    // Built-in defaults where they cover the scheme (legacy ones are opt-in).
    if !default_schemes(name).contains(&scheme) {
        source.schemes = vec![scheme];
    }
    let mut config = WebhookConfig::default();
    config.sources.insert(name.to_string(), source);
    config.validate().map_err(|e| e.to_string())?;

    let headers: Vec<(String, String)> = v
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Prepared {
        name,
        scheme,
        config,
        headers,
        body,
        path_and_query,
    })
}

/// What the headers alone refuse (the filter answers it before the body) is exactly
/// verification's answer for the whole request; a valid vector is never refused there.
#[test]
fn header_only_refusals_agree_with_verification_on_every_vector() {
    let vectors: Vec<Vector> = serde_json::from_str(VECTORS).unwrap();
    let mut refused_at_headers = 0;
    for v in &vectors {
        let p = prepare(v).unwrap();
        let req = p.request();
        let now = now_of(v);
        let Err(early) = check_headers(&p.config, Environment::Production, p.name, &req, now)
        else {
            continue;
        };
        refused_at_headers += 1;
        let full = evaluate(&p.config, Environment::Production, p.name, &req, now);
        assert_eq!(full, Err::<Outcome, Failure>(early), "{}", v.id);
        // The body cannot change it: the same headers with no body at all.
        let empty = WebhookRequest { body: b"", ..req };
        assert_eq!(
            check_headers(&p.config, Environment::Production, p.name, &empty, now),
            Err(early),
            "{}",
            v.id
        );
    }
    // Stale and malformed vectors exist: the check is not vacuous.
    assert!(refused_at_headers > 0);
}

#[test]
fn every_reference_vector_gets_its_expected_verdict() {
    let vectors: Vec<Vector> = serde_json::from_str(VECTORS).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for v in &vectors {
        assert!(ids.insert(v.id.clone()), "duplicate id {}", v.id);
        if let Err(e) = check(v) {
            wrong.push(format!("{}: {e}", v.id));
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    assert_eq!(checked, EXPECTED_COUNT);
    let valid = vectors.iter().filter(|v| v.expected_valid).count();
    assert!(
        valid > 0 && valid < EXPECTED_COUNT,
        "both verdicts are exercised"
    );
}
