//! [`RequestView`]: what the rules look at, borrowed from the parsed request.

use std::net::{IpAddr, SocketAddr};

use baton_proto::{
    frontend::FlowKey,
    request::{ClientRequest, HttpHeader},
};

/// The parts of a request the matchers and hash keys read, computed once per decision
/// and borrowed from the parsed request (the client's buffer, or the normalised path the
/// parser made): building one never allocates.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    /// HTTP Host (or absolute-form authority) or TLS SNI, without port or trailing dot.
    pub host: Option<&'a str>,
    /// The TLS SNI host name; `None` for plaintext HTTP.
    pub sni: Option<&'a str>,
    /// The HTTP method; `None` for TLS.
    pub method: Option<&'a str>,
    /// The path without query, normalised as the back-end's server resolves it
    /// (percent-decoded, slashes merged, dot segments removed: see
    /// [`HttpRequestHead::path`](baton_proto::request::HttpRequestHead::path)), so rules
    /// and hash keys see the file that will be served; `None` for TLS.
    pub path: Option<&'a str>,
    /// The query string without `?`, as sent.
    pub query: Option<&'a str>,
    /// The normalised path's file extension, without the dot.
    pub extension: Option<&'a str>,
    /// Every HTTP header field in order; empty for TLS.
    pub headers: &'a [HttpHeader<'a>],
    /// The client's address, the hash key of last resort.
    pub client: Option<IpAddr>,
    /// The virtual service (VIP and port) the client connected to, for rules on it.
    pub service: Option<SocketAddr>,
}

impl<'a> RequestView<'a> {
    /// The view of a parsed request; `flow` supplies the client address.
    pub fn new(request: &'a ClientRequest<'a>, flow: Option<&FlowKey>) -> Self {
        let client = flow.map(|f| f.client.ip());
        let service = flow.map(|f| f.service);
        match request {
            ClientRequest::Http(head) => Self {
                host: head.host.map(normalize_host),
                sni: None,
                method: Some(head.method),
                path: Some(head.path()),
                query: head.query(),
                extension: head.file_extension(),
                headers: &head.headers,
                client,
                service,
            },
            ClientRequest::Tls(hello) => {
                let sni = hello.server_name.as_deref().map(normalize_host);
                Self {
                    host: sni,
                    sni,
                    client,
                    service,
                    ..Self::default()
                }
            }
        }
    }

    /// Values of every header field named `name` (ASCII case-insensitive, RFC 9110 §5.1).
    #[inline]
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The value of the first cookie named `name` (case-sensitive, RFC 6265 §5.4),
    /// across every Cookie field; values keep any quotes.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.cookies().find_map(|(n, v)| (n == name).then_some(v))
    }

    /// Every cookie as `(name, value)`, in order, across every Cookie field (RFC 6265
    /// §5.4: `name=value` pairs separated by `;`). Fields that are not UTF-8 and pairs
    /// without `=` are skipped.
    pub fn cookies(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.header_values("cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (n, v) = pair.split_once('=')?;
                Some((n.trim(), v.trim()))
            })
    }

    /// The value of the first query parameter named `name`, as sent (no
    /// percent-decoding: rules name parameters the way clients spell them); `Some("")`
    /// for a parameter without `=`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (n == name).then_some(v)
        })
    }
}

/// `Example.COM.` and `Example.COM` name the same host; case is handled by the
/// comparisons, the trailing dot of a fully qualified name here.
fn normalize_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use baton_proto::request::{RequestLimits, parse_request};

    use super::*;

    #[test]
    fn reads_an_http_head() {
        let raw = b"GET /img/a.PNG?x=1&flag&y=2 HTTP/1.1\r\nHost: Shop.Example.\r\n\
                    Cookie: a=1; sid=ABC.be2\r\nCookie: b = 3\r\nX-Tag: one\r\nx-tag: two\r\n\r\n";
        let request = parse_request(raw, &RequestLimits::default())
            .unwrap()
            .unwrap();
        let view = RequestView::new(&request, None);
        assert_eq!(view.host, Some("Shop.Example"));
        assert_eq!(view.sni, None);
        assert_eq!(view.method, Some("GET"));
        assert_eq!(view.path, Some("/img/a.PNG"));
        assert_eq!(view.extension, Some("PNG"));
        assert_eq!(view.query_param("x"), Some("1"));
        assert_eq!(view.query_param("flag"), Some(""));
        assert_eq!(view.query_param("y"), Some("2"));
        assert_eq!(view.query_param("z"), None);
        assert_eq!(view.cookie("sid"), Some("ABC.be2"));
        assert_eq!(view.cookie("b"), Some("3"));
        assert_eq!(view.cookie("c"), None);
        let tags: Vec<_> = view.header_values("X-TAG").collect();
        assert_eq!(tags, [&b"one"[..], b"two"]);
    }

    #[test]
    fn path_and_extension_are_the_normalised_paths() {
        let raw = b"GET /img/..//a%2Fb/./logo%2esvg?p=/../x HTTP/1.1\r\n\r\n";
        let request = parse_request(raw, &RequestLimits::default())
            .unwrap()
            .unwrap();
        let view = RequestView::new(&request, None);
        assert_eq!(view.path, Some("/a/b/logo.svg"));
        assert_eq!(view.extension, Some("svg"));
        assert_eq!(view.query, Some("p=/../x"));
    }
}
