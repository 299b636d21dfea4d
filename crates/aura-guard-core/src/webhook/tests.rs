#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::replay::{Insert, ReplaySet};
use super::schemes::twilio_url_variants;
use super::sign::{sign, twilio_json_url, SignError, SignRequest};
use super::*;
use crate::secret::Secret;
use crate::webhook::config::SourceConfig;

const NOW: i64 = 1_700_000_000;
const ALL_SCHEMES: [Scheme; 13] = [
    Scheme::Generic,
    Scheme::Stripe,
    Scheme::Square,
    Scheme::SquareSha1,
    Scheme::Twilio,
    Scheme::Github,
    Scheme::GithubSha1,
    Scheme::Shopify,
    Scheme::Slack,
    Scheme::Standard,
    Scheme::Toast,
    Scheme::Clover,
    Scheme::CloverApp,
];
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_SECRET_OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const PUBLIC_URL: &str = "https://api.example.com/webhooks/x";

fn source(schemes: &[Scheme], secrets: &[&str]) -> SourceConfig {
    SourceConfig {
        schemes: schemes.to_vec(),
        secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        public_url: Some(PUBLIC_URL.to_string()),
        ..SourceConfig::default()
    }
}

fn secret_for(scheme: Scheme, old: bool) -> &'static str {
    match (scheme, old) {
        (Scheme::Standard, false) => STD_SECRET,
        (Scheme::Standard, true) => STD_SECRET_OLD,
        (_, false) => "current-secret",
        (_, true) => "previous-secret",
    }
}

fn body_for(scheme: Scheme) -> &'static [u8] {
    match scheme {
        Scheme::Twilio => b"CallSid=CA1&From=%2B1415&Body=hi+there&Body=a",
        Scheme::Toast => {
            br#"{"timestamp":"2022-03-01T15:04:05.123Z","guid":"g-1","eventType":"x"}"#
        }
        _ => br#"{"event":"payment.created","id":42}"#,
    }
}

fn signed(scheme: Scheme, secret: &str, body: &[u8], now: i64) -> Vec<(String, String)> {
    sign(&SignRequest {
        scheme,
        secret,
        body,
        now,
        url: Some(PUBLIC_URL),
        msg_id: None,
    })
    .unwrap()
}

fn run(
    src: &SourceConfig,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<Verified, Failure> {
    let req = WebhookRequest {
        headers,
        body,
        path_and_query: "/webhooks/x",
    };
    verify(src, "x", &req, now, true)
}

fn generic(ts: Option<&str>, sig: &str) -> Vec<(String, String)> {
    let mut h = vec![("X-Webhook-Signature".to_string(), sig.to_string())];
    if let Some(ts) = ts {
        h.push(("X-Webhook-Timestamp".to_string(), ts.to_string()));
    }
    h
}

fn generic_sig(secret: &str, ts: Option<&str>, body: &[u8]) -> String {
    super::schemes::generic_signature(secret.as_bytes(), ts, body)
}

#[test]
fn sign_then_verify_round_trips_for_every_scheme() {
    for scheme in ALL_SCHEMES {
        let secret = secret_for(scheme, false);
        let body = body_for(scheme);
        let src = source(&[scheme], &[secret]);
        let headers = signed(scheme, secret, body, NOW);
        let v = run(&src, &headers, body, NOW)
            .unwrap_or_else(|f| panic!("{scheme:?}: {f:?} with {headers:?}"));
        assert_eq!(v.scheme, scheme);
        if scheme != Scheme::CloverApp {
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(
                run(&src, &headers, &tampered, NOW),
                Err(Failure::InvalidSignature),
                "{scheme:?} must authenticate the body"
            );
        }
    }
}

#[test]
fn rotation_accepts_the_previous_secret_and_refuses_an_unknown_one() {
    for scheme in ALL_SCHEMES {
        let (cur, old) = (secret_for(scheme, false), secret_for(scheme, true));
        let body = body_for(scheme);
        let rotating = source(&[scheme], &[cur, old]);
        let headers = signed(scheme, old, body, NOW);
        assert!(run(&rotating, &headers, body, NOW).is_ok(), "{scheme:?}");
        let only_current = source(&[scheme], &[cur]);
        assert_eq!(
            run(&only_current, &headers, body, NOW),
            Err(Failure::InvalidSignature),
            "{scheme:?}"
        );
    }
}

#[test]
fn env_previous_secret_is_accepted_end_to_end() {
    let mut config = WebhookConfig::default();
    let env = |k: &str| match k {
        "WEBHOOK_SECRET_STRIPE" => Some("whsec_new".to_string()),
        "WEBHOOK_SECRET_STRIPE_PREVIOUS" => Some("whsec_old".to_string()),
        _ => None,
    };
    config.apply_env(&env).unwrap();
    let body = b"{}";
    let headers = signed(Scheme::Stripe, "whsec_old", body, NOW);
    let req = WebhookRequest {
        headers: &headers,
        body,
        path_and_query: "/webhooks/stripe",
    };
    assert!(evaluate(&config, Environment::Production, "stripe", &req, NOW).is_ok());
    let headers = signed(Scheme::Stripe, "whsec_older", body, NOW);
    let req = WebhookRequest {
        headers: &headers,
        ..req
    };
    assert_eq!(
        evaluate(&config, Environment::Production, "stripe", &req, NOW),
        Err(Failure::InvalidSignature)
    );
}

#[test]
fn tolerance_boundary_is_300_seconds_both_directions() {
    let body = b"payload";
    for scheme in [
        Scheme::Generic,
        Scheme::Stripe,
        Scheme::Slack,
        Scheme::Standard,
        Scheme::Clover,
    ] {
        let secret = secret_for(scheme, false);
        let src = source(&[scheme], &[secret]);
        let headers = signed(scheme, secret, body, NOW);
        for (now, ok) in [
            (NOW + 300, true),
            (NOW - 300, true),
            (NOW + 301, false),
            (NOW - 301, false),
        ] {
            let r = run(&src, &headers, body, now);
            if ok {
                assert!(r.is_ok(), "{scheme:?} at {}", now - NOW);
            } else {
                assert_eq!(
                    r,
                    Err(Failure::TimestampTooOld),
                    "{scheme:?} at {}",
                    now - NOW
                );
            }
        }
    }
}

#[test]
fn tolerance_follows_the_source_setting() {
    let mut src = source(&[Scheme::Generic], &["k"]);
    src.tolerance_s = 10;
    let ts = NOW.to_string();
    let headers = generic(Some(&ts), &generic_sig("k", Some(&ts), b"b"));
    assert!(run(&src, &headers, b"b", NOW + 10).is_ok());
    assert_eq!(
        run(&src, &headers, b"b", NOW + 11),
        Err(Failure::TimestampTooOld)
    );
}

#[test]
fn generic_requires_a_timestamp_unless_the_compatibility_switch_is_off() {
    let src = source(&[Scheme::Generic], &["k"]);
    let body = b"legacy";
    let headers = generic(None, &generic_sig("k", None, body));
    let req = WebhookRequest {
        headers: &headers,
        body,
        path_and_query: "/webhooks/x",
    };
    assert_eq!(
        verify(&src, "x", &req, NOW, true),
        Err(Failure::MissingTimestamp)
    );
    assert_eq!(
        Failure::MissingTimestamp.message(),
        "Invalid webhook timestamp"
    );
    // require_timestamp = false: the original's body-only signature is accepted.
    let v = verify(&src, "x", &req, NOW, false).unwrap();
    assert_eq!(v.scheme, Scheme::Generic);
    // ... but never a wrong one.
    let bad = generic(None, &generic_sig("other", None, body));
    let req = WebhookRequest {
        headers: &bad,
        ..req
    };
    assert_eq!(
        verify(&src, "x", &req, NOW, false),
        Err(Failure::InvalidSignature)
    );
}

#[test]
fn generic_timestamp_must_be_an_integer() {
    let src = source(&[Scheme::Generic], &["k"]);
    let headers = generic(Some("12:00"), &generic_sig("k", Some("12:00"), b"b"));
    assert_eq!(
        run(&src, &headers, b"b", NOW),
        Err(Failure::InvalidTimestamp)
    );
}

#[test]
fn generic_comparison_is_exact_and_case_sensitive() {
    let src = source(&[Scheme::Generic], &["k"]);
    let ts = NOW.to_string();
    let sig = generic_sig("k", Some(&ts), b"b");
    assert!(run(&src, &generic(Some(&ts), &sig), b"b", NOW).is_ok());
    for wrong in [sig.to_uppercase(), format!("sha256={sig}")] {
        assert_eq!(
            run(&src, &generic(Some(&ts), &wrong), b"b", NOW),
            Err(Failure::InvalidSignature)
        );
    }
}

#[test]
fn no_signature_header_is_missing_signature() {
    let src = source(&[Scheme::Stripe, Scheme::Generic], &["k"]);
    assert_eq!(run(&src, &[], b"b", NOW), Err(Failure::MissingSignature));
    let empty = generic(Some("1"), "  ");
    assert_eq!(run(&src, &empty, b"b", NOW), Err(Failure::MissingSignature));
    // A header of a scheme the source does not accept does not count.
    let github = signed(Scheme::Github, "k", b"b", NOW);
    assert_eq!(
        run(&src, &github, b"b", NOW),
        Err(Failure::MissingSignature)
    );
}

#[test]
fn header_names_match_case_insensitively() {
    let src = source(&[Scheme::Stripe], &["k"]);
    let headers: Vec<(String, String)> = signed(Scheme::Stripe, "k", b"b", NOW)
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    assert!(run(&src, &headers, b"b", NOW).is_ok());
}

#[test]
fn source_without_secret_is_not_configured() {
    let src = source(&[Scheme::Generic], &[]);
    let headers = generic(Some("1"), "00");
    assert_eq!(
        run(&src, &headers, b"b", NOW),
        Err(Failure::SourceNotConfigured)
    );
}

#[test]
fn environment_policy() {
    let mut config = WebhookConfig::default();
    config
        .sources
        .insert("github".into(), source(&[Scheme::Github], &["k"]));
    let unsigned: Vec<(String, String)> = Vec::new();
    let req = WebhookRequest {
        headers: &unsigned,
        body: b"{}",
        path_and_query: "/webhooks/github",
    };
    // Unconfigured (no secret, or unknown) sources.
    for name in ["stripe", "nope"] {
        assert_eq!(
            evaluate(&config, Environment::Development, name, &req, NOW),
            Ok(Outcome::UnverifiedDevelopment)
        );
        for env in [Environment::Staging, Environment::Production] {
            assert_eq!(
                evaluate(&config, env, name, &req, NOW),
                Err(Failure::SourceNotConfigured)
            );
        }
    }
    // Configured: verified in every environment, development included.
    for env in [
        Environment::Development,
        Environment::Staging,
        Environment::Production,
    ] {
        assert_eq!(
            evaluate(&config, env, "github", &req, NOW),
            Err(Failure::MissingSignature)
        );
        let headers = signed(Scheme::Github, "k", b"{}", NOW);
        let good = WebhookRequest {
            headers: &headers,
            ..req
        };
        assert!(matches!(
            evaluate(&config, env, "github", &good, NOW),
            Ok(Outcome::Verified(_))
        ));
    }
}

#[test]
fn body_over_the_limit_is_413() {
    let mut config = WebhookConfig {
        max_body_bytes: 4,
        ..WebhookConfig::default()
    };
    config
        .sources
        .insert("github".into(), source(&[Scheme::Github], &["k"]));
    let headers = signed(Scheme::Github, "k", b"12345", NOW);
    let req = WebhookRequest {
        headers: &headers,
        body: b"12345",
        path_and_query: "/webhooks/github",
    };
    let err = evaluate(&config, Environment::Production, "github", &req, NOW).unwrap_err();
    assert_eq!(
        (err, err.status(), err.reason()),
        (Failure::BodyTooLarge, 413, "body_too_large")
    );
    assert!(check_body_size(&config, 4).is_ok());
}

#[test]
fn default_limit_admits_the_1_mib_svix_body() {
    let config = WebhookConfig::default();
    let body = vec![b'a'; 1_048_576];
    assert!(check_body_size(&config, body.len() as u64).is_ok());
    assert!(check_body_size(&config, 1_048_577).is_err());
    let src = source(&[Scheme::Standard], &[STD_SECRET]);
    let headers = signed(Scheme::Standard, STD_SECRET, &body, NOW);
    assert!(run(&src, &headers, &body, NOW).is_ok());
}

#[test]
fn failures_use_the_seed_messages_and_status() {
    let cases = [
        (
            Failure::SourceNotConfigured,
            "Webhook source not configured",
            "source_not_configured",
        ),
        (
            Failure::MissingSignature,
            "Missing webhook signature",
            "missing_signature",
        ),
        (
            Failure::InvalidSignature,
            "Invalid webhook signature",
            "invalid_signature",
        ),
        (
            Failure::MissingTimestamp,
            "Invalid webhook timestamp",
            "missing_timestamp",
        ),
        (
            Failure::InvalidTimestamp,
            "Invalid webhook timestamp",
            "invalid_timestamp",
        ),
        (
            Failure::TimestampTooOld,
            "Webhook timestamp too old",
            "timestamp_too_old",
        ),
        (
            Failure::Replay,
            "Webhook delivery already processed",
            "replay",
        ),
    ];
    for (f, msg, reason) in cases {
        assert_eq!((f.status(), f.message(), f.reason()), (401, msg, reason));
    }
}

#[test]
fn stripe_replay_key_ignores_header_decoration() {
    let src = source(&[Scheme::Stripe], &["k"]);
    let headers = signed(Scheme::Stripe, "k", b"{}", NOW);
    let value = &headers[0].1;
    let decorated = vec![(
        "Stripe-Signature".to_string(),
        format!("{value},v0=00,v1=deadbeef"),
    )];
    let a = run(&src, &headers, b"{}", NOW).unwrap();
    let b = run(&src, &decorated, b"{}", NOW).unwrap();
    assert_eq!(a.replay_key, b.replay_key);
    assert!(a.replay_key.as_deref().unwrap().starts_with("x:"));
    let other = signed(Scheme::Stripe, "k", b"{ }", NOW);
    let c = run(&src, &other, b"{ }", NOW).unwrap();
    assert_ne!(a.replay_key, c.replay_key);
}

#[test]
fn replay_ttl_covers_the_rest_of_the_signed_window() {
    let src = source(&[Scheme::Slack], &["k"]);
    let future = signed(Scheme::Slack, "k", b"b", NOW + 300);
    assert_eq!(run(&src, &future, b"b", NOW).unwrap().replay_ttl_s, 600);
    let past = signed(Scheme::Slack, "k", b"b", NOW - 300);
    assert_eq!(run(&src, &past, b"b", NOW).unwrap().replay_ttl_s, 0);
    // No signed timestamp: remembered for the tolerance.
    let gh = signed(Scheme::Github, "k", b"b", NOW);
    let src = source(&[Scheme::Github], &["k"]);
    assert_eq!(run(&src, &gh, b"b", NOW).unwrap().replay_ttl_s, 300);
}

#[test]
fn replay_set_refuses_a_verified_delivery_seen_twice() {
    let src = source(&[Scheme::Stripe], &["k"]);
    let headers = signed(Scheme::Stripe, "k", b"{}", NOW);
    let mut set = ReplaySet::new(100);
    let v = run(&src, &headers, b"{}", NOW).unwrap();
    let key = v.replay_key.unwrap();
    assert_eq!(set.check_and_insert(&key, NOW, v.replay_ttl_s), Insert::New);
    let bytes = set.encode();
    let mut other_worker = ReplaySet::decode(&bytes, 100);
    let again = run(&src, &headers, b"{}", NOW + 10).unwrap();
    assert_eq!(
        other_worker.check_and_insert(&key, NOW + 10, again.replay_ttl_s),
        Insert::Seen
    );
}

#[test]
fn standard_replay_key_is_the_signed_message_id() {
    let src = source(&[Scheme::Standard], &[STD_SECRET]);
    let sign_with_id = |id: &str| {
        sign(&SignRequest {
            scheme: Scheme::Standard,
            secret: STD_SECRET,
            body: b"{}",
            now: NOW,
            url: None,
            msg_id: Some(id),
        })
        .unwrap()
    };
    let a = run(&src, &sign_with_id("msg_1"), b"{}", NOW).unwrap();
    let b = run(&src, &sign_with_id("msg_2"), b"{}", NOW).unwrap();
    assert_ne!(a.replay_key, b.replay_key);
    assert_eq!(a.delivery_id.as_deref(), Some("msg_1"));
}

#[test]
fn clover_app_token_has_no_replay_key() {
    let src = source(&[Scheme::CloverApp], &["tok"]);
    let headers = vec![("X-Clover-Auth".to_string(), "tok".to_string())];
    let v = run(&src, &headers, b"anything", NOW).unwrap();
    assert_eq!(v.replay_key, None);
}

#[test]
fn delivery_ids_are_reported_for_audit() {
    let src = source(&[Scheme::Github], &["k"]);
    let mut headers = signed(Scheme::Github, "k", b"b", NOW);
    headers.push(("X-GitHub-Delivery".into(), "72d3162e".into()));
    let v = run(&src, &headers, b"b", NOW).unwrap();
    assert_eq!(v.delivery_id.as_deref(), Some("72d3162e"));
    // The unsigned delivery id does not change the replay key.
    headers.last_mut().unwrap().1 = "forged".into();
    assert_eq!(
        run(&src, &headers, b"b", NOW).unwrap().replay_key,
        v.replay_key
    );
}

#[test]
fn first_configured_scheme_whose_header_is_present_is_used() {
    let src = source(&[Scheme::Github, Scheme::GithubSha1], &["k"]);
    let mut headers = signed(Scheme::Github, "k", b"b", NOW);
    headers.extend(signed(Scheme::GithubSha1, "k", b"b", NOW));
    assert_eq!(
        run(&src, &headers, b"b", NOW).unwrap().scheme,
        Scheme::Github
    );
    let sha1_only = signed(Scheme::GithubSha1, "k", b"b", NOW);
    assert_eq!(
        run(&src, &sha1_only, b"b", NOW).unwrap().scheme,
        Scheme::GithubSha1
    );
}

#[test]
fn stripe_without_t_or_v1_is_refused() {
    let src = source(&[Scheme::Stripe], &["k"]);
    let h = |v: &str| vec![("Stripe-Signature".to_string(), v.to_string())];
    assert_eq!(
        run(&src, &h("v1=00"), b"b", NOW),
        Err(Failure::MissingTimestamp)
    );
    assert_eq!(
        run(&src, &h(&format!("t={NOW}")), b"b", NOW),
        Err(Failure::InvalidSignature)
    );
    assert_eq!(
        run(&src, &h(&format!("t={NOW},garbage")), b"b", NOW),
        Err(Failure::InvalidSignature)
    );
    assert_eq!(
        run(&src, &h("t=abc,v1=00"), b"b", NOW),
        Err(Failure::InvalidTimestamp)
    );
}

#[test]
fn slack_requires_its_timestamp() {
    let src = source(&[Scheme::Slack], &["k"]);
    let headers = vec![("X-Slack-Signature".to_string(), "v0=00".to_string())];
    assert_eq!(
        run(&src, &headers, b"b", NOW),
        Err(Failure::MissingTimestamp)
    );
}

#[test]
fn standard_accepts_any_listed_v1_and_svix_headers() {
    let src = source(&[Scheme::Standard], &[STD_SECRET]);
    let headers = signed(Scheme::Standard, STD_SECRET, b"{}", NOW);
    let sig = headers[2].1.clone();
    let listed = vec![
        headers[0].clone(),
        headers[1].clone(),
        (
            "webhook-signature".to_string(),
            format!("v1a,AAAA v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {sig}"),
        ),
    ];
    assert!(run(&src, &listed, b"{}", NOW).is_ok());
    let svix: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.replace("webhook-", "svix-"), v.clone()))
        .collect();
    assert!(run(&src, &svix, b"{}", NOW).is_ok());
    let ed_only = vec![
        headers[0].clone(),
        headers[1].clone(),
        ("webhook-signature".to_string(), "v1a,AAAA".to_string()),
    ];
    assert_eq!(
        run(&src, &ed_only, b"{}", NOW),
        Err(Failure::InvalidSignature)
    );
}

#[test]
fn toast_needs_the_envelope_timestamp() {
    let src = source(&[Scheme::Toast], &["k"]);
    let headers = vec![("Toast-Signature".to_string(), "AAAA".to_string())];
    assert_eq!(
        run(&src, &headers, br#"{"guid":"g"}"#, NOW),
        Err(Failure::MissingTimestamp)
    );
    assert_eq!(
        run(&src, &headers, b"not json", NOW),
        Err(Failure::MissingTimestamp)
    );
    assert_eq!(
        sign(&SignRequest {
            scheme: Scheme::Toast,
            secret: "k",
            body: b"{}",
            now: NOW,
            url: None,
            msg_id: None
        }),
        Err(SignError::ToastTimestampMissing)
    );
}

#[test]
fn square_signs_the_public_url_plus_the_request_query() {
    let src = source(&[Scheme::Square], &["k"]);
    let url = format!("{PUBLIC_URL}?tenant=7");
    let headers = sign(&SignRequest {
        scheme: Scheme::Square,
        secret: "k",
        body: b"{}",
        now: NOW,
        url: Some(&url),
        msg_id: None,
    })
    .unwrap();
    let req = WebhookRequest {
        headers: &headers,
        body: b"{}",
        path_and_query: "/internal/rewritten?tenant=7",
    };
    assert!(verify(&src, "x", &req, NOW, true).is_ok());
    let req = WebhookRequest {
        path_and_query: "/webhooks/x?tenant=8",
        ..req
    };
    assert_eq!(
        verify(&src, "x", &req, NOW, true),
        Err(Failure::InvalidSignature)
    );
}

#[test]
fn twilio_json_body_is_bound_by_its_hash() {
    let src = source(&[Scheme::Twilio], &["k"]);
    let body = br#"{"a":1}"#;
    let url = twilio_json_url(PUBLIC_URL, body);
    let headers = sign(&SignRequest {
        scheme: Scheme::Twilio,
        secret: "k",
        body,
        now: NOW,
        url: Some(&url),
        msg_id: None,
    })
    .unwrap();
    let path = format!("/webhooks/x?{}", url.split_once('?').unwrap().1);
    let req = WebhookRequest {
        headers: &headers,
        body,
        path_and_query: &path,
    };
    assert!(verify(&src, "x", &req, NOW, true).is_ok());
    let req = WebhookRequest {
        body: br#"{"a":2}"#,
        ..req
    };
    assert_eq!(
        verify(&src, "x", &req, NOW, true),
        Err(Failure::InvalidSignature)
    );
}

#[test]
fn twilio_url_variants_add_or_strip_the_port() {
    assert_eq!(
        twilio_url_variants("https://a.com/p?x=1"),
        ["https://a.com/p?x=1", "https://a.com:443/p?x=1"]
    );
    assert_eq!(
        twilio_url_variants("http://u:pw@a.com:8080/p"),
        ["http://u:pw@a.com:8080/p", "http://u:pw@a.com/p"]
    );
    assert_eq!(
        twilio_url_variants("https://[::1]/p"),
        ["https://[::1]/p", "https://[::1]:443/p"]
    );
    assert_eq!(
        twilio_url_variants("https://a.com?x=1"),
        ["https://a.com?x=1", "https://a.com:443?x=1"]
    );
    assert_eq!(twilio_url_variants("not a url"), ["not a url"]);
}

#[test]
fn twilio_repeated_params_are_sorted_and_deduplicated() {
    let a = super::schemes::twilio_form_params(b"b=2&a=z&a=y&a=z");
    let b = super::schemes::twilio_form_params(b"a=y&a=z&b=2");
    assert_eq!(a, b);
    let sig = super::schemes::twilio_signature(
        b"k",
        "https://x/",
        &super::schemes::twilio_param_string(&a),
    );
    let manual = super::schemes::b64(&super::schemes::hmac_sha1(b"k", &[b"https://x/ayazb2"]));
    assert_eq!(sig, manual);
}

// ---- replay keys: what was verified, never how it was wrapped (docs/webhooks.md#what-the-replay-key-covers)

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// (scheme used, replay key) of a delivery that must verify.
fn keyed(
    src: &SourceConfig,
    headers: &[(String, String)],
    body: &[u8],
    require_timestamp: bool,
) -> (Scheme, String) {
    let req = WebhookRequest {
        headers,
        body,
        path_and_query: "/webhooks/x",
    };
    let v = verify(src, "x", &req, NOW, require_timestamp)
        .unwrap_or_else(|f| panic!("{f:?} with {headers:?}"));
    (v.scheme, v.replay_key.unwrap())
}

fn value_of<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    &headers.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn a_stripe_or_clover_mac_resent_under_another_t_dot_body_scheme_has_the_same_key() {
    // generic, stripe and clover all sign `{t}.{body}` with hex HMAC-SHA256.
    let src = source(&[Scheme::Stripe, Scheme::Clover, Scheme::Generic], &["k"]);
    let body = br#"{"id":"evt_1"}"#;
    let t = NOW.to_string();
    for original in [Scheme::Stripe, Scheme::Clover, Scheme::Generic] {
        let headers = signed(original, "k", body, NOW);
        let mac = match original {
            Scheme::Generic => value_of(&headers, "X-Webhook-Signature").to_string(),
            _ => headers[0].1.split("v1=").nth(1).unwrap().to_string(),
        };
        let (_, key) = keyed(&src, &headers, body, true);
        let rewraps = [
            (
                Scheme::Stripe,
                vec![h("Stripe-Signature", format!("t={t},v1={mac}"))],
            ),
            (
                Scheme::Clover,
                vec![h("Clover-Signature", format!("t={t},v1={mac}"))],
            ),
            (
                Scheme::Generic,
                vec![
                    h("X-Webhook-Signature", mac.clone()),
                    h("X-Webhook-Timestamp", &*t),
                ],
            ),
        ];
        for (scheme, rewrapped) in rewraps {
            assert_eq!(
                keyed(&src, &rewrapped, body, true),
                (scheme, key.clone()),
                "{original:?} as {scheme:?}"
            );
        }
    }
}

#[test]
fn a_body_mac_resent_under_another_body_only_scheme_has_the_same_key() {
    // github (hex, `sha256=`), shopify (base64) and generic without a timestamp all MAC the
    // body alone with HMAC-SHA256.
    let src = source(&[Scheme::Github, Scheme::Shopify, Scheme::Generic], &["k"]);
    let body = br#"{"zen":"hi"}"#;
    let gh = signed(Scheme::Github, "k", body, NOW);
    let hex_mac = value_of(&gh, "X-Hub-Signature-256")
        .strip_prefix("sha256=")
        .unwrap()
        .to_string();
    let b64_mac = super::schemes::b64(&hex::decode(&hex_mac).unwrap());
    let (_, key) = keyed(&src, &gh, body, true);
    let shopify = vec![h("X-Shopify-Hmac-Sha256", b64_mac)];
    assert_eq!(
        keyed(&src, &shopify, body, true),
        (Scheme::Shopify, key.clone())
    );
    let generic = vec![h("X-Webhook-Signature", hex_mac)];
    assert_eq!(keyed(&src, &generic, body, false), (Scheme::Generic, key));
}

#[test]
fn a_timestamped_signed_string_moved_into_a_body_only_scheme_has_the_same_key() {
    // `{t}.{body}` is also a valid github delivery whose body is `{t}.{body}`, and Slack's
    // `v0:{t}:{body}` likewise: the signed string, not the scheme, is the key.
    let src = source(&[Scheme::Generic, Scheme::Slack, Scheme::Github], &["k"]);
    let body = br#"{"a":1}"#;
    for (scheme, prefix) in [(Scheme::Generic, ""), (Scheme::Slack, "v0:")] {
        let headers = signed(scheme, "k", body, NOW);
        let (_, key) = keyed(&src, &headers, body, true);
        let sep = if scheme == Scheme::Slack { ":" } else { "." };
        let moved = format!("{prefix}{NOW}{sep}{}", std::str::from_utf8(body).unwrap());
        let mac = match scheme {
            Scheme::Slack => value_of(&headers, "X-Slack-Signature")[3..].to_string(),
            _ => value_of(&headers, "X-Webhook-Signature").to_string(),
        };
        let gh = vec![h("X-Hub-Signature-256", format!("sha256={mac}"))];
        assert_eq!(
            keyed(&src, &gh, moved.as_bytes(), true),
            (Scheme::Github, key),
            "{scheme:?}"
        );
    }
}

#[test]
fn a_twilio_mac_resent_as_square_sha1_has_the_same_key() {
    // Both are base64 HMAC-SHA1 of URL + bytes: Twilio's `a=bc` signs the same string as a
    // Square SHA-1 body `abc`.
    let src = source(&[Scheme::Twilio, Scheme::SquareSha1], &["k"]);
    let tw = signed(Scheme::Twilio, "k", b"a=bc", NOW);
    let (_, key) = keyed(&src, &tw, b"a=bc", true);
    let sq = vec![h("x-square-signature", value_of(&tw, "X-Twilio-Signature"))];
    assert_eq!(keyed(&src, &sq, b"abc", true), (Scheme::SquareSha1, key));
}

#[test]
fn a_toast_mac_resent_as_shopify_has_the_same_key() {
    let src = source(&[Scheme::Toast, Scheme::Shopify], &["k"]);
    let body = body_for(Scheme::Toast);
    let toast = signed(Scheme::Toast, "k", body, NOW);
    let (_, key) = keyed(&src, &toast, body, true);
    let moved = [body, b"2022-03-01T15:04:05.123Z".as_slice()].concat();
    let shopify = vec![h(
        "X-Shopify-Hmac-Sha256",
        value_of(&toast, "Toast-Signature"),
    )];
    assert_eq!(keyed(&src, &shopify, &moved, true), (Scheme::Shopify, key));
}

#[test]
fn dropping_one_of_two_provider_signature_headers_keeps_the_key() {
    // GitHub sends X-Hub-Signature-256 and X-Hub-Signature; Square both of its headers.
    for (a, b) in [
        (Scheme::Github, Scheme::GithubSha1),
        (Scheme::Square, Scheme::SquareSha1),
    ] {
        let src = source(&[a, b], &["k"]);
        let mut both = signed(a, "k", b"{}", NOW);
        both.extend(signed(b, "k", b"{}", NOW));
        let (used, key) = keyed(&src, &both, b"{}", true);
        assert_eq!(used, a);
        let only_b = signed(b, "k", b"{}", NOW);
        assert_eq!(keyed(&src, &only_b, b"{}", true), (b, key), "{a:?}");
    }
}

#[test]
fn a_delivery_signed_for_two_secrets_has_one_key_whichever_signature_is_kept() {
    // Stripe: one v1 per secret during a rotation; stripping either keeps the key.
    let src = source(&[Scheme::Stripe], &["current", "previous"]);
    let body = b"{}";
    let v1 = |secret: &str| {
        let s = signed(Scheme::Stripe, secret, body, NOW);
        s[0].1.split("v1=").nth(1).unwrap().to_string()
    };
    let (cur, prev) = (v1("current"), v1("previous"));
    let header = |v: &str| vec![h("Stripe-Signature", format!("t={NOW},{v}"))];
    let (_, key) = keyed(&src, &header(&format!("v1={cur},v1={prev}")), body, true);
    for variant in [
        format!("v1={cur}"),
        format!("v1={prev}"),
        format!("v1={prev},v1={cur},v0={cur}"),
    ] {
        assert_eq!(
            keyed(&src, &header(&variant), body, true).1,
            key,
            "{variant}"
        );
    }
    // Standard Webhooks: a space-separated v1 list, webhook-* or svix-* headers.
    let src = source(&[Scheme::Standard], &[STD_SECRET, STD_SECRET_OLD]);
    let sign_with = |secret: &str| {
        sign(&SignRequest {
            scheme: Scheme::Standard,
            secret,
            body,
            now: NOW,
            url: None,
            msg_id: Some("msg_rotation"),
        })
        .unwrap()
    };
    let (new, old) = (sign_with(STD_SECRET), sign_with(STD_SECRET_OLD));
    let with_sigs = |sigs: String, prefix: &str| {
        vec![
            h(&format!("{prefix}-id"), "msg_rotation"),
            h(&format!("{prefix}-timestamp"), NOW.to_string()),
            h(&format!("{prefix}-signature"), sigs),
        ]
    };
    let both = format!("{} {}", new[2].1, old[2].1);
    let (_, key) = keyed(&src, &with_sigs(both, "webhook"), body, true);
    for (sigs, prefix) in [
        (new[2].1.clone(), "webhook"),
        (old[2].1.clone(), "webhook"),
        (old[2].1.clone(), "svix"),
    ] {
        assert_eq!(keyed(&src, &with_sigs(sigs, prefix), body, true).1, key);
    }
}

#[test]
fn twilio_key_ignores_parameter_order_encoding_and_duplicates() {
    let src = source(&[Scheme::Twilio], &["k"]);
    let body = b"AccountSid=AC1&Body=Hello+%F0%9F%91%8B&From=%2B15551234567";
    let headers = signed(Scheme::Twilio, "k", body, NOW);
    let (_, key) = keyed(&src, &headers, body, true);
    for variant in [
        "From=%2B15551234567&Body=Hello+%F0%9F%91%8B&AccountSid=AC1",
        "AccountSid=AC1&Body=Hello%20%f0%9f%91%8b&From=%2b15551234567",
        "%41ccountSid=%41%43%31&Body=Hello+%F0%9F%91%8B&From=%2B15551234567",
        "AccountSid=AC1&Body=Hello+%F0%9F%91%8B&From=%2B15551234567&AccountSid=AC1",
        "AccountSid=AC1&&Body=Hello+%F0%9F%91%8B&From=%2B15551234567&",
        // No separators in the signed string: moving a name/value boundary signs the same.
        "AccountSidA=C1&Body=Hello+%F0%9F%91%8B&From=%2B15551234567",
    ] {
        assert_eq!(
            keyed(&src, &headers, variant.as_bytes(), true),
            (Scheme::Twilio, key.clone()),
            "{variant}"
        );
    }
    // Invalid UTF-8 decodes to U+FFFD: the signature does not tell %FF from %FE, nor the key.
    let a = signed(Scheme::Twilio, "k", b"x=%FF", NOW);
    let (_, ka) = keyed(&src, &a, b"x=%FF", true);
    assert_eq!(keyed(&src, &a, b"x=%FE", true).1, ka);
}

#[test]
fn twilio_key_does_not_depend_on_the_port_variant_that_matched() {
    let src = source(&[Scheme::Twilio], &["k"]);
    let body = b"CallSid=CA1";
    let (_, key) = keyed(&src, &signed(Scheme::Twilio, "k", body, NOW), body, true);
    let with_port = sign(&SignRequest {
        scheme: Scheme::Twilio,
        secret: "k",
        body,
        now: NOW,
        url: Some("https://api.example.com:443/webhooks/x"),
        msg_id: None,
    })
    .unwrap();
    assert_eq!(keyed(&src, &with_port, body, true).1, key);
}

#[test]
fn different_signed_content_or_source_gets_a_different_key() {
    let src = source(&[Scheme::Stripe, Scheme::Generic], &["k"]);
    let body = b"{}";
    let (_, a) = keyed(&src, &signed(Scheme::Stripe, "k", body, NOW), body, true);
    let (_, later) = keyed(
        &src,
        &signed(Scheme::Stripe, "k", body, NOW + 1),
        body,
        true,
    );
    assert_ne!(a, later, "the timestamp is signed: a new delivery");
    let (_, other) = keyed(
        &src,
        &signed(Scheme::Stripe, "k", b"{ }", NOW),
        b"{ }",
        true,
    );
    assert_ne!(a, other);
    let req = WebhookRequest {
        headers: &signed(Scheme::Stripe, "k", body, NOW),
        body,
        path_and_query: "/webhooks/y",
    };
    let y = verify(&src, "y", &req, NOW, true)
        .unwrap()
        .replay_key
        .unwrap();
    assert_eq!(y.split_once(':').unwrap().1, a.split_once(':').unwrap().1);
    assert_ne!(y, a, "keys are per source");
    // A signed string and a message id never share a key.
    assert_ne!(
        super::schemes::replay_key("x", &super::schemes::KeyBasis::Signed(&[b"msg_1"])),
        super::schemes::replay_key("x", &super::schemes::KeyBasis::MessageId("msg_1"))
    );
}

#[test]
fn the_docs_name_the_refusal_reasons_the_filter_counts_and_no_other() {
    let all = [
        Failure::SourceNotConfigured,
        Failure::MissingSignature,
        Failure::InvalidSignature,
        Failure::MissingTimestamp,
        Failure::InvalidTimestamp,
        Failure::TimestampTooOld,
        Failure::Replay,
        Failure::BodyTooLarge,
    ]
    .map(Failure::reason);
    let webhooks = include_str!("../../../../docs/webhooks.md");
    let listed = webhooks
        .lines()
        .find(|l| l.contains("a delivery was refused:"))
        .unwrap();
    let listed: Vec<&str> = listed.split('`').skip(3).step_by(2).collect();
    assert_eq!(listed, all, "docs/webhooks.md#stats");
    // What an operator greps for (the runbook, the metrics table) must be a reason that exists.
    for doc in [
        include_str!("../../../../docs/operations.md"),
        include_str!("../../../../docs/metrics.md"),
    ] {
        for token in doc.split('`').skip(1).step_by(2) {
            // The last word of a stat name, a label value or a reason alone.
            let word = token
                .rsplit(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .next()
                .unwrap_or_default();
            if [
                "_signature",
                "_timestamp",
                "_configured",
                "_too_large",
                "_too_old",
            ]
            .iter()
            .any(|end| word.ends_with(end))
            {
                assert!(all.contains(&word), "{token}: {word} is no refusal reason");
            }
        }
    }
}
