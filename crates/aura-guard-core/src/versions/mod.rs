//! API-version security (original `SecurityMiddleware`): 410 for disabled versions,
//! deprecation headers for deprecated ones.
//!
//! Detection: every segment right after an `api` segment of the normalised path (so case,
//! encoding and trailing dots are already gone) that starts with `v`, plus the configured
//! header's value(s) (comma-separated values each count). A candidate is a version only if it
//! is `v` + digits, optionally `.` + digits; leading zeros are dropped (`v01` is `v1`), so an
//! upstream that parses the number cannot be reached past a disabled version. Anything else
//! starting with `v` (`vendors`, `v1beta`, `v`) is not a version and is ignored, as the
//! original ignored it (it matched no set).
//!
//! When several candidates are present (path and header disagree, or `/api/v2/api/v0`),
//! any disabled one blocks; otherwise the first deprecated one gets the headers.

pub mod config;

use chrono::DateTime;
use config::canonical_version;
use config::{VersionSunset, VersionsConfig};

/// Status for a disabled version.
pub const DISABLED_STATUS: u16 = 410;
/// Security event type for each access to a disabled version.
pub const EVENT_TYPE: &str = "disabled_api_version_access";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionDecision {
    /// No version, or one that is neither deprecated nor disabled.
    None,
    /// Pass the request; add `headers` (name, value) to the response.
    Deprecated {
        version: String,
        headers: Vec<(String, String)>,
    },
    /// Answer `status` with the JSON `body` (the original's shape, not wrapped).
    Disabled {
        version: String,
        status: u16,
        body: String,
    },
}

/// Versions named by the path (after each `api` segment) and by the header, in that order.
pub fn detect_versions(segments: &[String], header_value: Option<&str>) -> Vec<String> {
    let from_path = segments.windows(2).filter_map(|w| match w {
        [api, v] if api == "api" && v.starts_with('v') => canonical_version(v),
        _ => None,
    });
    let from_header = header_value
        .into_iter()
        .flat_map(|h| h.split(','))
        .filter_map(canonical_version);
    let mut out: Vec<String> = Vec::new();
    for v in from_path.chain(from_header) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// `header_value` is the configured version header's value, if the header is configured
/// and present (the caller looks it up; `cfg.header` names it). `now_unix` is the request
/// time for the 410 body's timestamp.
pub fn decide(
    cfg: &VersionsConfig,
    path: &crate::path::NormalisedPath,
    header_value: Option<&str>,
    now_unix: i64,
) -> VersionDecision {
    let header_value = if cfg.header.is_some() {
        header_value
    } else {
        None
    };
    let found = detect_versions(path.segments(), header_value);

    if let Some(v) = found.iter().find(|v| cfg.disabled.contains(v)) {
        return VersionDecision::Disabled {
            version: v.clone(),
            status: DISABLED_STATUS,
            body: disabled_body(v, now_unix),
        };
    }
    if let Some(v) = found.iter().find(|v| cfg.deprecated.contains(v)) {
        return VersionDecision::Deprecated {
            version: v.clone(),
            headers: deprecation_headers(v, cfg.sunset.get(v.as_str())),
        };
    }
    VersionDecision::None
}

/// The original's 410 body, compact JSON in its key order:
/// `{"error":"API version no longer supported","message":"API v0 has been discontinued. Please upgrade to the latest version.","timestamp":"2026-11-29T03:19:52"}`.
pub fn disabled_body(version: &str, now_unix: i64) -> String {
    serde_json::json!({
        "error": "API version no longer supported",
        "message": format!(
            "API {version} has been discontinued. Please upgrade to the latest version."
        ),
        "timestamp": iso_naive_utc(now_unix),
    })
    .to_string()
}

/// Python's `datetime.utcnow().isoformat()` for a whole second: no offset, no `Z`, and no
/// fraction (Python omits it when microseconds are 0). Out of range gives the epoch.
pub fn iso_naive_utc(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|d| d.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00".to_owned())
}

/// IMF-fixdate (RFC 9110 section 5.6.7), the HTTP-date form `Sunset` uses.
pub fn http_date(unix: i64) -> Option<String> {
    DateTime::from_timestamp(unix, 0).map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

/// Headers for a deprecated version:
/// - `X-API-Deprecation-Warning`: the original's text, always;
/// - `Deprecation: @<unix>` (RFC 9745 structured-field date) only when `deprecated_at` is
///   configured. RFC 9745 defines no date-less form (the old draft's `true`/`?1` is invalid
///   and must be ignored by recipients), so without a date it is not sent;
/// - `Sunset: <HTTP-date>` (RFC 8594) when `sunset_at` is configured;
/// - `Link: <url>; rel="deprecation"; type="text/html"` when `link` is configured.
pub fn deprecation_headers(version: &str, sunset: Option<&VersionSunset>) -> Vec<(String, String)> {
    let mut headers = vec![(
        "X-API-Deprecation-Warning".to_owned(),
        format!(
            "API {version} is deprecated and will be removed in future releases. Please upgrade to the latest version."
        ),
    )];
    let Some(s) = sunset else {
        return headers;
    };
    if let Some(t) = s.deprecated_at {
        headers.push(("Deprecation".to_owned(), format!("@{t}")));
    }
    if let Some(date) = s.sunset_at.and_then(http_date) {
        headers.push(("Sunset".to_owned(), date));
    }
    if let Some(link) = &s.link {
        headers.push((
            "Link".to_owned(),
            format!("<{link}>; rel=\"deprecation\"; type=\"text/html\""),
        ));
    }
    headers
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::path::normalise;

    const NOW: i64 = 1_795_922_392; // 2026-11-29T03:19:52Z

    fn p(raw: &str) -> crate::path::NormalisedPath {
        normalise(raw).unwrap()
    }

    fn cfg(deprecated: &[&str], disabled: &[&str], header: Option<&str>) -> VersionsConfig {
        VersionsConfig {
            deprecated: deprecated.iter().map(|s| (*s).to_owned()).collect(),
            disabled: disabled.iter().map(|s| (*s).to_owned()).collect(),
            header: header.map(str::to_owned),
            ..VersionsConfig::default()
        }
    }

    const WARNING_V1: &str = "API v1 is deprecated and will be removed in future releases. Please upgrade to the latest version.";

    #[test]
    fn canonical_version_accepts_v_digits_and_minor() {
        for (input, expected) in [
            ("v1", Some("v1")),
            ("V2", Some("v2")),
            (" v3 ", Some("v3")),
            ("v01", Some("v1")),
            ("v0", Some("v0")),
            ("v00", Some("v0")),
            ("v2.1", Some("v2.1")),
            ("v2.01", Some("v2.1")),
            ("v", None),
            ("v1beta", None),
            ("vendors", None),
            ("v1.", None),
            ("v.1", None),
            ("v1.2.3", None),
            ("1", None),
            ("v-1", None),
            ("v+1", None),
            ("v１", None),
        ] {
            assert_eq!(canonical_version(input).as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn default_config_deprecates_v1_with_the_original_warning_only() {
        let d = decide(&VersionsConfig::default(), &p("/api/v1/orders"), None, NOW);
        assert_eq!(
            d,
            VersionDecision::Deprecated {
                version: "v1".into(),
                headers: vec![("X-API-Deprecation-Warning".into(), WARNING_V1.into())],
            }
        );
    }

    #[test]
    fn other_versions_and_non_api_paths_pass_untouched() {
        let c = VersionsConfig::default();
        for path in [
            "/api/v2/orders",
            "/v1/orders",
            "/apis/v1",
            "/api",
            "/api/vendors",
            "/",
            "/x/api",
        ] {
            assert_eq!(
                decide(&c, &p(path), None, NOW),
                VersionDecision::None,
                "{path}"
            );
        }
    }

    #[test]
    fn version_after_any_api_segment_counts() {
        let c = cfg(&[], &["v0"], None);
        for path in [
            "/api/v0",
            "/service/api/v0/x",
            "/api/v2/api/v0/x",
            "/API/V0/",
            "/api/v00/x",
        ] {
            assert!(
                matches!(
                    decide(&c, &p(path), None, NOW),
                    VersionDecision::Disabled { .. }
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn disabled_version_gets_exact_410_body() {
        let d = decide(&cfg(&[], &["v0"], None), &p("/api/v0/x"), None, NOW);
        assert_eq!(
            d,
            VersionDecision::Disabled {
                version: "v0".into(),
                status: 410,
                body: r#"{"error":"API version no longer supported","message":"API v0 has been discontinued. Please upgrade to the latest version.","timestamp":"2026-11-29T03:19:52"}"#.into(),
            }
        );
    }

    #[test]
    fn timestamp_is_naive_iso_without_z_or_fraction() {
        assert_eq!(iso_naive_utc(0), "1970-01-01T00:00:00");
        assert_eq!(iso_naive_utc(1_688_169_599), "2023-06-30T23:59:59");
        assert_eq!(iso_naive_utc(i64::MAX), "1970-01-01T00:00:00");
    }

    #[test]
    fn disabled_wins_over_deprecated() {
        let d = decide(&cfg(&["v1"], &["v1"], None), &p("/api/v1/x"), None, NOW);
        assert!(matches!(d, VersionDecision::Disabled { version, .. } if version == "v1"));
    }

    #[test]
    fn header_counts_only_when_configured() {
        let without = cfg(&[], &["v0"], None);
        assert_eq!(
            decide(&without, &p("/orders"), Some("v0"), NOW),
            VersionDecision::None
        );
        let with = cfg(&[], &["v0"], Some("api-version"));
        assert!(matches!(
            decide(&with, &p("/orders"), Some(" V0 "), NOW),
            VersionDecision::Disabled { .. }
        ));
    }

    #[test]
    fn path_and_header_disagreeing_block_if_either_is_disabled() {
        let c = cfg(&["v1"], &["v0"], Some("api-version"));
        let by_header = decide(&c, &p("/api/v2/x"), Some("v0"), NOW);
        assert!(matches!(by_header, VersionDecision::Disabled { version, .. } if version == "v0"));
        let by_path = decide(&c, &p("/api/v0/x"), Some("v2"), NOW);
        assert!(matches!(by_path, VersionDecision::Disabled { version, .. } if version == "v0"));
        let list = decide(&c, &p("/x"), Some("v2, v0"), NOW);
        assert!(matches!(list, VersionDecision::Disabled { version, .. } if version == "v0"));
    }

    #[test]
    fn junk_header_value_is_ignored() {
        let c = cfg(&["v1"], &["v0"], Some("api-version"));
        assert_eq!(
            decide(&c, &p("/x"), Some("latest"), NOW),
            VersionDecision::None
        );
        assert_eq!(
            decide(&c, &p("/api/v2/x"), Some("v0beta"), NOW),
            VersionDecision::None
        );
    }

    #[test]
    fn deprecated_version_headers_with_dates_and_link() {
        let mut c = cfg(&["v1"], &[], None);
        c.sunset.insert(
            "v1".into(),
            VersionSunset {
                deprecated_at: Some(1_688_169_599),
                sunset_at: Some(1_735_689_599),
                link: Some("https://docs.example.com/migrate-v2".into()),
            },
        );
        c.validate().unwrap();
        let d = decide(&c, &p("/api/v1/x"), None, NOW);
        assert_eq!(
            d,
            VersionDecision::Deprecated {
                version: "v1".into(),
                headers: vec![
                    ("X-API-Deprecation-Warning".into(), WARNING_V1.into()),
                    ("Deprecation".into(), "@1688169599".into()),
                    ("Sunset".into(), "Tue, 31 Dec 2024 23:59:59 GMT".into()),
                    (
                        "Link".into(),
                        "<https://docs.example.com/migrate-v2>; rel=\"deprecation\"; type=\"text/html\"".into()
                    ),
                ],
            }
        );
    }

    #[test]
    fn deprecation_header_is_omitted_without_a_date() {
        let mut c = cfg(&["v1"], &[], None);
        c.sunset.insert(
            "v1".into(),
            VersionSunset {
                sunset_at: Some(0),
                ..VersionSunset::default()
            },
        );
        let VersionDecision::Deprecated { headers, .. } = decide(&c, &p("/api/v1"), None, NOW)
        else {
            panic!("expected deprecated");
        };
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["X-API-Deprecation-Warning", "Sunset"]);
        assert_eq!(headers[1].1, "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn http_date_is_imf_fixdate() {
        assert_eq!(
            http_date(784_111_777).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn env_configured_disabled_list_blocks() {
        let mut c = VersionsConfig::default();
        c.apply_env(&|k| (k == "DISABLED_API_VERSIONS").then(|| " V0 , v1 ".to_owned()))
            .unwrap();
        c.validate().unwrap();
        assert!(matches!(
            decide(&c, &p("/api/v1/x"), None, NOW),
            VersionDecision::Disabled { version, .. } if version == "v1"
        ));
    }
}
