//! Window arithmetic. The rate-limit service only has fixed, epoch-aligned units (a Redis key
//! per `floor(now / unit) * unit`). We make a window of W seconds exact by putting the W-bucket
//! index `floor(now / W)` into the descriptor and counting it under a unit U with `U % W == 0`:
//! U windows start at multiples of U, which are multiples of W, so every W-bucket lies inside
//! exactly one U window and its counter sees exactly the hits of that bucket.

/// The service's units with their divider in seconds (`utils.UnitToDivider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            // The service's MONTH and YEAR are fixed 30 and 365 days.
            Unit::Month => 2_592_000,
            Unit::Year => 31_536_000,
        }
    }

    /// Name as written in the service's YAML `unit:`.
    pub fn yaml_name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

/// The smallest unit whose length is a multiple of `span_s`, so each `span_s` bucket lies in
/// one unit window. Smallest keeps the Redis TTL (unit + jitter) short.
pub fn unit_for_span(span_s: u64) -> Option<Unit> {
    if span_s == 0 {
        return None;
    }
    Unit::ALL.into_iter().find(|u| u.seconds() % span_s == 0)
}

/// Backoff multipliers, one counter level each. Level `m` counts attempts in buckets of
/// `W * m` seconds.
pub const BACKOFF_LEVELS: [u32; 5] = [1, 2, 4, 8, 16];

/// The largest multiplier: a window W is usable only if `W * MAX_MULTIPLIER` fits a unit.
pub const MAX_MULTIPLIER: u32 = 16;

/// Window multiplier for `failures` consecutive failures: 2^(n-1) capped at 16, and 1 for
/// n = 0 (the original's table had no 0 entry and fell back to 16: fixed here on purpose).
pub fn backoff_multiplier(failures: u64) -> u32 {
    match failures {
        0 | 1 => 1,
        2 => 2,
        3 => 4,
        4 => 8,
        _ => MAX_MULTIPLIER,
    }
}

/// One fixed bucket of `span_s` seconds containing `now_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// `floor(now / span)`.
    pub index: u64,
    /// Seconds until the bucket ends, always in `1..=span`.
    pub reset_after_s: u64,
}

/// The bucket of `span_s` seconds containing `now_s`; `None` for a zero span.
pub fn bucket(now_s: u64, span_s: u64) -> Option<Bucket> {
    let index = now_s.checked_div(span_s)?;
    let into = now_s.checked_rem(span_s)?;
    Some(Bucket {
        index,
        reset_after_s: span_s.saturating_sub(into),
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn backoff_table_is_one_at_zero_and_one_failures_then_doubles_to_sixteen() {
        let got: Vec<u32> = (0..=8).map(backoff_multiplier).collect();
        assert_eq!(got, vec![1, 1, 2, 4, 8, 16, 16, 16, 16]);
        assert_eq!(backoff_multiplier(u64::MAX), 16);
    }

    #[test]
    fn seed_windows_get_the_smallest_dividing_unit_per_level() {
        let units = |w: u64| -> Vec<&str> {
            BACKOFF_LEVELS
                .iter()
                .map(|m| unit_for_span(w * u64::from(*m)).unwrap().yaml_name())
                .collect()
        };
        assert_eq!(units(300), ["hour", "hour", "hour", "day", "day"]);
        assert_eq!(units(600), ["hour", "hour", "day", "day", "day"]);
        assert_eq!(units(3600), ["hour", "day", "day", "day", "month"]);
    }

    #[test]
    fn span_dividing_no_unit_has_no_unit() {
        assert_eq!(unit_for_span(11 * 16), None);
        assert_eq!(unit_for_span(0), None);
        assert_eq!(unit_for_span(1), Some(Unit::Second));
        assert_eq!(unit_for_span(45), Some(Unit::Hour));
    }

    #[test]
    fn bucket_edges_reset_after_is_full_window_at_start_and_one_at_end() {
        assert_eq!(
            bucket(600, 300),
            Some(Bucket {
                index: 2,
                reset_after_s: 300
            })
        );
        assert_eq!(
            bucket(899, 300),
            Some(Bucket {
                index: 2,
                reset_after_s: 1
            })
        );
        assert_eq!(
            bucket(900, 300),
            Some(Bucket {
                index: 3,
                reset_after_s: 300
            })
        );
        assert_eq!(
            bucket(0, 300),
            Some(Bucket {
                index: 0,
                reset_after_s: 300
            })
        );
        assert_eq!(bucket(5, 0), None);
    }

    /// The exactness claim: with U % W == 0 the service key (bucket, U window) names one
    /// bucket only, and every second of a bucket maps to the same key. So the counter of a
    /// bucket is shared by nothing else and split across nothing.
    #[test]
    fn every_bucket_lies_in_exactly_one_unit_window() {
        for w in [300u64, 600, 3600, 4800, 57_600] {
            let u = unit_for_span(w).unwrap().seconds();
            // Around a unit boundary and a few buckets either side, second by second.
            let base = 1_790_000_000u64 / u * u;
            for t in (base - 3 * w)..(base + 3 * w) {
                let b = bucket(t, w).unwrap();
                let unit_window = t / u * u;
                // Every second of the bucket falls in the same unit window.
                let first = b.index * w;
                let last = first + w - 1;
                assert_eq!(first / u * u, unit_window, "w={w} t={t}");
                assert_eq!(last / u * u, unit_window, "w={w} t={t}");
            }
        }
    }

    #[test]
    fn a_window_not_dividing_its_unit_would_split_a_bucket() {
        // Counter-example that motivates the rule: W=7 under MINUTE splits bucket 8 (56..63).
        let (w, u) = (7u64, 60u64);
        let b = bucket(59, w).unwrap();
        assert_ne!((b.index * w) / u, (b.index * w + w - 1) / u);
    }

    #[test]
    fn backoff_levels_nest_so_counts_grow_with_level() {
        // A W bucket lies inside the 2W, 4W, … bucket of the same instant.
        let w = 300u64;
        for t in [0u64, 299, 300, 4799, 4800, 1_790_001_234] {
            let mut prev: Option<(u64, u64)> = None;
            for m in BACKOFF_LEVELS {
                let span = w * u64::from(m);
                let b = bucket(t, span).unwrap();
                let range = (b.index * span, b.index * span + span);
                if let Some((s, e)) = prev {
                    assert!(range.0 <= s && e <= range.1);
                }
                prev = Some(range);
            }
        }
    }
}
