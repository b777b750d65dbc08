//! The ICMPv6 "packet too big" view the front-end's XDP program and the back-end's ICMP
//! program will share (`baton_common::icmpv6`), on arbitrary packets: it never panics,
//! what it accepts lies within the message, the quote it reports is the bytes at the
//! offsets it names, and the two rewrites on the way to the server (the front-end's of
//! the outer destination, the back-end's of the quote) keep the checksum, pseudo-header
//! included, exactly as right or as wrong as it arrived, with the sequence number back in
//! the server's terms.
#![no_main]

use baton_common::{
    icmp::{Endpoint, QUOTED_TCP_LEN},
    icmpv6::{
        ICMPV6_CHECK, ICMPV6_HEAD_LEN, QUOTED_IPV6, icmpv6_check_for_destination, parse_icmpv6,
        quote_to_backend_v6,
    },
    ipv6::{IP6_DADDR, IP6_SADDR, IPV6_HLEN, Ipv6Payload, ipv6_pseudo_header_sum, ipv6_upper_layer_of},
    translate::{SynAckTerms, Translation, ones_complement_add, ones_complement_sum},
};
use libfuzzer_sys::fuzz_target;

const BACKEND: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11];

/// The one's-complement sum of an ICMPv6 message and its pseudo-header, with 0 and 0xffff
/// (the same number in one's complement) made one.
fn sum(packet: &[u8], icmp: usize, end: usize) -> u16 {
    let src = packet[IP6_SADDR..IP6_SADDR + 16].try_into().unwrap();
    let dst = packet[IP6_DADDR..IP6_DADDR + 16].try_into().unwrap();
    let message = &packet[icmp..end];
    let pseudo = ipv6_pseudo_header_sum(&src, &dst, message.len() as u32, 58);
    match ones_complement_add(pseudo, ones_complement_sum(message)) {
        0 => 0xffff,
        s => s,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((error, quote))) = parse_icmpv6(data) else {
        return;
    };
    let Ok(Ipv6Payload::Upper { offset: icmp, .. }) = ipv6_upper_layer_of(data) else {
        panic!("a parsed error is ICMPv6 by the walk");
    };
    let end = IPV6_HLEN + usize::from(u16::from_be_bytes([data[4], data[5]]));
    let at = icmp + error.quoted_tcp;
    assert!(at + QUOTED_TCP_LEN <= end && end <= data.len(), "{data:02x?}");
    assert_eq!(quote.vip.port, u16::from_be_bytes([data[at], data[at + 1]]));
    assert_eq!(quote.client.port, u16::from_be_bytes([data[at + 2], data[at + 3]]));
    assert_eq!(quote.seq, u32::from_be_bytes(data[at + 4..at + 8].try_into().unwrap()));
    let q = icmp + QUOTED_IPV6;
    assert_eq!(error.vip, data[q + IP6_SADDR..q + IP6_SADDR + 16]);
    assert_eq!(error.client, data[q + IP6_DADDR..q + IP6_DADDR + 16]);

    // The front-end: the outer destination becomes the back-end's.
    let mut out = data[..end].to_vec();
    let c = icmp + ICMPV6_CHECK;
    let check = icmpv6_check_for_destination([out[c], out[c + 1]], &error.destination, &BACKEND);
    out[IP6_DADDR..IP6_DADDR + 16].copy_from_slice(&BACKEND);
    out[c..c + 2].copy_from_slice(&check);
    assert_eq!(sum(&out, icmp, end), sum(data, icmp, end), "{data:02x?}");

    // The back-end, with a translation taken from the input's own bytes.
    let delta = u32::from_be_bytes(data[0..4].try_into().unwrap());
    let t = Translation::new(
        SynAckTerms { isn: delta, tsval: 0, window_shift: 0 },
        SynAckTerms { isn: 0, tsval: 0, window_shift: 0 },
        0,
    );
    let backend = Endpoint { addr: BACKEND, port: 8080 };
    let head = out[icmp..].first_chunk::<ICMPV6_HEAD_LEN>().unwrap();
    let tcp = out[at..].first_chunk::<QUOTED_TCP_LEN>().unwrap();
    let r = quote_to_backend_v6(head, tcp, backend, &t);
    out[q + IP6_SADDR..q + IP6_SADDR + 16].copy_from_slice(&r.quoted_saddr);
    out[at..at + 2].copy_from_slice(&r.quoted_sport);
    out[at + 4..at + 8].copy_from_slice(&r.quoted_seq);
    out[c..c + 2].copy_from_slice(&r.icmp_check);
    assert_eq!(sum(&out, icmp, end), sum(data, icmp, end), "{data:02x?}");
    let (again_error, again) = parse_icmpv6(&out).unwrap().unwrap();
    assert_eq!(again.seq, quote.seq.wrapping_sub(delta));
    assert_eq!(again.vip, backend);
    assert_eq!(again.client, quote.client);
    assert!(again_error.quotes_its_destination());
});
