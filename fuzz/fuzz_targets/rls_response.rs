//! The rate-limit service's answer (ratelimit/rls.rs, planner/check.rs): the gRPC
//! RateLimitResponse bytes, decoded and decided on by a real check of the default login route.
//! Half the inputs are raw bytes, half a structured answer with the expected number of
//! statuses (so the decision logic is reached). Never panics; a decoded answer re-encodes to
//! the same message; an undecodable one fails as the route's failure mode, never as allow.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::ratelimit::config::RateLimitConfig;
use aura_guard_core::ratelimit::identity::IdentityInput;
use aura_guard_core::ratelimit::planner::{AuthFacts, Decision, RateLimiter, RlsError, Step};
use aura_guard_core::ratelimit::rls::{Code, DescriptorStatus, RateLimit, RateLimitResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn status(u: &mut Unstructured<'_>) -> Result<DescriptorStatus> {
    Ok(DescriptorStatus {
        code: u.int_in_range(-1..=3)?,
        current_limit: if u.arbitrary()? {
            Some(RateLimit {
                requests_per_unit: u.arbitrary()?,
                unit: u.int_in_range(-1..=6)?,
                name: String::new(),
            })
        } else {
            None
        },
        limit_remaining: u.arbitrary()?,
        ..DescriptorStatus::default()
    })
}

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let planner = RateLimiter::new(RateLimitConfig::default().resolve(None));
    let Some(route) = planner.match_route("POST", "/auth/login") else {
        panic!("the default configuration has /auth/login");
    };
    let with_user: bool = u.arbitrary()?;
    let upstream_status: u16 = u.arbitrary()?;
    let facts = AuthFacts {
        client_ip: Some(
            "203.0.113.7"
                .parse()
                .map_err(|_| arbitrary::Error::IncorrectFormat)?,
        ),
        identity: IdentityInput {
            content_type: Some("application/json"),
            body: with_user.then_some(br#"{"username":"alice"}"#.as_slice()),
            authorization: None,
        },
        now_s: 1_700_000_000,
        production: u.arbitrary()?,
    };
    let Some((mut check, Step::Call(_))) = planner.start(route, &facts) else {
        panic!("a login check starts with a call");
    };
    let expected = check.check_request().descriptors.len();
    let bytes = if u.arbitrary()? {
        u.take_rest().to_vec()
    } else {
        let mut statuses = Vec::with_capacity(expected);
        for _ in 0..expected {
            statuses.push(status(&mut u)?);
        }
        RateLimitResponse {
            overall_code: u.int_in_range(-1..=3)?,
            statuses,
            ..RateLimitResponse::default()
        }
        .encode_to_vec()
    };
    let decoded = RateLimitResponse::decode_bytes(&bytes);
    if let Ok(r) = &decoded {
        assert_eq!(
            RateLimitResponse::decode_bytes(&r.encode_to_vec()).as_ref(),
            Ok(r)
        );
    }
    let step = check.on_rls_response(Ok(&bytes));
    let Step::Done(decision) = step else {
        panic!("an answer ends the check");
    };
    let unusable = match &decoded {
        Err(_) => true,
        Ok(r) => r.overall_code == Code::Unknown as i32 || r.statuses.len() != expected,
    };
    if unusable {
        assert!(
            matches!(
                decision,
                Decision::FailOpen { .. } | Decision::FailClosed { .. }
            ),
            "{decision:?}"
        );
    }
    if let Decision::Allow { attempt, .. } | Decision::FailOpen { attempt, .. } = &decision {
        let _ = attempt.on_upstream_status(upstream_status);
    }
    // A second answer for one check is a failure, never a decision to allow.
    let Step::Done(again) = check.on_rls_response(Err(RlsError::Dispatch)) else {
        panic!("an extra answer ends the check");
    };
    assert!(
        matches!(
            again,
            Decision::FailOpen { .. } | Decision::FailClosed { .. }
        ),
        "{again:?}"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
