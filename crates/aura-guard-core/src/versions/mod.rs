//! API-version security (original `SecurityMiddleware`): 410 for disabled versions,
//! deprecation headers for deprecated ones.
//!
//! Detection: every segment right after an `api` segment of the normalised path (so case,
//! encoding, look-alikes, `;params` and trailing dots are already gone) that starts with `v`,
//! plus the configured header's value(s) (comma-separated values each count). Each is read by
//! [`read_version`] the way the routers an upstream may use would read it
//! (docs/debug-and-versions.md#how-a-version-is-read):
//! - `v` + numbers separated by dots (`v0`, `v01`, `v0.0`, `v1.20`), optionally with a format
//!   suffix (`v0.json`), is a version number. It names a configured version when the numbers
//!   are equal once leading zeros and trailing `.0` components are dropped (`v00.0.0` is `v0`),
//!   or, for `major.minor`, when the two are equal as decimals (`v1.20` is `v1.2` to Starlette's
//!   `float` convertor).
//! - `v` + a label (`vendors`, `v`, a pre-release such as `v1beta`) is not a version and is
//!   ignored, as the original ignored it.
//! - Anything else version-like (a sign `v+0`, `v0_0`, an exponent `v0e0` or radix `v0x0`, an
//!   empty component `v.0`, a non-ASCII digit) is ambiguous: an integer parser reads `v+0` as
//!   `v0`. While any version is disabled it is refused with 400 rather than guessed.
//!
//! When several candidates are present (path and header disagree, or `/api/v2/api/v0`),
//! any disabled one blocks; otherwise the first deprecated one gets the headers.

pub mod config;

use config::{VersionSunset, VersionsConfig};

/// Status for a disabled version.
pub const DISABLED_STATUS: u16 = 410;
/// Status for an ambiguous version spelling while some version is disabled.
pub const AMBIGUOUS_STATUS: u16 = 400;
/// Body of that 400: it names the problem without echoing the request.
pub const AMBIGUOUS_BODY: &str = r#"{"detail":"Ambiguous API version: write 'v' followed by numbers separated by dots (e.g. v2, v2.1)"}"#;
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
    /// A version-like spelling that routers read differently, while some version is
    /// disabled: answer [`AMBIGUOUS_STATUS`] with [`AMBIGUOUS_BODY`].
    Ambiguous,
}

/// How a path segment or header value reads as an API version (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionReading<'a> {
    /// Not a version: `vendors`, `v`, `latest`, `v1beta`.
    NotAVersion,
    /// A version number: its components as written (ASCII digits, leading zeros kept).
    Number(Vec<&'a str>),
    /// Version-like, but not a plain number: `v+0`, `v0_0`, `v0e0`, `v.0`, `v٠`.
    Ambiguous,
}

impl VersionReading<'_> {
    /// `v` + the numbers without leading zeros or trailing `.0` components (`v00.0` is `v0`,
    /// `v1.20` stays `v1.20`); `None` unless a number.
    pub fn canonical(&self) -> Option<String> {
        let Self::Number(parts) = self else {
            return None;
        };
        Some(format!("v{}", canonical_parts(parts).join(".")))
    }

    /// Whether this reading names `configured` (a canonical `vN` or `vN.M` from the
    /// configuration) under either reading an upstream may apply: the numbers (leading zeros
    /// and trailing `.0` components dropped) or, for `major.minor`, the decimal value.
    pub fn names(&self, configured: &str) -> bool {
        let Self::Number(parts) = self else {
            return false;
        };
        let cfg: Vec<&str> = configured
            .strip_prefix('v')
            .unwrap_or(configured)
            .split('.')
            .collect();
        if canonical_parts(parts) == canonical_parts(&cfg) {
            return true;
        }
        match (parts.as_slice(), cfg.as_slice()) {
            ([major, minor], [c_major, rest @ ..]) if rest.len() <= 1 => {
                let c_minor = rest.first().copied().unwrap_or_default();
                strip_zeros(major) == strip_zeros(c_major)
                    && minor.trim_end_matches('0') == c_minor.trim_end_matches('0')
            }
            _ => false,
        }
    }
}

fn strip_zeros(n: &str) -> &str {
    match n.trim_start_matches('0') {
        "" => "0",
        s => s,
    }
}

fn canonical_parts<'a>(parts: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = parts.iter().map(|p| strip_zeros(p)).collect();
    while out.len() > 1 && out.last() == Some(&"0") {
        out.pop();
    }
    out
}

/// Reads a lower-case path segment or trimmed header value as an API version.
pub fn read_version(s: &str) -> VersionReading<'_> {
    use VersionReading::{Ambiguous, NotAVersion, Number};
    let Some(rest) = s.strip_prefix('v') else {
        return NotAVersion;
    };
    let mut parts = Vec::new();
    let mut tail = rest;
    loop {
        let n = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (Some(number), Some(after)) = (tail.get(..n), tail.get(n..)) else {
            return Ambiguous;
        };
        if number.is_empty() {
            break;
        }
        parts.push(number);
        tail = after;
        match tail.strip_prefix('.') {
            Some(t) if t.starts_with(|c: char| c.is_ascii_digit()) => tail = t,
            _ => break,
        }
    }
    if parts.is_empty() {
        // `v` + a letter is a word (`vendors`); `v` + a sign, dot or other digit is not.
        let word = rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphabetic());
        return if word || !rest.chars().any(char::is_numeric) {
            NotAVersion
        } else {
            Ambiguous
        };
    }
    let single_zero = parts == ["0"];
    match tail.chars().next() {
        None => Number(parts),
        // A format suffix (`v0.json`, Rails and Spring route it as `v0`), or a trailing dot.
        Some('.') => {
            let ext = tail.get(1..).unwrap_or_default();
            let plain = ext.is_empty()
                || (ext.starts_with(|c: char| c.is_ascii_alphabetic())
                    && ext.chars().all(|c| c.is_ascii_alphanumeric()));
            if plain && !is_number_syntax(ext, single_zero) {
                Number(parts)
            } else {
                Ambiguous
            }
        }
        // A pre-release label (`v1beta`, `v1-rc1`) is another version, unless it is number
        // syntax (`v1e1` is 10 to a float parser, `v0x1` is 1 to JavaScript's `Number`).
        Some(c) if c.is_ascii_alphabetic() || c == '-' => {
            if is_number_syntax(tail, single_zero) {
                Ambiguous
            } else {
                NotAVersion
            }
        }
        Some(_) => Ambiguous,
    }
}

/// An exponent (`e5`, `e+5`) or, after a lone `0`, a radix prefix (`x1f`, `o7`, `b1`).
fn is_number_syntax(label: &str, after_single_zero: bool) -> bool {
    let mut chars = label.chars();
    match (chars.next(), chars.next()) {
        (Some('e'), Some(c)) => c.is_ascii_digit() || c == '+' || c == '-',
        (Some('x'), Some(c)) => after_single_zero && c.is_ascii_hexdigit(),
        (Some('o' | 'b'), Some(c)) => after_single_zero && c.is_ascii_digit(),
        _ => false,
    }
}

/// Every version reading of the path (after each `api` segment, starting with `v`) and of the
/// header's comma-separated values, in that order.
fn readings<'a>(segments: &'a [String], header_value: Option<&'a str>) -> Vec<VersionReading<'a>> {
    let from_path = segments.windows(2).filter_map(|w| match w {
        [api, v] if api == "api" => Some(read_version(v)),
        _ => None,
    });
    let from_header = header_value
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(|v| read_version(v.trim()));
    from_path
        .chain(from_header)
        .filter(|r| *r != VersionReading::NotAVersion)
        .collect()
}

/// Versions named by the path (after each `api` segment) and by the header, in that order,
/// canonical (`v00.0` gives `v0`) and without duplicates.
pub fn detect_versions(segments: &[String], header_value: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in readings(segments, header_value)
        .iter()
        .filter_map(VersionReading::canonical)
    {
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
    decide_with(cfg, path, header_value, || now_unix)
}

/// [`decide`], reading the clock only for a disabled version's body (the one decision that
/// shows the time), so an ordinary request costs no clock read.
pub fn decide_with(
    cfg: &VersionsConfig,
    path: &crate::path::NormalisedPath,
    header_value: Option<&str>,
    now_unix: impl FnOnce() -> i64,
) -> VersionDecision {
    let header_value = if cfg.header.is_some() {
        header_value
    } else {
        None
    };
    let header_value = header_value.map(str::to_lowercase);
    let found = readings(path.segments(), header_value.as_deref());

    if let Some(v) = first_named(&found, &cfg.disabled) {
        return VersionDecision::Disabled {
            version: v.clone(),
            status: DISABLED_STATUS,
            body: disabled_body(v, now_unix()),
        };
    }
    if !cfg.disabled.is_empty() && found.contains(&VersionReading::Ambiguous) {
        return VersionDecision::Ambiguous;
    }
    if let Some(v) = first_named(&found, &cfg.deprecated) {
        return VersionDecision::Deprecated {
            version: v.clone(),
            headers: deprecation_headers(v, cfg.sunset.get(v.as_str())),
        };
    }
    VersionDecision::None
}

/// The configured version that the first reading naming one names.
fn first_named<'c>(found: &[VersionReading<'_>], configured: &'c [String]) -> Option<&'c String> {
    found
        .iter()
        .find_map(|r| configured.iter().find(|v| r.names(v)))
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
    crate::utc::iso_naive(unix).unwrap_or_else(|| "1970-01-01T00:00:00".to_owned())
}

/// IMF-fixdate (RFC 9110 section 5.6.7), the HTTP-date form `Sunset` uses.
pub fn http_date(unix: i64) -> Option<String> {
    crate::utc::imf_fixdate(unix)
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
    use config::canonical_version;

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
    fn version_spellings_are_read_as_numbers_words_or_ambiguous() {
        use VersionReading::{Ambiguous, NotAVersion, Number};
        for (input, expected) in [
            ("v0", Number(vec!["0"])),
            ("v00", Number(vec!["00"])),
            ("v0.0", Number(vec!["0", "0"])),
            ("v01.020.3", Number(vec!["01", "020", "3"])),
            ("v0.json", Number(vec!["0"])),
            ("v1.2.xml", Number(vec!["1", "2"])),
            ("v0.", Number(vec!["0"])),
            ("v", NotAVersion),
            ("vendors", NotAVersion),
            ("v1beta", NotAVersion),
            ("v0beta", NotAVersion),
            ("v2alpha1", NotAVersion),
            ("v1-rc1", NotAVersion),
            ("v0xylophone", NotAVersion),
            ("v-next", NotAVersion),
            ("latest", NotAVersion),
            ("1", NotAVersion),
            ("v+0", Ambiguous),
            ("v-0", Ambiguous),
            ("v.0", Ambiguous),
            ("v_0", Ambiguous),
            ("v0_0", Ambiguous),
            ("v0..0", Ambiguous),
            ("v0 .0", Ambiguous),
            ("v0+", Ambiguous),
            ("v0e0", Ambiguous),
            ("v1e+1", Ambiguous),
            ("v0.e0", Ambiguous),
            ("v0x0", Ambiguous),
            ("v0xa", Ambiguous),
            ("v0o7", Ambiguous),
            ("v0b1", Ambiguous),
            ("v0.json.gz", Ambiguous),
            ("v\u{660}", Ambiguous), // Arabic-Indic zero
            ("v0\u{660}", Ambiguous),
            ("v\u{FF10}", Ambiguous), // fullwidth zero (a header is not folded)
        ] {
            assert_eq!(read_version(input), expected, "{input:?}");
        }
    }

    #[test]
    fn a_version_names_a_configured_one_by_its_numbers_or_as_a_decimal() {
        let names = |r: &str, cfg: &str| read_version(r).names(cfg);
        for (r, cfg) in [
            ("v0", "v0"),
            ("v00", "v0"),
            ("v0.0", "v0"),
            ("v0.0.0", "v0"),
            ("v00.000", "v0"),
            ("v0.json", "v0"),
            ("v1", "v1.0"),
            ("v1.2.0", "v1.2"),
            ("v01.02", "v1.2"), // numbers: 1 and 2
            ("v1.20", "v1.2"),  // decimal: 1.20 is 1.2 (Starlette's float convertor)
            ("v1.2", "v1.20"),
        ] {
            assert!(names(r, cfg), "{r} should name {cfg}");
        }
        for (r, cfg) in [
            ("v0.5", "v0"),
            ("v10", "v1"),
            ("v1.2", "v1"),
            ("v1", "v1.2"),
            ("v1.02", "v1.20"),
            ("v1.2.3", "v1.2"),
            ("v1.21", "v1.2"),
            ("v0beta", "v0"),
            ("v+0", "v0"),
        ] {
            assert!(!names(r, cfg), "{r} should not name {cfg}");
        }
        assert_eq!(read_version("v00.0.0").canonical().as_deref(), Some("v0"));
        assert_eq!(read_version("v01.20").canonical().as_deref(), Some("v1.20"));
        assert_eq!(read_version("v+0").canonical(), None);
    }

    #[test]
    fn every_spelling_of_a_disabled_version_gets_the_410_naming_the_configured_version() {
        let c = cfg(&["v1"], &["v0"], Some("api-version"));
        for (path, header) in [
            ("/api/v0.0/x", None),
            ("/api/v0%2e0/x", None),
            ("/api/v0%252E0/x", None),
            ("/api/V00.00.0/x", None),
            ("/api/v0.json", None),
            ("/api/v%30;x=1/y", None),
            ("/ap%C4%B1/v0/x", None),
            ("/x", Some("V0.0")),
            ("/x", Some("v2, v00")),
        ] {
            assert!(
                matches!(decide(&c, &p(path), header, NOW),
                    VersionDecision::Disabled { ref version, .. } if version == "v0"),
                "{path} {header:?}"
            );
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused_while_a_version_is_disabled() {
        let disabled = cfg(&["v1"], &["v0"], Some("api-version"));
        let none_disabled = cfg(&["v1"], &[], Some("api-version"));
        for (path, header) in [
            ("/api/v%2B0/x", None),
            ("/api/v+0/x", None),
            ("/api/v0_0/x", None),
            ("/api/v%D9%A0/x", None),
            ("/api/v0e0/x", None),
            ("/x", Some("v+0")),
        ] {
            assert_eq!(
                decide(&disabled, &p(path), header, NOW),
                VersionDecision::Ambiguous,
                "{path} {header:?}"
            );
            assert_eq!(
                decide(&none_disabled, &p(path), header, NOW),
                VersionDecision::None,
                "{path} {header:?}"
            );
        }
        // A disabled version named elsewhere in the request still gets its 410.
        assert!(matches!(
            decide(&disabled, &p("/api/v+1/api/v0"), None, NOW),
            VersionDecision::Disabled { .. }
        ));
        let body: serde_json::Value = serde_json::from_str(AMBIGUOUS_BODY).unwrap();
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ambiguous API version"));
        assert_eq!(AMBIGUOUS_STATUS, 400);
    }

    #[test]
    fn spellings_of_a_deprecated_version_get_its_headers() {
        let c = VersionsConfig::default();
        for path in ["/api/v1.0/orders", "/api/v01/orders", "/api/v1.json"] {
            assert!(
                matches!(decide(&c, &p(path), None, NOW),
                    VersionDecision::Deprecated { ref version, .. } if version == "v1"),
                "{path}"
            );
        }
        // Labels and other numbers are other versions.
        for path in ["/api/v1beta/orders", "/api/v1.5/orders", "/api/v+1/orders"] {
            assert_eq!(
                decide(&c, &p(path), None, NOW),
                VersionDecision::None,
                "{path}"
            );
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
