//! HS256 JWT verification, only to learn whose token it is (`sub`). A token whose signature,
//! algorithm or expiry does not check out yields no user: the request is then limited per
//! IP only, as anonymous, so a forged token cannot charge someone else's counter, and audit
//! records no `user_id`. One secret setting ([`JwtConfig`]) serves rate limiting and audit.

use crate::config::{ConfigError, EnvLookup};
use crate::secret::{self, Secret};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The `jwt` section: the environment variable holding the application's HS256 secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub secret_env: String,
    /// Loaded from `secret_env`; never configured directly, never printed.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret_env: "JWT_SECRET_KEY".to_string(),
            secret: None,
        }
    }
}

impl JwtConfig {
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        self.secret = secret::from_env(env, &self.secret_env);
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.secret_env.trim().is_empty() {
            return Err(ConfigError::new("jwt.secret_env", "must not be empty"));
        }
        Ok(())
    }
}

/// The `sub` of an `Authorization: Bearer <token>` value whose token verifies.
pub fn bearer_sub(authorization: &str, secret: &Secret, now_s: u64) -> Option<String> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    verify_hs256_sub(token.trim(), secret.as_bytes(), now_s).ok()
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// Why a token was not accepted (for tests and debug logs; never contains the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    NoSubject,
}

/// A NumericDate claim as whole seconds; non-numeric values make the token malformed.
fn numeric_date(v: &serde_json::Value) -> Result<i64, JwtError> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    // A float NumericDate; saturating conversion is fine for a comparison with now.
    v.as_f64()
        .map(|f| f.floor() as i64)
        .ok_or(JwtError::Malformed)
}

/// Verifies `token` (compact JWS) with HS256 and `secret`, and returns its `sub`.
/// `exp` and `nbf` are checked against `now_s` when present.
pub fn verify_hs256_sub(token: &str, secret: &[u8], now_s: u64) -> Result<String, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| JwtError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Malformed)?;
    // Exactly HS256: "none" and the other algorithms (incl. RS/HS confusion) are refused.
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| JwtError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| JwtError::Signature)?;
    mac.update(h64.as_bytes());
    mac.update(b".");
    mac.update(p64.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;

    let payload = URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| JwtError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
    let now = i64::try_from(now_s).unwrap_or(i64::MAX);
    if let Some(exp) = &claims.exp {
        if now >= numeric_date(exp)? {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = &claims.nbf {
        if now < numeric_date(nbf)? {
            return Err(JwtError::NotYetValid);
        }
    }
    let sub = match claims.sub {
        Some(serde_json::Value::String(s)) => s,
        // Some issuers put numeric user ids in sub.
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(JwtError::NoSubject),
    };
    if sub.is_empty() {
        return Err(JwtError::NoSubject);
    }
    Ok(sub)
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Builds a token for tests (signing is test-only; the filter never issues tokens).
    pub(crate) fn make_token(header: &str, payload: &str, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    const HS: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
    const NOW: u64 = 1_800_000_000;

    #[test]
    fn valid_token_yields_sub() {
        let t = make_token(HS, r#"{"sub":"alice","exp":1800000100}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Ok("alice".to_string()));
        let no_exp = make_token(HS, r#"{"sub":"bob"}"#, b"k");
        assert_eq!(verify_hs256_sub(&no_exp, b"k", NOW), Ok("bob".to_string()));
        let numeric = make_token(HS, r#"{"sub":42}"#, b"k");
        assert_eq!(verify_hs256_sub(&numeric, b"k", NOW), Ok("42".to_string()));
    }

    #[test]
    fn known_vector_from_rfc7515_style_token_verifies() {
        // The well-known jwt.io example HS256 token: {"sub":"1234567890","name":"John Doe","iat":1516239022},
        // secret "your-256-bit-secret".
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_eq!(
            verify_hs256_sub(t, b"your-256-bit-secret", NOW),
            Ok("1234567890".to_string())
        );
    }

    #[test]
    fn forged_signature_or_wrong_secret_is_rejected() {
        let t = make_token(HS, r#"{"sub":"alice"}"#, b"attacker");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::Signature));
        // Payload swapped under a valid signature.
        let good = make_token(HS, r#"{"sub":"alice"}"#, b"k");
        let other = make_token(HS, r#"{"sub":"mallory"}"#, b"k");
        let g: Vec<&str> = good.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", g[0], o[1], g[2]);
        assert_eq!(
            verify_hs256_sub(&spliced, b"k", NOW),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn expired_and_not_yet_valid_are_rejected() {
        let t = make_token(HS, r#"{"sub":"a","exp":1800000000}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::Expired));
        let t = make_token(HS, r#"{"sub":"a","nbf":1800000001}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::NotYetValid));
        let t = make_token(HS, r#"{"sub":"a","exp":"tomorrow"}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::Malformed));
    }

    #[test]
    fn alg_none_and_other_algs_are_rejected() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#);
        assert_eq!(
            verify_hs256_sub(&format!("{h}.{p}."), b"k", NOW),
            Err(JwtError::Algorithm)
        );
        let t = make_token(r#"{"alg":"HS512"}"#, r#"{"sub":"a"}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::Algorithm));
        let t = make_token(r#"{"alg":"hs256"}"#, r#"{"sub":"a"}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::Algorithm));
    }

    #[test]
    fn malformed_tokens_and_missing_sub_are_rejected() {
        for t in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(verify_hs256_sub(t, b"k", NOW).is_err(), "{t}");
        }
        let t = make_token(HS, r#"{"name":"x"}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::NoSubject));
        let t = make_token(HS, r#"{"sub":""}"#, b"k");
        assert_eq!(verify_hs256_sub(&t, b"k", NOW), Err(JwtError::NoSubject));
    }
}
