//! HS256 JWT verification, only to learn whose token it is (`sub`). A token whose signature,
//! algorithm or expiry does not check out yields no user: the request is then limited per
//! IP only, as anonymous, so a forged token cannot charge someone else's counter, and audit
//! records no `user_id`. One secret setting ([`JwtConfig`]) serves rate limiting and audit.

use crate::config::{ConfigError, EnvLookup};
use crate::secret::{self, Secret};
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
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

/// Decodes the bits of a segment once [`pyjwt_b64decode`] has kept only alphabet characters:
/// no padding, trailing bits ignored (as Python does).
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// A token segment decoded exactly as PyJWT's `base64url_decode` does, so that every token the
/// upstream accepts names its user here too (docs/ratelimit.md, "Who is limited"). PyJWT pads
/// the segment with `=` to a multiple of 4 and calls Python's `base64.urlsafe_b64decode`
/// (binascii, non-strict), which:
/// - accepts both alphabets (`-`/`+` are 62, `_`/`/` are 63) and skips any other byte;
/// - stops at a pad sequence (`==` after 2 characters of a quad, `=` after 3), ignoring the
///   rest, and ignores `=` seen earlier in a quad;
/// - fails when a quad is left incomplete without padding;
/// - ignores non-canonical trailing bits.
///
/// Only that character filter is written here; the bits are decoded by the `base64` crate.
fn pyjwt_b64decode(segment: &str) -> Option<Vec<u8>> {
    let raw = segment.as_bytes();
    let padding = (4 - raw.len() % 4) % 4;
    let mut clean = Vec::with_capacity(raw.len());
    let (mut quad, mut pads, mut stopped) = (0usize, 0usize, false);
    for &b in raw.iter().chain(std::iter::repeat_n(&b'=', padding)) {
        if b == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    stopped = true;
                    break;
                }
            }
            continue;
        }
        let c = match b {
            b'+' => b'-',
            b'/' => b'_',
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => b,
            _ => continue,
        };
        pads = 0;
        clean.push(c);
        quad = (quad + 1) % 4;
    }
    if !stopped && quad != 0 {
        return None;
    }
    LENIENT_URL_SAFE.decode(&clean).ok()
}

/// Verifies `token` (compact JWS) with HS256 and `secret`, and returns its `sub`.
/// `exp` and `nbf` are checked against `now_s` when present. The token is split as PyJWT
/// splits it (signature after the last `.`, header before the first) and each segment is
/// decoded by [`pyjwt_b64decode`]; the MAC covers the raw signing input.
pub fn verify_hs256_sub(token: &str, secret: &[u8], now_s: u64) -> Result<String, JwtError> {
    let (signing_input, s64) = token.trim().rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (h64, p64) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    let header_bytes = pyjwt_b64decode(h64).ok_or(JwtError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Malformed)?;
    // Exactly HS256: "none" and the other algorithms (incl. RS/HS confusion) are refused.
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let sig = pyjwt_b64decode(s64).ok_or(JwtError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| JwtError::Signature)?;
    mac.update(signing_input.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;

    let payload = pyjwt_b64decode(p64).ok_or(JwtError::Malformed)?;
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
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
    fn segments_decode_as_pythons_urlsafe_b64decode_after_pyjwts_padding() {
        // Each answer checked against PyJWT 2.13's `base64url_decode`.
        for (segment, want) in [
            ("QQ", Some(&b"A"[..])),
            ("QQ==", Some(b"A")),
            ("QQ=", Some(b"A")),
            ("QQ==QUFB", Some(b"A")),
            ("QUFB", Some(b"AAA")),
            ("QR", Some(b"A")),
            ("Q!!!Q", Some(b"A")),
            ("QUF=B", Some(b"AA")),
            ("QUFB=", Some(b"AAA")),
            ("QQ+/", Some(b"A\x0f\xbf")),
            ("QQ-_", Some(b"A\x0f\xbf")),
            ("", Some(b"")),
            ("Q", None),
            ("Q!Q", None),
            ("Q!!Q", None),
            ("Q=Q", None),
            ("=QQ", None),
            ("Q\u{e9}Q", None),
        ] {
            assert_eq!(pyjwt_b64decode(segment).as_deref(), want, "{segment:?}");
        }
    }

    #[test]
    fn signature_padded_non_canonical_or_in_the_other_alphabet_still_names_the_user() {
        let t = make_token(HS, r#"{"sub":"alice"}"#, b"k");
        let (signing_input, sig) = t.rsplit_once('.').unwrap();
        let ok = |s: &str| verify_hs256_sub(&format!("{signing_input}.{s}"), b"k", NOW);
        // 32 bytes take 43 characters; the last carries 2 bits of data and 4 unused ones.
        const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (head, last) = sig.split_at(42);
        let top = B64.find(last).unwrap() & !3;
        for low in 0..4 {
            let s = format!("{head}{}", &B64[top | low..=(top | low)]);
            assert_eq!(ok(&s), Ok("alice".to_string()), "{s}");
        }
        for pad in ["=", "==", "===", "====", " =", "=garbage"] {
            assert_eq!(ok(&format!("{sig}{pad}")), Ok("alice".to_string()), "{pad}");
        }
        let standard = sig.replace('-', "+").replace('_', "/");
        assert_eq!(ok(&standard), Ok("alice".to_string()));
        let junk = format!("{}!{}~{}", &sig[..10], &sig[10..20], &sig[20..]);
        assert_eq!(ok(&junk), Ok("alice".to_string()));
        // Still the same 32 bytes or nothing.
        assert_eq!(ok(&sig[..42]), Err(JwtError::Signature));
        assert_eq!(ok(&format!("{sig}A")), Err(JwtError::Signature));
        // One junk byte: PyJWT adds no padding, the last quad is incomplete.
        assert_eq!(
            ok(&format!("{}!{}", &sig[..10], &sig[10..])),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn bearer_token_with_a_padded_signature_names_the_user_for_audit_too() {
        let t = make_token(HS, r#"{"sub":"alice"}"#, b"k");
        let secret = Secret::new("k");
        assert_eq!(
            bearer_sub(&format!("Bearer {t}="), &secret, NOW).as_deref(),
            Some("alice")
        );
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
