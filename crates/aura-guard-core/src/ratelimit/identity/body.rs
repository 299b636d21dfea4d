//! The fields of an auth request body, read as the upstream framework reads them (FastAPI and
//! Starlette, the original's; docs/ratelimit.md, "Reading the body"). What decides:
//! - the Content-Type's media type, lowercased, parameters split off (`charset`, `boundary`,
//!   quoted or not, names in any case, the last of a repeated one wins);
//! - `application/json` or any `…+json`: Python's `json.loads` ([`super::json`]);
//! - `application/x-www-form-urlencoded`: Starlette's form parser ([`form`]);
//! - `multipart/form-data`: python-multipart ([`super::multipart`]);
//! - anything else or none: tried as a JSON object, then as a form.

use super::{json, multipart};

/// Why a body could not be read at all (the request is refused in production, see
/// [`super::identify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A JSON media type, and not JSON that Python's `json.loads` accepts.
    InvalidJson,
    /// `multipart/form-data` without a `boundary` parameter.
    MultipartBoundary,
    /// `multipart/form-data` whose `charset` parameter is not one this filter decodes.
    MultipartCharset,
    /// `multipart/form-data` that python-multipart refuses.
    MalformedMultipart,
}

impl BodyError {
    /// The problem, as the 400 answer and the security event name it.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyError::InvalidJson => "invalid JSON",
            BodyError::MultipartBoundary => "multipart/form-data without a boundary",
            BodyError::MultipartCharset => "unsupported multipart/form-data charset",
            BodyError::MalformedMultipart => "malformed multipart/form-data",
        }
    }
}

/// The charsets a multipart body may declare, by Python's codec names (Starlette decodes
/// names and values with the `charset` parameter, UTF-8 by default, falling back to Latin-1
/// when that fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charset {
    Utf8,
    /// `utf-8-sig`: a leading BOM is dropped.
    Utf8Sig,
    /// Latin-1, and ASCII (whose failures fall back to Latin-1, so it decodes the same).
    Latin1,
}

/// Python's names (`encodings.aliases`, normalised) for UTF-8, and for Latin-1 and ASCII.
const UTF8_NAMES: &[&str] = &[
    "utf_8",
    "utf8",
    "u8",
    "utf",
    "utf8_ucs2",
    "utf8_ucs4",
    "cp65001",
];
const LATIN1_NAMES: &[&str] = &[
    "latin_1",
    "latin1",
    "latin",
    "l1",
    "iso8859_1",
    "iso_8859_1",
    "8859",
    "cp819",
    "csisolatin1",
    "ibm819",
    "iso8859",
    "iso_8859_1_1987",
    "iso_ir_100",
    "ascii",
    "646",
    "ansi_x3.4_1968",
    "ansi_x3.4_1986",
    "ansi_x3_4_1968",
    "cp367",
    "csascii",
    "ibm367",
    "iso646_us",
    "iso_646.irv_1991",
    "iso_ir_6",
    "us",
    "us_ascii",
];

impl Charset {
    /// The codec Python's `codecs.lookup` finds for `name`, among those above; None for any
    /// other name: Python may know it (UTF-16, UTF-7, Shift-JIS …) and read a name this filter
    /// would not, so such a body is refused rather than guessed.
    fn from_name(name: &str) -> Option<Charset> {
        // encodings.normalize_encoding: runs of other characters than alphanumerics and '.'
        // become one '_'.
        let mut norm = String::new();
        for c in name.trim().chars().map(|c| c.to_ascii_lowercase()) {
            if c.is_ascii_alphanumeric() || c == '.' {
                norm.push(c);
            } else if !norm.is_empty() && !norm.ends_with('_') {
                norm.push('_');
            }
        }
        let norm = norm.trim_end_matches('_');
        if UTF8_NAMES.contains(&norm) {
            Some(Charset::Utf8)
        } else if norm == "utf_8_sig" {
            Some(Charset::Utf8Sig)
        } else if LATIN1_NAMES.contains(&norm) {
            Some(Charset::Latin1)
        } else {
            None
        }
    }

    /// Starlette's `_user_safe_decode`.
    pub(super) fn decode(self, b: &[u8]) -> String {
        let utf8 = match self {
            Charset::Utf8 => std::str::from_utf8(b).ok(),
            Charset::Utf8Sig => {
                std::str::from_utf8(b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)).ok()
            }
            Charset::Latin1 => None,
        };
        match utf8 {
            Some(s) => s.to_string(),
            None => b.iter().map(|&c| char::from(c)).collect(),
        }
    }
}

/// Splits a header value `item; name=value; name="quoted"` as python-multipart's
/// `parse_options_header`: the first item trimmed and lowercased, then each parameter with its
/// name trimmed and lowercased and its value trimmed and unquoted (`\\` and `\"` unescaped).
/// A `;` inside quotes does not split; parameters without `=` or with a `*` name (RFC 2231,
/// forbidden in form-data by RFC 7578) are dropped.
pub(super) fn header_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut items = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        if c == ';' && !quoted {
            items.push(String::new());
            continue;
        }
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        }
        if let Some(cur) = items.last_mut() {
            cur.push(c);
        }
    }
    // Python strips spaces and tabs only.
    let blank = |s: &str| s.trim_matches([' ', '\t']).to_string();
    let mut items = items.into_iter();
    let first = blank(&items.next().unwrap_or_default()).to_ascii_lowercase();
    let params = items
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = blank(k).to_ascii_lowercase();
            if k.contains('*') {
                return None;
            }
            let v = blank(v);
            let v = v.as_str();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\\", "\\").replace("\\\"", "\""),
                None => v.to_string(),
            };
            Some((k, v))
        })
        .collect();
    (first, params)
}

/// A body's fields in body order; the value is None when it is not a string (a JSON number,
/// object …). A lookup takes the last occurrence of a name, as Python's `json` and
/// Starlette's `FormData` do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Fields(Vec<(String, Option<String>)>);

impl Fields {
    /// The trimmed value of `name`, when it is a non-empty string.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        let v = self.0.iter().rev().find(|(k, _)| k == name)?.1.as_deref()?;
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    fn strings(pairs: Vec<(String, String)>) -> Fields {
        Fields(pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }
}

/// The fields of `body` per its Content-Type (see the module comment).
pub(super) fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Fields, BodyError> {
    let (mime, params) = content_type.map(header_params).unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if mime == "application/json" || mime.ends_with("+json") {
        json_object(body).ok_or(BodyError::InvalidJson)
    } else if mime == "application/x-www-form-urlencoded" {
        Ok(form(body))
    } else if mime == "multipart/form-data" {
        let boundary = param("boundary")
            .filter(|b| !b.is_empty())
            .ok_or(BodyError::MultipartBoundary)?;
        let charset = match param("charset") {
            Some(name) => Charset::from_name(name).ok_or(BodyError::MultipartCharset)?,
            None => Charset::Utf8,
        };
        // Starlette passes the header on as Latin-1 bytes.
        let boundary: Vec<u8> = boundary.chars().map(latin1_byte).collect();
        multipart::fields(body, &boundary, charset)
            .map(Fields::strings)
            .map_err(|_| BodyError::MalformedMultipart)
    } else {
        // Without a usable Content-Type, try both: a client must not dodge the per-user
        // limit by omitting the header when the upstream sniffs.
        Ok(json_object(body)
            .filter(|f| !f.0.is_empty())
            .unwrap_or_else(|| form(body)))
    }
}

/// A character of a header value Envoy handed over as UTF-8, as the byte Starlette sees
/// (characters past U+00FF cannot come from a Latin-1 header and never match a boundary).
pub(super) fn latin1_byte(c: char) -> u8 {
    u8::try_from(c).unwrap_or(0xFF)
}

/// Python's `json.loads(body)` as fields: its top-level object's members, none for JSON that
/// is not an object; None when Python refuses the body.
fn json_object(body: &[u8]) -> Option<Fields> {
    let text = json::decode(body)?;
    match json::object_members(&text) {
        Ok(members) => Some(Fields(members.unwrap_or_default())),
        Err(_) => None,
    }
}

/// A form-urlencoded body as Starlette's `FormParser` reads it: pairs split on `&` (empty ones
/// skipped), name and value split on the first `=` (none: empty value), each decoded by
/// `unquote_plus(raw.decode("latin-1"))`.
fn form(body: &[u8]) -> Fields {
    let pairs = body
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut kv = p.splitn(2, |&b| b == b'=');
            let k = kv.next().unwrap_or_default();
            let v = kv.next().unwrap_or_default();
            (unquote_plus_latin1(k), unquote_plus_latin1(v))
        })
        .collect();
    Fields::strings(pairs)
}

/// Python's `unquote_plus` over a Latin-1 decoded string: `+` is a space and percent escapes
/// are UTF-8 (invalid sequences replaced) within each run of ASCII; raw bytes from 0x80 stand
/// for themselves as Latin-1 characters. So a raw UTF-8 `é` reads as `Ã©`, as upstream.
fn unquote_plus_latin1(raw: &[u8]) -> String {
    let mut out = String::new();
    for run in raw.chunk_by(|a, b| a.is_ascii() == b.is_ascii()) {
        if run.first().is_some_and(u8::is_ascii) {
            let plus: Vec<u8> = run
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            out.extend(run.iter().map(|&b| char::from(b)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn user(ct: Option<&str>, body: &[u8]) -> Result<Option<String>, BodyError> {
        parse(ct, body).map(|f| f.get("username"))
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn content_type_parameters_case_and_quoting_are_read_like_python_multipart() {
        assert_eq!(
            header_params(" Multipart/Form-Data ;BOUNDARY=\"a;b\\\"c\"; charset = UTF-8 ; x; y*=z"),
            (
                "multipart/form-data".to_string(),
                vec![
                    ("boundary".to_string(), "a;b\"c".to_string()),
                    ("charset".to_string(), "UTF-8".to_string())
                ]
            )
        );
        let json = br#"{"username":"x"}"#;
        for ct in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/json;",
            "application/json ; foo",
            "application/vnd.api+json",
            "APPLICATION/PROBLEM+JSON; q=1",
        ] {
            assert_eq!(user(Some(ct), json), Ok(Some("x".into())), "{ct}");
        }
        for ct in [
            "application/x-www-form-urlencoded; charset=utf-8",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        ] {
            assert_eq!(user(Some(ct), b"username=x"), Ok(Some("x".into())), "{ct}");
        }
    }

    #[test]
    fn form_values_decode_as_starlette_does() {
        for (body, want) in [
            (&b"username=x&password=p"[..], Some("x")),
            (b"user%6Eame=x", Some("x")),
            (b"username=y&username=x", Some("x")),
            (b"username&username=x", Some("x")),
            (b"&&username=x&&", Some("x")),
            (b"username=x=y", Some("x=y")),
            (b"username=john+doe%20jr", Some("john doe jr")),
            (b"username=jos%C3%A9", Some("jos\u{e9}")),
            (b"username=jos\xc3\xa9", Some("jos\u{c3}\u{a9}")),
            (b"username=jos%E9", Some("jos\u{fffd}")),
            (b"username=a%zz%", Some("a%zz%")),
            (b"password=p;username=x", None),
            (b"username=x&username", None),
        ] {
            assert_eq!(
                user(FORM, body).unwrap().as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn unreadable_bodies_name_their_problem() {
        assert_eq!(
            user(Some("application/json"), b"{\"username\":\"x\""),
            Err(BodyError::InvalidJson)
        );
        assert_eq!(
            user(Some("application/json"), b"username=x"),
            Err(BodyError::InvalidJson)
        );
        assert_eq!(
            user(Some("multipart/form-data"), b"--x\r\n"),
            Err(BodyError::MultipartBoundary)
        );
        assert_eq!(
            user(Some("multipart/form-data; boundary=\"\""), b"--\r\n"),
            Err(BodyError::MultipartBoundary)
        );
        assert_eq!(
            user(
                Some("multipart/form-data; boundary=x; charset=utf-16"),
                b"--x--"
            ),
            Err(BodyError::MultipartCharset)
        );
        assert_eq!(
            user(Some("multipart/form-data; boundary=x"), b"--y\r\n"),
            Err(BodyError::MalformedMultipart)
        );
        // Valid JSON that is not an object is readable: it names no one.
        assert_eq!(user(Some("application/json"), b"[\"username\"]"), Ok(None));
    }

    #[test]
    fn multipart_boundary_and_charset_come_from_the_content_type() {
        let body = b"--a b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\njos\xe9\r\n--a b--\r\n";
        for ct in [
            "multipart/form-data; boundary=\"a b\"",
            "Multipart/Form-Data; BOUNDARY=\"a b\"; charset=latin-1",
            "multipart/form-data; boundary=zz; boundary=\"a b\"; charset=UTF8",
        ] {
            assert_eq!(user(Some(ct), body), Ok(Some("jos\u{e9}".into())), "{ct}");
        }
        assert_eq!(Charset::from_name(" ISO-8859-1 "), Some(Charset::Latin1));
        assert_eq!(Charset::from_name("us-ascii"), Some(Charset::Latin1));
        assert_eq!(Charset::from_name("UTF_8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_name("utf-8-sig"), Some(Charset::Utf8Sig));
        for other in ["utf-16", "utf-7", "shift_jis", "cp1252", "bogus", ""] {
            assert_eq!(Charset::from_name(other), None, "{other}");
        }
        assert_eq!(Charset::Utf8Sig.decode(b"\xEF\xBB\xBFx"), "x");
    }

    #[test]
    fn without_a_usable_content_type_json_then_form_is_tried() {
        assert_eq!(user(None, br#"{"username":"j"}"#), Ok(Some("j".into())));
        assert_eq!(user(None, b"username=f"), Ok(Some("f".into())));
        assert_eq!(
            user(Some("text/plain"), b"username=f"),
            Ok(Some("f".into()))
        );
        let utf16: Vec<u8> =
            r#"{"username":"w"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(user(Some("text/plain"), &utf16), Ok(Some("w".into())));
        // Never unreadable: the form parse reads anything.
        assert_eq!(user(None, b"{\"username\":"), Ok(None));
    }
}
