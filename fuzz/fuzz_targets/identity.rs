//! Who a login request is (ratelimit/identity): the body read as JSON, form or multipart per
//! its Content-Type (or sniffed), JWT fields and the Bearer header. Arbitrary bodies, media
//! types and headers never panic; a form or JSON body naming `username` is read as that user.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::ratelimit::config::IdentityConfig;
use aura_guard_core::ratelimit::identity::{hash_user, identify, IdentityInput};
use aura_guard_core::secret::Secret;
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "multipart/form-data; boundary=\"xyz\"; charset=latin-1",
    "multipart/form-data",
    "text/plain",
];

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let cfg = IdentityConfig {
        body_fields: vec!["username".into(), "email".into()],
        jwt_body_fields: vec!["refresh_token".into()],
        bearer_jwt: true,
    };
    let content_type: Option<String> = match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some((*u.choose(TYPES)?).to_string()),
        _ => Some(u.arbitrary()?),
    };
    let authorization: Option<String> = u.arbitrary()?;
    let secret = Secret::new("fuzz-jwt-secret-0123456789abcdef0123");
    let body = u.bytes(u.len())?;
    let input = IdentityInput {
        content_type: content_type.as_deref(),
        body: Some(body),
        authorization: authorization.as_deref(),
    };
    let id = identify(&cfg, &input, Some(&secret), 1_700_000_000);
    if let Some(user) = &id.user {
        let _ = hash_user(user, Some(&secret));
        let _ = hash_user(user, None);
    }
    // A JSON object body naming the user (an ASCII name: JSON and form read it alike).
    if let Ok(name) = std::str::from_utf8(body) {
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) {
            let json = serde_json::json!({ "username": name }).to_string();
            let input = IdentityInput {
                content_type: Some("application/json"),
                body: Some(json.as_bytes()),
                authorization: None,
            };
            assert_eq!(identify(&cfg, &input, None, 0).user.as_deref(), Some(name));
            let form = format!("username={name}");
            let input = IdentityInput {
                content_type: Some("application/x-www-form-urlencoded"),
                body: Some(form.as_bytes()),
                authorization: None,
            };
            assert_eq!(identify(&cfg, &input, None, 0).user.as_deref(), Some(name));
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
