//! Webhook verification end to end, as the filter runs it: the raw `:path` normalised, the
//! source found by route, then `webhook::evaluate` with the environment policy, over a
//! configuration where every built-in source has a secret and a public URL. Asserts that an
//! accepted delivery is consistent, that only development lets an unconfigured source pass,
//! that what `webhook::check_headers` refuses before the body is the whole request's answer,
//! and that a delivery signed with the source's first default scheme is accepted.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::config::Environment;
use aura_guard_core::fuzz_api;
use aura_guard_core::path::normalise;
use aura_guard_core::secret::Secret;
use aura_guard_core::webhook::config::BUILTIN_SOURCES;
use aura_guard_core::webhook::{check_headers, evaluate, Outcome, WebhookConfig, WebhookRequest};
use aura_guard_fuzz::{check_verified, headers, NOW, TOLERANCE_S};
use libfuzzer_sys::fuzz_target;

const ENVS: [Environment; 3] = [
    Environment::Development,
    Environment::Staging,
    Environment::Production,
];

fn config(secret: &str) -> WebhookConfig {
    let mut c = WebhookConfig::default();
    for (name, src) in c.sources.iter_mut() {
        let s = if name == "standard" {
            "whsec_c2VjcmV0LWZvci1zdGFuZGFyZA==".to_string()
        } else {
            secret.to_string()
        };
        src.secrets = vec![Secret::new(s)];
        src.public_url = Some(format!("https://example.com/webhooks/{name}"));
        src.tolerance_s = TOLERANCE_S;
    }
    c
}

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let env = *u.choose(&ENVS)?;
    let raw_secret: String = u.arbitrary()?;
    let secret = match raw_secret.trim() {
        "" => "s".to_string(),
        s => s.to_string(),
    };
    let cfg = config(&secret);
    let raw_path: String = u.arbitrary()?;
    let hdrs = headers(&mut u)?;
    let body: Vec<u8> = u.arbitrary()?;

    // Arbitrary delivery to whatever source its path routes to.
    if let Ok(p) = normalise(&raw_path) {
        let routed = p.route_forms().find_map(|f| cfg.source_for_path(f));
        if let Some((name, src)) = routed {
            let req = WebhookRequest {
                headers: &hdrs,
                body: &body,
                path_and_query: &raw_path,
            };
            let full = evaluate(&cfg, env, name, &req, NOW);
            // What the headers alone refuse (before the body, in the filter) is the answer
            // for the whole request.
            if let Err(early) = check_headers(&cfg, env, name, &req, NOW) {
                assert_eq!(full, Err(early), "{name}");
            }
            match full {
                Ok(Outcome::Verified(v)) => check_verified(&src.effective_schemes(name), name, &v),
                Ok(Outcome::UnverifiedDevelopment) => {
                    assert_eq!(env, Environment::Development);
                    assert!(!src.is_configured());
                }
                Err(_) => {}
            }
        }
    }
    // An unknown source passes unverified in development only.
    let unknown: String = u.arbitrary()?;
    if !cfg.sources.contains_key(&unknown) {
        let req = WebhookRequest {
            headers: &hdrs,
            body: &body,
            path_and_query: &raw_path,
        };
        let out = evaluate(&cfg, env, &unknown, &req, NOW);
        assert_eq!(
            out.is_ok(),
            env == Environment::Development,
            "{env:?} {unknown:?} {out:?}"
        );
    }

    // Round trip through the built-in source's first scheme.
    let name = *u.choose(&BUILTIN_SOURCES)?;
    let Some(src) = cfg.sources.get(name) else {
        panic!("built-in source {name} missing");
    };
    let scheme = src.effective_schemes(name)[0];
    let key = src.secrets[0].expose().to_string();
    let offset = i64::from(u.int_in_range(-(TOLERANCE_S as i32)..=TOLERANCE_S as i32)?);
    let Some(signed) = fuzz_api::sign(
        scheme,
        &key,
        &body,
        NOW + offset,
        src.public_url.as_deref(),
        None,
    ) else {
        assert!(fuzz_api::toast_timestamp(&body).is_none(), "{scheme:?}");
        return Ok(());
    };
    let path = format!("/webhooks/{name}");
    let req = WebhookRequest {
        headers: &signed,
        body: &body,
        path_and_query: &path,
    };
    match evaluate(&cfg, env, name, &req, NOW) {
        Ok(Outcome::Verified(v)) => {
            assert_eq!(v.scheme, scheme);
            check_verified(&[scheme], name, &v);
        }
        other => panic!("{name}/{scheme:?}: signed delivery gave {other:?}"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
