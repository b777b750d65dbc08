//! TLS ClientHello parsing: no panics on raw input; and the input as a ClientHello body,
//! framed in one record or in many small ones, gives the same answer either way.
#![no_main]

use baton_proto::request::{RequestLimits, TlsClientHello, parse_client_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = RequestLimits {
        max_head_len: 1 << 20,
        max_headers: 1,
    };
    if let Ok(Some(hello)) = parse_client_hello(data, &limits) {
        assert!(hello.head_len <= data.len());
    }
    let small = RequestLimits {
        max_head_len: 512,
        max_headers: 1,
    };
    if data.len() >= small.max_head_len {
        assert_ne!(parse_client_hello(data, &small), Ok(None));
    }

    // Reach the body parser directly: `data` is the ClientHello body.
    let Some((&record_len, body)) = data.split_first() else {
        return;
    };
    if body.len() + 4 > 1 << 14 {
        return;
    }
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(body);
    let (one_record, many_records) = (
        records(&message, 1 << 14),
        records(&message, usize::from(record_len % 64) + 1),
    );
    let one = parse_client_hello(&one_record, &limits);
    let many = parse_client_hello(&many_records, &limits);
    assert_eq!(summary(&one), summary(&many));
});

/// `message` framed as TLS handshake records of at most `len` bytes each.
fn records(message: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for fragment in message.chunks(len) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

/// Server name, ALPN protocols and legacy version, owned.
type HelloFields = (Option<String>, Vec<Vec<u8>>, u16);

/// What must not depend on record framing: everything but `head_len` and borrowing.
fn summary<E: std::fmt::Debug>(
    result: &Result<Option<TlsClientHello<'_>>, E>,
) -> Result<Option<HelloFields>, String> {
    match result {
        Ok(hello) => Ok(hello.as_ref().map(|h| {
            (
                h.server_name.as_deref().map(str::to_owned),
                h.alpn_protocols.iter().map(|p| p.to_vec()).collect(),
                h.legacy_version,
            )
        })),
        Err(e) => Err(format!("{e:?}")),
    }
}
