//! The probe and claim frames (`baton_common::claim`) the back-end's module and the
//! front-end's XDP program both read, on arbitrary frames: the trailer's offset never
//! panics and, when accepted, lies within the frame right after the IPv4 packet's total
//! length; a claim is judged without panicking, and one that verifies carries exactly
//! the stamp the back-end's module would write for the flow it names (so a frame the
//! fuzzer makes up passes only by finding the MAC).
#![no_main]

use baton_common::{
    claim::{self, TRAILER_LEN, Trailer},
    layout::{ETH_HLEN, ETH_IPV4_LEN},
    siphash::SipKey,
    stamp::{StampVerdict, StampedBackend},
};
use libfuzzer_sys::fuzz_target;

const KEY: SipKey = SipKey {
    k0: 0x0706_0504_0302_0100,
    k1: 0x0f0e_0d0c_0b0a_0908,
};

fuzz_target!(|data: &[u8]| {
    let Some(head) = data.first_chunk::<ETH_IPV4_LEN>() else {
        return;
    };
    let Ok(at) = claim::trailer_offset(head, data.len()) else {
        return;
    };
    let total = usize::from(u16::from_be_bytes([data[ETH_HLEN + 2], data[ETH_HLEN + 3]]));
    assert_eq!(at, ETH_HLEN + total);
    assert!(at + TRAILER_LEN <= data.len());
    let trailer = Trailer::from_bytes(data[at..].first_chunk::<TRAILER_LEN>().unwrap());
    assert_eq!(Trailer::from_bytes(&trailer.to_bytes()), trailer);
    let ports = data.get(ETH_IPV4_LEN..ETH_IPV4_LEN + 4);
    let (sport, dport) = ports.map_or((0, 0), |p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    });
    let client = (
        data[ETH_HLEN + 12..ETH_HLEN + 16].try_into().unwrap(),
        sport,
    );
    let service = (
        data[ETH_HLEN + 16..ETH_HLEN + 20].try_into().unwrap(),
        dport,
    );
    let backend = StampedBackend {
        addr_be: u32::from_ne_bytes(trailer.backend_addr),
        port_be: u16::from_ne_bytes(trailer.backend_port.to_be_bytes()),
        mac: [0; 6],
        _pad: [0; 4],
        flags: StampedBackend::USABLE,
    };
    let verdict = claim::judge_claim(&KEY, &trailer, client, service, Some(&backend));
    if verdict == StampVerdict::Forward {
        assert_eq!(
            trailer.stamp,
            claim::claim_stamp(&KEY, client, service, &trailer)
        );
    }
    assert_ne!(
        verdict,
        StampVerdict::NotAStamp,
        "a claim is never taken for no stamp"
    );
    // The probe writer round-trips what the reader accepts.
    let mut out = vec![0u8; data.len() + TRAILER_LEN];
    if let Some(len) = claim::write_probe(
        &mut out,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        (trailer.backend_addr, trailer.backend_port),
        &data[ETH_HLEN..],
    ) {
        assert_eq!(len, at + TRAILER_LEN);
        let again = claim::trailer_offset(out[..ETH_IPV4_LEN].try_into().unwrap(), len);
        assert_eq!(again, Ok(at));
    }
});
