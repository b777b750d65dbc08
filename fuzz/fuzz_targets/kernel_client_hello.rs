//! The XDP program's ClientHello walk (`baton_common::kernel_dispatch::HelloScan`)
//! against the protocol core's parser: whatever the walk accepts, the parser parses to
//! a ClientHello that is the whole segment, with the same SNI (lower case, without a
//! trailing dot); and the walk never reads or panics past its buffer whatever the bytes.
#![no_main]

use baton_common::kernel_dispatch::{HelloScan, MAX_HELLO_STEPS, SCRATCH_LEN};
use baton_proto::request::{ClientRequest, RequestLimits, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Most inputs start as a record would, so that the walk goes past the header.
    let mut buf = [0u8; SCRATCH_LEN];
    let len = data.len().min(SCRATCH_LEN);
    buf[..len].copy_from_slice(&data[..len]);
    if len > 0 {
        buf[0] = 22;
    }
    let segment = buf[..len].to_vec();
    let mut hello = HelloScan::new(data.len());
    for _ in 0..MAX_HELLO_STEPS {
        if !hello.step(&mut buf) {
            break;
        }
    }
    let limits = RequestLimits::default();
    let Ok(scan) = hello.request(&buf, limits.max_head_len as u32) else {
        return;
    };
    let Ok(Some(ClientRequest::Tls(parsed))) = parse_request(&segment, &limits) else {
        panic!("the walk accepts what the parser refuses: {segment:02x?}");
    };
    assert_eq!(parsed.head_len, segment.len());
    let sni = parsed
        .server_name
        .map(|h| h.strip_suffix('.').unwrap_or(&h).to_ascii_lowercase());
    let walked = scan
        .has_host()
        .then(|| &buf[scan.host_start as usize..scan.host_end as usize]);
    assert_eq!(sni.as_deref().map(str::as_bytes), walked);
});
