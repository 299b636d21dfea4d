//! IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-09/10): Structured
//! Field lists whose members are String items with parameters, e.g.
//! `RateLimit-Policy: "login-ip";q=5;w=300` and `RateLimit: "login-ip";r=0;t=42`.

pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";
pub const RETRY_AFTER: &str = "retry-after";

/// One policy as announced to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    /// Policy name, `[a-z0-9_-]` (safe inside an sf-string without escaping).
    pub name: String,
    /// Quota: attempts per window.
    pub quota: u64,
    /// Window in seconds (the backoff-stretched window currently in force).
    pub window_s: u64,
    /// Remaining attempts in the current window.
    pub remaining: u64,
    /// Seconds until the current window ends (> 0).
    pub reset_s: u64,
}

fn sf_string(s: &str) -> String {
    // Names are validated to [a-z0-9_-]; escape anyway so a bad name cannot break the field.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if (' '..='~').contains(&c) {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// `RateLimit-Policy` value for `policies` (empty string for none).
pub fn policy_header(policies: &[PolicyState]) -> String {
    policies
        .iter()
        .map(|p| format!("{};q={};w={}", sf_string(&p.name), p.quota, p.window_s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `RateLimit` value for `policies`.
pub fn ratelimit_header(policies: &[PolicyState]) -> String {
    policies
        .iter()
        .map(|p| format!("{};r={};t={}", sf_string(&p.name), p.remaining, p.reset_s))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn p(name: &str, remaining: u64, reset_s: u64) -> PolicyState {
        PolicyState {
            name: name.into(),
            quota: 5,
            window_s: 300,
            remaining,
            reset_s,
        }
    }

    #[test]
    fn single_policy_uses_draft_structured_field_syntax() {
        let ps = [p("login-ip", 0, 42)];
        assert_eq!(policy_header(&ps), r#""login-ip";q=5;w=300"#);
        assert_eq!(ratelimit_header(&ps), r#""login-ip";r=0;t=42"#);
    }

    #[test]
    fn several_policies_form_a_list() {
        let ps = [p("login-ip", 4, 10), p("login-user", 3, 10)];
        assert_eq!(
            policy_header(&ps),
            r#""login-ip";q=5;w=300, "login-user";q=5;w=300"#
        );
        assert_eq!(
            ratelimit_header(&ps),
            r#""login-ip";r=4;t=10, "login-user";r=3;t=10"#
        );
    }

    #[test]
    fn names_are_escaped_as_sf_strings() {
        assert_eq!(sf_string("a\"b\\c\u{7f}\n"), r#""a\"b\\c""#);
    }
}
