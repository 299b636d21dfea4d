//! Audit record format v1: parsing and validation of one NDJSON line.
//!
//! The collector never re-serialises a record: the exact line bytes are what is
//! hashed, appended to the files and stored in the DB, so the chain the shipper
//! built stays verifiable. Parsing only extracts and checks the fields.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// prev_hash of the first record of a stream.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest accepted line, in bytes (a record carries a sanitised, bounded body).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

const FIELDS: [&str; 22] = [
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
    "stream",
    "seq",
    "prev_hash",
    // Optional free text (security events carry a description).
    "description",
    // Reserved: never sent; present only so the error names it clearly.
    "hash",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    id: String,
    ts: String,
    kind: String,
    #[serde(rename = "type")]
    type_: String,
    severity: String,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    // Read only to check its type: the line itself is what gets stored.
    #[allow(dead_code)]
    duration_ms: Option<u64>,
    client_ip: Option<String>,
    user_id: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    outcome: String,
    #[allow(dead_code)]
    request_body: Value,
    metadata: Map<String, Value>,
    stream: String,
    seq: u64,
    prev_hash: String,
    #[serde(default)]
    description: Option<String>,
}

/// The queryable fields of one validated record, plus its exact line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    /// Normalised `YYYY-MM-DDTHH:MM:SS.mmmZ`: fixed width, so text order is time order.
    pub ts: String,
    pub kind: String,
    pub type_: String,
    pub severity: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub client_ip: Option<String>,
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    pub stream: String,
    pub seq: u64,
    pub prev_hash: String,
    /// For `gap` records: how many records the shipper dropped, and why.
    pub gap: Option<(u64, String)>,
    pub line: String,
}

/// Lower-hex SHA-256 of a line's bytes (without its terminating LF).
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Parses an RFC 3339 timestamp and returns it normalised to UTC, milliseconds.
pub fn normalise_ts(s: &str) -> Result<String, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not RFC 3339 ({e})"))?;
    format_ts(t.to_offset(UtcOffset::UTC))
}

pub fn format_ts(t: OffsetDateTime) -> Result<String, String> {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .map_err(|e| format!("cannot format time: {e}"))
}

fn check_ident(field: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1..=128 characters of [A-Za-z0-9._:-]"
        ))
    }
}

fn check_opt_len(field: &str, s: &Option<String>, max: usize) -> Result<(), String> {
    match s {
        Some(v) if v.len() > max => Err(format!("{field}: longer than {max} bytes")),
        _ => Ok(()),
    }
}

/// Parses and validates one line of a batch.
pub fn parse_line(line: &str) -> Result<Record, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("line longer than {MAX_LINE_BYTES} bytes"));
    }
    if line.contains('\r') {
        return Err("line contains CR (lines are LF-terminated)".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "record is not a JSON object".to_string())?;
    if obj.contains_key("hash") {
        return Err("hash: must not be sent (the collector computes it)".into());
    }
    // Every v1 field must be present (null where not applicable) so that a
    // shipper bug shows up here rather than as silently missing data.
    for f in FIELDS
        .iter()
        .filter(|f| !matches!(**f, "hash" | "description"))
    {
        if !obj.contains_key(*f) {
            return Err(format!("{f}: missing"));
        }
    }
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: unknown field"));
    }
    let w: Wire = serde_json::from_value(value).map_err(|e| format!("bad field: {e}"))?;
    if w.v != 1 {
        return Err(format!("v: unsupported version {}", w.v));
    }
    check_ident("id", &w.id)?;
    check_ident("stream", &w.stream)?;
    let ts = normalise_ts(&w.ts).map_err(|e| format!("ts: {e}"))?;
    if !matches!(w.kind.as_str(), "operation" | "security_event" | "gap") {
        return Err("kind: must be operation, security_event or gap".into());
    }
    if w.type_.is_empty()
        || w.type_.len() > 64
        || !w
            .type_
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("type: must be 1..=64 characters of [a-z0-9_]".into());
    }
    if !matches!(w.severity.as_str(), "info" | "low" | "medium" | "high") {
        return Err("severity: must be info, low, medium or high".into());
    }
    if w.outcome.is_empty() || w.outcome.len() > 32 {
        return Err("outcome: must be 1..=32 characters".into());
    }
    check_opt_len("method", &w.method, 16)?;
    check_opt_len("path", &w.path, 8192)?;
    check_opt_len("client_ip", &w.client_ip, 64)?;
    check_opt_len("user_id", &w.user_id, 256)?;
    check_opt_len("user_agent", &w.user_agent, 1024)?;
    check_opt_len("request_id", &w.request_id, 128)?;
    check_opt_len("description", &w.description, 4096)?;
    if w.seq == 0 || i64::try_from(w.seq).is_err() {
        return Err("seq: must be in 1..=9223372036854775807".into());
    }
    if w.prev_hash.len() != 64
        || !w
            .prev_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("prev_hash: must be 64 lower-case hex digits".into());
    }
    if w.seq == 1 && w.prev_hash != ZERO_HASH {
        return Err("prev_hash: must be 64 zeros when seq is 1".into());
    }
    let gap = if w.kind == "gap" {
        if w.type_ != "records_dropped" {
            return Err("type: a gap record has type records_dropped".into());
        }
        let dropped = w
            .metadata
            .get("dropped")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .ok_or_else(|| "metadata.dropped: a gap record needs an integer > 0".to_string())?;
        let reason = w
            .metadata
            .get("reason")
            .and_then(Value::as_str)
            .ok_or_else(|| "metadata.reason: a gap record needs a string".to_string())?;
        Some((dropped, reason.to_string()))
    } else {
        None
    };
    Ok(Record {
        id: w.id,
        ts,
        kind: w.kind,
        type_: w.type_,
        severity: w.severity,
        method: w.method,
        path: w.path,
        status: w.status,
        client_ip: w.client_ip,
        user_id: w.user_id,
        request_id: w.request_id,
        stream: w.stream,
        seq: w.seq,
        prev_hash: w.prev_hash,
        gap,
        line: line.to_string(),
    })
}

/// Splits an NDJSON body into lines. A final LF is optional; any other empty
/// line is an error. Returns (1-based line number, line) pairs.
pub fn split_lines(body: &str) -> Result<Vec<(usize, &str)>, String> {
    let body = body.strip_suffix('\n').unwrap_or(body);
    if body.is_empty() {
        return Err("empty batch".into());
    }
    let mut out = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        let n = i.saturating_add(1);
        if line.is_empty() {
            return Err(format!("line {n}: empty line"));
        }
        out.push((n, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, prev: &str) -> String {
        serde_json::json!({
            "v": 1, "id": format!("s1-{seq}"), "ts": "2026-01-02T03:04:05.678+01:00",
            "kind": "operation", "type": "payment_refund", "severity": "info",
            "method": "POST", "path": "/api/v1/payments/refund", "status": 200,
            "duration_ms": 12, "client_ip": "203.0.113.9", "user_id": null,
            "user_agent": "curl/8", "request_id": "r1", "outcome": "completed",
            "request_body": {"amount": 5, "password": "[REDACTED]"}, "metadata": {},
            "stream": "s1", "seq": seq, "prev_hash": prev
        })
        .to_string()
    }

    #[test]
    fn valid_record_parses_and_ts_is_normalised_to_utc_ms() {
        let r = parse_line(&sample(1, ZERO_HASH)).unwrap();
        assert_eq!(r.ts, "2026-01-02T02:04:05.678Z");
        assert_eq!(r.status, Some(200));
        assert!(r.gap.is_none());
    }

    #[test]
    fn first_record_must_have_zero_prev_hash() {
        let e = parse_line(&sample(1, &"a".repeat(64))).unwrap_err();
        assert!(e.contains("prev_hash"), "{e}");
    }

    #[test]
    fn missing_unknown_and_hash_fields_are_rejected() {
        let mut v: Value = serde_json::from_str(&sample(2, ZERO_HASH)).unwrap();
        v.as_object_mut().unwrap().remove("client_ip");
        assert!(parse_line(&v.to_string())
            .unwrap_err()
            .contains("client_ip: missing"));
        let mut v: Value = serde_json::from_str(&sample(2, ZERO_HASH)).unwrap();
        v["extra"] = Value::Bool(true);
        assert!(parse_line(&v.to_string())
            .unwrap_err()
            .contains("extra: unknown"));
        let mut v: Value = serde_json::from_str(&sample(2, ZERO_HASH)).unwrap();
        v["hash"] = Value::String(ZERO_HASH.into());
        assert!(parse_line(&v.to_string()).unwrap_err().contains("hash"));
    }

    #[test]
    fn gap_record_needs_dropped_count_and_reason() {
        let mut v: Value = serde_json::from_str(&sample(2, ZERO_HASH)).unwrap();
        v["kind"] = "gap".into();
        v["type"] = "records_dropped".into();
        assert!(parse_line(&v.to_string()).unwrap_err().contains("dropped"));
        v["metadata"] = serde_json::json!({"dropped": 7, "reason": "queue_full"});
        let r = parse_line(&v.to_string()).unwrap();
        assert_eq!(r.gap, Some((7, "queue_full".to_string())));
    }

    #[test]
    fn split_lines_allows_one_final_lf_only() {
        assert_eq!(split_lines("a\nb\n").unwrap().len(), 2);
        assert_eq!(split_lines("a\nb").unwrap().len(), 2);
        assert_eq!(split_lines("a\n\nb").unwrap_err(), "line 2: empty line");
        assert!(split_lines("").is_err());
    }

    #[test]
    fn line_hash_is_sha256_lower_hex() {
        assert_eq!(
            line_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
