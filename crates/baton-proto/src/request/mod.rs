//! Request completion: has the client sent enough for the dispatcher to decide?
//!
//! The front-end acknowledges and buffers a client's first bytes (docs/design.md,
//! "Packet walk", step 2) and after each new segment calls [`parse_request`] on
//! everything buffered so far. A request may arrive split anywhere, across any number of
//! segments, so the parsers are restartable by construction: they look at the whole
//! accumulated buffer every time and keep no state between calls. The outcomes:
//!
//! | result | meaning | what the front-end does |
//! |---|---|---|
//! | `Ok(None)` | not complete yet | keep acknowledging and buffering |
//! | `Ok(Some(ClientRequest::Http(..)))` | an HTTP/1.x request head (RFC 9112 §2-§3) | dispatch on method, path, Host, headers, cookies |
//! | `Ok(Some(ClientRequest::Tls(..)))` | a TLS ClientHello (RFC 8446 §4.1.2) | dispatch on its SNI host name (RFC 6066 §3) |
//! | `Err(RequestError::TooLarge { .. })` | the head exceeds [`RequestLimits::max_head_len`] | answer 431 and close ([`RequestError::http_status`]) |
//! | `Err(RequestError::Garbage)` | neither HTTP nor TLS | answer 400, or reset |
//! | `Err(RequestError::MalformedHttp(..))` / `InvalidHost` | HTTP, but broken | answer 400 and close |
//! | `Err(RequestError::InvalidPath(..))` | HTTP whose path cannot be normalised ([`normalize_path`]) | answer 400 and close, as nginx would |
//! | `Err(RequestError::MalformedTls(..))` | TLS, but broken | reset (an HTTP answer means nothing to a TLS client) |
//!
//! Once the buffer holds [`RequestLimits::max_head_len`] bytes the answer is never
//! `Ok(None)`, so the front-end never needs to buffer more than that.
//!
//! Only the head matters: bytes after it (a body, a pipelined request, TLS data after the
//! ClientHello) are ignored here and replayed to the back-end with the rest.

mod http;
mod path;
mod tls;

pub use http::{HttpHeader, HttpRequestHead, parse_http_head};
pub use path::{PathError, normalize_path};
pub use tls::{TlsClientHello, parse_client_hello};

/// The default [`RequestLimits::max_head_len`]: 16 KiB, twice nginx's default
/// `large_client_header_buffers` single buffer and the same as Baton's lab server.
pub const DEFAULT_MAX_HEAD_LEN: usize = 16 * 1024;

/// The most header fields [`parse_http_head`] can look at; more is "too large".
pub const MAX_HEADERS: usize = 128;

/// Bounds on what a client may send before the dispatcher decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request head, in bytes: an HTTP request line and header fields with their
    /// terminating empty line, or the TLS records that carry a ClientHello.
    pub max_head_len: usize,
    /// Most HTTP header fields, at most [`MAX_HEADERS`].
    pub max_headers: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_head_len: DEFAULT_MAX_HEAD_LEN,
            max_headers: 100,
        }
    }
}

/// A complete request head, enough for the dispatcher to choose a back-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest<'a> {
    /// A plaintext HTTP/1.x request.
    Http(HttpRequestHead<'a>),
    /// A TLS connection's ClientHello.
    Tls(TlsClientHello<'a>),
}

impl ClientRequest<'_> {
    /// The host name the client asked for: the HTTP Host (or absolute-form authority,
    /// without port), or the TLS SNI. As sent, so compare case-insensitively.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Http(head) => head.host,
            Self::Tls(hello) => hello.server_name.as_deref(),
        }
    }

    /// Bytes of the buffer the head occupies.
    pub fn head_len(&self) -> usize {
        match self {
            Self::Http(head) => head.head_len,
            Self::Tls(hello) => hello.head_len,
        }
    }
}

/// Why a client's first bytes cannot be dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head is longer than the limit, or has more header fields than allowed.
    #[error("request head exceeds {limit} bytes or the header field limit")]
    TooLarge {
        /// The byte limit in force.
        limit: usize,
    },
    /// The first byte starts neither an HTTP request line nor a TLS handshake record.
    #[error("neither an HTTP request nor a TLS ClientHello")]
    Garbage,
    /// Starts like HTTP but is not a valid HTTP/1.x request head.
    #[error("malformed HTTP request head: {0}")]
    MalformedHttp(httparse::Error),
    /// More than one Host field, or one that is not a valid authority (RFC 9112 §3.2).
    #[error("invalid or repeated Host header field")]
    InvalidHost,
    /// An HTTP request whose path cannot be normalised the way the back-end's server
    /// would: an invalid or NUL escape, or a `..` above the root. nginx answers these
    /// 400 itself; refusing them here means no rule is asked about a path no server
    /// would serve.
    #[error("invalid request path: {0}")]
    InvalidPath(PathError),
    /// Starts like a TLS handshake record but is not a valid ClientHello.
    #[error("malformed TLS ClientHello: {0}")]
    MalformedTls(&'static str),
}

impl RequestError {
    /// The HTTP status to answer with, or `None` when the client speaks TLS and the
    /// connection should just be reset.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            // RFC 6585 §5: Request Header Fields Too Large.
            Self::TooLarge { .. } => Some(431),
            Self::Garbage | Self::MalformedHttp(_) | Self::InvalidHost | Self::InvalidPath(_) => {
                Some(400)
            }
            Self::MalformedTls(_) => None,
        }
    }
}

/// Decides whether `buf`, everything the client has sent so far, holds a complete
/// request head. See the module documentation for the outcomes.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
) -> Result<Option<ClientRequest<'a>>, RequestError> {
    match buf.first() {
        None => Ok(None),
        // RFC 8446 §5.1: every TLS connection opens with a handshake record, type 22.
        Some(&tls::CONTENT_TYPE_HANDSHAKE) => {
            Ok(parse_client_hello(buf, limits)?.map(ClientRequest::Tls))
        }
        // RFC 9112 §2.2: a request line starts with a method token; a server should
        // ignore at least one empty line before it.
        Some(&b) if http::is_tchar(b) || b == b'\r' || b == b'\n' => {
            Ok(parse_http_head(buf, limits)?.map(ClientRequest::Http))
        }
        Some(_) => Err(RequestError::Garbage),
    }
}

/// `Ok(None)` while the buffer is under the limit, [`RequestError::TooLarge`] once it is
/// not: a head that is still incomplete at the limit can only end past it.
fn need_more<T>(buf: &[u8], limits: &RequestLimits) -> Result<Option<T>, RequestError> {
    if buf.len() >= limits.max_head_len {
        Err(RequestError::TooLarge {
            limit: limits.max_head_len,
        })
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENSSL_HELLO: &[u8] = include_bytes!("testdata/openssl_client_hello.bin");

    #[test]
    fn recognises_http() {
        let buf = b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\n\r\nbody";
        let request = parse_request(buf, &RequestLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(request.host(), Some("shop.example.com"));
        assert_eq!(request.head_len(), buf.len() - 4);
        assert!(matches!(request, ClientRequest::Http(_)));
    }

    #[test]
    fn recognises_tls() {
        let request = parse_request(OPENSSL_HELLO, &RequestLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(request.host(), Some("shop.example.com"));
        assert_eq!(request.head_len(), OPENSSL_HELLO.len());
        assert!(matches!(request, ClientRequest::Tls(_)));
    }

    #[test]
    fn empty_input_needs_more() {
        assert_eq!(parse_request(b"", &RequestLimits::default()), Ok(None));
    }

    #[test]
    fn garbage_is_refused_at_the_first_byte() {
        for buf in [
            &b"\x00\x01\x02"[..],
            b"\xff",
            b" GET / HTTP/1.1",
            b"\x80\x2e\x01",
        ] {
            let err = parse_request(buf, &RequestLimits::default()).unwrap_err();
            assert_eq!(err, RequestError::Garbage, "{buf:?}");
            assert_eq!(err.http_status(), Some(400));
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(RequestError::TooLarge { limit: 1 }.http_status(), Some(431));
        assert_eq!(RequestError::MalformedTls("x").http_status(), None);
        assert_eq!(RequestError::InvalidHost.http_status(), Some(400));
        assert_eq!(
            RequestError::InvalidPath(PathError::AboveRoot).http_status(),
            Some(400)
        );
    }

    #[test]
    fn never_needs_more_at_the_limit() {
        let limits = RequestLimits {
            max_head_len: 64,
            max_headers: 10,
        };
        let mut inputs: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nX: "
                .iter()
                .chain(&[b'a'; 100])
                .copied()
                .collect(),
            b"\r\n".repeat(40),
            OPENSSL_HELLO.to_vec(),
        ];
        // A ClientHello whose record header promises more than the limit is refused
        // before it arrives.
        inputs.push(OPENSSL_HELLO[..12].to_vec());
        for input in &inputs {
            for len in limits.max_head_len..=input.len() {
                assert_eq!(
                    parse_request(&input[..len], &limits),
                    Err(RequestError::TooLarge { limit: 64 }),
                    "{len}"
                );
            }
        }
        assert_eq!(
            parse_request(&OPENSSL_HELLO[..12], &limits),
            Err(RequestError::TooLarge { limit: 64 })
        );
    }
}
