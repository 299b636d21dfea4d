//! Security events: the one shape every capability reports through, so the glue can log or
//! forward them (audit) without knowing which capability produced them.

use serde::Serialize;

/// How urgent an event is. Serialised lowercase, as the original app logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A security-relevant occurrence, e.g. `auth_rate_limit_exceeded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecurityEvent {
    pub event_type: String,
    pub severity: Severity,
    pub description: String,
    pub metadata: serde_json::Value,
}

impl SecurityEvent {
    pub fn new(
        event_type: impl Into<String>,
        severity: Severity,
        description: impl Into<String>,
        metadata: serde_json::Value,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            severity,
            description: description.into(),
            metadata,
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn event_serialises_with_lowercase_severity() {
        let e = SecurityEvent::new("x", Severity::High, "d", serde_json::json!({"k": 1}));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event_type": "x", "severity": "high", "description": "d", "metadata": {"k": 1}})
        );
    }
}
