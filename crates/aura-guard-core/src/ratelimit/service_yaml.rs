//! Renders the envoyproxy/ratelimit YAML for a config, so the descriptors the filter sends
//! and the service's config cannot drift: envoy/ratelimit/config.yaml is this output for
//! the default config, the original's limits (docs/original-behaviour.md#rate-limiting); a
//! test pins it, and `cargo run -p aura-guard-core --example ratelimit_yaml` prints it.

use std::fmt::Write;

use super::planner::{
    COUNTER_CLEARED, COUNTER_FAILURES, KEY_BUCKET, KEY_COUNTER, KEY_LEVEL, KEY_ROUTE,
};
use super::window::{unit_for_span, Unit, BACKOFF_LEVELS};
use crate::ratelimit::config::RateLimitConfig;
use crate::webhook::fleet_replay::{
    COUNTER_ATTEMPT, COUNTER_RELEASED, KEY_REPLAY, REPLAY_COUNTER_LIMIT, REPLAY_UNITS,
};

/// Limit of the failures/cleared counters: effectively unbounded, so a read (hits_addend 0)
/// returns `count = requests_per_unit - limit_remaining`.
pub const COUNTER_LIMIT: u32 = u32::MAX;

/// Unit of the failures/cleared counters: failure memory ends at the next UTC midnight
/// (the original kept failures 24 h after the last one). Both share it, so they reset together.
pub const COUNTER_UNIT: Unit = Unit::Day;

/// The service YAML for `cfg`: the auth routes' descriptors, then the fleet-wide webhook
/// replay counters (`webhook.replay.mode: "ratelimit"`, one per counter and unit; unused in
/// the local mode). Routes must be valid (`cfg.validate()`); a window that fits no unit is
/// skipped.
pub fn render(cfg: &RateLimitConfig) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Generated from the aura-guard rate-limit config; see docs/ratelimit.md."
    );
    let _ = writeln!(y, "domain: {}", cfg.domain);
    let _ = writeln!(y, "descriptors:");
    for r in &cfg.routes {
        let _ = writeln!(y, "  - key: {KEY_ROUTE}");
        let _ = writeln!(y, "    value: {}", r.name);
        let _ = writeln!(y, "    descriptors:");
        for who in ["ip", "user"] {
            let _ = writeln!(y, "      - key: {who}");
            let _ = writeln!(y, "        descriptors:");
            for m in BACKOFF_LEVELS {
                let span = r.window_s.saturating_mul(u64::from(m));
                let Some(unit) = unit_for_span(span) else {
                    continue;
                };
                let _ = writeln!(
                    y,
                    "          # {} per {span} s bucket (window {} s x {m})",
                    r.requests, r.window_s
                );
                let _ = writeln!(y, "          - key: {KEY_LEVEL}");
                let _ = writeln!(y, "            value: \"{m}\"");
                let _ = writeln!(y, "            descriptors:");
                let _ = writeln!(y, "              - key: {KEY_BUCKET}");
                let _ = writeln!(y, "                rate_limit:");
                let _ = writeln!(y, "                  unit: {}", unit.yaml_name());
                let _ = writeln!(y, "                  requests_per_unit: {}", r.requests);
            }
            for counter in [COUNTER_FAILURES, COUNTER_CLEARED] {
                let _ = writeln!(y, "          - key: {KEY_COUNTER}");
                let _ = writeln!(y, "            value: {counter}");
                let _ = writeln!(y, "            rate_limit:");
                let _ = writeln!(y, "              unit: {}", COUNTER_UNIT.yaml_name());
                let _ = writeln!(y, "              requests_per_unit: {COUNTER_LIMIT}");
            }
        }
    }
    let _ = writeln!(
        y,
        "  # Fleet-wide webhook replay (docs/webhooks.md#fleet-wide-replay-mode-ratelimit):"
    );
    let _ = writeln!(
        y,
        "  # counted, not limited; the filter decides from the counts."
    );
    for counter in [COUNTER_ATTEMPT, COUNTER_RELEASED] {
        let _ = writeln!(y, "  - key: {KEY_REPLAY}");
        let _ = writeln!(y, "    value: {counter}");
        let _ = writeln!(y, "    descriptors:");
        for unit in REPLAY_UNITS {
            let _ = writeln!(y, "      - key: {}", unit.yaml_name());
            let _ = writeln!(y, "        rate_limit:");
            let _ = writeln!(y, "          unit: {}", unit.yaml_name());
            let _ = writeln!(y, "          requests_per_unit: {REPLAY_COUNTER_LIMIT}");
        }
    }
    y
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const CHECKED_IN: &str = include_str!("../../../../envoy/ratelimit/config.yaml");

    #[test]
    fn checked_in_service_yaml_matches_the_seed_config() {
        let want = render(&RateLimitConfig::default());
        assert!(
            CHECKED_IN == want,
            "envoy/ratelimit/config.yaml is stale; regenerate with \
             `cargo run -q -p aura-guard-core --example ratelimit_yaml > envoy/ratelimit/config.yaml`"
        );
    }

    #[test]
    fn login_levels_use_the_smallest_dividing_unit() {
        let y = render(&RateLimitConfig::default());
        assert!(y.contains("domain: aura-guard\n"));
        let login = y.split("value: register").next().unwrap();
        assert!(y.contains("  - key: webhook_replay\n    value: attempt\n"));
        assert!(y.contains("  - key: webhook_replay\n    value: released\n"));
        let units: Vec<&str> = login
            .lines()
            .filter_map(|l| l.trim().strip_prefix("unit: "))
            .collect();
        // ip: 5 levels + 2 counters, then user the same.
        assert_eq!(
            units,
            [
                "hour", "hour", "hour", "day", "day", "day", "day", "hour", "hour", "hour", "day",
                "day", "day", "day"
            ]
        );
    }
}
