//! TLS ClientHello (RFC 8446 §4.1.2) and its server_name extension (RFC 6066 §3).
//!
//! A ClientHello is a handshake message inside one or more TLS records:
//!
//! ```text
//! record:     type(1)=22 legacy_version(2)=3.x length(2)<=2^14 fragment(length)
//! handshake:  msg_type(1)=1 length(3) body(length)           (may span several records)
//! body:       legacy_version(2) random(32) legacy_session_id<0..32>
//!             cipher_suites<2..2^16-2> legacy_compression_methods<1..2^8-1>
//!             extensions<8..2^16-1>                           (absent in old clients)
//! extension:  type(2) data<0..2^16-1>
//! server_name (type 0):  ServerNameList<1..2^16-1> of name_type(1) HostName<1..2^16-1>
//! ```
//!
//! Only what a dispatcher routes on is extracted: the SNI host name and the ALPN
//! protocols (RFC 7301 §3.1). Nothing is decrypted or answered: the back-end's TLS
//! server completes the handshake after the handoff.

use std::borrow::Cow;

use super::{RequestError, RequestLimits, need_more};

/// TLS record content type "handshake" (RFC 8446 §5.1).
pub(super) const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// Record header: content type, legacy record version, length.
const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 §5.1: a record's fragment is at most 2^14 bytes.
const MAX_FRAGMENT_LEN: usize = 1 << 14;
/// Handshake header: message type, 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Handshake message type client_hello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension type server_name (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// Extension type application_layer_protocol_negotiation (RFC 7301 §3.1).
const EXT_ALPN: u16 = 16;
/// ServerName name_type host_name (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the dispatcher may route a TLS connection on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientHello<'a> {
    /// The SNI host name (RFC 6066 §3), as sent: ASCII, compare case-insensitively.
    /// `None` when the client sent no server_name extension (an IP-address URL, say).
    /// Borrowed from the buffer unless the ClientHello spans several TLS records.
    pub server_name: Option<Cow<'a, str>>,
    /// The ALPN protocol names offered, in the client's order (RFC 7301 §3.1).
    pub alpn_protocols: Vec<Cow<'a, [u8]>>,
    /// The ClientHello's legacy_version field (0x0303 from TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// Bytes of the buffer taken by the records that carry the ClientHello.
    pub head_len: usize,
}

/// Parses a TLS ClientHello from the start of `buf`, everything the client has sent so
/// far, following it across TCP segments (`Ok(None)` until it is complete) and across
/// TLS records. See [`super::parse_request`] for the outcomes.
pub fn parse_client_hello<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
) -> Result<Option<TlsClientHello<'a>>, RequestError> {
    let too_large = RequestError::TooLarge {
        limit: limits.max_head_len,
    };
    // The handshake message's fragments, one per record, borrowed from `buf`.
    let mut fragments: Vec<&'a [u8]> = Vec::new();
    let mut gathered = 0;
    let mut at = 0;
    let message_len = loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER_LEN) else {
            return need_more(buf, limits);
        };
        if header[0] != CONTENT_TYPE_HANDSHAKE {
            return Err(if at == 0 {
                RequestError::Garbage
            } else {
                // RFC 8446 §5.1: handshake messages must not be interleaved with other
                // record types.
                RequestError::MalformedTls("another record type inside the ClientHello")
            });
        }
        if header[1] != 3 {
            return Err(RequestError::MalformedTls("record version is not 3.x"));
        }
        let fragment_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if fragment_len == 0 || fragment_len > MAX_FRAGMENT_LEN {
            // RFC 8446 §5.1: zero-length handshake fragments are forbidden.
            return Err(RequestError::MalformedTls("record length out of range"));
        }
        let start = at + RECORD_HEADER_LEN;
        let end = start + fragment_len;
        let available = &buf[start..end.min(buf.len())];
        // Look at the handshake header as soon as its 4 bytes are in, so that a wrong
        // message type or an announced length over the limit is refused before the
        // rest arrives.
        if let Some(handshake) = first_bytes::<HANDSHAKE_HEADER_LEN>(&fragments, available) {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(RequestError::MalformedTls(
                    "first handshake message is not a ClientHello",
                ));
            }
            let message_len = HANDSHAKE_HEADER_LEN
                + (usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]));
            if RECORD_HEADER_LEN + message_len > limits.max_head_len {
                return Err(too_large);
            }
        }
        if available.len() < fragment_len {
            return need_more(buf, limits);
        }
        fragments.push(available);
        gathered += fragment_len;
        at = end;
        if let Some(handshake) = first_bytes::<HANDSHAKE_HEADER_LEN>(&fragments, &[]) {
            let message_len = HANDSHAKE_HEADER_LEN
                + (usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]));
            if gathered >= message_len {
                break message_len;
            }
        }
        if at >= limits.max_head_len {
            return Err(too_large);
        }
    };
    if at > limits.max_head_len {
        return Err(too_large);
    }
    let head_len = at;
    if let [only] = fragments[..] {
        // The common case: one record, so everything borrows from `buf`.
        let body = &only[HANDSHAKE_HEADER_LEN..message_len];
        let fields = parse_body(body)?;
        return Ok(Some(TlsClientHello {
            server_name: fields.server_name.map(Cow::Borrowed),
            alpn_protocols: fields
                .alpn_protocols
                .into_iter()
                .map(Cow::Borrowed)
                .collect(),
            legacy_version: fields.legacy_version,
            head_len,
        }));
    }
    let message = fragments.concat();
    let fields = parse_body(&message[HANDSHAKE_HEADER_LEN..message_len])?;
    Ok(Some(TlsClientHello {
        server_name: fields.server_name.map(|s| Cow::Owned(s.to_owned())),
        alpn_protocols: fields
            .alpn_protocols
            .into_iter()
            .map(|p| Cow::Owned(p.to_vec()))
            .collect(),
        legacy_version: fields.legacy_version,
        head_len,
    }))
}

/// The first `N` bytes of `fragments` followed by `tail`, if there are that many.
fn first_bytes<const N: usize>(fragments: &[&[u8]], tail: &[u8]) -> Option<[u8; N]> {
    let mut out = [0; N];
    let mut filled = 0;
    for &b in fragments.iter().copied().flatten().chain(tail).take(N) {
        out[filled] = b;
        filled += 1;
    }
    (filled == N).then_some(out)
}

/// The ClientHello fields, borrowed from the reassembled message body.
struct Fields<'m> {
    server_name: Option<&'m str>,
    alpn_protocols: Vec<&'m [u8]>,
    legacy_version: u16,
}

/// Parses a ClientHello body (after the handshake header, RFC 8446 §4.1.2).
fn parse_body(body: &[u8]) -> Result<Fields<'_>, RequestError> {
    let mut r = Reader(body);
    let legacy_version = r.u16("legacy_version")?;
    if legacy_version >> 8 != 3 {
        return Err(RequestError::MalformedTls("legacy_version is not 3.x"));
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(RequestError::MalformedTls(
            "legacy_session_id over 32 bytes",
        ));
    }
    let cipher_suites = r.vec16("cipher_suites")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(RequestError::MalformedTls("cipher_suites length"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(RequestError::MalformedTls("no compression methods"));
    }
    let mut fields = Fields {
        server_name: None,
        alpn_protocols: Vec::new(),
        legacy_version,
    };
    if r.0.is_empty() {
        // A TLS 1.2 ClientHello may end here (RFC 5246 §7.4.1.2): no SNI, no ALPN.
        return Ok(fields);
    }
    let mut extensions = Reader(r.vec16("extensions")?);
    if !r.0.is_empty() {
        return Err(RequestError::MalformedTls("bytes after the extensions"));
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        // RFC 8446 §4.2: at most one extension of each type.
        match kind {
            EXT_SERVER_NAME if seen_sni => {
                return Err(RequestError::MalformedTls("repeated server_name extension"));
            }
            EXT_SERVER_NAME => {
                seen_sni = true;
                fields.server_name = parse_server_name(data)?;
            }
            EXT_ALPN if seen_alpn => {
                return Err(RequestError::MalformedTls("repeated ALPN extension"));
            }
            EXT_ALPN => {
                seen_alpn = true;
                fields.alpn_protocols = parse_alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(fields)
}

/// The host_name in a server_name extension's data (RFC 6066 §3).
fn parse_server_name(data: &[u8]) -> Result<Option<&str>, RequestError> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16("server_name_list")?);
    if !ext.0.is_empty() || list.0.is_empty() {
        return Err(RequestError::MalformedTls("server_name_list length"));
    }
    let mut host = None;
    while !list.0.is_empty() {
        let name_type = list.u8("name_type")?;
        if name_type != NAME_TYPE_HOST_NAME {
            // RFC 6066 §3: the entry format depends on name_type, so an unknown type
            // ends what can be read; host_name is the only type ever defined.
            break;
        }
        let name = list.vec16("host_name")?;
        if host.is_some() {
            // "The ServerNameList MUST NOT contain more than one name of the same
            // name_type."
            return Err(RequestError::MalformedTls("more than one host_name"));
        }
        // A DNS host name in ASCII (RFC 6066 §3), so anything outside visible ASCII is
        // not a name a dispatcher could match.
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            return Err(RequestError::MalformedTls(
                "host_name is not an ASCII host name",
            ));
        }
        host = std::str::from_utf8(name).ok();
    }
    Ok(host)
}

/// The protocol names in an ALPN extension's data (RFC 7301 §3.1).
fn parse_alpn(data: &[u8]) -> Result<Vec<&[u8]>, RequestError> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16("protocol_name_list")?);
    if !ext.0.is_empty() {
        return Err(RequestError::MalformedTls("protocol_name_list length"));
    }
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec8("protocol_name")?;
        if name.is_empty() {
            return Err(RequestError::MalformedTls("empty ALPN protocol name"));
        }
        protocols.push(name);
    }
    Ok(protocols)
}

/// A cursor over TLS presentation-language fields (RFC 8446 §3): every read is checked.
struct Reader<'m>(&'m [u8]);

impl<'m> Reader<'m> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'m [u8], RequestError> {
        if self.0.len() < n {
            return Err(RequestError::MalformedTls(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RequestError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RequestError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'m [u8], RequestError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'m [u8], RequestError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello captured from `openssl s_client -servername shop.example.com
    /// -alpn h2,http/1.1` (OpenSSL 3.0), one record of 340 bytes.
    const OPENSSL_HELLO: &[u8] = include_bytes!("testdata/openssl_client_hello.bin");

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend(vec16(data));
        v
    }

    fn sni(host: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend(vec16(host));
        extension(EXT_SERVER_NAME, &vec16(&entry))
    }

    /// A ClientHello handshake message (header included) built field by field.
    fn client_hello_message(extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([0x5a; 32]); // random
        body.push(32);
        body.extend([0x11; 32]); // legacy_session_id
        body.extend(vec16(&[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f])); // cipher suites
        body.extend([1, 0]); // null compression
        body.extend(vec16(&extensions.concat()));
        let mut message = vec![HANDSHAKE_CLIENT_HELLO];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        message
    }

    /// `message` cut into TLS records of at most `record_len` bytes each.
    fn records(message: &[u8], record_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in message.chunks(record_len) {
            out.extend([CONTENT_TYPE_HANDSHAKE, 3, 1]);
            out.extend(vec16(fragment));
        }
        out
    }

    fn hand_built() -> Vec<u8> {
        let alpn = extension(EXT_ALPN, &vec16(b"\x02h2\x08http/1.1"));
        let versions = extension(43, &[4, 0x03, 0x04, 0x03, 0x03]);
        records(
            &client_hello_message(&[sni(b"api.example.net"), alpn, versions]),
            MAX_FRAGMENT_LEN,
        )
    }

    fn parse(buf: &[u8]) -> Result<Option<TlsClientHello<'_>>, RequestError> {
        parse_client_hello(buf, &RequestLimits::default())
    }

    #[test]
    fn parses_an_openssl_client_hello() {
        let hello = parse(OPENSSL_HELLO).unwrap().unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("shop.example.com"));
        assert!(matches!(hello.server_name, Some(Cow::Borrowed(_))));
        assert_eq!(
            hello.alpn_protocols,
            [&b"h2"[..], b"http/1.1"].map(Cow::Borrowed)
        );
        assert_eq!(hello.legacy_version, 0x0303);
        assert_eq!(hello.head_len, OPENSSL_HELLO.len());
    }

    #[test]
    fn every_split_across_segments_needs_more_until_complete() {
        for hello in [OPENSSL_HELLO.to_vec(), hand_built()] {
            for split in 0..hello.len() {
                assert_eq!(parse(&hello[..split]), Ok(None), "{split}");
            }
            assert!(parse(&hello).unwrap().is_some());
        }
    }

    #[test]
    fn follows_a_client_hello_across_records() {
        let message = client_hello_message(&[sni(b"multi.example")]);
        for record_len in [1, 2, 3, 4, 5, 50, 99] {
            let buf = records(&message, record_len);
            for split in 0..buf.len() {
                assert_eq!(parse(&buf[..split]), Ok(None), "{record_len} {split}");
            }
            let hello = parse(&buf).unwrap().unwrap();
            assert_eq!(hello.server_name.as_deref(), Some("multi.example"));
            assert!(matches!(hello.server_name, Some(Cow::Owned(_))));
            assert_eq!(hello.head_len, buf.len());
        }
    }

    #[test]
    fn application_data_after_the_hello_is_left_alone() {
        let mut buf = hand_built();
        let len = buf.len();
        buf.extend([23, 3, 3, 0, 1, 0xaa]);
        let hello = parse(&buf).unwrap().unwrap();
        assert_eq!(hello.head_len, len);
        assert_eq!(hello.server_name.as_deref(), Some("api.example.net"));
    }

    #[test]
    fn no_extensions_means_no_server_name() {
        let mut message = client_hello_message(&[]);
        message.truncate(message.len() - 2); // drop the empty extensions vector
        let len = message.len() as u32 - 4;
        message[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        let buf = records(&message, 1000);
        let hello = parse(&buf).unwrap().unwrap();
        assert_eq!(hello.server_name, None);
        assert!(hello.alpn_protocols.is_empty());
    }

    #[test]
    fn an_oversize_hello_is_too_large_from_its_header() {
        let limits = RequestLimits {
            max_head_len: 200,
            max_headers: 1,
        };
        // The openssl hello announces 335 bytes of handshake in its first 9 bytes.
        for len in 0..9 {
            assert_eq!(parse_client_hello(&OPENSSL_HELLO[..len], &limits), Ok(None));
        }
        for len in 9..=OPENSSL_HELLO.len() {
            assert_eq!(
                parse_client_hello(&OPENSSL_HELLO[..len], &limits),
                Err(RequestError::TooLarge { limit: 200 })
            );
        }
        // Record overhead counts: a 93-byte message in 1-byte records is far over.
        let buf = records(&client_hello_message(&[sni(b"x")])[..], 1);
        assert!(matches!(
            parse_client_hello(&buf, &limits),
            Err(RequestError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let good = hand_built();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                {
                    let mut b = good.clone();
                    b[1] = 2;
                    b
                },
                "record version is not 3.x",
            ),
            (
                {
                    let mut b = good.clone();
                    b[3..5].copy_from_slice(&[0, 0]);
                    b
                },
                "record length out of range",
            ),
            (
                {
                    let mut b = good.clone();
                    b[3..5].copy_from_slice(&[0x40, 1]);
                    b
                },
                "record length out of range",
            ),
            (
                {
                    let mut b = good.clone();
                    b[5] = 2;
                    b
                },
                "first handshake message is not a ClientHello",
            ),
            (
                {
                    let mut b = good.clone();
                    b[9] = 2;
                    b
                },
                "legacy_version is not 3.x",
            ),
            (
                {
                    let mut b = good.clone();
                    b[43] = 33;
                    b
                },
                "legacy_session_id over 32 bytes",
            ),
            (
                {
                    let mut b = good.clone();
                    b[76] = 0;
                    b[77] = 5;
                    b
                },
                "cipher_suites length",
            ),
            (
                records(&client_hello_message(&[sni(b"a"), sni(b"b")]), 1000),
                "repeated server_name extension",
            ),
            (
                records(&client_hello_message(&[sni(b"bad host")]), 1000),
                "host_name is not an ASCII host name",
            ),
            (
                records(&client_hello_message(&[sni(b"")]), 1000),
                "host_name is not an ASCII host name",
            ),
        ];
        for (buf, reason) in cases {
            assert_eq!(
                parse(&buf),
                Err(RequestError::MalformedTls(reason)),
                "{reason}"
            );
        }
        // A non-handshake record in the middle of a fragmented hello.
        let message = client_hello_message(&[sni(b"a")]);
        let mut buf = records(&message[..10], 10);
        buf.extend([23, 3, 3, 0, 1, 0]);
        assert_eq!(
            parse(&buf),
            Err(RequestError::MalformedTls(
                "another record type inside the ClientHello"
            ))
        );
    }

    #[test]
    fn two_host_names_in_one_list_are_refused() {
        let mut list = vec![NAME_TYPE_HOST_NAME];
        list.extend(vec16(b"a.example"));
        list.push(NAME_TYPE_HOST_NAME);
        list.extend(vec16(b"b.example"));
        let ext = extension(EXT_SERVER_NAME, &vec16(&list));
        assert_eq!(
            parse(&records(&client_hello_message(&[ext]), 1000)),
            Err(RequestError::MalformedTls("more than one host_name"))
        );
    }
}
