//! Audit record format v1: parsing and validation of one NDJSON line, against the format's one
//! definition in `aura_guard_core::audit::format` (the shipper writes its lines with it).
//!
//! The collector never re-serialises a record: the exact line bytes are what is
//! hashed, appended to the files and stored in the DB, so the chain the shipper
//! built stays verifiable. Parsing only extracts and checks the fields.

use aura_guard_core::audit::format::{
    is_ident, Limits, Wire, FIELDS, GAP_TYPE, KINDS, KIND_GAP, OPTIONAL_FIELD, RESERVED_FIELD,
    SEVERITIES, VERSION, ZERO_HASH,
};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

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
    if is_ident(s) {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1..={} characters of [A-Za-z0-9._:-]",
            Limits::IDENT
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
    if line.len() > Limits::LINE_BYTES {
        return Err(format!("line longer than {} bytes", Limits::LINE_BYTES));
    }
    if line.contains('\r') {
        return Err("line contains CR (lines are LF-terminated)".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "record is not a JSON object".to_string())?;
    if obj.contains_key(RESERVED_FIELD) {
        return Err(format!(
            "{RESERVED_FIELD}: must not be sent (the collector computes it)"
        ));
    }
    // Every v1 field must be present (null where not applicable) so that a
    // shipper bug shows up here rather than as silently missing data.
    for f in FIELDS.iter().filter(|f| **f != OPTIONAL_FIELD) {
        if !obj.contains_key(*f) {
            return Err(format!("{f}: missing"));
        }
    }
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: unknown field"));
    }
    let Wire {
        v,
        id,
        entry: e,
        stream,
        seq,
        prev_hash,
    } = serde_json::from_value(value).map_err(|e| format!("bad field: {e}"))?;
    // The shipper's entry keeps metadata as any JSON value; the format wants an object.
    let metadata: Map<String, Value> =
        serde_json::from_value(e.metadata).map_err(|e| format!("bad field: {e}"))?;
    if v != VERSION {
        return Err(format!("v: unsupported version {v}"));
    }
    check_ident("id", &id)?;
    check_ident("stream", &stream)?;
    let ts = normalise_ts(&e.ts).map_err(|e| format!("ts: {e}"))?;
    if !KINDS.contains(&e.kind.as_str()) {
        return Err("kind: must be operation, security_event or gap".into());
    }
    if e.record_type.is_empty()
        || e.record_type.len() > Limits::TYPE
        || !e
            .record_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "type: must be 1..={} characters of [a-z0-9_]",
            Limits::TYPE
        ));
    }
    if !SEVERITIES.contains(&e.severity.as_str()) {
        return Err("severity: must be info, low, medium or high".into());
    }
    if e.outcome.is_empty() || e.outcome.len() > Limits::OUTCOME {
        return Err(format!(
            "outcome: must be 1..={} characters",
            Limits::OUTCOME
        ));
    }
    check_opt_len("method", &e.method, Limits::METHOD)?;
    check_opt_len("path", &e.path, Limits::PATH)?;
    check_opt_len("client_ip", &e.client_ip, Limits::CLIENT_IP)?;
    check_opt_len("user_id", &e.user_id, Limits::USER_ID)?;
    check_opt_len("user_agent", &e.user_agent, Limits::USER_AGENT)?;
    check_opt_len("request_id", &e.request_id, Limits::REQUEST_ID)?;
    check_opt_len("description", &e.description, Limits::DESCRIPTION)?;
    if seq == 0 || i64::try_from(seq).is_err() {
        return Err("seq: must be in 1..=9223372036854775807".into());
    }
    if prev_hash.len() != 64
        || !prev_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("prev_hash: must be 64 lower-case hex digits".into());
    }
    if seq == 1 && prev_hash != ZERO_HASH {
        return Err("prev_hash: must be 64 zeros when seq is 1".into());
    }
    let gap = if e.kind == KIND_GAP {
        if e.record_type != GAP_TYPE {
            return Err(format!("type: a gap record has type {GAP_TYPE}"));
        }
        let dropped = metadata
            .get("dropped")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .ok_or_else(|| "metadata.dropped: a gap record needs an integer > 0".to_string())?;
        let reason = metadata
            .get("reason")
            .and_then(Value::as_str)
            .ok_or_else(|| "metadata.reason: a gap record needs a string".to_string())?;
        Some((dropped, reason.to_string()))
    } else {
        None
    };
    Ok(Record {
        id,
        ts,
        kind: e.kind,
        type_: e.record_type,
        severity: e.severity,
        method: e.method,
        path: e.path,
        status: e.status,
        client_ip: e.client_ip,
        user_id: e.user_id,
        request_id: e.request_id,
        stream,
        seq,
        prev_hash,
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
}
