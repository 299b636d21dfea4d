//! One canonical request path for every decision (debug endpoints, API versions, webhooks,
//! rate limits, audit).
//!
//! The filter and the upstream must never read the same request differently. Upstreams differ
//! (Starlette decodes `%2F` before routing, Tomcat strips `;params`, Windows servers trim
//! trailing dots, Node's `new URL()` reads a leading `//x` as a host, many do not resolve
//! `..`), so each rule below either canonicalises in the direction that can only make a
//! protected path *more* visible to the policies, or refuses the request with 400 when the
//! readings could differ in a way that hides a protected path. The filter is safe without
//! Envoy's `normalize_path`/`merge_slashes`; with them (see docs/paths.md) the refusals for
//! dot-segments and slashes simply never fire.
//!
//! Steps, in order:
//! 1. The fragment (from the first `#`) is dropped and flagged; the query (from the first `?`
//!    before it) is split off and kept raw for audit and webhooks.
//! 2. The path must start with `/` (origin form), else refused.
//! 3. Raw characters: control characters (incl. NUL, DEL), space and backslash are refused.
//!    A leading `//` is refused (some upstreams parse `//host/path` as an authority).
//! 4. The path is split on `/`; each segment is percent-decoded. A `%` not followed by two hex
//!    digits is refused. While the result still contains a valid `%XX` it is decoded again,
//!    at most [`MAX_DECODE_ROUNDS`] times in all (an upstream that decodes twice must not
//!    see a different path); still encoded after that is refused.
//! 5. The decoded segment must be valid UTF-8 and must not contain `/`, `\`, `?`, `#`, a
//!    control character, or a Unicode look-alike of `/ \ . % ; ? #` (fullwidth forms etc.);
//!    each is refused as an encoded delimiter. A segment with other non-ASCII characters is
//!    read as a folding upstream would read it (docs/paths.md): a compatibility form of
//!    ASCII (`ᵈ`, `ⓓ`, `ﬁ`, `ſ`, no-break space) is refused, letters are case-folded
//!    (`ı` and `İ` are `i`, `ß` is `ss`), and a fold that makes path syntax is refused.
//! 6. `;` starts path parameters (raw or decoded `;`): they are removed (`/debug;x=y/token`
//!    becomes `/debug/token`).
//! 7. A segment `..` (raw, encoded or with parameters) is refused, never resolved: resolving
//!    upstreams and literal upstreams read it differently, and compliant clients remove dot
//!    segments before sending. A `.` segment is removed (it cannot pop a segment); `.` with
//!    parameters, and segments of only dots and spaces (`...`, `. `, `%20`), are refused.
//! 8. Trailing dots and spaces are trimmed from each segment (`token.` and `token%20` read as
//!    `token`, as Windows-style servers do).
//! 9. Empty segments (repeated and trailing slashes) are dropped.
//! 10. Each segment is lower-cased (Unicode, as Python's `str.lower()`).
//!
//! The canonical path is `/` + segments joined by `/` (just `/` for the root). Route matchers
//! try [`NormalisedPath::route_forms`] (or [`NormalisedPath::is_route_under`]), so a format
//! suffix on the last segment (`/auth/login.json`) is the route, as Rails, Spring MVC and DRF
//! route it.
//! Anything out of the ordinary that was canonicalised rather than refused is recorded as a
//! [`Suspicion`] so audit can log it.

use percent_encoding::percent_decode;
use serde::Serialize;
use std::fmt;

mod lookalikes;
use lookalikes::is_compatibility_ascii;

/// Total percent-decoding passes allowed per segment (`%25252F` needs three).
pub const MAX_DECODE_ROUNDS: usize = 3;

/// HTTP status for a refused path.
pub const REFUSED_STATUS: u16 = 400;

/// A request path read the way every policy must read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedPath {
    raw: String,
    path: String,
    segments: Vec<String>,
    query: Option<String>,
    suspicions: Vec<Suspicion>,
}

/// Something unusual that was canonicalised (not refused). Legitimate clients produce none
/// of these except possibly `NonAscii`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suspicion {
    /// A `%XX` escape of a letter, digit or `-_~` (clients never need to encode these).
    EncodedUnreserved,
    /// A `.` came from an escape.
    EncodedDot,
    /// A `;` came from an escape.
    EncodedSemicolon,
    /// The segment had to be decoded more than once (`%2564`).
    MultipleEncoding,
    /// `;params` were removed.
    PathParameters,
    /// A `.` segment was removed.
    DotSegment,
    /// Repeated slashes were merged.
    EmptySegment,
    /// Trailing dots or spaces were trimmed from a segment.
    TrailingDotOrSpace,
    /// The path had non-ASCII characters (raw or decoded).
    NonAscii,
    /// The request target had a `#fragment` (browsers never send one).
    Fragment,
    /// A segment with non-ASCII characters reads as pure ASCII once folded (`logın`,
    /// `STRİPE`): a look-alike spelling, or a word such as `straße` (read `strasse`).
    FoldedToAscii,
}

/// Why a path was refused. Each maps to 400 with a JSON `detail` naming the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathError {
    /// Empty, `*`, or absolute-form: the path does not start with `/`.
    NotOriginForm,
    /// Raw or decoded control character (NUL, CR, LF, TAB, DEL, ...).
    ControlCharacter,
    /// Unencoded space.
    RawSpace,
    /// Backslash, raw or encoded: some servers treat it as a separator, others as data.
    Backslash,
    /// `%2F` (possibly multiply encoded).
    EncodedSlash,
    /// `%3F` or `%23`: a re-parsing upstream would cut the path there.
    EncodedDelimiter,
    /// A Unicode compatibility look-alike of ASCII (fullwidth solidus, fullwidth letters, ...).
    ConfusableCharacter,
    /// `%` not followed by two hex digits (including IIS-style `%u0064`).
    InvalidPercentEncoding,
    /// Still percent-encoded after [`MAX_DECODE_ROUNDS`] decodes.
    ExcessiveEncoding,
    /// Decoded bytes are not UTF-8 (including overlong forms such as `%C0%AF`).
    InvalidUtf8,
    /// A `..` segment.
    DotDotSegment,
    /// `...`, `. `, a segment of only spaces, or `.` with parameters.
    AmbiguousDotSegment,
    /// Leading `//`, which some upstreams read as `//authority/path`.
    LeadingDoubleSlash,
}

impl PathError {
    /// Short description used in the 400 body and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotOriginForm => "path must start with '/'",
            Self::ControlCharacter => "control character in path",
            Self::RawSpace => "unencoded space in path",
            Self::Backslash => "backslash in path",
            Self::EncodedSlash => "encoded slash in path",
            Self::EncodedDelimiter => "encoded '?' or '#' in path",
            Self::ConfusableCharacter => "Unicode look-alike of an ASCII character in path",
            Self::InvalidPercentEncoding => "invalid percent-encoding in path",
            Self::ExcessiveEncoding => "path is percent-encoded too many times",
            Self::InvalidUtf8 => "path is not valid UTF-8 after decoding",
            Self::DotDotSegment => "'..' segment in path",
            Self::AmbiguousDotSegment => "segment of only dots or spaces, or '.' with parameters",
            Self::LeadingDoubleSlash => "path starts with '//'",
        }
    }

    /// Always 400: the request is malformed or ambiguous, not forbidden.
    pub fn status(self) -> u16 {
        REFUSED_STATUS
    }

    /// JSON body, e.g. `{"detail":"Ambiguous request path: encoded slash in path"}`.
    pub fn body(self) -> String {
        let detail = format!("Ambiguous request path: {}", self.reason());
        serde_json::json!({ "detail": detail }).to_string()
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

impl NormalisedPath {
    /// The canonical path: lower-case, no query, fragment, params, dot or empty segments.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The canonical segments (`/api/v1/x` gives `["api", "v1", "x"]`; the root gives none).
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The raw query string without `?` (not decoded), if the request had one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The request target exactly as received.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// True when something unusual was canonicalised (see [`Suspicion`]).
    pub fn is_suspicious(&self) -> bool {
        self.suspicions.iter().any(|s| *s != Suspicion::NonAscii)
    }

    /// What was unusual, sorted and without duplicates.
    pub fn suspicions(&self) -> &[Suspicion] {
        &self.suspicions
    }

    /// Segment-wise prefix test: `/debug/token` is under `/debug` and under itself, but
    /// `/debugger` is not under `/debug`. `prefix` must be canonical (lower-case); config
    /// validation ensures that for configured prefixes. `/` is a prefix of everything.
    pub fn is_under(&self, prefix: &str) -> bool {
        segments_under(self.segments.iter().map(String::as_str), prefix)
    }

    /// The paths a route matcher must try for this request, most specific first: the
    /// canonical path, then, when the last segment has a `.`, the path with the last segment
    /// cut before each `.`, right to left (`/auth/login.tar.gz`, `/auth/login.tar`,
    /// `/auth/login`). Rails, Spring MVC's suffix pattern match and DRF's format suffixes all
    /// route `login.json` to `login`'s handler, so the route's policy must apply to it too
    /// (docs/paths.md#format-suffixes). A match on a cut form is a match on the route.
    pub fn route_forms(&self) -> impl Iterator<Item = &str> + '_ {
        let last_start = self.path.rfind('/').map_or(0, |i| i + 1);
        let last = self.path.get(last_start..).unwrap_or_default();
        let cuts = last
            .rmatch_indices('.')
            .filter(|(i, _)| *i > 0)
            .filter_map(move |(i, _)| self.path.get(..last_start + i));
        std::iter::once(self.path.as_str()).chain(cuts)
    }

    /// [`is_under`](Self::is_under) for any of the [`route_forms`](Self::route_forms):
    /// `/debug.json` and `/debug/token.json` are under `/debug/token`'s and `/debug`'s policies.
    pub fn is_route_under(&self, prefix: &str) -> bool {
        self.route_forms()
            .any(|form| segments_under(form.split('/').filter(|s| !s.is_empty()), prefix))
    }
}

/// Whether the canonical `prefix` is a segment-wise prefix of `own`.
fn segments_under<'a>(mut own: impl Iterator<Item = &'a str>, prefix: &str) -> bool {
    prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .all(|p| own.next().is_some_and(|s| s == p))
}

impl fmt::Display for NormalisedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// Normalises a raw `:path` (request target, query and fragment included). See the module
/// documentation for the rules.
pub fn normalise(raw_path: &str) -> Result<NormalisedPath, PathError> {
    let mut suspicions = Vec::new();

    let before_fragment = match raw_path.split_once('#') {
        Some((before, _)) => {
            suspicions.push(Suspicion::Fragment);
            before
        }
        None => raw_path,
    };
    let (path_part, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (before_fragment, None),
    };

    check_raw_chars(path_part, &mut suspicions)?;
    let Some(rest) = path_part.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    if rest.starts_with('/') {
        return Err(PathError::LeadingDoubleSlash);
    }

    let raw_segments: Vec<&str> = rest.split('/').collect();
    let last = raw_segments.len().saturating_sub(1);
    let mut segments = Vec::with_capacity(raw_segments.len());
    for (i, raw_seg) in raw_segments.iter().enumerate() {
        match canonical_segment(raw_seg, &mut suspicions)? {
            Some(seg) => segments.push(seg),
            // A trailing slash is ordinary; an empty segment anywhere else is not.
            None if raw_seg.is_empty() && i != last => suspicions.push(Suspicion::EmptySegment),
            None => {}
        }
    }

    suspicions.sort_unstable();
    suspicions.dedup();
    let path = format!("/{}", segments.join("/"));
    Ok(NormalisedPath {
        raw: raw_path.to_owned(),
        path,
        segments,
        query,
        suspicions,
    })
}

fn check_raw_chars(path: &str, suspicions: &mut Vec<Suspicion>) -> Result<(), PathError> {
    for c in path.chars() {
        match c {
            '\\' => return Err(PathError::Backslash),
            ' ' => return Err(PathError::RawSpace),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c if !c.is_ascii() => suspicions.push(Suspicion::NonAscii),
            _ => {}
        }
    }
    if path.is_empty() {
        return Err(PathError::NotOriginForm);
    }
    Ok(())
}

/// Decodes and canonicalises one raw segment; `None` when it disappears (empty or `.`).
fn canonical_segment(
    raw_seg: &str,
    suspicions: &mut Vec<Suspicion>,
) -> Result<Option<String>, PathError> {
    if let Some(plain) = plain_segment(raw_seg) {
        return Ok(Some(plain));
    }
    let decoded = decode_fully(raw_seg, suspicions)?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    check_decoded_chars(&decoded, suspicions)?;
    let decoded = if decoded.is_ascii() {
        decoded
    } else {
        fold_unicode(&decoded, suspicions)?
    };

    if decoded.matches('.').count() > raw_seg.matches('.').count() {
        suspicions.push(Suspicion::EncodedDot);
    }
    if decoded.matches(';').count() > raw_seg.matches(';').count() {
        suspicions.push(Suspicion::EncodedSemicolon);
    }

    let (name, had_params) = match decoded.split_once(';') {
        Some((name, _)) => {
            suspicions.push(Suspicion::PathParameters);
            (name, true)
        }
        None => (decoded.as_str(), false),
    };

    if name == ".." {
        return Err(PathError::DotDotSegment);
    }
    if name == "." {
        if had_params {
            return Err(PathError::AmbiguousDotSegment);
        }
        suspicions.push(Suspicion::DotSegment);
        return Ok(None);
    }
    let trimmed = name.trim_end_matches(['.', ' ']);
    if trimmed.len() != name.len() {
        if trimmed.is_empty() {
            return Err(PathError::AmbiguousDotSegment);
        }
        suspicions.push(Suspicion::TrailingDotOrSpace);
    }
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(trimmed.to_lowercase()))
}

/// The canonical form of an ordinary segment (ASCII letters, digits, `-`, `_`, `~` and `.`, not
/// ending in `.`): the segment in lower case, with nothing to report. Every rule of
/// [`canonical_segment`] leaves such a segment as it is but for case (no escape, `;`, dot
/// segment, trailing dot or non-ASCII character), so the per-segment work is skipped for the
/// paths nearly every request has (`plain_segments_take_the_same_path_as_the_full_rules`).
fn plain_segment(raw_seg: &str) -> Option<String> {
    let plain = raw_seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.'));
    (plain && !raw_seg.is_empty() && !raw_seg.ends_with('.')).then(|| raw_seg.to_ascii_lowercase())
}

/// Percent-decodes up to [`MAX_DECODE_ROUNDS`] times. Only the first round can see invalid
/// escapes: after that a stray `%` is data that an upstream decoding once also sees as data.
fn decode_fully(raw_seg: &str, suspicions: &mut Vec<Suspicion>) -> Result<Vec<u8>, PathError> {
    validate_escapes(raw_seg.as_bytes(), suspicions)?;
    let mut bytes: Vec<u8> = percent_decode(raw_seg.as_bytes()).collect();
    for _ in 1..MAX_DECODE_ROUNDS {
        if !has_valid_escape(&bytes) {
            return Ok(bytes);
        }
        suspicions.push(Suspicion::MultipleEncoding);
        bytes = percent_decode(&bytes).collect();
    }
    if has_valid_escape(&bytes) {
        return Err(PathError::ExcessiveEncoding);
    }
    Ok(bytes)
}

fn validate_escapes(bytes: &[u8], suspicions: &mut Vec<Suspicion>) -> Result<(), PathError> {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'%') {
        let after = rest.get(pos + 1..).unwrap_or_default();
        let value = match after {
            [h, l, ..] => hex_pair(*h, *l).ok_or(PathError::InvalidPercentEncoding)?,
            _ => return Err(PathError::InvalidPercentEncoding),
        };
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_' | b'~') {
            suspicions.push(Suspicion::EncodedUnreserved);
        }
        rest = after.get(2..).unwrap_or_default();
    }
    Ok(())
}

fn has_valid_escape(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| match w {
        [b'%', h, l] => hex_pair(*h, *l).is_some(),
        _ => false,
    })
}

fn hex_pair(h: u8, l: u8) -> Option<u8> {
    let hi = char::from(h).to_digit(16)?;
    let lo = char::from(l).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

/// Characters whose compatibility form (NFKC) is ASCII, or which render as path syntax. An
/// upstream that folds compatibility forms (`／ｄｅｂｕｇ` to `/debug`) would otherwise route a
/// path the filter reads as something else. Not a complete NFKC table: it covers the fullwidth
/// and small forms, mathematical alphanumerics and the slash and dot look-alikes.
fn is_confusable(c: char) -> bool {
    matches!(c,
        '\u{FF01}'..='\u{FF5E}' // fullwidth ASCII (／ ＼ ． ％ ; letters, digits ...)
        | '\u{FE50}'..='\u{FE6B}' // small form variants (﹒ ﹔ ﹖ ﹟ ﹨ ﹪ ...)
        | '\u{1D400}'..='\u{1D7FF}' // mathematical alphanumeric symbols
        | '\u{2215}' // DIVISION SLASH
        | '\u{2044}' // FRACTION SLASH
        | '\u{29F8}' // BIG SOLIDUS
        | '\u{29F5}' // REVERSE SOLIDUS OPERATOR
        | '\u{2024}' // ONE DOT LEADER
        | '\u{2025}' // TWO DOT LEADER
        | '\u{2026}' // HORIZONTAL ELLIPSIS (NFKC "...")
    )
}

/// What a folding reading may turn into path syntax (see [`fold_unicode`]).
const FOLD_MUST_NOT_ADD: [char; 8] = ['/', '\\', '?', '#', '%', ';', '.', ' '];

/// Reads a non-ASCII segment the way a folding upstream would, so that no Unicode spelling of
/// a protected route escapes its policy (docs/paths.md#unicode-look-alikes). Characters that
/// NFKC turns into ASCII (superscript `ᵈ`, circled `ⓓ`, ligature `ﬁ`, long `ſ`, no-break
/// space: [`lookalikes`]) are refused; ordinary words never need them. Letters are
/// case-folded: lower, upper, lower again, because some reach ASCII only through upper-casing
/// (`ı` → `I`, `ß` → `SS`, `ẞ` → `ß` → `SS`, as Java's `equalsIgnoreCase` and Python's
/// `casefold` read them), and `İ` is `i` (its one-character lower case in Java and .NET). A
/// fold that produces path syntax or a control character is refused.
fn fold_unicode(decoded: &str, suspicions: &mut Vec<Suspicion>) -> Result<String, PathError> {
    if decoded.chars().any(is_compatibility_ascii) {
        return Err(PathError::ConfusableCharacter);
    }
    let folded = decoded
        .replace('\u{130}', "i")
        .to_lowercase()
        .to_uppercase()
        .to_lowercase();
    let adds = |c: char| folded.matches(c).count() > decoded.matches(c).count();
    if folded.chars().any(char::is_control) || FOLD_MUST_NOT_ADD.into_iter().any(adds) {
        return Err(PathError::ConfusableCharacter);
    }
    if folded.is_ascii() {
        suspicions.push(Suspicion::FoldedToAscii);
    }
    Ok(folded)
}

fn check_decoded_chars(decoded: &str, suspicions: &mut Vec<Suspicion>) -> Result<(), PathError> {
    for c in decoded.chars() {
        match c {
            '/' => return Err(PathError::EncodedSlash),
            '\\' => return Err(PathError::Backslash),
            '?' | '#' => return Err(PathError::EncodedDelimiter),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c if is_confusable(c) => return Err(PathError::ConfusableCharacter),
            c if !c.is_ascii() => suspicions.push(Suspicion::NonAscii),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::Environment;
    use crate::debug::config::DebugConfig;
    use crate::debug::{self, DebugDecision};
    use crate::ratelimit::config::RateLimitConfig;
    use crate::ratelimit::planner::RateLimiter;
    use crate::versions::config::VersionsConfig;
    use crate::versions::{self, VersionDecision};
    use crate::webhook::config::WebhookConfig;

    fn canon(raw: &str) -> String {
        normalise(raw)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .as_str()
            .to_owned()
    }

    fn refused(raw: &str) -> PathError {
        match normalise(raw) {
            Ok(p) => panic!("{raw:?} accepted as {:?}", p.as_str()),
            Err(e) => e,
        }
    }

    #[test]
    fn ordinary_paths_are_unchanged_and_not_suspicious() {
        for raw in [
            "/",
            "/api/v2/orders",
            "/api/v2/orders/123",
            "/health",
            "/a-b_c~d/e.json",
        ] {
            let p = normalise(raw).unwrap();
            assert_eq!(p.as_str(), raw);
            assert!(!p.is_suspicious(), "{raw}: {:?}", p.suspicions());
        }
    }

    #[test]
    fn plain_segments_take_the_same_path_as_the_full_rules() {
        // Every segment of up to 3 characters over an alphabet that has each plain character
        // class and the characters that end the fast path (`%`, `;`, upper case, non-ASCII).
        let alphabet = [
            "a", "Z", "0", "-", "_", "~", ".", "%", ";", "2", "e", "é", " ",
        ];
        let mut segs = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = segs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            segs.extend(longer);
        }
        segs.sort();
        segs.dedup();
        for seg in segs {
            let Some(fast) = plain_segment(&seg) else {
                continue;
            };
            let mut suspicions = Vec::new();
            let slow = {
                let decoded = decode_fully(&seg, &mut suspicions).unwrap();
                let decoded = String::from_utf8(decoded).unwrap();
                check_decoded_chars(&decoded, &mut suspicions).unwrap();
                assert!(decoded.is_ascii());
                assert_eq!(decoded, seg, "a plain segment decodes to itself");
                assert!(!decoded.contains(';') && decoded != "." && decoded != "..");
                decoded.trim_end_matches(['.', ' ']).to_lowercase()
            };
            assert_eq!(fast, slow, "{seg:?}");
            assert!(suspicions.is_empty(), "{seg:?}: {suspicions:?}");
            assert_eq!(
                normalise(&format!("/{seg}/x")).unwrap().as_str(),
                format!("/{fast}/x")
            );
        }
    }

    #[test]
    fn segments_exclude_root_and_empties() {
        assert!(normalise("/").unwrap().segments().is_empty());
        assert_eq!(normalise("/api//v1/").unwrap().segments(), ["api", "v1"]);
    }

    #[test]
    fn canonicalised_forms() {
        for (raw, expected) in [
            ("/DEBUG/Token", "/debug/token"),
            ("/debug/token/", "/debug/token"),
            ("/debug//token", "/debug/token"),
            ("/debug/./token", "/debug/token"),
            ("/./debug/./token", "/debug/token"),
            ("/debug/token.", "/debug/token"),
            ("/debug/token..", "/debug/token"),
            ("/debug/token%20", "/debug/token"),
            ("/debug/token%20.", "/debug/token"),
            ("/debug;x=y/token", "/debug/token"),
            ("/debug/token;jsessionid=1", "/debug/token"),
            ("/debug/token%3Bx", "/debug/token"),
            ("/;/debug/token", "/debug/token"),
            ("/%64ebug/token", "/debug/token"),
            ("/%2564ebug/token", "/debug/token"),
            ("/%252564ebug/token", "/debug/token"),
            ("/debug/token%2e", "/debug/token"),
            ("/debug/token%252e", "/debug/token"),
            ("/api/V0./x", "/api/v0/x"),
            ("/debug/token?x=%2F..", "/debug/token"),
            ("/debug/token#/../x", "/debug/token"),
            ("/caf%C3%A9/%C3%89T%C3%89", "/café/été"),
            ("/files/100%25", "/files/100%"),
            ("/files/100%25zz", "/files/100%zz"),
            ("/a/%7Euser", "/a/~user"),
            ("/K/\u{212A}", "/k/k"),
        ] {
            assert_eq!(canon(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        for (raw, expected) in [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("?x", PathError::NotOriginForm),
            ("http://h/debug/token", PathError::NotOriginForm),
            ("debug/token", PathError::NotOriginForm),
            ("//debug/token", PathError::LeadingDoubleSlash),
            ("\\debug\\token", PathError::Backslash),
            ("/debug\\token", PathError::Backslash),
            ("/debug%5Ctoken", PathError::Backslash),
            ("/debug%255ctoken", PathError::Backslash),
            ("/debug%2Ftoken", PathError::EncodedSlash),
            ("/debug%252Ftoken", PathError::EncodedSlash),
            ("/debug%25252Ftoken", PathError::EncodedSlash),
            ("/debug%2525252Ftoken", PathError::ExcessiveEncoding),
            ("/debug%3Ftoken", PathError::EncodedDelimiter),
            ("/debug%23/token", PathError::EncodedDelimiter),
            ("/debug/token%00", PathError::ControlCharacter),
            ("/debug/token%2500", PathError::ControlCharacter),
            ("/debug/token\u{0}", PathError::ControlCharacter),
            ("/debug/token%0d%0a", PathError::ControlCharacter),
            ("/debug/token%7f", PathError::ControlCharacter),
            ("/debug/token%c2%85", PathError::ControlCharacter),
            ("/debug/token x", PathError::RawSpace),
            ("/debug/token%", PathError::InvalidPercentEncoding),
            ("/debug/token%2", PathError::InvalidPercentEncoding),
            ("/debug/token%zz", PathError::InvalidPercentEncoding),
            ("/debug/token%u0041", PathError::InvalidPercentEncoding),
            ("/debug%C0%AFtoken", PathError::InvalidUtf8),
            ("/debug%ff/token", PathError::InvalidUtf8),
            ("/debug/../debug/token", PathError::DotDotSegment),
            ("/foo/../debug/token", PathError::DotDotSegment),
            ("/..", PathError::DotDotSegment),
            ("/%2e%2e/debug/token", PathError::DotDotSegment),
            ("/%2E./debug/token", PathError::DotDotSegment),
            ("/..;/debug/token", PathError::DotDotSegment),
            ("/debug/..%3B/x", PathError::DotDotSegment),
            ("/debug/.;x/token", PathError::AmbiguousDotSegment),
            ("/debug/.../token", PathError::AmbiguousDotSegment),
            ("/debug/.%20/token", PathError::AmbiguousDotSegment),
            ("/debug/%20/token", PathError::AmbiguousDotSegment),
            ("/debug%EF%BC%8Ftoken", PathError::ConfusableCharacter),
            ("/\u{FF24}EBUG/token", PathError::ConfusableCharacter),
            ("/debug\u{2215}token", PathError::ConfusableCharacter),
            ("/debug/token\u{2026}", PathError::ConfusableCharacter),
        ] {
            assert_eq!(refused(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn refusal_is_400_with_json_detail() {
        let e = refused("/debug%2Ftoken");
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.body(),
            r#"{"detail":"Ambiguous request path: encoded slash in path"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&refused("/a/%00").body()).unwrap();
        assert!(v["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ambiguous request path: "));
    }

    #[test]
    fn query_is_kept_raw_and_fragment_dropped() {
        let p = normalise("/webhooks/stripe?a=%2F&b=1#frag?x").unwrap();
        assert_eq!(p.as_str(), "/webhooks/stripe");
        assert_eq!(p.query(), Some("a=%2F&b=1"));
        assert_eq!(p.raw(), "/webhooks/stripe?a=%2F&b=1#frag?x");
        assert_eq!(p.suspicions(), [Suspicion::Fragment]);

        let p = normalise("/x#a?b").unwrap();
        assert_eq!(p.query(), None);
        assert_eq!(normalise("/x?").unwrap().query(), Some(""));
        assert_eq!(normalise("/x").unwrap().query(), None);
    }

    #[test]
    fn query_content_cannot_cause_refusal() {
        let p = normalise("/x?path=..%2F..%5C%00&y=\\").unwrap();
        assert_eq!(p.as_str(), "/x");
    }

    #[test]
    fn suspicions_are_recorded_sorted_and_deduplicated() {
        let cases: [(&str, &[Suspicion]); 9] = [
            ("/%64ebug/%74oken", &[Suspicion::EncodedUnreserved]),
            ("/a/%2e/b", &[Suspicion::EncodedDot, Suspicion::DotSegment]),
            ("/a/./b/./c", &[Suspicion::DotSegment]),
            ("/a//b", &[Suspicion::EmptySegment]),
            ("/a/b;c", &[Suspicion::PathParameters]),
            (
                "/a/b%3Bc",
                &[Suspicion::EncodedSemicolon, Suspicion::PathParameters],
            ),
            ("/a/b.", &[Suspicion::TrailingDotOrSpace]),
            ("/a/%2561", &[Suspicion::MultipleEncoding]),
            ("/caf%C3%A9", &[Suspicion::NonAscii]),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalise(raw).unwrap().suspicions(), expected, "{raw:?}");
        }
        assert!(!normalise("/caf%C3%A9").unwrap().is_suspicious());
        assert!(!normalise("/a/b/").unwrap().is_suspicious());
        assert!(normalise("/a//b").unwrap().is_suspicious());
    }

    #[test]
    fn route_forms_cut_the_last_segment_before_each_dot() {
        let forms = |raw: &str| -> Vec<String> {
            normalise(raw)
                .unwrap()
                .route_forms()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            forms("/auth/Login.tar.GZ"),
            ["/auth/login.tar.gz", "/auth/login.tar", "/auth/login"]
        );
        assert_eq!(
            forms("/webhooks/stripe.json;x=1/"),
            ["/webhooks/stripe.json", "/webhooks/stripe"]
        );
        assert_eq!(forms("/debug..json"), ["/debug..json", "/debug.", "/debug"]);
        assert_eq!(forms("/auth/login"), ["/auth/login"]);
        assert_eq!(forms("/"), ["/"]);
        // Only the last segment: no router takes `/a.json/b` for `/a/b`.
        assert_eq!(forms("/a.json/b"), ["/a.json/b"]);
        // A segment that is only a suffix is not cut to nothing.
        assert_eq!(forms("/auth/.json"), ["/auth/.json"]);
    }

    #[test]
    fn is_route_under_ignores_a_format_suffix_on_the_last_segment_only() {
        let p = |raw: &str| normalise(raw).unwrap();
        assert!(p("/debug.json").is_route_under("/debug"));
        assert!(p("/debug/token.json").is_route_under("/debug/token"));
        assert!(p("/debug/token.x.y").is_route_under("/debug/token"));
        assert!(p("/debug/token").is_route_under("/debug"));
        assert!(!p("/debug.json").is_under("/debug"));
        assert!(!p("/debug.json/token").is_route_under("/debug"));
        assert!(!p("/debugger.json").is_route_under("/debug"));
        assert!(!p("/debug-x.json").is_route_under("/debug"));
    }

    #[test]
    fn unicode_letters_that_fold_to_ascii_are_read_as_ascii() {
        for (raw, expected) in [
            ("/auth/log\u{131}n", "/auth/login"),       // dotless i
            ("/auth/LOG\u{130}N", "/auth/login"),       // capital I with dot
            ("/auth/pa\u{DF}word", "/auth/password"),   // sharp s, as `casefold`
            ("/auth/PA\u{1E9E}WORD", "/auth/password"), // capital sharp s
            ("/debug/to\u{212A}en", "/debug/token"),    // Kelvin sign
            ("/ap%C4%B1/v0", "/api/v0"),
        ] {
            assert_eq!(canon(raw), expected, "{raw:?}");
            assert!(
                normalise(raw)
                    .unwrap()
                    .suspicions()
                    .contains(&Suspicion::FoldedToAscii),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn compatibility_forms_of_ascii_are_refused() {
        for raw in [
            "/\u{1D48}\u{1D49}\u{1D47}\u{1D58}\u{1D4D}/token", // superscript ᵈᵉᵇᵘᵍ
            "/%E1%B5%88ebug/token",
            "/\u{24D3}ebug/token",    // circled ⓓ
            "/\u{217E}ebug/token",    // small roman numeral ⅾ
            "/webhooks/\u{FB06}ripe", // ligature st
            "/auth/pro\u{FB01}le",    // ligature fi
            "/debug\u{A0}/token",     // no-break space
            "/debug%C2%A0/token",
            "/debug\u{2122}",         // trade mark sign
            "/api/v\u{2070}/x",       // superscript zero
            "/api/v\u{2080}/x",       // subscript zero
            "/\u{AA}uth/login",       // feminine ordinal
            "/webhooks/\u{17F}tripe", // long s: NFKC 's'
            "/webhooks/%C5%BFtripe",
            "/debug\u{37E}x/token", // Greek question mark: canonically ';'
            "/debug\u{2488}json",   // digit one full stop: '1.'
        ] {
            assert_eq!(refused(raw), PathError::ConfusableCharacter, "{raw:?}");
        }
    }

    #[test]
    fn ordinary_non_ascii_paths_are_kept_and_only_lower_cased() {
        for (raw, expected) in [
            ("/caf%C3%A9", "/café"),
            ("/cafe%CC%81", "/cafe\u{301}"), // no composition: still not ASCII
            ("/%E6%9D%B1%E4%BA%AC/%E9%A7%85", "/東京/駅"),
            ("/\u{395}\u{3BB}\u{3BB}\u{3AC}\u{3B4}\u{3B1}", "/ελλάδα"),
            ("/\u{41C}\u{43E}\u{441}\u{43A}\u{432}\u{430}", "/москва"),
            ("/\u{FF76}\u{FF85}", "/\u{FF76}\u{FF85}"), // half-width katakana: not ASCII
        ] {
            let p = normalise(raw).unwrap();
            assert_eq!(p.as_str(), expected, "{raw:?}");
            assert!(!p.is_suspicious(), "{raw:?}: {:?}", p.suspicions());
        }
    }

    #[test]
    fn folding_is_idempotent() {
        for raw in [
            "/Stra%C3%9Fe/LOG\u{130}N",
            "/\u{1E9E}/\u{131}",
            "/cafe%CC%81",
            "/\u{FF76}",
        ] {
            let once = canon(raw);
            assert_eq!(canon(&once), once, "{raw:?}");
        }
    }

    #[test]
    fn is_under_is_segment_wise() {
        let p = normalise("/debug/token/x").unwrap();
        assert!(p.is_under("/debug"));
        assert!(p.is_under("/debug/token"));
        assert!(p.is_under("/debug/token/x"));
        assert!(p.is_under("/"));
        assert!(!p.is_under("/debug/tok"));
        assert!(!p.is_under("/debug/token/x/y"));
        assert!(!normalise("/debugger").unwrap().is_under("/debug"));
        assert!(normalise("/").unwrap().is_under("/"));
        assert!(!normalise("/").unwrap().is_under("/debug"));
    }

    #[test]
    fn normalising_is_idempotent_on_canonical_output() {
        for raw in ["/DEBUG//Token;x/", "/%2564ebug/token.", "/api/V0%20/x?q"] {
            let once = canon(raw);
            assert_eq!(canon(&once), once, "{raw:?}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/path.rs): the canonical path is decoded, so a `%`
    /// (from `%25`) or a space (from `%20`) in it is not valid raw input; each segment written
    /// percent-encoded again normalises to the same canonical path.
    #[test]
    fn canonical_output_percent_encoded_again_normalises_to_itself() {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        for (raw, expected) in [
            ("/=:%254;%4544/", "/=:%4"),
            ("/C;%2C%454/4CCC%208;;;CC%254;;;%2C%254;", "/c/4ccc 8"),
        ] {
            assert_eq!(canon(raw), expected, "{raw:?}");
            assert!(
                normalise(expected).is_err(),
                "{expected:?} is not raw input"
            );
            let again: String = expected
                .split('/')
                .skip(1)
                .map(|s| format!("/{}", utf8_percent_encode(s, NON_ALPHANUMERIC)))
                .collect();
            assert_eq!(canon(&again), expected, "{again:?}");
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Variant {
        path: String,
        target: String,
    }

    fn corpus() -> Vec<Variant> {
        serde_json::from_str(include_str!("../../tests/data/path_variants.json")).unwrap()
    }

    fn stripe_source(p: &NormalisedPath) -> Option<String> {
        let webhook = WebhookConfig::default();
        p.route_forms()
            .find_map(|f| webhook.source_for_path(f))
            .map(|(name, _)| name.to_owned())
    }

    fn login_route(p: &NormalisedPath) -> Option<usize> {
        let limiter = RateLimiter::new(RateLimitConfig::default().resolve(None));
        p.route_forms().find_map(|f| limiter.match_route("POST", f))
    }

    /// Every variant aimed at `/debug/token`, `/api/v0/x`, the stripe webhook route or the
    /// login route is refused (400) or read as a path its policy covers: the production debug
    /// policy or the disabled-version policy blocks it (or refuses an ambiguous version), the
    /// webhook route and the rate-limited login route match it.
    #[test]
    fn no_corpus_variant_slips_through() {
        let corpus = corpus();
        assert!(corpus.len() >= 60, "corpus has {} variants", corpus.len());
        let debug_cfg = DebugConfig::default();
        let versions_cfg = VersionsConfig {
            disabled: vec!["v0".into()],
            ..VersionsConfig::default()
        };
        let (mut n_refused, mut n_blocked) = (0, 0);
        for v in &corpus {
            let Ok(p) = normalise(&v.path) else {
                n_refused += 1;
                continue;
            };
            let blocked = match v.target.as_str() {
                "debug" => matches!(
                    debug::decide(&debug_cfg, Environment::Production, &p),
                    DebugDecision::Block { .. }
                ),
                "disabled_version" => matches!(
                    versions::decide(&versions_cfg, &p, None, 0),
                    VersionDecision::Disabled { .. } | VersionDecision::Ambiguous
                ),
                "webhook" => stripe_source(&p).as_deref() == Some("stripe"),
                "login" => login_route(&p) == Some(0),
                other => panic!("unknown target {other:?} for {:?}", v.path),
            };
            assert!(blocked, "{:?} slipped through as {:?}", v.path, p.as_str());
            n_blocked += 1;
        }
        // Both outcomes must be exercised, or the corpus is not testing what it claims.
        assert!(
            n_refused > 10 && n_blocked > 10,
            "{n_refused} refused, {n_blocked} blocked"
        );
    }

    /// Variants that are not refused really read as their target (under `/debug`, or naming
    /// `v0`): they are blocked because of what they are, not by accident.
    #[test]
    fn corpus_variants_that_normalise_reach_their_target() {
        let versions_cfg = VersionsConfig {
            disabled: vec!["v0".into()],
            ..VersionsConfig::default()
        };
        for v in &corpus() {
            let Ok(p) = normalise(&v.path) else { continue };
            match v.target.as_str() {
                "debug" => assert!(
                    p.is_route_under("/debug"),
                    "{:?} -> {:?}",
                    v.path,
                    p.as_str()
                ),
                "disabled_version" => {
                    // An ambiguous version is refused (400), not read as one.
                    if versions::decide(&versions_cfg, &p, None, 0) == VersionDecision::Ambiguous {
                        continue;
                    }
                    assert!(
                        versions::detect_versions(p.segments(), None).contains(&"v0".to_owned()),
                        "{:?} -> {:?}",
                        v.path,
                        p.as_str()
                    )
                }
                _ => assert!(
                    p.route_forms()
                        .any(|f| f == "/webhooks/stripe" || f == "/auth/login"),
                    "{:?} -> {:?}",
                    v.path,
                    p.as_str()
                ),
            }
        }
    }

    /// Every class of the corpus is exercised by both outcomes where it should be.
    #[test]
    fn corpus_covers_format_suffixes_params_and_look_alikes_for_every_target() {
        let corpus = corpus();
        for target in ["debug", "disabled_version", "webhook", "login"] {
            let of = |pred: &dyn Fn(&str) -> bool| {
                corpus
                    .iter()
                    .filter(|v| v.target == target && pred(&v.path))
                    .count()
            };
            assert!(of(&|p| p.contains(".json")) >= 1, "{target}: format suffix");
            assert!(of(&|p| p.contains(';')) >= 1, "{target}: ;params");
            assert!(
                of(&|p| !p.is_ascii() || p.contains("%C")) >= 1,
                "{target}: look-alike"
            );
            assert!(
                of(&|p| normalise(p).is_err()) >= 1,
                "{target}: something refused"
            );
            assert!(
                of(&|p| normalise(p).is_ok()) >= 5,
                "{target}: something read"
            );
        }
    }
}
