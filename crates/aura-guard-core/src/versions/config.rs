//! API-version security settings (original: `DEPRECATED_API_VERSIONS={"v1"}`,
//! `DISABLED_API_VERSIONS=set()`, hard-coded there; environment variables here).

use crate::config::{split_env_list, ConfigError, EnvLookup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest accepted unix time (9999-12-31T23:59:59Z): HTTP-dates have four-digit years.
pub const MAX_UNIX_TIME: i64 = 253_402_300_799;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionsConfig {
    /// Versions answered normally but with deprecation headers.
    pub deprecated: Vec<String>,
    /// Versions answered with 410. A version in both lists is disabled.
    pub disabled: Vec<String>,
    /// Optional request header (lower-case name, e.g. `api-version`) that also names a version.
    pub header: Option<String>,
    /// Dates and link per version, for the `Deprecation`, `Sunset` and `Link` headers.
    pub sunset: BTreeMap<String, VersionSunset>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSunset {
    /// Unix time of deprecation, sent as `Deprecation: @<unix>` (RFC 9745).
    #[serde(default)]
    pub deprecated_at: Option<i64>,
    /// Unix time after which the version may stop working, sent as `Sunset: <HTTP-date>`
    /// (RFC 8594).
    #[serde(default)]
    pub sunset_at: Option<i64>,
    /// Migration documentation, sent as `Link: <url>; rel="deprecation"` (RFC 9745).
    #[serde(default)]
    pub link: Option<String>,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        Self {
            deprecated: vec!["v1".to_owned()],
            disabled: Vec::new(),
            header: None,
            sunset: BTreeMap::new(),
        }
    }
}

impl VersionsConfig {
    /// Applies `DEPRECATED_API_VERSIONS` and `DISABLED_API_VERSIONS` (comma lists, trimmed,
    /// lower-cased, empty entries dropped). A set variable replaces the configured list, so
    /// `DEPRECATED_API_VERSIONS=` (empty) deprecates nothing; unset leaves the list alone.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        let list = |v: String| -> Vec<String> {
            split_env_list(&v)
                .into_iter()
                .map(|s| s.to_lowercase())
                .collect()
        };
        if let Some(v) = env("DEPRECATED_API_VERSIONS") {
            self.deprecated = list(v);
        }
        if let Some(v) = env("DISABLED_API_VERSIONS") {
            self.disabled = list(v);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (list, name) in [
            (&self.deprecated, "deprecated"),
            (&self.disabled, "disabled"),
        ] {
            for (i, v) in list.iter().enumerate() {
                check_version(&format!("versions.{name}[{i}]"), v)?;
            }
        }
        if let Some(header) = &self.header {
            let ok = !header.is_empty()
                && header.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(ConfigError::new(
                    "versions.header",
                    format!("{header:?}: must be a lower-case header name (a-z, 0-9, '-', '_')"),
                ));
            }
        }
        for (v, s) in &self.sunset {
            let field = format!("versions.sunset.{v}");
            check_version(&field, v)?;
            for (t, name) in [
                (s.deprecated_at, "deprecated_at"),
                (s.sunset_at, "sunset_at"),
            ] {
                if let Some(t) = t {
                    if !(0..=MAX_UNIX_TIME).contains(&t) {
                        return Err(ConfigError::new(
                            format!("{field}.{name}"),
                            format!("{t}: must be a unix time between 0 and {MAX_UNIX_TIME}"),
                        ));
                    }
                }
            }
            if let (Some(d), Some(e)) = (s.deprecated_at, s.sunset_at) {
                if e < d {
                    return Err(ConfigError::new(
                        format!("{field}.sunset_at"),
                        "must not be earlier than deprecated_at (RFC 9745 section 5)",
                    ));
                }
            }
            if let Some(link) = &s.link {
                check_link(&format!("{field}.link"), link)?;
            }
        }
        Ok(())
    }
}

/// Canonical form of a version string, or `None` if it is not one: trimmed, lower-cased,
/// `v` + digits (+ `.digits`), leading zeros removed from each number.
pub fn canonical_version(s: &str) -> Option<String> {
    let lower = s.trim().to_ascii_lowercase();
    let digits = lower.strip_prefix('v')?;
    let (major, minor) = match digits.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (digits, None),
    };
    let mut out = format!("v{}", canonical_number(major)?);
    if let Some(minor) = minor {
        out.push('.');
        out.push_str(canonical_number(minor)?);
    }
    Some(out)
}

fn canonical_number(n: &str) -> Option<&str> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let stripped = n.trim_start_matches('0');
    Some(if stripped.is_empty() { "0" } else { stripped })
}

fn check_version(field: &str, v: &str) -> Result<(), ConfigError> {
    match canonical_version(v) {
        Some(c) if c == v => Ok(()),
        Some(c) => Err(ConfigError::new(
            field,
            format!("{v:?} is not canonical; write {c:?}"),
        )),
        None => Err(ConfigError::new(
            field,
            format!(
                "{v:?}: a version is 'v' followed by digits, optionally '.digits' (e.g. v1, v2.1)"
            ),
        )),
    }
}

/// The link goes into a header between `<` and `>`: it must be an absolute http(s) URL with
/// nothing that could end the angle brackets or the header.
fn check_link(field: &str, link: &str) -> Result<(), ConfigError> {
    let scheme_ok = link.starts_with("https://") || link.starts_with("http://");
    let chars_ok = link
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"'));
    if scheme_ok && chars_ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{link:?}: must be an absolute http(s) URL of printable ASCII without '<', '>' or '\"'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn defaults_match_the_original() {
        let cfg = VersionsConfig::default();
        assert_eq!(cfg.deprecated, vec!["v1"]);
        assert!(cfg.disabled.is_empty());
        assert!(cfg.header.is_none());
        cfg.validate().unwrap();
    }

    #[test]
    fn env_lists_are_trimmed_lower_cased_and_replace_config() {
        let mut cfg = VersionsConfig::default();
        cfg.apply_env(&|k| match k {
            "DEPRECATED_API_VERSIONS" => Some(" V2 , v3,,".into()),
            "DISABLED_API_VERSIONS" => Some("v0 ,V1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.deprecated, vec!["v2", "v3"]);
        assert_eq!(cfg.disabled, vec!["v0", "v1"]);
        cfg.validate().unwrap();
    }

    #[test]
    fn empty_env_list_clears_and_unset_keeps() {
        let mut cfg = VersionsConfig::default();
        cfg.apply_env(&|k| (k == "DEPRECATED_API_VERSIONS").then(String::new))
            .unwrap();
        assert!(cfg.deprecated.is_empty());
        let mut cfg = VersionsConfig::default();
        cfg.apply_env(&|_| None).unwrap();
        assert_eq!(cfg.deprecated, vec!["v1"]);
    }

    #[test]
    fn junk_version_is_rejected_naming_the_field() {
        let cfg = VersionsConfig {
            disabled: vec!["v1".into(), "beta".into()],
            ..VersionsConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "versions.disabled[1]");
        let cfg = VersionsConfig {
            deprecated: vec!["v01".into()],
            ..VersionsConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "versions.deprecated[0]");
        assert!(err.message.contains("\"v1\""), "{err}");
    }

    #[test]
    fn header_name_must_be_lower_case_token() {
        let mut cfg = VersionsConfig {
            header: Some("api-version".into()),
            ..VersionsConfig::default()
        };
        cfg.validate().unwrap();
        cfg.header = Some("API-Version".into());
        assert_eq!(cfg.validate().unwrap_err().field, "versions.header");
        cfg.header = Some(String::new());
        assert_eq!(cfg.validate().unwrap_err().field, "versions.header");
    }

    #[test]
    fn sunset_entries_are_checked() {
        let mut cfg = VersionsConfig::default();
        cfg.sunset.insert(
            "v1".into(),
            VersionSunset {
                deprecated_at: Some(200),
                sunset_at: Some(100),
                link: None,
            },
        );
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "versions.sunset.v1.sunset_at"
        );

        cfg.sunset.insert(
            "v1".into(),
            VersionSunset {
                deprecated_at: Some(-1),
                ..VersionSunset::default()
            },
        );
        assert_eq!(
            cfg.validate().unwrap_err().field,
            "versions.sunset.v1.deprecated_at"
        );

        for bad in [
            "ftp://x",
            "https://x/>; rel=\"evil\"",
            "https://x y",
            "/relative",
        ] {
            cfg.sunset.insert(
                "v1".into(),
                VersionSunset {
                    link: Some(bad.into()),
                    ..VersionSunset::default()
                },
            );
            assert_eq!(
                cfg.validate().unwrap_err().field,
                "versions.sunset.v1.link",
                "{bad}"
            );
        }

        cfg.sunset.clear();
        cfg.sunset.insert("V1".into(), VersionSunset::default());
        assert_eq!(cfg.validate().unwrap_err().field, "versions.sunset.V1");
    }

    #[test]
    fn json_with_sunset_parses_and_unknown_fields_fail() {
        let cfg: VersionsConfig = serde_json::from_str(
            r#"{"header":"api-version","sunset":{"v1":{"deprecated_at":1688169599,"sunset_at":1735689599,"link":"https://docs.example.com/migrate"}}}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.deprecated, vec!["v1"]);
        assert!(serde_json::from_str::<VersionsConfig>(r#"{"sunset":{"v1":{"date":1}}}"#).is_err());
        assert!(serde_json::from_str::<VersionsConfig>(r#"{"deprecate":["v1"]}"#).is_err());
    }
}
