//! Fleet-wide replay check through the rate-limit service (`webhook.replay.mode: "ratelimit"`):
//! every Envoy that uses the same service and Redis refuses a delivery another one accepted.
//! docs/webhooks.md#fleet-wide-replay-mode-ratelimit explains the design; in short:
//!
//! - The service cannot decrement, and a provider's retry after an upstream failure must pass
//!   again, so each key has two counters: `attempt` (every verified copy adds 1) and `released`
//!   (a copy that was not processed adds 1). A copy is new when it is the only unreleased
//!   attempt: at most one accepted, unreleased delivery per key and window.
//! - The service's windows are epoch-aligned, so a key recorded just before a window boundary
//!   would be forgotten just after it. The filter therefore puts an *anchor* (the index of the
//!   `span = 2 x tolerance` period the copy arrived in) into the descriptor value, checks the
//!   current anchor and the previous one, and counts each anchor under the smallest unit whose
//!   window holds the anchor's whole life (two spans plus a clock margin either side), so no
//!   window boundary falls inside it.
//! - The released counters are read before the attempt is added, in one call, so a release
//!   counted by the read always belongs to an earlier attempt.
//! - Only a digest of the key is sent, inside `{}`: Redis Cluster hashes every counter of one
//!   key to the same slot (one node, commands in order).

use crate::ratelimit::rls::{DescriptorStatus, RateLimitDescriptor, RateLimitRequest};
use crate::ratelimit::window::Unit;
use crate::webhook::replay::digest;

/// Descriptor key of the replay counters; its value says which counter.
pub const KEY_REPLAY: &str = "webhook_replay";
pub const COUNTER_ATTEMPT: &str = "attempt";
pub const COUNTER_RELEASED: &str = "released";
/// The counters' limit: effectively unbounded, so `count = requests_per_unit - remaining`.
/// The filter, not the service, decides from the counts.
pub const REPLAY_COUNTER_LIMIT: u32 = u32::MAX;
/// Clock difference tolerated between Envoys and the rate-limit service, in seconds.
pub const CLOCK_MARGIN_S: u64 = 60;
/// Largest `tolerance_s` the fleet-wide mode accepts: with it every anchor until at least 2053
/// has a unit (the test below checks 2023-2053). Longer windows would, on a few days a decade,
/// find the week, month and year boundaries all inside one anchor's life.
pub const MAX_FLEET_TOLERANCE_S: u32 = 10_800;
/// Units an anchor may be counted under (the smallest that fits is used).
pub const REPLAY_UNITS: [Unit; 6] = [
    Unit::Minute,
    Unit::Hour,
    Unit::Day,
    Unit::Week,
    Unit::Month,
    Unit::Year,
];

/// The period a copy arrived in, and the unit its counters live under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub index: u64,
    pub unit: Unit,
}

/// Why no fleet-wide answer could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetReplayError {
    /// No unit's window holds the anchor's life (only where the boundaries of every unit meet,
    /// next in 2053).
    NoUnit,
    /// The service answered without a limit for a replay counter: its YAML lacks the replay
    /// descriptors (or the answer is not one status per descriptor).
    NotConfigured,
}

/// The fleet-wide answer for one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetVerdict {
    /// The only unreleased attempt: process it.
    New,
    /// Another copy was accepted and not released: a replay.
    Seen,
}

/// One anchor period: twice the tolerance, the longest a key must be remembered (a signed
/// timestamp up to `tolerance_s` in the future stays acceptable for `2 x tolerance_s`).
pub fn span_s(tolerance_s: u64) -> u64 {
    tolerance_s.saturating_mul(2).max(1)
}

/// The smallest unit whose epoch-aligned window holds `[index*span - margin,
/// (index+2)*span + margin)`: while the anchor is current, and while it is the previous one.
pub fn unit_for_anchor(index: u64, span: u64) -> Option<Unit> {
    let start = index.checked_mul(span)?;
    let lo = start.saturating_sub(CLOCK_MARGIN_S);
    let hi = start
        .checked_add(span.checked_mul(2)?)?
        .checked_add(CLOCK_MARGIN_S)?;
    REPLAY_UNITS
        .into_iter()
        .find(|u| lo / u.seconds() == (hi - 1) / u.seconds())
}

fn anchor(index: u64, span: u64) -> Result<Anchor, FleetReplayError> {
    unit_for_anchor(index, span)
        .map(|unit| Anchor { index, unit })
        .ok_or(FleetReplayError::NoUnit)
}

/// `{<32 hex digest of the key>}:<anchor>`. The braces are Redis Cluster's hash tag.
fn value(key: &str, index: u64) -> String {
    format!("{{{}}}:{index}", hex::encode(digest(key)))
}

fn descriptor(counter: &str, key: &str, a: Anchor, hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor::with_hits(
        &[
            (KEY_REPLAY, counter),
            (a.unit.yaml_name(), &value(key, a.index)),
        ],
        hits,
    )
}

/// A planned check: the request to send and the anchor a release must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCheck {
    pub request: RateLimitRequest,
    pub anchor: Anchor,
}

/// The check of `key` at `now_s`: the previous anchor's counters and the current anchor's
/// released counter are read (hits 0) before the current attempt is added (hits 1).
pub fn plan_check(
    domain: &str,
    key: &str,
    now_s: u64,
    tolerance_s: u64,
) -> Result<FleetCheck, FleetReplayError> {
    let span = span_s(tolerance_s);
    let current = anchor(now_s / span, span)?;
    let mut descriptors = Vec::with_capacity(4);
    if let Some(prev) = current.index.checked_sub(1) {
        let prev = anchor(prev, span)?;
        descriptors.push(descriptor(COUNTER_RELEASED, key, prev, 0));
        descriptors.push(descriptor(COUNTER_ATTEMPT, key, prev, 0));
    }
    descriptors.push(descriptor(COUNTER_RELEASED, key, current, 0));
    descriptors.push(descriptor(COUNTER_ATTEMPT, key, current, 1));
    Ok(FleetCheck {
        request: RateLimitRequest {
            domain: domain.to_string(),
            descriptors,
            hits_addend: 0,
        },
        anchor: current,
    })
}

/// The release of one attempt at `anchor` (the copy was not processed, or was a replay).
pub fn plan_release(domain: &str, key: &str, anchor: Anchor) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![descriptor(COUNTER_RELEASED, key, anchor, 1)],
        hits_addend: 0,
    }
}

fn count(s: &DescriptorStatus) -> Result<u64, FleetReplayError> {
    let limit = s
        .current_limit
        .as_ref()
        .ok_or(FleetReplayError::NotConfigured)?;
    Ok(u64::from(
        limit.requests_per_unit.saturating_sub(s.limit_remaining),
    ))
}

/// The verdict from the service's statuses for [`plan_check`]'s request (one per descriptor,
/// in order).
pub fn decide(
    check: &FleetCheck,
    statuses: &[DescriptorStatus],
) -> Result<FleetVerdict, FleetReplayError> {
    if statuses.len() != check.request.descriptors.len() {
        return Err(FleetReplayError::NotConfigured);
    }
    let counts = statuses.iter().map(count).collect::<Result<Vec<_>, _>>()?;
    let (previous, current) = counts.split_at(counts.len().saturating_sub(2));
    // Attempts not released: the current anchor holds ours (counted) and must hold no other.
    let unreleased = |pair: &[u64]| match pair {
        [released, attempts] => attempts.saturating_sub(*released),
        _ => 0,
    };
    if unreleased(previous) == 0 && unreleased(current) <= 1 {
        Ok(FleetVerdict::New)
    } else {
        Ok(FleetVerdict::Seen)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ratelimit::rls::{Code, RateLimit};

    /// A tiny model of the service for these counters: per (entries, window) a count, with the
    /// service's fixed epoch-aligned windows.
    #[derive(Default)]
    struct Service {
        counts: std::collections::BTreeMap<(Vec<(String, String)>, u64), u64>,
    }

    impl Service {
        fn call(&mut self, req: &RateLimitRequest, now: u64) -> Vec<DescriptorStatus> {
            req.descriptors
                .iter()
                .map(|d| {
                    let entries: Vec<(String, String)> = d
                        .entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect();
                    let unit = REPLAY_UNITS
                        .into_iter()
                        .find(|u| u.yaml_name() == entries[1].0)
                        .unwrap();
                    let window = now / unit.seconds() * unit.seconds();
                    let c = self.counts.entry((entries, window)).or_default();
                    *c += d.hits_addend.unwrap().value;
                    DescriptorStatus {
                        code: Code::Ok as i32,
                        current_limit: Some(RateLimit {
                            requests_per_unit: REPLAY_COUNTER_LIMIT,
                            unit: 0,
                            name: String::new(),
                        }),
                        limit_remaining: REPLAY_COUNTER_LIMIT - u32::try_from(*c).unwrap(),
                        duration_until_reset: None,
                    }
                })
                .collect()
        }

        /// Checks `key` at `now`, releasing a replay's attempt as the filter does.
        fn check(&mut self, key: &str, now: u64, tol: u64) -> (FleetVerdict, Anchor) {
            let c = plan_check("d", key, now, tol).unwrap();
            let v = decide(&c, &self.call(&c.request, now)).unwrap();
            if v == FleetVerdict::Seen {
                self.release(key, c.anchor, now);
            }
            (v, c.anchor)
        }

        fn release(&mut self, key: &str, a: Anchor, now: u64) {
            self.call(&plan_release("d", key, a), now);
        }
    }

    use FleetVerdict::{New, Seen};

    #[test]
    fn a_key_is_remembered_for_two_tolerances_whatever_window_boundary_lies_between() {
        // Every second of two days around a DAY boundary (which is also an HOUR and MINUTE
        // boundary) for the first copy, a replay 1..=2*tol seconds later is always refused.
        let tol = 300;
        let day = 86_400 * 20_000;
        for first in (day - 2 * 3_600..day + 2 * 3_600).step_by(7) {
            let mut s = Service::default();
            assert_eq!(s.check("k", first, tol).0, New, "{first}");
            for later in [1, 59, 60, 61, 299, 300, 301, 599, 600] {
                assert_eq!(s.check("k", first + later, tol).0, Seen, "{first}+{later}");
            }
        }
    }

    fn unit_holds_life(i: u64, span: u64) -> bool {
        let Some(u) = unit_for_anchor(i, span) else {
            return false;
        };
        let lo = (i * span).saturating_sub(CLOCK_MARGIN_S);
        let hi = (i + 2) * span + CLOCK_MARGIN_S;
        lo / u.seconds() == (hi - 1) / u.seconds()
    }

    #[test]
    fn every_anchor_from_2023_to_2053_has_a_unit_holding_its_life() {
        let (from, to) = (1_672_531_200u64, 2_648_000_000u64); // 2023-01-01 .. 2053-11-30
        for tol in [1_800, 3_600, 7_200, u64::from(MAX_FLEET_TOLERANCE_S)] {
            let span = span_s(tol);
            for i in from / span..to / span {
                assert!(unit_holds_life(i, span), "tol {tol} anchor {i}");
            }
        }
        // Short tolerances: a few thousand anchors across a new year (every unit's boundary).
        let new_year_2030 = 1_893_456_000u64;
        for tol in [1, 7, 60, 300, 301, 900] {
            let span = span_s(tol);
            for i in (new_year_2030 - 3_600) / span..(new_year_2030 + 3_600) / span {
                assert!(unit_holds_life(i, span), "tol {tol} anchor {i}");
            }
        }
    }

    #[test]
    fn a_released_delivery_passes_again_and_only_once() {
        let mut s = Service::default();
        let (v, a) = s.check("k", 1_700_000_000, 300);
        assert_eq!(v, New);
        // The upstream failed: released; the provider's retry passes, a copy of it does not.
        s.release("k", a, 1_700_000_005);
        assert_eq!(s.check("k", 1_700_000_030, 300).0, New);
        assert_eq!(s.check("k", 1_700_000_031, 300).0, Seen);
    }

    #[test]
    fn replays_refused_during_processing_do_not_block_the_retry_after_a_failure() {
        let mut s = Service::default();
        let (_, a) = s.check("k", 1_700_000_000, 300);
        for t in 1..4 {
            assert_eq!(s.check("k", 1_700_000_000 + t, 300).0, Seen);
        }
        s.release("k", a, 1_700_000_010);
        assert_eq!(s.check("k", 1_700_000_020, 300).0, New);
        assert_eq!(s.check("k", 1_700_000_021, 300).0, Seen);
    }

    #[test]
    fn a_release_in_the_next_anchor_still_frees_the_key() {
        let mut s = Service::default();
        let span = span_s(300);
        let t0 = (1_700_000_000 / span + 1) * span - 1; // last second of an anchor
        let (_, a) = s.check("k", t0, 300);
        s.release("k", a, t0 + 5);
        assert_eq!(s.check("k", t0 + 10, 300).0, New);
    }

    #[test]
    fn other_keys_are_independent() {
        let mut s = Service::default();
        assert_eq!(s.check("stripe:a", 1_700_000_000, 300).0, New);
        assert_eq!(s.check("stripe:b", 1_700_000_000, 300).0, New);
        assert_eq!(s.check("github:a", 1_700_000_000, 300).0, New);
    }

    #[test]
    fn only_a_digest_of_the_key_is_sent_in_a_hash_tag() {
        let c = plan_check("aura-guard", "github:secret-ish-key", 1_700_000_000, 300).unwrap();
        let text = format!("{:?}", c.request);
        assert!(!text.contains("secret-ish"));
        assert_eq!(c.request.descriptors.len(), 4);
        let hits: Vec<u64> = c
            .request
            .descriptors
            .iter()
            .map(|d| d.hits_addend.unwrap().value)
            .collect();
        assert_eq!(hits, [0, 0, 0, 1], "reads before the one increment");
        for d in &c.request.descriptors {
            assert_eq!(d.entries[0].key, KEY_REPLAY);
            let v = &d.entries[1].value;
            assert!(v.starts_with('{') && v[1..33].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(&v[33..34], "}");
        }
    }

    #[test]
    fn an_answer_without_limits_is_a_service_not_configured_for_replay() {
        let c = plan_check("d", "k", 1_700_000_000, 300).unwrap();
        let bare = DescriptorStatus {
            code: Code::Ok as i32,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        };
        assert_eq!(
            decide(&c, &vec![bare.clone(); 4]),
            Err(FleetReplayError::NotConfigured)
        );
        assert_eq!(decide(&c, &[bare]), Err(FleetReplayError::NotConfigured));
    }
}
