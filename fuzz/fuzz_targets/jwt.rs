//! The HS256 bearer reader (jwt.rs): arbitrary tokens and Authorization values never panic,
//! and a token signed with the secret, `alg` HS256 and an arbitrary non-empty `sub` and valid `exp`
//! yields that `sub`, as a bare token and as `Bearer <token>`; signed with another secret it
//! is refused.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::jwt::{bearer_sub, verify_hs256_sub, JwtError};
use aura_guard_core::secret::Secret;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const NOW: u64 = 1_700_000_000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn token(secret: &[u8], sub: &str, exp: u64) -> String {
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "sub": sub, "exp": exp });
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        panic!("HMAC takes any key length");
    };
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let secret: String = u.arbitrary()?;
    let raw: String = u.arbitrary()?;
    let _ = verify_hs256_sub(&raw, secret.as_bytes(), NOW);
    let _ = bearer_sub(&raw, &Secret::new(secret.clone()), NOW);

    let sub: String = u.arbitrary()?;
    let exp = NOW + u64::from(u.int_in_range(1..=u32::MAX)?);
    let t = token(secret.as_bytes(), &sub, exp);
    if sub.is_empty() {
        // An empty `sub` names nobody (jwt.rs).
        assert_eq!(
            verify_hs256_sub(&t, secret.as_bytes(), NOW),
            Err(JwtError::NoSubject)
        );
        return Ok(());
    }
    assert_eq!(
        verify_hs256_sub(&t, secret.as_bytes(), NOW),
        Ok(sub.clone())
    );
    assert_eq!(
        bearer_sub(&format!("Bearer {t}"), &Secret::new(secret.clone()), NOW),
        Some(sub.clone())
    );
    let other = format!("{secret}x");
    assert!(verify_hs256_sub(&t, other.as_bytes(), NOW).is_err());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
