//! Helpers shared by the unit tests of several modules.

use std::collections::BTreeMap;

/// An environment lookup over fixed pairs (what `Config::load` reads through `EnvLookup`).
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}
