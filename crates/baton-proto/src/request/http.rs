//! HTTP/1.x request heads (RFC 9112 §2-§3), parsed with `httparse`.

use std::borrow::Cow;

use super::{MAX_HEADERS, RequestError, RequestLimits, need_more, path::normalize_path};

/// One header field as sent, borrowed from the client's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpHeader<'a> {
    /// Field name, case as sent (names are case-insensitive, RFC 9110 §5.1).
    pub name: &'a str,
    /// Field value without surrounding whitespace; not necessarily UTF-8.
    pub value: &'a [u8],
}

/// A complete HTTP/1.x request head: what a dispatcher may look at, borrowed from the
/// client's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestHead<'a> {
    /// The method, such as `GET` (case-sensitive, RFC 9110 §9.1).
    pub method: &'a str,
    /// The request target as sent: usually origin-form `/path?query`, possibly
    /// absolute-form `http://host/path`, authority-form for CONNECT, or `*` for OPTIONS
    /// (RFC 9112 §3.2).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The host the request is for, without port: the absolute-form target's authority if
    /// there is one, else the Host field (RFC 9112 §3.2.2). As sent, so compare
    /// case-insensitively. `None` when absent or empty.
    pub host: Option<&'a str>,
    /// Every header field, in order.
    pub headers: Vec<HttpHeader<'a>>,
    /// Bytes of the buffer the head occupies, up to and including its empty line.
    pub head_len: usize,
    /// [`Self::raw_path`] normalised as the back-end's server will resolve it; borrowed
    /// from the buffer unless normalising changed it. Private: only the parser, which
    /// refuses what cannot be normalised, makes one.
    path: Cow<'a, str>,
}

impl<'a> HttpRequestHead<'a> {
    /// The path the back-end will serve, which is what rules should match: the target's
    /// path percent-decoded, with slashes merged and dot segments removed, as nginx does
    /// before choosing a location ([`super::normalize_path`]); `/img/../api/x`,
    /// `/%61pi/x` and `//api/x` are all `/api/x`. Without query or fragment; `/` for an
    /// absolute-form target with an empty path; the target itself, as sent, for
    /// authority-form or `*`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The target's path as sent, without query or fragment; `/` for an absolute-form
    /// target with an empty path, and the target itself for authority-form or `*`.
    pub fn raw_path(&self) -> &'a str {
        raw_path_of(self.target)
    }

    /// The query string after `?`, if any, without the `?`.
    pub fn query(&self) -> Option<&'a str> {
        let (_, query) = self.target.split_once('?')?;
        Some(query.split('#').next().unwrap_or(query))
    }

    /// The normalised path's file extension (after the last dot of the last segment),
    /// for rules on file type such as "images to the image servers".
    pub fn file_extension(&self) -> Option<&str> {
        let last_segment = self.path().rsplit('/').next()?;
        let (stem, ext) = last_segment.rsplit_once('.')?;
        (!stem.is_empty() && !ext.is_empty()).then_some(ext)
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every cookie in the Cookie fields, as `(name, value)` pairs in order
    /// (RFC 6265 §5.4: `name=value` pairs separated by `; `). Fields that are not UTF-8
    /// and pairs without `=` are skipped; values keep any quotes.
    pub fn cookies(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let name = name.trim();
                (!name.is_empty()).then_some((name, value.trim()))
            })
    }

    /// The value of the first cookie named `name` (case-sensitive, RFC 6265 §5.4).
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.cookies().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Parses an HTTP/1.x request head from the start of `buf`, everything the client has
/// sent so far. `Ok(None)`: incomplete, read more. See [`super::parse_request`] for the
/// outcomes.
pub fn parse_http_head<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
) -> Result<Option<HttpRequestHead<'a>>, RequestError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS);
    let mut request = httparse::Request::new(&mut storage[..max_headers]);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return need_more(buf, limits),
        // RFC 6585 §5: too many fields is the same complaint as too many bytes.
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::TooLarge {
                limit: limits.max_head_len,
            });
        }
        Err(e) => return Err(RequestError::MalformedHttp(e)),
    };
    if head_len > limits.max_head_len {
        return Err(RequestError::TooLarge {
            limit: limits.max_head_len,
        });
    }
    // A complete parse always fills these three.
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(RequestError::MalformedHttp(httparse::Error::Version));
    };
    let headers: Vec<HttpHeader<'a>> = request
        .headers
        .iter()
        .map(|h| HttpHeader {
            name: h.name,
            value: h.value,
        })
        .collect();
    let host = match absolute_form_authority(target) {
        Some((authority, _)) => host_of(authority)?,
        None => host_field(&headers)?,
    };
    let raw_path = raw_path_of(target);
    // Origin-form and absolute-form paths start with `/` and are what servers resolve;
    // `*` (OPTIONS) and authority-form (CONNECT) name no file and are kept as sent.
    let path = if raw_path.starts_with('/') {
        normalize_path(raw_path).map_err(RequestError::InvalidPath)?
    } else {
        Cow::Borrowed(raw_path)
    };
    Ok(Some(HttpRequestHead {
        method,
        target,
        minor_version,
        host,
        headers,
        head_len,
        path,
    }))
}

/// The path of `target`, as sent, without query or fragment; `/` for an absolute-form
/// target with an empty path, and the target itself for authority-form or `*`.
fn raw_path_of(target: &str) -> &str {
    let Some((_, rest)) = absolute_form_authority(target) else {
        return target.split(['?', '#']).next().unwrap_or(target);
    };
    match rest.split(['?', '#']).next() {
        // RFC 9112 §3.2.1: an empty path in absolute-form means "/".
        Some("") | None => "/",
        Some(path) => path,
    }
}

/// The Host field's host, refusing a repeated or non-UTF-8 one (RFC 9112 §3.2: "A server
/// MUST respond with a 400 ... to any HTTP/1.1 request message that ... contains more
/// than one Host header field line or a Host header field with an invalid field value").
fn host_field<'a>(headers: &[HttpHeader<'a>]) -> Result<Option<&'a str>, RequestError> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let Some(field) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(RequestError::InvalidHost);
    }
    let value = std::str::from_utf8(field.value).map_err(|_| RequestError::InvalidHost)?;
    host_of(value)
}

/// The host part of an authority (`host[:port]`, `[v6]:port`, optional `user@`), or
/// `None` if empty.
fn host_of(authority: &str) -> Result<Option<&str>, RequestError> {
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // An IP literal: keep the brackets, drop the port after them (RFC 3986 §3.2.2).
        let end = rest.find(']').ok_or(RequestError::InvalidHost)?;
        &authority[..end + 2]
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    if host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(RequestError::InvalidHost);
    }
    Ok((!host.is_empty()).then_some(host))
}

/// For an absolute-form target (`http://authority/path`), the authority and the rest.
fn absolute_form_authority(target: &str) -> Option<(&str, &str)> {
    let scheme_len = target.find("://")?;
    let scheme = &target[..scheme_len];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_len + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// RFC 9110 §5.6.2: `tchar`, the characters a method token is made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PathError;

    const REQUEST: &[u8] = b"GET /img/logo.png?v=3 HTTP/1.1\r\n\
        Host: Shop.Example.com:8080\r\n\
        User-Agent: curl/8.5.0\r\n\
        Accept: */*\r\n\
        Cookie: session=abc123; theme=\"dark\"\r\n\
        Cookie: backend=be2\r\n\
        \r\n";

    fn parse(buf: &[u8]) -> Result<Option<HttpRequestHead<'_>>, RequestError> {
        parse_http_head(buf, &RequestLimits::default())
    }

    #[test]
    fn parses_a_request_head() {
        let head = parse(REQUEST).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/img/logo.png?v=3");
        assert_eq!(head.path(), "/img/logo.png");
        assert_eq!(head.query(), Some("v=3"));
        assert_eq!(head.file_extension(), Some("png"));
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.host, Some("Shop.Example.com"));
        assert_eq!(head.header("user-agent"), Some(&b"curl/8.5.0"[..]));
        assert_eq!(head.headers.len(), 5);
        assert_eq!(
            head.cookies().collect::<Vec<_>>(),
            [
                ("session", "abc123"),
                ("theme", "\"dark\""),
                ("backend", "be2")
            ]
        );
        assert_eq!(head.cookie("backend"), Some("be2"));
        assert_eq!(head.cookie("Backend"), None);
        assert_eq!(head.head_len, REQUEST.len());
    }

    #[test]
    fn every_split_needs_more_until_the_last_byte() {
        for split in 0..REQUEST.len() {
            assert_eq!(parse(&REQUEST[..split]), Ok(None), "{split}");
            // The rest arriving as a second segment completes it.
            let mut buffered = REQUEST[..split].to_vec();
            buffered.extend_from_slice(&REQUEST[split..]);
            assert_eq!(parse(&buffered).unwrap().unwrap().head_len, REQUEST.len());
        }
    }

    #[test]
    fn a_body_or_pipelined_request_after_the_head_is_left_alone() {
        let mut buf = REQUEST.to_vec();
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let head = parse(&buf).unwrap().unwrap();
        assert_eq!(head.head_len, REQUEST.len());
    }

    #[test]
    fn targets_in_every_form() {
        let head = |buf: &'static [u8]| parse(buf).unwrap().unwrap();
        let absolute = head(b"GET http://www.example.org:81?q#f HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(absolute.host, Some("www.example.org"));
        assert_eq!(absolute.path(), "/");
        assert_eq!(absolute.query(), Some("q"));
        let absolute = head(b"GET HTTPS://u@h.example/a/b.tar.gz HTTP/1.1\r\n\r\n");
        assert_eq!(absolute.host, Some("h.example"));
        assert_eq!(absolute.path(), "/a/b.tar.gz");
        assert_eq!(absolute.file_extension(), Some("gz"));
        let connect = head(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
        assert_eq!(connect.host, Some("a.example"));
        assert_eq!(connect.path(), "a.example:443");
        let options = head(b"OPTIONS * HTTP/1.0\r\n\r\n");
        assert_eq!((options.path(), options.host), ("*", None));
        assert_eq!(options.minor_version, 0);
        let v6 = head(b"GET /.hidden HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n");
        assert_eq!(v6.host, Some("[2001:db8::1]"));
        assert_eq!(v6.file_extension(), None);
        let empty_host = head(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(empty_host.host, None);
    }

    #[test]
    fn the_path_is_the_one_the_server_resolves() {
        let head = |buf: &'static [u8]| parse(buf).unwrap().unwrap();
        let dotted = head(b"GET /img/../api/status.json?x=/../ HTTP/1.1\r\n\r\n");
        assert_eq!(dotted.path(), "/api/status.json");
        assert_eq!(dotted.raw_path(), "/img/../api/status.json");
        assert_eq!(dotted.query(), Some("x=/../"));
        assert_eq!(dotted.file_extension(), Some("json"));
        assert_eq!(head(b"GET /%61pi/x HTTP/1.1\r\n\r\n").path(), "/api/x");
        assert_eq!(head(b"GET //api/x#/.. HTTP/1.1\r\n\r\n").path(), "/api/x");
        // The extension is the normalised path's: `logo.svg/..` is the directory.
        assert_eq!(
            head(b"GET /logo.svg/.. HTTP/1.1\r\n\r\n").file_extension(),
            None
        );
        assert_eq!(
            head(b"GET /a/logo%2Esvg HTTP/1.1\r\n\r\n").file_extension(),
            Some("svg")
        );
        let absolute = head(b"GET http://h.example//a/./b/%2E%2E/c HTTP/1.1\r\n\r\n");
        assert_eq!(
            (absolute.path(), absolute.raw_path()),
            ("/a/c", "//a/./b/%2E%2E/c")
        );
        // `*` and authority-form name no file: kept as sent.
        assert_eq!(head(b"OPTIONS * HTTP/1.1\r\n\r\n").path(), "*");
    }

    #[test]
    fn paths_no_server_would_resolve_are_refused() {
        for (buf, error) in [
            (
                &b"GET /../etc/passwd HTTP/1.1\r\n\r\n"[..],
                PathError::AboveRoot,
            ),
            (
                b"GET /a/%2e%2e/%2E%2E/b HTTP/1.1\r\n\r\n",
                PathError::AboveRoot,
            ),
            (
                b"GET http://h.example/.. HTTP/1.1\r\n\r\n",
                PathError::AboveRoot,
            ),
            (b"GET /%zz HTTP/1.1\r\n\r\n", PathError::InvalidEscape),
            (b"GET /%4 HTTP/1.1\r\n\r\n", PathError::InvalidEscape),
            (b"GET /%4?q HTTP/1.1\r\n\r\n", PathError::InvalidEscape),
            (b"GET /a%00.png HTTP/1.1\r\n\r\n", PathError::Nul),
        ] {
            let error = RequestError::InvalidPath(error);
            assert_eq!(parse(buf), Err(error), "{buf:?}");
            assert_eq!(error.http_status(), Some(400));
        }
        // The query is not the path's business.
        assert!(parse(b"GET /a?%zz=/../.. HTTP/1.1\r\n\r\n").is_ok());
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        let head = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.host, Some("a"));
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ] {
            assert_eq!(parse(buf), Err(RequestError::InvalidHost), "{buf:?}");
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        for buf in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET\x00/ HTTP/1.1\r\n\r\n",
            b"hello world\r\n\r\n",
        ] {
            assert!(
                matches!(parse(buf), Err(RequestError::MalformedHttp(_))),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn oversize_heads_are_too_large() {
        let limits = RequestLimits {
            max_head_len: 1024,
            max_headers: 100,
        };
        let mut big = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(1100, b'a');
        // Incomplete and already at the limit.
        assert_eq!(
            parse_http_head(&big[..1024], &limits),
            Err(RequestError::TooLarge { limit: 1024 })
        );
        assert_eq!(parse_http_head(&big[..1023], &limits), Ok(None));
        // Complete, but longer than the limit.
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_http_head(&big, &limits),
            Err(RequestError::TooLarge { limit: 1024 })
        );
        // Exactly at the limit is fine.
        let mut exact = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        exact.resize(1020, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_http_head(&exact, &limits).unwrap().unwrap().head_len,
            1024
        );
        // Too many fields.
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(101));
        assert_eq!(
            parse_http_head(many.as_bytes(), &limits),
            Err(RequestError::TooLarge { limit: 1024 })
        );
    }
}
