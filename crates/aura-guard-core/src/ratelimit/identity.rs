//! The user of an auth request: a plain identifier from the body (`username`, `email`), or
//! the `sub` of a verified HS256 JWT (refresh token in the body, or a Bearer header).
//! Identifiers leave the filter only hashed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::config::IdentityConfig;
use crate::jwt::{bearer_sub, verify_hs256_sub};
use crate::secret::Secret;

/// How a request body is encoded, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Unknown,
}

fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Unknown;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        BodyKind::Json
    } else if mime == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Unknown
    }
}

/// Parsed body fields (string values only; the last occurrence of a form field wins, as in
/// Starlette and serde_json).
enum Fields {
    Json(serde_json::Map<String, serde_json::Value>),
    Form(Vec<(String, String)>),
    None,
}

impl Fields {
    fn parse(content_type: Option<&str>, body: &[u8]) -> Fields {
        let json = || match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(m)) => Some(Fields::Json(m)),
            _ => None,
        };
        let form = || {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
            (!pairs.is_empty()).then_some(Fields::Form(pairs))
        };
        let parsed = match body_kind(content_type) {
            BodyKind::Json => json(),
            BodyKind::Form => form(),
            // Without a usable Content-Type, try both: a client must not dodge the per-user
            // limit by omitting the header when the upstream sniffs.
            BodyKind::Unknown => json().or_else(form),
        };
        parsed.unwrap_or(Fields::None)
    }

    fn get(&self, name: &str) -> Option<String> {
        let v = match self {
            Fields::Json(m) => m.get(name).and_then(|v| v.as_str()).map(str::to_string),
            Fields::Form(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
            Fields::None => None,
        }?;
        let v = v.trim().to_string();
        (!v.is_empty()).then_some(v)
    }
}

/// Inputs for user extraction.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityInput<'a> {
    pub content_type: Option<&'a str>,
    /// The full request body (None when there is none).
    pub body: Option<&'a [u8]>,
    pub authorization: Option<&'a str>,
}

/// The raw user identifier per `cfg`, or None (anonymous).
pub fn extract_user(
    cfg: &IdentityConfig,
    input: &IdentityInput<'_>,
    jwt_secret: Option<&Secret>,
    now_s: u64,
) -> Option<String> {
    let fields = match input.body {
        Some(b) if cfg.reads_body() => Fields::parse(input.content_type, b),
        _ => Fields::None,
    };
    if let Some(u) = cfg.body_fields.iter().find_map(|f| fields.get(f)) {
        return Some(u);
    }
    let secret = jwt_secret?;
    if let Some(sub) = cfg
        .jwt_body_fields
        .iter()
        .filter_map(|f| fields.get(f))
        .find_map(|t| verify_hs256_sub(&t, secret.as_bytes(), now_s).ok())
    {
        return Some(sub);
    }
    if cfg.bearer_jwt {
        return bearer_sub(input.authorization?, secret, now_s);
    }
    None
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
        extract_user(cfg, &input, Some(&Secret::new("k")), NOW)
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
        assert_eq!(extract_user(&cfg, &input, None, NOW), None);
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

    #[test]
    fn without_secret_jwts_are_never_trusted() {
        let cfg = refresh_cfg();
        let t = make_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u2"}"#, b"k");
        let auth = format!("Bearer {t}");
        let input = IdentityInput {
            content_type: None,
            body: None,
            authorization: Some(&auth),
        };
        assert_eq!(extract_user(&cfg, &input, None, NOW), None);
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
