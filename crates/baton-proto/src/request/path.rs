//! Request paths as the back-end's web server resolves them before choosing what to
//! serve, so that rules match what will be served rather than what was sent.
//!
//! nginx, the lab's and most back-ends' server, does it in `ngx_http_parse_complex_uri`
//! (`src/http/ngx_http_parse.c`), called with `merge_slashes` on (its default):
//!
//! 1. each `%XX` is decoded as it is read and the decoded byte goes through the same
//!    state machine as a literal one, so `%2F` is a slash and `%2E` a dot (both ends of
//!    the `sw_quoted_second` state); a decoded `%`, `#` or `?` is kept as a plain byte,
//!    and nothing is decoded twice (`%2561` is `%61`, not `a`);
//! 2. a `/` right after a `/` is dropped (`sw_slash`, "merge_slashes");
//! 3. `.` segments are dropped and `..` segments remove the segment before them as they
//!    complete (`sw_dot`, `sw_dot_dot`), which is RFC 3986 §5.2.4 on the merged path;
//! 4. 400 (`NGX_HTTP_PARSE_INVALID_REQUEST`) for a `%` without two hex digits after
//!    it, a decoded NUL, and a `..` that would climb above the root.
//!
//! Because every step only looks at bytes the earlier ones produced, the streaming
//! machine gives the same result as the three passes here: decode, then merge slashes
//! and remove dot segments. The query and fragment are cut off before (nginx stops at a
//! literal `?` or `#`; [`super::HttpRequestHead::path`] does the same).
//!
//! One thing nginx does not do: rules are UTF-8 strings, so a decoded byte sequence that
//! is not UTF-8 is written back as `%XX` (upper case, RFC 3986 §6.2.2.1). Those bytes can
//! match no rule either way, and `/` and `.` are never among them, so the segments and
//! every rule that can match are unchanged.

use std::{borrow::Cow, fmt::Write as _};

/// Why a request path cannot be normalised; the front-end answers 400, as nginx does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (RFC 9112 §3.2.1: origin-form is
    /// `absolute-path`).
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hexadecimal digits (RFC 3986 §2.1), as in `%zz` or a
    /// truncated `%4`.
    #[error("invalid percent-encoding")]
    InvalidEscape,
    /// A NUL byte, raw or encoded as `%00`: no file name holds one, and C servers would
    /// cut the path there.
    #[error("NUL in the path")]
    Nul,
    /// A `..` segment with nothing left to remove: the path climbs above the root.
    #[error("a '..' segment climbs above the root")]
    AboveRoot,
}

/// `raw`, a request path without query or fragment, as nginx resolves it: decoded,
/// slashes merged, dot segments removed (see the module documentation). Borrowed when
/// `raw` is already in that form, as nearly every real path is, so the common case
/// copies nothing.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_decode(bytes)?;
    let resolved = resolve_segments(&decoded)?;
    Ok(Cow::Owned(into_text(resolved)))
}

/// Whether normalising `path` (which starts with `/`) would give it back unchanged: no
/// escape, no NUL, no empty segment but the last (a trailing slash), no `.` or `..`.
fn is_normal(path: &[u8]) -> bool {
    if path.iter().any(|&b| b == b'%' || b == 0) {
        return false;
    }
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return false;
        }
    }
    true
}

/// Decodes every `%XX` once (RFC 3986 §2.1), refusing a bad escape and any NUL.
fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = if raw[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::InvalidEscape);
            };
            i += 3;
            (hi << 4) | lo
        } else {
            i += 1;
            raw[i - 1]
        };
        if byte == 0 {
            return Err(PathError::Nul);
        }
        decoded.push(byte);
    }
    Ok(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Merges slashes and removes dot segments (RFC 3986 §5.2.4) from a decoded path that
/// starts with `/`. The output always ends with `/` between segments, so a `..` cuts
/// back to the slash before the last segment, and a path ending in `/`, `.` or `..`
/// keeps its trailing slash, as in RFC 3986's `/a/b/..` giving `/a/`.
fn resolve_segments(decoded: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut resolved = Vec::with_capacity(decoded.len());
    resolved.push(b'/');
    let mut segments = decoded[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            // An empty segment is a merged slash, or the trailing slash already there.
            b"" | b"." => {}
            b".." => {
                if resolved.len() == 1 {
                    return Err(PathError::AboveRoot);
                }
                resolved.pop();
                let parent = resolved.iter().rposition(|&b| b == b'/').unwrap_or(0);
                resolved.truncate(parent + 1);
            }
            name => {
                resolved.extend_from_slice(name);
                if segments.peek().is_some() {
                    resolved.push(b'/');
                }
            }
        }
    }
    Ok(resolved)
}

/// The resolved bytes as text, with any sequence that is not UTF-8 written as `%XX`.
fn into_text(resolved: Vec<u8>) -> String {
    match String::from_utf8(resolved) {
        Ok(text) => text,
        Err(error) => {
            let bytes = error.into_bytes();
            let mut text = String::with_capacity(bytes.len() * 3);
            for chunk in bytes.utf8_chunks() {
                text.push_str(chunk.valid());
                for byte in chunk.invalid() {
                    // Writing to a String cannot fail.
                    let _ = write!(text, "%{byte:02X}");
                }
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(raw: &str) -> Result<String, PathError> {
        normalize_path(raw).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for raw in [
            "/",
            "/a",
            "/a/",
            "/api/status.json",
            "/a.b/..c/...",
            "/.hidden/x",
            "/é/ü",
        ] {
            let normalized = normalize_path(raw).unwrap();
            assert!(matches!(normalized, Cow::Borrowed(_)), "{raw}");
            assert_eq!(normalized, raw);
        }
    }

    #[test]
    fn the_issue_examples() {
        assert_eq!(
            normal("/img/../api/status.json").unwrap(),
            "/api/status.json"
        );
        assert_eq!(normal("/%61pi/status.json").unwrap(), "/api/status.json");
        assert_eq!(normal("//api/status.json").unwrap(), "/api/status.json");
        assert_eq!(normal("/../etc/passwd"), Err(PathError::AboveRoot));
    }

    #[test]
    fn dot_segments_as_rfc_3986_section_5_2_4() {
        // RFC 3986 §5.2.4's own examples, and its §5.4 ones that stay below the root.
        assert_eq!(normal("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(normal("/b/c/./g").unwrap(), "/b/c/g");
        assert_eq!(normal("/b/c/.").unwrap(), "/b/c/");
        assert_eq!(normal("/b/c/./").unwrap(), "/b/c/");
        assert_eq!(normal("/b/c/..").unwrap(), "/b/");
        assert_eq!(normal("/b/c/../").unwrap(), "/b/");
        assert_eq!(normal("/b/c/../g").unwrap(), "/b/g");
        assert_eq!(normal("/b/c/../..").unwrap(), "/");
        assert_eq!(normal("/b/c/../../g").unwrap(), "/g");
        assert_eq!(normal("/b/c/g.").unwrap(), "/b/c/g.");
        assert_eq!(normal("/b/c/..g").unwrap(), "/b/c/..g");
        assert_eq!(normal("/b/c/g;x=1/../y").unwrap(), "/b/c/y");
        assert_eq!(normal("/.").unwrap(), "/");
        assert_eq!(normal("/./").unwrap(), "/");
        assert_eq!(normal("/a/..").unwrap(), "/");
    }

    #[test]
    fn slashes_are_merged_before_dot_segments() {
        // nginx drops the second slash as it reads it, so `..` sees no empty segment.
        assert_eq!(normal("/a//..").unwrap(), "/");
        assert_eq!(normal("//").unwrap(), "/");
        assert_eq!(normal("/a//b///").unwrap(), "/a/b/");
        assert_eq!(normal("/a/.//b").unwrap(), "/a/b");
    }

    #[test]
    fn escapes_are_decoded_once_and_then_take_part() {
        assert_eq!(normal("/a%2Fb").unwrap(), "/a/b");
        assert_eq!(normal("/a%2f%2fb").unwrap(), "/a/b");
        assert_eq!(normal("/img/%2e%2E/api/x").unwrap(), "/api/x");
        assert_eq!(normal("/img%2F..%2Fapi/x").unwrap(), "/api/x");
        assert_eq!(normal("/a/.%2e").unwrap(), "/");
        // Once: a decoded `%` is a plain byte, as nginx keeps it.
        assert_eq!(normal("/%2561pi/").unwrap(), "/%61pi/");
        assert_eq!(normal("/a%3Fb%23c").unwrap(), "/a?b#c");
        assert_eq!(normal("/a+b%20c").unwrap(), "/a+b c");
        assert_eq!(normal("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn bytes_that_are_not_utf8_stay_encoded() {
        assert_eq!(normal("/a/%ff/").unwrap(), "/a/%FF/");
        assert_eq!(normal("//%C3/../x%E9").unwrap(), "/x%E9");
        assert_eq!(normal("/%C3%A9%C3").unwrap(), "/é%C3");
    }

    #[test]
    fn unresolvable_paths_are_refused() {
        for (raw, error) in [
            ("", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("%2Fa", PathError::NotAbsolute),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/etc/passwd", PathError::AboveRoot),
            ("/a/..%2F..%2Fetc", PathError::AboveRoot),
            ("/./../", PathError::AboveRoot),
            ("/%zz", PathError::InvalidEscape),
            ("/%4", PathError::InvalidEscape),
            ("/%", PathError::InvalidEscape),
            ("/%4g/", PathError::InvalidEscape),
            ("/%%41", PathError::InvalidEscape),
            ("/a%00b", PathError::Nul),
            ("/a\0b", PathError::Nul),
        ] {
            assert_eq!(normal(raw), Err(error), "{raw:?}");
        }
    }
}
