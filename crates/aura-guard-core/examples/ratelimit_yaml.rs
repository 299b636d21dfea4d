//! Prints the envoyproxy/ratelimit YAML for the rate-limit config: the default config (the
//! original's limits, docs/original-behaviour.md#rate-limiting), or the `ratelimit` JSON object
//! given as the first argument (a file path).

use aura_guard_core::ratelimit::config::RateLimitConfig;
use aura_guard_core::ratelimit::service_yaml::render;

fn main() -> Result<(), String> {
    let cfg = match std::env::args().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            serde_json::from_str::<RateLimitConfig>(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => RateLimitConfig::default(),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    print!("{}", render(&cfg));
    Ok(())
}
