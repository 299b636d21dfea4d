//! `multipart/form-data` bodies split as Starlette's `MultiPartParser` (python-multipart) splits
//! them, the original's framework (docs/ratelimit.md, "Reading the body"). It mirrors that
//! parser's rules rather than being more lenient, because a laxer splitter would see parts the
//! upstream does not (a "part" hidden in another part's value) and read a different user:
//! - the body starts with `--boundary` (python-multipart first skips to the first `-` when the
//!   body starts with CR or LF), then CRLF; `--boundary--` ends it;
//! - header lines are `token: value` ending in CRLF; a blank line ends the headers;
//! - a part ends at `CRLF--boundary` followed by CRLF, by `--`, or by spaces/tabs then CRLF;
//!   any other byte after it makes it data;
//! - a part whose headers have no `Content-Disposition` `name` is an error; a part with a
//!   `filename` is a file, not a field; a part the body ends inside is dropped.
//!
//! Every error python-multipart raises (Starlette answers 400) is [`Malformed`] here: such a
//! body is not read as anyone's, upstream or here. The scan is linear: the delimiter starts
//! with CR and contains no other, so each CR is tried once.

use super::body::{header_params, latin1_byte, Charset};

/// The body breaks a rule python-multipart enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed;

/// RFC 7230 token characters, the only ones python-multipart accepts in a header name.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The first `needle` (which starts with CR) at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + hay.get(i..)?.iter().position(|&b| b == b'\r')?;
        if hay.get(at..)?.starts_with(needle) {
            return Some(at);
        }
        i = at + 1;
    }
}

/// (name, value) of each completed field part, in body order, names and values decoded with
/// the request's `charset` as Starlette does.
pub(super) fn fields(
    body: &[u8],
    boundary: &[u8],
    charset: Charset,
) -> Result<Vec<(String, String)>, Malformed> {
    let mut delimiter = b"\r\n--".to_vec();
    delimiter.extend_from_slice(boundary);
    let first = delimiter.get(2..).unwrap_or_default();
    let mut out = Vec::new();

    let mut i = 0;
    if matches!(body.first(), Some(b'\r' | b'\n')) {
        match body.iter().position(|&b| b == b'-') {
            Some(p) => i = p,
            None => return Ok(out),
        }
    }
    let rest = body.get(i..).unwrap_or_default();
    if !rest.starts_with(first) {
        // The body may end inside the first delimiter: nothing was read, nothing is wrong yet.
        return if first.starts_with(rest) {
            Ok(out)
        } else {
            Err(Malformed)
        };
    }
    i += first.len();
    match (body.get(i), body.get(i + 1)) {
        (Some(b'\r'), Some(b'\n')) => i += 2,
        (Some(b'-'), Some(b'-')) | (None, _) | (Some(b'\r' | b'-'), None) => return Ok(out),
        _ => return Err(Malformed),
    }

    loop {
        // Headers.
        let mut disposition: Option<&[u8]> = None;
        loop {
            match (body.get(i), body.get(i + 1)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 2;
                    break;
                }
                (Some(b'\r'), Some(_)) => return Err(Malformed),
                (None, _) | (Some(b'\r'), None) => return Ok(out),
                _ => {}
            }
            let rest = body.get(i..).unwrap_or_default();
            let Some(colon) = rest.iter().position(|&b| b == b':') else {
                return if rest.iter().all(|&b| is_token(b)) {
                    Ok(out)
                } else {
                    Err(Malformed)
                };
            };
            let name = rest.get(..colon).unwrap_or_default();
            if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
                return Err(Malformed);
            }
            i += colon + 1;
            while body.get(i) == Some(&b' ') {
                i += 1;
            }
            let Some(cr) = body
                .get(i..)
                .and_then(|r| r.iter().position(|&b| b == b'\r'))
            else {
                return Ok(out);
            };
            let value = body.get(i..i + cr).unwrap_or_default();
            i += cr;
            match body.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Err(Malformed),
                None => return Ok(out),
            }
            if name.eq_ignore_ascii_case(b"content-disposition") {
                disposition = Some(value);
            }
        }
        // Starlette reads the disposition when the headers end, before the part's data.
        let latin1: String = disposition
            .unwrap_or_default()
            .iter()
            .map(|&b| char::from(b))
            .collect();
        let (_, params) = header_params(&latin1);
        let param = |key: &str| params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
        let field_name = param("name").ok_or(Malformed)?;
        let is_file = param("filename").is_some();

        // Data, up to the next delimiter.
        let data_start = i;
        let mut from = i;
        let (data_end, next, last) = loop {
            let Some(m) = find(body, from, &delimiter) else {
                return Ok(out);
            };
            let after = m + delimiter.len();
            match (body.get(after), body.get(after + 1)) {
                (Some(b'\r'), Some(b'\n')) => break (m, after + 2, false),
                (Some(b'-'), Some(b'-')) => break (m, after + 2, true),
                (Some(b' ' | b'\t'), _) => {
                    let mut j = after;
                    while matches!(body.get(j), Some(b' ' | b'\t')) {
                        j += 1;
                    }
                    match (body.get(j), body.get(j + 1)) {
                        (Some(b'\r'), Some(b'\n')) => break (m, j + 2, false),
                        (None, _) | (Some(b'\r'), None) => return Ok(out),
                        _ => return Err(Malformed),
                    }
                }
                (None, _) | (Some(b'\r' | b'-'), None) => return Ok(out),
                _ => from = m + 1,
            }
        };
        if !is_file {
            let name_bytes: Vec<u8> = field_name.chars().map(latin1_byte).collect();
            let data = body.get(data_start..data_end).unwrap_or_default();
            out.push((charset.decode(&name_bytes), charset.decode(data)));
        }
        if last {
            return Ok(out);
        }
        i = next;
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn parse(body: &[u8]) -> Result<Vec<(String, String)>, Malformed> {
        fields(body, b"XX", Charset::Utf8)
    }

    fn part(name: &str, value: &str) -> String {
        format!("--XX\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn fields_in_order_with_the_closing_delimiter_and_an_epilogue() {
        let body = format!(
            "{}{}--XX--\r\nepilogue --XX\r\n",
            part("username", "x"),
            part("password", "p")
        );
        assert_eq!(
            parse(body.as_bytes()),
            Ok(pairs(&[("username", "x"), ("password", "p")]))
        );
        // Values keep their bytes: CRLF, a bare `--XX` inside a line, a near-delimiter.
        let body = format!("{}--XX--", part("v", "a\r\nb --XX\r\n\r\n--XXY\r\n--XX-z"));
        assert_eq!(
            parse(body.as_bytes()),
            Ok(pairs(&[("v", "a\r\nb --XX\r\n\r\n--XXY\r\n--XX-z")]))
        );
        // A CR that is not followed by LF after the boundary leaves it data (python-multipart).
        let body = b"--XX\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XX\r\r\n--XX--";
        assert_eq!(parse(body), Ok(pairs(&[("a", "x\r\n--XX\r")])));
        assert_eq!(parse(b"--XX--"), Ok(Vec::new()));
        assert_eq!(parse(b"\r\n"), Ok(Vec::new()));
    }

    #[test]
    fn header_forms_python_multipart_accepts() {
        let body = b"\r\n\r\n--XX\r\ncontent-DISPOSITION:form-data;name=username\r\nX-Other: y\r\n\r\nx\r\n--XX  \t\r\nContent-Disposition: form-data; name=\"a;b\"; NAME=\"user\\\"n\"\r\n\r\n1\r\n--XX--";
        assert_eq!(
            parse(body),
            Ok(pairs(&[("username", "x"), ("user\"n", "1")]))
        );
        // A later Content-Disposition wins; `name*` is ignored (RFC 7578 §4.2).
        let body = b"--XX\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=username; name*=utf-8''b\r\n\r\nx\r\n--XX--";
        assert_eq!(parse(body), Ok(pairs(&[("username", "x")])));
    }

    #[test]
    fn file_parts_are_not_fields_and_unfinished_parts_are_dropped() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"username\"; filename=\"\"\r\nContent-Type: text/plain\r\n\r\nx\r\n--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\ny\r\n--XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\np";
        assert_eq!(parse(body), Ok(pairs(&[("username", "y")])));
        for cut in 0..body.len() {
            // Never an error for a truncated, otherwise valid body.
            assert!(parse(body.get(..cut).unwrap()).is_ok(), "{cut}");
        }
    }

    #[test]
    fn what_python_multipart_refuses_is_malformed() {
        for bad in [
            &b"preamble\r\n--XX\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XX--"[..],
            b"--XX\nContent-Disposition: form-data; name=a\n\nx\n--XX--",
            b"--XX \r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XX--",
            b"--XY\r\n",
            b"--XX-x",
            b"--XX\r\nContent-Disposition : form-data; name=a\r\n\r\nx\r\n--XX--",
            b"--XX\r\n: v\r\n\r\nx\r\n--XX--",
            b"--XX\r\nX: y\r\n folded\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XX--",
            b"--XX\r\nContent-Disposition: form-data; name=a\rx\r\n\r\nx\r\n--XX--",
            b"--XX\r\nContent-Disposition: form-data; name=a\r\n\rx",
            b"--XX\r\nContent-Type: text/plain\r\n\r\nx\r\n--XX--",
            b"--XX\r\nContent-Disposition: form-data; name*=utf-8''a\r\n\r\nx\r\n--XX--",
            b"--XX\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XX \r x",
        ] {
            assert_eq!(
                parse(bad),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn values_and_names_decode_with_the_request_charset_falling_back_to_latin1() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"n\xc3\xa9\"\r\n\r\njos\xc3\xa9\r\n--XX\r\nContent-Disposition: form-data; name=\"l\"\r\n\r\njos\xe9\r\n--XX--";
        assert_eq!(
            fields(body, b"XX", Charset::Utf8),
            Ok(pairs(&[("n\u{e9}", "jos\u{e9}"), ("l", "jos\u{e9}")]))
        );
        assert_eq!(
            fields(body, b"XX", Charset::Latin1),
            Ok(pairs(&[
                ("n\u{c3}\u{a9}", "jos\u{c3}\u{a9}"),
                ("l", "jos\u{e9}")
            ]))
        );
    }

    /// Hostile inputs: random mutations of a valid body never panic.
    #[test]
    fn mutated_bodies_never_panic() {
        let seed = format!(
            "{}{}--XX--\r\n",
            part("username", "x"),
            part("password", "p")
        );
        for b in super::super::mutations(seed.as_bytes(), b"\r\n-X: ;=\"\\\tax", 20_000) {
            let _ = parse(&b);
        }
    }

    /// A megabyte of near-delimiters under a 200-byte boundary: each CR is tried once.
    #[cfg(not(target_arch = "wasm32"))] // no clock on wasm32-unknown-unknown
    #[test]
    fn a_body_of_near_delimiters_scans_in_linear_time() {
        let boundary = vec![b'B'; 200];
        let mut body = b"--".to_vec();
        body.extend_from_slice(&boundary);
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=a\r\n\r\n");
        let mut near = b"\r\n--".to_vec();
        near.extend_from_slice(&boundary[..199]);
        while body.len() < 1 << 20 {
            body.extend_from_slice(&near);
        }
        let started = std::time::Instant::now();
        assert_eq!(fields(&body, &boundary, Charset::Utf8), Ok(Vec::new()));
        assert!(started.elapsed().as_secs() < 5);
    }
}
