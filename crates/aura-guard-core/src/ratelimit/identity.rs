//! The user of an auth request: a plain identifier from the body (`username`, `email`), or
//! the `sub` of a verified HS256 JWT (refresh token in the body, or a Bearer header).
//! Identifiers leave the filter only hashed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::config::IdentityConfig;
use crate::jwt::{bearer_sub, verify_hs256_sub};
use crate::secret::Secret;

mod body;
mod json;
mod multipart;

pub use body::BodyError;

/// Inputs for user extraction.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityInput<'a> {
    pub content_type: Option<&'a str>,
    /// The full request body (None when there is none).
    pub body: Option<&'a [u8]>,
    pub authorization: Option<&'a str>,
}

/// Who an auth request is, and whether its body could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The raw identifier (hash it with [`hash_user`]); None: anonymous.
    pub user: Option<String>,
    /// The route reads the body, the body is not empty, and it could not be read at all (a
    /// JSON media type that is not JSON, a broken multipart body …). The upstream may still
    /// read a user from it, so production refuses the request (docs/ratelimit.md, "Reading
    /// the body"); elsewhere it goes on as anonymous (or as the Bearer token's user).
    pub unreadable: Option<BodyError>,
}

/// The user per `cfg` (first source that names one: body fields, JWT body fields, Bearer
/// JWT), and whether the body was unreadable.
pub fn identify(
    cfg: &IdentityConfig,
    input: &IdentityInput<'_>,
    jwt_secret: Option<&Secret>,
    now_s: u64,
) -> Identity {
    let (fields, unreadable) = match input.body {
        Some(b) if cfg.reads_body() && !b.is_empty() => match body::parse(input.content_type, b) {
            Ok(f) => (f, None),
            Err(e) => (body::Fields::default(), Some(e)),
        },
        _ => (body::Fields::default(), None),
    };
    let user = cfg
        .body_fields
        .iter()
        .find_map(|f| fields.get(f))
        .or_else(|| {
            let secret = jwt_secret?;
            cfg.jwt_body_fields
                .iter()
                .filter_map(|f| fields.get(f))
                .find_map(|t| verify_hs256_sub(&t, secret.as_bytes(), now_s).ok())
                .or_else(|| {
                    cfg.bearer_jwt
                        .then(|| bearer_sub(input.authorization?, secret, now_s))
                        .flatten()
                })
        });
    Identity { user, unreadable }
}

/// The `user` descriptor value: identifiers are trimmed and lowercased (so `Alice` and
/// `alice ` share a counter), then hashed: HMAC-SHA256 with `key` (32 hex chars) when a key
/// is configured, else SHA-256 truncated to 16 hex chars like the original.
pub fn hash_user(identifier: &str, key: Option<&Secret>) -> String {
    let norm = identifier.trim().to_lowercase();
    match key.and_then(|k| Hmac::<Sha256>::new_from_slice(k.as_bytes()).ok()) {
        Some(mut mac) => {
            mac.update(norm.as_bytes());
            let mut h = hex::encode(mac.finalize().into_bytes());
            h.truncate(32);
            h
        }
        None => {
            let mut h = hex::encode(Sha256::digest(norm.as_bytes()));
            h.truncate(16);
            h
        }
    }
}

/// Hostile inputs for the body parsers' tests: `count` copies of `seed`, each with 1 to 4
/// random edits (delete, replace, insert a byte of `alphabet`); deterministic.
#[cfg(test)]
fn mutations(seed: &[u8], alphabet: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    (0..count)
        .map(|_| {
            let mut b = seed.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = next() % (b.len() + 1);
                let pick = alphabet[next() % alphabet.len()];
                match next() % 3 {
                    0 if at < b.len() => {
                        b.remove(at);
                    }
                    1 if at < b.len() => b[at] = pick,
                    _ => b.insert(at, pick),
                }
            }
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::jwt::tests::make_token;

    const NOW: u64 = 1_800_000_000;

    fn login_cfg() -> IdentityConfig {
        IdentityConfig {
            body_fields: vec!["username".into(), "email".into()],
            ..IdentityConfig::default()
        }
    }

    fn refresh_cfg() -> IdentityConfig {
        IdentityConfig {
            body_fields: vec![],
            jwt_body_fields: vec!["refresh_token".into()],
            bearer_jwt: true,
        }
    }

    fn user(
        cfg: &IdentityConfig,
        ct: Option<&str>,
        body: &str,
        auth: Option<&str>,
    ) -> Option<String> {
        let input = IdentityInput {
            content_type: ct,
            body: Some(body.as_bytes()),
            authorization: auth,
        };
        identify(cfg, &input, Some(&Secret::new("k")), NOW).user
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    #[test]
    fn username_from_urlencoded_form_with_percent_and_plus_decoding() {
        let cfg = login_cfg();
        assert_eq!(
            user(
                &cfg,
                FORM,
                "grant_type=password&username=al%40x.io&password=p",
                None
            ),
            Some("al@x.io".into())
        );
        assert_eq!(
            user(&cfg, FORM, "username=john+doe", None),
            Some("john doe".into())
        );
        // Last duplicate wins, like the upstream's form parser.
        assert_eq!(
            user(&cfg, FORM, "username=a&username=b", None),
            Some("b".into())
        );
    }

    #[test]
    fn username_or_email_from_json() {
        let cfg = login_cfg();
        assert_eq!(
            user(&cfg, JSON, r#"{"username":"bob","password":"x"}"#, None),
            Some("bob".into())
        );
        assert_eq!(
            user(&cfg, JSON, r#"{"email":"e@x.io"}"#, None),
            Some("e@x.io".into())
        );
        assert_eq!(
            user(&cfg, JSON, r#"{"username":"  ","email":"e@x.io"}"#, None),
            Some("e@x.io".into())
        );
        assert_eq!(user(&cfg, JSON, r#"{"username":7}"#, None), None);
        assert_eq!(user(&cfg, JSON, r#"["username"]"#, None), None);
        assert_eq!(user(&cfg, JSON, "not json", None), None);
    }

    #[test]
    fn missing_content_type_sniffs_json_then_form() {
        let cfg = login_cfg();
        assert_eq!(
            user(&cfg, None, r#"{"username":"j"}"#, None),
            Some("j".into())
        );
        assert_eq!(user(&cfg, None, "username=f", None), Some("f".into()));
        assert_eq!(
            user(&cfg, Some("text/plain"), "username=f", None),
            Some("f".into())
        );
    }

    #[test]
    fn no_body_or_no_fields_is_anonymous() {
        let cfg = login_cfg();
        let input = IdentityInput::default();
        assert_eq!(identify(&cfg, &input, None, NOW).user, None);
        assert_eq!(user(&cfg, FORM, "password=x", None), None);
    }

    #[test]
    fn refresh_token_sub_from_json_or_form_when_signature_verifies() {
        let cfg = refresh_cfg();
        let t = make_token(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"u1","exp":1800000500}"#,
            b"k",
        );
        assert_eq!(
            user(&cfg, JSON, &format!(r#"{{"refresh_token":"{t}"}}"#), None),
            Some("u1".into())
        );
        assert_eq!(
            user(&cfg, FORM, &format!("refresh_token={t}"), None),
            Some("u1".into())
        );
    }

    #[test]
    fn forged_or_expired_refresh_token_is_anonymous() {
        let cfg = refresh_cfg();
        let forged = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"victim"}"#, b"guess");
        assert_eq!(
            user(
                &cfg,
                JSON,
                &format!(r#"{{"refresh_token":"{forged}"}}"#),
                None
            ),
            None
        );
        let expired = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u","exp":1}"#, b"k");
        assert_eq!(
            user(
                &cfg,
                JSON,
                &format!(r#"{{"refresh_token":"{expired}"}}"#),
                None
            ),
            None
        );
    }

    #[test]
    fn bearer_jwt_sub_when_body_has_none() {
        let cfg = refresh_cfg();
        let t = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u2"}"#, b"k");
        assert_eq!(
            user(&cfg, JSON, "{}", Some(&format!("Bearer {t}"))),
            Some("u2".into())
        );
        assert_eq!(
            user(&cfg, JSON, "{}", Some(&format!("bearer  {t}"))),
            Some("u2".into())
        );
        assert_eq!(user(&cfg, JSON, "{}", Some(&format!("Basic {t}"))), None);
        let forged = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u2"}"#, b"x");
        assert_eq!(
            user(&cfg, JSON, "{}", Some(&format!("Bearer {forged}"))),
            None
        );
    }

    /// `Authorization: Bearer <an HS256 token for sub, signed with "k">`.
    fn bearer_for(sub: &str) -> String {
        let payload = format!(r#"{{"sub":"{sub}"}}"#);
        format!(
            "Bearer {}",
            make_token(r#"{"alg":"HS256"}"#, &payload, b"k")
        )
    }

    #[test]
    fn without_secret_jwts_are_never_trusted() {
        let cfg = refresh_cfg();
        let auth = bearer_for("u2");
        let input = IdentityInput {
            content_type: None,
            body: None,
            authorization: Some(&auth),
        };
        assert_eq!(identify(&cfg, &input, None, NOW).user, None);
    }

    /// tests/data/identity_vectors.json: what FastAPI/Starlette and PyJWT read from hostile
    /// bodies and tokens (tests/gen_identity_vectors.py ran them through the real packages).
    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/data/identity_vectors.json")).unwrap()
    }

    #[test]
    fn every_body_fastapi_reads_as_a_user_names_that_user_here() {
        use base64::Engine;
        let cfg = login_cfg();
        let mut checked = 0;
        for v in vectors()["bodies"].as_array().unwrap() {
            let body = base64::engine::general_purpose::STANDARD
                .decode(v["body_b64"].as_str().unwrap())
                .unwrap();
            let input = IdentityInput {
                content_type: v["content_type"].as_str(),
                body: Some(&body),
                authorization: None,
            };
            let got = identify(&cfg, &input, None, NOW);
            for route in ["form", "json"] {
                if let Some(want) = v[route].as_str() {
                    assert_eq!(got.user.as_deref(), Some(want.trim()), "{}", v["note"]);
                    assert_eq!(got.unreadable, None, "{}", v["note"]);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 60, "{checked}");
    }

    #[test]
    fn every_token_pyjwt_accepts_names_its_sub_here_and_no_other() {
        let all = vectors();
        let secret = all["jwt_secret"].as_str().unwrap().as_bytes();
        for v in all["tokens"].as_array().unwrap() {
            // Any PyJWT release: up to 2.13 it decodes leniently, later ones accept a subset.
            let want = v["sub"]
                .as_object()
                .unwrap()
                .values()
                .find_map(|s| s.as_str());
            let got = verify_hs256_sub(v["token"].as_str().unwrap(), secret, NOW).ok();
            assert_eq!(got.as_deref(), want, "{}", v["note"]);
        }
    }

    #[test]
    fn an_unreadable_body_is_reported_and_the_bearer_user_still_counts() {
        let cfg = refresh_cfg();
        let auth = bearer_for("u3");
        let input = IdentityInput {
            content_type: JSON,
            body: Some(b"{\"refresh_token\": "),
            authorization: Some(&auth),
        };
        let got = identify(&cfg, &input, Some(&Secret::new("k")), NOW);
        assert_eq!(got.user.as_deref(), Some("u3"));
        assert_eq!(got.unreadable, Some(BodyError::InvalidJson));
        // An empty body is no problem, and a route that does not read the body never reads it.
        let empty = IdentityInput {
            body: Some(b""),
            ..input
        };
        assert_eq!(identify(&cfg, &empty, None, NOW).unreadable, None);
        let header_only = IdentityConfig {
            bearer_jwt: true,
            ..IdentityConfig::default()
        };
        assert_eq!(identify(&header_only, &input, None, NOW).unreadable, None);
    }

    #[test]
    fn user_hash_matches_original_truncated_sha256_after_normalising() {
        // sha256("alice") = 2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
        assert_eq!(hash_user("alice", None), "2bd806c97f0e00af");
        assert_eq!(hash_user(" Alice ", None), "2bd806c97f0e00af");
    }

    #[test]
    fn keyed_user_hash_differs_by_key_and_is_32_hex() {
        let a = hash_user("alice", Some(&Secret::new("k1")));
        let b = hash_user("alice", Some(&Secret::new("k2")));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(&a[..16], hash_user("alice", None));
    }
}
