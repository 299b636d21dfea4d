//! Audit record format v1 (docs/audit.md §1–2), defined once. The shipper writes [`Wire`]
//! lines and the collector (`aura-collector`) validates them against these same kinds, limits,
//! field list and hash, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `v` of every record.
pub const VERSION: u32 = 1;

pub const KIND_OPERATION: &str = "operation";
pub const KIND_SECURITY_EVENT: &str = "security_event";
pub const KIND_GAP: &str = "gap";
/// Every valid `kind`.
pub const KINDS: [&str; 3] = [KIND_OPERATION, KIND_SECURITY_EVENT, KIND_GAP];
/// The `type` of every gap record.
pub const GAP_TYPE: &str = "records_dropped";
/// Every valid `severity` (`events::Severity::as_str`).
pub const SEVERITIES: [&str; 4] = ["info", "low", "medium", "high"];

/// `prev_hash` of a stream's first record.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The format's size limits, in bytes (records) and counts (batches). The filter cuts longer
/// field values; the collector refuses them.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    pub const METHOD: usize = 16;
    pub const PATH: usize = 8192;
    pub const CLIENT_IP: usize = 64;
    pub const USER_ID: usize = 256;
    pub const USER_AGENT: usize = 1024;
    pub const REQUEST_ID: usize = 128;
    pub const DESCRIPTION: usize = 4096;
    /// `id` and `stream` (see [`is_ident`]).
    pub const IDENT: usize = 128;
    /// `type`, `[a-z0-9_]`.
    pub const TYPE: usize = 64;
    pub const OUTCOME: usize = 32;
    /// One line, without its LF.
    pub const LINE_BYTES: usize = 1024 * 1024;
    /// One batch body.
    pub const BATCH_BYTES: usize = 16 * 1024 * 1024;
    /// Records in one batch.
    pub const BATCH_RECORDS: usize = 10_000;
}

/// Every field of a line, in the order the shipper writes them. All are required (null where
/// the type allows it) except [`OPTIONAL_FIELD`].
pub const FIELDS: [&str; 21] = [
    "v",
    "id",
    "ts",
    "kind",
    "type",
    "severity",
    "method",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "user_id",
    "user_agent",
    "request_id",
    "outcome",
    "request_body",
    "metadata",
    "description",
    "stream",
    "seq",
    "prev_hash",
];
/// Security events carry it; other records leave it out.
pub const OPTIONAL_FIELD: &str = "description";
/// Never sent: the collector and the verifier compute each line's hash themselves.
pub const RESERVED_FIELD: &str = "hash";

/// A record without its chain fields: what a worker hands to the shipper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub ts: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub severity: String,
    pub method: Option<String>,
    pub path: Option<String>,
    /// u16: the format's range (0..65535), so the collector refuses anything outside it.
    pub status: Option<u16>,
    pub duration_ms: Option<u64>,
    pub client_ip: Option<String>,
    pub user_id: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub request_body: Value,
    pub metadata: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One line of the format: an [`Entry`] plus the chain fields the shipper adds. Serialised in
/// [`FIELDS`] order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wire {
    pub v: u32,
    pub id: String,
    #[serde(flatten)]
    pub entry: Entry,
    pub stream: String,
    pub seq: u64,
    pub prev_hash: String,
}

/// Lower-hex SHA-256 of a line's exact bytes (without its LF): the next record's `prev_hash`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// A record or stream id: 1..=[`Limits::IDENT`] characters of `[A-Za-z0-9._:-]`.
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= Limits::IDENT
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::events::Severity;
    use serde_json::json;

    fn wire(description: Option<&str>) -> Wire {
        Wire {
            v: VERSION,
            id: "s-1".into(),
            entry: Entry {
                ts: "2026-03-01T10:00:00.123Z".into(),
                kind: KIND_SECURITY_EVENT.into(),
                record_type: "auth_rate_limited".into(),
                severity: "high".into(),
                method: Some("POST".into()),
                path: Some("/login".into()),
                status: Some(429),
                duration_ms: Some(3),
                client_ip: None,
                user_id: None,
                user_agent: None,
                request_id: None,
                outcome: "blocked".into(),
                request_body: Value::Null,
                metadata: json!({}),
                description: description.map(str::to_owned),
            },
            stream: "s".into(),
            seq: 1,
            prev_hash: ZERO_HASH.into(),
        }
    }

    #[test]
    fn a_line_carries_exactly_the_field_list_in_its_order() {
        let line = serde_json::to_string(&wire(Some("d"))).unwrap();
        let mut at = 0;
        for f in FIELDS {
            let key = format!("\"{f}\":");
            let found = line[at..]
                .find(&key)
                .unwrap_or_else(|| panic!("{f} in {line}"));
            at += found + key.len();
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), FIELDS.len());
    }

    #[test]
    fn only_the_description_may_be_left_out() {
        let v = serde_json::to_value(wire(None)).unwrap();
        let missing: Vec<&str> = FIELDS.into_iter().filter(|f| v.get(f).is_none()).collect();
        assert_eq!(missing, [OPTIONAL_FIELD]);
        assert!(!FIELDS.contains(&RESERVED_FIELD));
    }

    #[test]
    fn a_line_parses_back_to_the_same_record() {
        let w = wire(Some("d"));
        let back: Wire = serde_json::from_slice(&serde_json::to_vec(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn line_hash_is_sha256_lower_hex_and_zero_hash_its_width() {
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(ZERO_HASH.len(), line_hash(b"x").len());
        assert!(ZERO_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn every_event_severity_is_a_format_severity() {
        for s in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
        ] {
            assert!(SEVERITIES.contains(&s.as_str()), "{s:?}");
        }
    }

    #[test]
    fn idents_are_short_and_of_the_safe_alphabet() {
        assert!(is_ident("aura-guard-1764384000000-a1b2c3d4-7"));
        assert!(is_ident("a.b_c:d"));
        assert!(!is_ident(""));
        assert!(!is_ident("a b"));
        assert!(!is_ident("é"));
        assert!(is_ident(&"a".repeat(Limits::IDENT)));
        assert!(!is_ident(&"a".repeat(Limits::IDENT + 1)));
    }
}
