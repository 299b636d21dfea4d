//! Audit settings: what the HTTP filter records (`audit` in the filter's configuration) and how
//! the shipper service sends it (the service VM's own configuration, [`ShipperConfig`]).

use crate::config::{ConfigError, EnvLookup, Environment};
use serde::Deserialize;

/// One sensitive-operation rule: a request whose method is in `methods` and whose normalised
/// path starts with `prefix` (plain string prefix, as the original's `startswith`) and contains
/// every string of `contains` is recorded as operation `type`. First match wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    #[serde(rename = "type")]
    pub op_type: String,
    /// Upper-case HTTP methods.
    pub methods: Vec<String>,
    /// Lower-case path prefix (the normalised path is lower-case); empty matches every path.
    #[serde(default)]
    pub prefix: String,
    /// Lower-case substrings that must all appear in the normalised path.
    #[serde(default)]
    pub contains: Vec<String>,
}

fn rule(op_type: &str, methods: &[&str], prefix: &str, contains: &[&str]) -> OperationRule {
    OperationRule {
        op_type: op_type.to_owned(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        prefix: prefix.to_owned(),
        contains: contains.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// The original's table (docs/original-behaviour.md#audit): 11 prefix mappings, 4 fallbacks.
pub fn default_operations() -> Vec<OperationRule> {
    vec![
        rule("user_create", &["POST"], "/api/v1/auth/users", &[]),
        rule("user_delete", &["DELETE"], "/api/v1/auth/users", &[]),
        rule(
            "user_role_change",
            &["PUT", "PATCH"],
            "/api/v1/auth/users/role",
            &[],
        ),
        rule(
            "payment_process",
            &["POST"],
            "/api/v1/payments/process",
            &[],
        ),
        rule("payment_refund", &["POST"], "/api/v1/payments/refund", &[]),
        rule("payroll_process", &["POST"], "/api/v1/payroll/process", &[]),
        rule("payroll_export", &["POST"], "/api/v1/payroll/export", &[]),
        rule(
            "settings_update",
            &["PUT", "PATCH"],
            "/api/v1/settings",
            &[],
        ),
        rule(
            "webhook_config_change",
            &["POST", "PUT", "DELETE"],
            "/api/v1/webhooks",
            &[],
        ),
        rule("data_export", &["POST"], "/api/v1/export", &[]),
        rule("data_import", &["POST"], "/api/v1/import", &[]),
        rule("user_delete", &["DELETE"], "", &["/users/"]),
        rule(
            "user_role_change",
            &["PUT", "PATCH"],
            "",
            &["/users/", "/role"],
        ),
        rule("payroll_process", &["POST"], "", &["/payroll/", "/process"]),
        rule("payroll_export", &["POST"], "", &["/payroll/", "/export"]),
    ]
}

/// The original's nine key fragments (docs/original-behaviour.md#redaction; a test pins them
/// against that page).
pub const ORIGINAL_REDACT_KEYS: [&str; 9] = [
    "password",
    "token",
    "secret",
    "api_key",
    "credit_card",
    "ssn",
    "social_security",
    "bank_account",
    "routing_number",
];

/// What the default adds to [`ORIGINAL_REDACT_KEYS`] (docs/audit.md §9.2, which lists them).
/// Names are compared normalised (`api_key` also catches `apiKey`, `api-key`, `X-API-Key`);
/// fragments of at most four characters must be whole words of a name (`pin` redacts
/// `cardPin`, not `shipping`), longer ones match anywhere (`sanitize.rs`).
pub const ADDED_REDACT_KEYS: &[&str] = &[
    // passwords, keys, credentials, signatures
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "credential",
    "private_key",
    "signing_key",
    "seed_phrase",
    "authorization",
    "cookie",
    "signature",
    // one-time and second-factor codes
    "otp",
    "totp",
    "hotp",
    "otpauth",
    "mfa",
    "2fa",
    "two_factor",
    "one_time_code",
    "verification_code",
    "sms_code",
    "auth_code",
    "recovery_code",
    "backup_code",
    // card numbers and track data (PCI DSS cardholder and sensitive authentication data)
    "card_num",
    "pan",
    "track_data",
    "track1",
    "track2",
    // card verification values (CVC/CVV/CVV2/CID/CSC and aliases): never storable
    "cvc",
    "cvv",
    "cvn",
    "cvd",
    "cid",
    "csc",
    "cav2",
    "card_cvc",
    "card_cvv",
    "security_code",
    "card_verification",
    "card_code",
    // PINs
    "pin",
    "card_pin",
    "pin_block",
    // bank accounts
    "iban",
    "account_num",
    "acct_num",
    "sort_code",
    "bsb",
    "transit_number",
    // identity and tax numbers
    "tin",
    "itin",
    "ein",
    "sin",
    "nin",
    "nino",
    "tax_id",
    "taxpayer_id",
    "tax_identification",
    "tax_number",
    "national_id",
    "national_insurance",
    "social_insurance",
    "passport_num",
];

/// The default `audit.redact_keys`: the original's fragments, then aura-guard's.
pub fn default_redact_keys() -> Vec<String> {
    ORIGINAL_REDACT_KEYS
        .iter()
        .chain(ADDED_REDACT_KEYS)
        .map(|s| (*s).to_owned())
        .collect()
}

/// What the filter records (`audit` in the filter configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Null (default): on in production and staging, as the original. `AUDIT_LOG_ENABLED`
    /// (`true`/`false`) overrides.
    pub enabled: Option<bool>,
    /// Sensitive operations; replaces the default table when given.
    pub operations: Vec<OperationRule>,
    /// Sensitive name fragments (docs/audit.md §9.2); replaces the default list when given.
    pub redact_keys: Vec<String>,
    /// Redact values holding a Luhn-valid 13–19 digit card number (any separators) and
    /// replace card numbers in recorded free text (path, user agent, request id).
    pub redact_card_numbers: bool,
    /// Capture the sanitised JSON request body of sensitive operations (declared JSON, or
    /// sniffed without a content type or with `text/plain`: docs/audit.md §9.1).
    pub capture_body: bool,
    /// A captured body whose sanitised JSON is larger is replaced by null (noted in metadata),
    /// keeping each record well under the collector's 1 MiB line limit.
    pub max_captured_body_bytes: usize,
    /// vm_id of the shipper service and the name of its shared queue.
    pub queue_vm_id: String,
    pub queue_name: String,
}

pub const DEFAULT_QUEUE_VM_ID: &str = "aura-guard-audit";
pub const DEFAULT_QUEUE_NAME: &str = "aura_guard_audit";

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: None,
            operations: default_operations(),
            redact_keys: default_redact_keys(),
            redact_card_numbers: true,
            capture_body: true,
            max_captured_body_bytes: 64 * 1024,
            queue_vm_id: DEFAULT_QUEUE_VM_ID.to_owned(),
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
        }
    }
}

/// `[a-z0-9_]{1,64}`: the record format's rule for `type`.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl AuditConfig {
    /// Whether records are built in this environment.
    pub fn is_enabled(&self, env: Environment) -> bool {
        self.enabled.unwrap_or(matches!(
            env,
            Environment::Production | Environment::Staging
        ))
    }

    /// `AUDIT_LOG_ENABLED`: `true`/`false` (case-insensitive); anything else is refused.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(v) = env("AUDIT_LOG_ENABLED") {
            self.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    return Err(ConfigError::new(
                        "AUDIT_LOG_ENABLED",
                        format!("{v:?}: must be true or false"),
                    ))
                }
            };
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, r) in self.operations.iter().enumerate() {
            let field = format!("audit.operations[{i}]");
            if !valid_type(&r.op_type) {
                return Err(ConfigError::new(
                    format!("{field}.type"),
                    format!("{:?}: must match [a-z0-9_]{{1,64}}", r.op_type),
                ));
            }
            if r.methods.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.methods"),
                    "must name at least one method",
                ));
            }
            for (j, m) in r.methods.iter().enumerate() {
                if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(ConfigError::new(
                        format!("{field}.methods[{j}]"),
                        format!("{m:?}: must be an upper-case HTTP method"),
                    ));
                }
            }
            if !r.prefix.is_empty() && !r.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{field}.prefix"),
                    format!("{:?}: must start with '/'", r.prefix),
                ));
            }
            if r.prefix != r.prefix.to_lowercase() {
                return Err(ConfigError::new(
                    format!("{field}.prefix"),
                    "must be lower-case (it is compared with the normalised path)",
                ));
            }
            for (j, c) in r.contains.iter().enumerate() {
                if c.is_empty() || *c != c.to_lowercase() {
                    return Err(ConfigError::new(
                        format!("{field}.contains[{j}]"),
                        "must be a non-empty lower-case string",
                    ));
                }
            }
            if r.prefix.is_empty() && r.contains.is_empty() {
                return Err(ConfigError::new(
                    field,
                    "needs a prefix or contains (it would match every path)",
                ));
            }
        }
        for (i, k) in self.redact_keys.iter().enumerate() {
            if crate::audit::sanitize::normalise_name(k).is_empty() {
                return Err(ConfigError::new(
                    format!("audit.redact_keys[{i}]"),
                    format!("{k:?}: must contain an ASCII letter or digit"),
                ));
            }
        }
        if self.max_captured_body_bytes == 0 {
            return Err(ConfigError::new(
                "audit.max_captured_body_bytes",
                "must be greater than 0",
            ));
        }
        if self.queue_vm_id.is_empty() {
            return Err(ConfigError::new("audit.queue_vm_id", "must not be empty"));
        }
        if self.queue_name.is_empty() {
            return Err(ConfigError::new("audit.queue_name", "must not be empty"));
        }
        Ok(())
    }
}

/// The shipper service's configuration (its own `configuration` in the bootstrap extension).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipperConfig {
    /// Envoy cluster of the collector (a cluster name, not a URL).
    pub cluster: String,
    /// `:authority` of the batch requests.
    pub authority: String,
    pub path: String,
    /// Records per batch (the collector takes at most 10 000).
    pub batch_size: usize,
    /// Batch body limit in bytes (the collector takes at most 16 MiB).
    pub max_batch_bytes: usize,
    /// A partial batch is sent once its oldest record waited this long.
    pub flush_interval_ms: u64,
    /// Records held (waiting or in flight); beyond it new records are dropped and counted.
    pub max_buffer_records: usize,
    /// Timeout of one batch request.
    pub timeout_ms: u64,
    /// Back-off after a failed batch, doubling up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Attempts of one batch the collector refuses with a status that is not "unavailable"
    /// (500, 401, any status but 2xx, 400/409/413 and 429/502/503/504): after this many the
    /// batch is dropped and a gap record states it, so a poison batch cannot wedge the
    /// pipeline. Unavailability (no answer, 429, 502, 503, 504) is retried without bound.
    pub max_attempts: u32,
    /// Timer period of the service.
    pub tick_ms: u64,
    pub queue_name: String,
    /// First part of the stream id (`<prefix>-<start ms>-<random>`).
    pub stream_prefix: String,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        ShipperConfig {
            cluster: "audit_collector".to_owned(),
            authority: "audit-collector".to_owned(),
            path: "/v1/batches".to_owned(),
            batch_size: 100,
            max_batch_bytes: 4 * 1024 * 1024,
            flush_interval_ms: 1000,
            max_buffer_records: 10_000,
            timeout_ms: 5000,
            initial_backoff_ms: 250,
            max_backoff_ms: 10_000,
            max_attempts: 8,
            tick_ms: 200,
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
            stream_prefix: "aura-guard".to_owned(),
        }
    }
}

/// The collector refuses shorter tokens (docs/audit.md §5).
pub const MIN_TOKEN_LEN: usize = 16;

impl ShipperConfig {
    /// Parses (empty means defaults) and validates, naming the offending field.
    pub fn load(json: &[u8]) -> Result<ShipperConfig, ConfigError> {
        let cfg = if json.iter().all(|b| b.is_ascii_whitespace()) {
            ShipperConfig::default()
        } else {
            let de = &mut serde_json::Deserializer::from_slice(json);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." || path.is_empty() {
                    "audit_shipper".to_owned()
                } else {
                    format!("audit_shipper.{path}")
                };
                ConfigError::new(field, e.into_inner().to_string())
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = |name: &str| format!("audit_shipper.{name}");
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("flush_interval_ms", self.flush_interval_ms),
            ("max_buffer_records", self.max_buffer_records as u64),
            ("timeout_ms", self.timeout_ms),
            ("initial_backoff_ms", self.initial_backoff_ms),
            ("tick_ms", self.tick_ms),
            ("max_attempts", u64::from(self.max_attempts)),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(f(name), "must be greater than 0"));
            }
        }
        if self.batch_size > 10_000 {
            return Err(ConfigError::new(
                f("batch_size"),
                "must be at most 10000 (the collector's limit)",
            ));
        }
        if self.max_batch_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                f("max_batch_bytes"),
                "must be at most 16777216 (the collector's limit)",
            ));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(ConfigError::new(
                f("max_backoff_ms"),
                "must be at least initial_backoff_ms",
            ));
        }
        for (name, v) in [
            ("cluster", &self.cluster),
            ("authority", &self.authority),
            ("queue_name", &self.queue_name),
        ] {
            if v.is_empty() {
                return Err(ConfigError::new(f(name), "must not be empty"));
            }
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(f("path"), "must start with '/'"));
        }
        if self.stream_prefix.is_empty()
            || self.stream_prefix.len() > 64
            || !self
                .stream_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(ConfigError::new(
                f("stream_prefix"),
                "must be 1..64 chars of [A-Za-z0-9._:-]",
            ));
        }
        Ok(())
    }
}

/// Checks `AUDIT_COLLECTOR_TOKEN` without ever echoing it.
pub fn check_token(token: &str) -> Result<(), ConfigError> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(ConfigError::new(
            "AUDIT_COLLECTOR_TOKEN",
            format!("must be at least {MIN_TOKEN_LEN} characters"),
        ));
    }
    if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ConfigError::new(
            "AUDIT_COLLECTOR_TOKEN",
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn default_table_has_the_eleven_mappings_and_four_fallbacks() {
        let ops = default_operations();
        assert_eq!(ops.len(), 15);
        let mut names: Vec<&str> = ops.iter().map(|r| r.op_type.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 11);
        AuditConfig::default().validate().unwrap();
    }

    /// The backticked words of the first bullet of docs/original-behaviour.md#redaction.
    fn documented_original_keys() -> Vec<String> {
        let doc = include_str!("../../../../docs/original-behaviour.md");
        let section = doc.split("\n## Redaction\n").nth(1).unwrap();
        let bullet = section.split("\n- ").nth(1).unwrap();
        let list = bullet.split("has its value").next().unwrap();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn original_redact_keys_are_the_documented_ones() {
        assert_eq!(documented_original_keys(), ORIGINAL_REDACT_KEYS);
    }

    #[test]
    fn default_redact_keys_extend_the_original_and_each_is_documented() {
        let keys = default_redact_keys();
        assert!(keys.starts_with(&ORIGINAL_REDACT_KEYS.map(str::to_owned)));
        AuditConfig::default().validate().unwrap();
        // No fragment twice once normalised (`api_key` already covers `api-key`).
        let mut normalised: Vec<String> = keys
            .iter()
            .map(|k| crate::audit::sanitize::normalise_name(k))
            .collect();
        normalised.sort_unstable();
        let before = normalised.len();
        normalised.dedup();
        assert_eq!(normalised.len(), before);
        let doc = include_str!("../../../../docs/audit.md");
        let section = doc.split("### 9.2 Sanitising").nth(1).unwrap();
        for k in ADDED_REDACT_KEYS {
            assert!(
                section.contains(&format!("`{k}`")),
                "{k} missing from docs/audit.md §9.2"
            );
        }
        // The variants the original missed are caught through normalisation.
        let s = crate::audit::sanitize::Sanitizer::new(&keys, false);
        for k in ["apikey", "api-key", "X-API-Key", "Authorization", "Cookie"] {
            assert!(s.key_is_sensitive(k), "{k}");
        }
    }

    #[test]
    fn a_redact_key_without_letters_or_digits_is_refused_naming_it() {
        let mut c = AuditConfig::default();
        c.redact_keys = vec!["cvc".into(), " _-. ".into()];
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "audit.redact_keys[1]");
    }

    #[test]
    fn enabled_by_default_only_in_production_and_staging() {
        let c = AuditConfig::default();
        assert!(!c.is_enabled(Environment::Development));
        assert!(c.is_enabled(Environment::Staging));
        assert!(c.is_enabled(Environment::Production));
    }

    #[test]
    fn audit_log_enabled_variable_overrides_and_refuses_junk() {
        let mut c = AuditConfig::default();
        c.apply_env(&|k| (k == "AUDIT_LOG_ENABLED").then(|| "TRUE".to_owned()))
            .unwrap();
        assert!(c.is_enabled(Environment::Development));
        let err = c
            .apply_env(&|k| (k == "AUDIT_LOG_ENABLED").then(|| "yes".to_owned()))
            .unwrap_err();
        assert_eq!(err.field, "AUDIT_LOG_ENABLED");
    }

    #[test]
    fn bad_rule_is_refused_naming_the_field() {
        let mut c = AuditConfig::default();
        c.operations = vec![rule("Payment", &["POST"], "/x", &[])];
        assert_eq!(c.validate().unwrap_err().field, "audit.operations[0].type");
        c.operations = vec![rule("p", &["post"], "/x", &[])];
        assert_eq!(
            c.validate().unwrap_err().field,
            "audit.operations[0].methods[0]"
        );
        c.operations = vec![rule("p", &["POST"], "", &[])];
        assert_eq!(c.validate().unwrap_err().field, "audit.operations[0]");
        c.operations = vec![rule("p", &["POST"], "/API", &[])];
        assert_eq!(
            c.validate().unwrap_err().field,
            "audit.operations[0].prefix"
        );
    }

    #[test]
    fn shipper_config_defaults_and_validation() {
        let c = ShipperConfig::load(b"").unwrap();
        assert_eq!(c, ShipperConfig::default());
        let err = ShipperConfig::load(br#"{"batch_size": 0}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audit_shipper.batch_size: must be greater than 0"
        );
        let err = ShipperConfig::load(br#"{"batch_size": 20000}"#).unwrap_err();
        assert_eq!(err.field, "audit_shipper.batch_size");
        let err = ShipperConfig::load(br#"{"bogus": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err =
            ShipperConfig::load(br#"{"initial_backoff_ms": 10, "max_backoff_ms": 5}"#).unwrap_err();
        assert_eq!(err.field, "audit_shipper.max_backoff_ms");
        let err = ShipperConfig::load(br#"{"max_attempts": 0}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audit_shipper.max_attempts: must be greater than 0"
        );
        let err = ShipperConfig::load(br#"{"stream_prefix": "a b"}"#).unwrap_err();
        assert_eq!(err.field, "audit_shipper.stream_prefix");
    }

    #[test]
    fn short_token_is_refused_without_echoing_it() {
        let err = check_token("short-secret").unwrap_err();
        assert!(!err.to_string().contains("short-secret"));
        check_token("0123456789abcdef").unwrap();
    }
}
