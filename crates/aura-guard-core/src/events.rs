//! Security events: what a capability emits when it blocks or notices something (the original's
//! `log_security_event`, docs/original-behaviour.md#security-events). The pipeline logs and
//! counts each one and hands it to the audit pipeline; event metadata never holds secrets,
//! signatures or raw credentials.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecurityEvent {
    /// e.g. `webhook_validation_failure`, `debug_endpoint_blocked`.
    pub event_type: String,
    pub severity: Severity,
    pub description: String,
    /// Sanitised details (source, reason, limit_type, ...).
    pub metadata: serde_json::Value,
}

impl SecurityEvent {
    pub fn new(
        event_type: &str,
        severity: Severity,
        description: impl Into<String>,
        metadata: serde_json::Value,
    ) -> Self {
        SecurityEvent {
            event_type: event_type.to_string(),
            severity,
            description: description.into(),
            metadata,
        }
    }
}
