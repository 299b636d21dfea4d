//! The plugin configuration: JSON parse, environment, validation (`Config::load`). Never
//! panics; a secret that comes from the environment never appears in the loaded
//! configuration's Debug output nor in an error (both reach Envoy's log).
#![no_main]

use aura_guard_core::config::Config;
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "Fz-canary-8e1d0c-secret-value-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    let environment = match mode & 3 {
        0 => None,
        1 => Some("development"),
        2 => Some("staging"),
        _ => Some("production"),
    };
    let secrets = mode & 4 != 0;
    // Every variable that could hold a secret gets the canary; the others are unset.
    let env = move |name: &str| -> Option<String> {
        if name == "ENVIRONMENT" {
            return environment.map(str::to_string);
        }
        let secretish = ["SECRET", "KEY", "TOKEN", "PASSWORD"]
            .iter()
            .any(|m| name.contains(m));
        (secrets && secretish).then(|| CANARY.to_string())
    };
    let result = Config::load(json, &env);
    // The input itself may spell the canary (an error may quote the input): judge only
    // inputs that do not.
    if String::from_utf8_lossy(json).contains(CANARY) {
        return;
    }
    match result {
        Ok(c) => {
            let shown = format!("{c:?}");
            assert!(!shown.contains(CANARY), "secret in Debug: {shown}");
        }
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(CANARY), "secret in error: {shown}");
        }
    }
});
