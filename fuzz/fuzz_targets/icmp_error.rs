//! The ICMPv4 view the front-end's XDP program and the back-end's ICMP program share
//! (`baton_common::icmp`), on arbitrary datagrams: it never panics, what it accepts lies
//! within the datagram's total length and the bytes given, the quote it reports is the
//! bytes at the offsets it names, and the back-end's rewrite of an accepted quote keeps
//! the ICMP message's checksum exactly as right or as wrong as it arrived, with the
//! sequence number back in the server's terms.
#![no_main]

use baton_common::{
    icmp::{
        ICMP, ICMP_CHECK, ICMPV4_HEAD_LEN, QUOTED_IP, QUOTED_TCP_LEN, Endpoint, parse_icmpv4,
        quote_to_backend_v4,
    },
    layout::{IP_CHECK, IP_SADDR, IP_TOT_LEN},
    translate::{SynAckTerms, Translation, ones_complement_sum},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((error, quote))) = parse_icmpv4(data) else {
        return;
    };
    let total = usize::from(u16::from_be_bytes([data[IP_TOT_LEN], data[IP_TOT_LEN + 1]]));
    let at = error.quoted_tcp;
    assert!(at + QUOTED_TCP_LEN <= total && total <= data.len(), "{data:02x?}");
    assert_eq!(quote.vip.port, u16::from_be_bytes([data[at], data[at + 1]]));
    assert_eq!(quote.client.port, u16::from_be_bytes([data[at + 2], data[at + 3]]));
    assert_eq!(quote.seq, u32::from_be_bytes(data[at + 4..at + 8].try_into().unwrap()));
    assert_eq!(error.vip, data[QUOTED_IP + IP_SADDR..QUOTED_IP + IP_SADDR + 4]);

    // The back-end's rewrite, with a translation taken from the input's own bytes.
    let delta = u32::from_be_bytes(data[4..8].try_into().unwrap());
    let t = Translation::new(
        SynAckTerms { isn: delta, tsval: 0, window_shift: 0 },
        SynAckTerms { isn: 0, tsval: 0, window_shift: 0 },
        0,
    );
    let backend = Endpoint { addr: [198, 18, 1, 11], port: 8080 };
    let head = data.first_chunk::<ICMPV4_HEAD_LEN>().unwrap();
    let tcp = data[at..].first_chunk::<QUOTED_TCP_LEN>().unwrap();
    let r = quote_to_backend_v4(head, tcp, backend, &t);
    let mut out = data[..total].to_vec();
    let q = QUOTED_IP;
    out[q + IP_SADDR..q + IP_SADDR + 4].copy_from_slice(&r.quoted_saddr);
    out[q + IP_CHECK..q + IP_CHECK + 2].copy_from_slice(&r.quoted_ip_check);
    out[at..at + 2].copy_from_slice(&r.quoted_sport);
    out[at + 4..at + 8].copy_from_slice(&r.quoted_seq);
    out[ICMP + ICMP_CHECK..ICMP + ICMP_CHECK + 2].copy_from_slice(&r.icmp_check);
    // The message's one's-complement sum is unchanged (0 and 0xffff are the same
    // number in one's complement): a right checksum stays right, a wrong one wrong.
    let norm = |s: u16| if s == 0 { 0xffff } else { s };
    assert_eq!(
        norm(ones_complement_sum(&out[ICMP..])),
        norm(ones_complement_sum(&data[ICMP..total])),
        "{data:02x?}"
    );
    let (_, again) = parse_icmpv4(&out).unwrap().unwrap();
    assert_eq!(again.seq, quote.seq.wrapping_sub(delta));
    assert_eq!(again.vip, backend);
    assert_eq!(again.client, quote.client);
});
