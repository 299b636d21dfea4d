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
//!    each is refused as an encoded delimiter.
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
//! The canonical path is `/` + segments joined by `/` (just `/` for the root).
//! Anything out of the ordinary that was canonicalised rather than refused is recorded as a
//! [`Suspicion`] so audit can log it.

use percent_encoding::percent_decode;
use serde::Serialize;
use std::fmt;

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
    /// A Unicode look-alike of a path delimiter (fullwidth solidus and friends).
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
            Self::ConfusableCharacter => "look-alike of a path delimiter in path",
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
        let mut own = self.segments.iter();
        prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .all(|p| own.next().is_some_and(|s| s == p))
    }
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
    let decoded = decode_fully(raw_seg, suspicions)?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    check_decoded_chars(&decoded, suspicions)?;

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

/// Unicode characters whose compatibility form (NFKC) is path syntax, or which render as it.
const CONFUSABLES: &[char] = &[
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{29F8}', // BIG SOLIDUS
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{FF05}', // FULLWIDTH PERCENT SIGN
    '\u{FE6A}', // SMALL PERCENT SIGN
    '\u{FF1B}', // FULLWIDTH SEMICOLON
    '\u{FE54}', // SMALL SEMICOLON
    '\u{FF1F}', // FULLWIDTH QUESTION MARK
    '\u{FE56}', // SMALL QUESTION MARK
    '\u{FF03}', // FULLWIDTH NUMBER SIGN
    '\u{FE5F}', // SMALL NUMBER SIGN
];

fn check_decoded_chars(decoded: &str, suspicions: &mut Vec<Suspicion>) -> Result<(), PathError> {
    for c in decoded.chars() {
        match c {
            '/' => return Err(PathError::EncodedSlash),
            '\\' => return Err(PathError::Backslash),
            '?' | '#' => return Err(PathError::EncodedDelimiter),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c if CONFUSABLES.contains(&c) => return Err(PathError::ConfusableCharacter),
            c if !c.is_ascii() => suspicions.push(Suspicion::NonAscii),
            _ => {}
        }
    }
    Ok(())
}
