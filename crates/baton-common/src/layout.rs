//! The packet layout Baton's eBPF programs read and write: Ethernet, IPv4 and TCP header
//! offsets, flag bits and frame constants, defined once (as Katran keeps `pckt_parsing.h`
//! and `balancer_consts.h`) and used by the XDP front-end fast path, the back-end's tc
//! programs and the cookie SYN/ACK frame writer ([`crate::syncookie`]).
//!
//! Field offsets are relative to their own header (`ETH_HLEN + IP_SADDR` is the source
//! address's offset in a frame), as in RFC 791 §3.1 and RFC 9293 §3.1. The accessors read
//! fixed-size arrays the programs have already copied onto their stack, by constant index
//! only: each is `#[inline(always)]` and compiles to the same loads the raw index did, so
//! the verifier sees the same program (the back-end's ingress is close to its limits).
//! They take and return plain arrays and integers, never a struct.

/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HLEN: usize = 14;
/// An Ethernet address's length.
pub const ETH_ALEN: usize = 6;
pub const ETH_DEST: usize = 0;
pub const ETH_SOURCE: usize = 6;
pub const ETH_PROTO: usize = 12;
/// The IPv4 EtherType (0x0800), as its bytes on the wire.
pub const ETH_P_IP: [u8; 2] = [0x08, 0x00];

/// An IPv4 header without options; the only kind the front-end forwards.
pub const IPV4_HLEN: usize = 20;
pub const IP_VERSION_IHL: usize = 0;
pub const IP_TOS: usize = 1;
pub const IP_TOT_LEN: usize = 2;
pub const IP_FRAG_OFF: usize = 6;
pub const IP_TTL: usize = 8;
pub const IP_PROTOCOL: usize = 9;
pub const IP_CHECK: usize = 10;
pub const IP_SADDR: usize = 12;
pub const IP_DADDR: usize = 16;
/// Version 4, header length 5 words: an IPv4 header without options.
pub const IPV4_VERSION_IHL_NO_OPTIONS: u8 = 0x45;
/// The More Fragments flag and the fragment offset: any bit set marks a fragment.
pub const IP_FRAGMENT_MASK: u16 = 0x3fff;
/// Don't Fragment, in the flags-and-offset field.
pub const IP_DF: u16 = 0x4000;
pub const IPPROTO_TCP: u8 = 6;

/// Ethernet and an IPv4 header without options: the TCP header's offset in such a frame,
/// and the bytes both programs copy first.
pub const ETH_IPV4_LEN: usize = ETH_HLEN + IPV4_HLEN;
/// The first [`ETH_IPV4_LEN`] bytes of a frame.
pub type EthIpv4 = [u8; ETH_IPV4_LEN];

/// A TCP header without options.
pub const TCP_HLEN: usize = 20;
/// The longest TCP header a data offset can describe.
pub const TCP_MAX_HLEN: usize = 60;
pub const TCP_SOURCE: usize = 0;
pub const TCP_DEST: usize = 2;
pub const TCP_SEQ: usize = 4;
pub const TCP_ACK_SEQ: usize = 8;
/// Data offset (high four bits, in 32-bit words).
pub const TCP_DOFF: usize = 12;
pub const TCP_FLAGS: usize = 13;
pub const TCP_WINDOW: usize = 14;
pub const TCP_CHECK: usize = 16;
pub const TCP_URG_PTR: usize = 18;
/// The options area, after the fixed header.
pub const TCP_OPTIONS: usize = TCP_HLEN;
/// The fixed TCP header.
pub type TcpHeader = [u8; TCP_HLEN];

/// TCP header flag bits (the byte at [`TCP_FLAGS`]).
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Within a timestamps option (kind, length, TSval, TSecr; RFC 7323 §3).
pub const TSOPT_TSVAL: usize = 2;
pub const TSOPT_TSECR: usize = 6;
/// Within a SACK option (kind, length, then the blocks' edges; RFC 2018 §3).
pub const SACKOPT_EDGES: usize = 2;
/// A sequence number's length: one timestamp, one SACK edge.
pub const SEQ_LEN: usize = 4;

#[inline(always)]
const fn bytes2<const N: usize>(b: &[u8; N], at: usize) -> [u8; 2] {
    [b[at], b[at + 1]]
}

#[inline(always)]
const fn bytes4<const N: usize>(b: &[u8; N], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// The frame's Ethernet source.
#[inline(always)]
pub const fn eth_source(f: &EthIpv4) -> [u8; ETH_ALEN] {
    let s = ETH_SOURCE;
    [f[s], f[s + 1], f[s + 2], f[s + 3], f[s + 4], f[s + 5]]
}

/// The frame's Ethernet destination.
#[inline(always)]
pub const fn eth_dest(f: &EthIpv4) -> [u8; ETH_ALEN] {
    let d = ETH_DEST;
    [f[d], f[d + 1], f[d + 2], f[d + 3], f[d + 4], f[d + 5]]
}

/// Whether a frame to `dest` is for an interface whose address is `own`: sent to it, or
/// to a group (multicast or broadcast: the first byte's low bit, IEEE 802 §8.2; a tier's
/// back-ends send to one). A frame to another host's address reaches an interface only
/// when a switch floods it (the address unknown to it, as a dead host's is once its port
/// went down) or the interface takes every frame (promiscuous, a veth); the host's stack
/// drops it (`PACKET_OTHERHOST`), and so must a front-end, or a dead front-end's
/// segments would be served by another before the routers move them, and two live
/// front-ends would each act on a flooded one.
#[inline(always)]
pub const fn addressed_to(dest: [u8; ETH_ALEN], own: [u8; ETH_ALEN]) -> bool {
    dest[0] & 1 != 0
        || (dest[0] == own[0]
            && dest[1] == own[1]
            && dest[2] == own[2]
            && dest[3] == own[3]
            && dest[4] == own[4]
            && dest[5] == own[5])
}

/// Whether the frame's EtherType is IPv4.
#[inline(always)]
pub fn is_ipv4(f: &EthIpv4) -> bool {
    bytes2(f, ETH_PROTO) == ETH_P_IP
}

/// The IPv4 header's first byte: version and header length.
#[inline(always)]
pub const fn ip_version_ihl(f: &EthIpv4) -> u8 {
    f[ETH_HLEN + IP_VERSION_IHL]
}

/// The IP version (4 for IPv4), from [`ip_version_ihl`]'s byte.
#[inline(always)]
pub const fn ip_version(version_ihl: u8) -> u8 {
    version_ihl >> 4
}

/// The IPv4 header's length in bytes, from [`ip_version_ihl`]'s byte.
#[inline(always)]
pub const fn ip_header_len(version_ihl: u8) -> usize {
    (version_ihl & 0x0f) as usize * 4
}

/// The TOS byte: DSCP and the ECN field (its low two bits).
#[inline(always)]
pub const fn ip_tos(f: &EthIpv4) -> u8 {
    f[ETH_HLEN + IP_TOS]
}

/// The datagram's total length (IPv4 header and payload).
#[inline(always)]
pub const fn ip_tot_len(f: &EthIpv4) -> u16 {
    u16::from_be_bytes(bytes2(f, ETH_HLEN + IP_TOT_LEN))
}

/// Whether the datagram is a fragment (More Fragments set, or an offset): only the first
/// carries the TCP header.
#[inline(always)]
pub const fn is_fragment(f: &EthIpv4) -> bool {
    u16::from_be_bytes(bytes2(f, ETH_HLEN + IP_FRAG_OFF)) & IP_FRAGMENT_MASK != 0
}

/// The time to live: the SYN' carries the client's own.
#[inline(always)]
pub const fn ip_ttl(f: &EthIpv4) -> u8 {
    f[ETH_HLEN + IP_TTL]
}

#[inline(always)]
pub const fn ip_protocol(f: &EthIpv4) -> u8 {
    f[ETH_HLEN + IP_PROTOCOL]
}

/// The IPv4 header checksum, as its bytes.
#[inline(always)]
pub const fn ip_check(f: &EthIpv4) -> [u8; 2] {
    bytes2(f, ETH_HLEN + IP_CHECK)
}

/// The IPv4 source address, in network order.
#[inline(always)]
pub const fn ip_saddr(f: &EthIpv4) -> [u8; 4] {
    bytes4(f, ETH_HLEN + IP_SADDR)
}

/// The IPv4 destination address, in network order.
#[inline(always)]
pub const fn ip_daddr(f: &EthIpv4) -> [u8; 4] {
    bytes4(f, ETH_HLEN + IP_DADDR)
}

#[inline(always)]
pub const fn tcp_source(h: &TcpHeader) -> [u8; 2] {
    bytes2(h, TCP_SOURCE)
}

#[inline(always)]
pub const fn tcp_dest(h: &TcpHeader) -> [u8; 2] {
    bytes2(h, TCP_DEST)
}

#[inline(always)]
pub const fn tcp_seq(h: &TcpHeader) -> [u8; 4] {
    bytes4(h, TCP_SEQ)
}

#[inline(always)]
pub const fn tcp_ack_seq(h: &TcpHeader) -> [u8; 4] {
    bytes4(h, TCP_ACK_SEQ)
}

/// The TCP header's length in bytes, options included (the data offset; at least
/// [`TCP_HLEN`] in a well-formed header).
#[inline(always)]
pub const fn tcp_header_len(h: &TcpHeader) -> usize {
    (h[TCP_DOFF] >> 4) as usize * 4
}

/// The flag bits ([`tcp_flag`]).
#[inline(always)]
pub const fn tcp_flags(h: &TcpHeader) -> u8 {
    h[TCP_FLAGS]
}

#[inline(always)]
pub const fn tcp_window(h: &TcpHeader) -> [u8; 2] {
    bytes2(h, TCP_WINDOW)
}

#[inline(always)]
pub const fn tcp_check(h: &TcpHeader) -> [u8; 2] {
    bytes2(h, TCP_CHECK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_for_its_own_address_and_groups_never_another_hosts() {
        let own = [0x02, 0xba, 0x70, 0x12, 0x01, 0x02];
        assert!(addressed_to(own, own));
        assert!(addressed_to([0xff; 6], own), "broadcast");
        assert!(
            addressed_to([0x03, 0xba, 0x70, 0x12, 0x01, 0x00], own),
            "a tier's group MAC"
        );
        let other = [0x02, 0xba, 0x70, 0x12, 0x01, 0x03];
        assert!(!addressed_to(other, own), "another front-end's");
        for byte in 0..6 {
            let mut near = own;
            near[byte] ^= 0x40;
            assert!(!addressed_to(near, own), "differs in byte {byte}");
        }
        let mut f: EthIpv4 = [0; ETH_IPV4_LEN];
        f[ETH_DEST..ETH_DEST + 6].copy_from_slice(&own);
        assert_eq!(eth_dest(&f), own);
    }

    #[test]
    fn accessors_read_the_fields_of_a_known_segment() {
        // 10.0.0.1:4660 -> 10.0.0.2:80, SYN with 20 bytes of options, DF, TOS 0x02.
        let mut f: EthIpv4 = [0; ETH_IPV4_LEN];
        f[ETH_SOURCE..ETH_SOURCE + 6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[ETH_PROTO..ETH_PROTO + 2].copy_from_slice(&ETH_P_IP);
        f[ETH_HLEN..ETH_IPV4_LEN].copy_from_slice(&[
            0x45, 0x02, 0, 60, 0, 0, 0x40, 0, 64, 6, 0xab, 0xcd, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        let h: TcpHeader = [
            0x12, 0x34, 0, 80, 0, 0, 0, 7, 0, 0, 0, 9, 0xa0, 0x02, 0xff, 0xff, 0x12, 0x34, 0, 0,
        ];
        assert!(is_ipv4(&f));
        assert_eq!(eth_source(&f), [2, 0, 0, 0, 0, 1]);
        assert_eq!(ip_version_ihl(&f), IPV4_VERSION_IHL_NO_OPTIONS);
        assert_eq!(ip_version(ip_version_ihl(&f)), 4);
        assert_eq!(ip_header_len(ip_version_ihl(&f)), IPV4_HLEN);
        assert_eq!(ip_tos(&f), 0x02);
        assert_eq!(ip_tot_len(&f), 60);
        assert!(!is_fragment(&f), "DF alone is no fragment");
        assert_eq!(ip_protocol(&f), IPPROTO_TCP);
        assert_eq!(ip_check(&f), [0xab, 0xcd]);
        assert_eq!(ip_saddr(&f), [10, 0, 0, 1]);
        assert_eq!(ip_daddr(&f), [10, 0, 0, 2]);
        assert_eq!(tcp_source(&h), 4660u16.to_be_bytes());
        assert_eq!(tcp_dest(&h), 80u16.to_be_bytes());
        assert_eq!(tcp_seq(&h), 7u32.to_be_bytes());
        assert_eq!(tcp_ack_seq(&h), 9u32.to_be_bytes());
        assert_eq!(tcp_header_len(&h), 40);
        assert_eq!(tcp_flags(&h), tcp_flag::SYN);
        assert_eq!(tcp_window(&h), [0xff, 0xff]);
        assert_eq!(tcp_check(&h), [0x12, 0x34]);
        for (frag_off, fragment) in [([0x20, 0], true), ([0, 1], true), ([0x40, 0], false)] {
            f[ETH_HLEN + IP_FRAG_OFF..ETH_HLEN + IP_FRAG_OFF + 2].copy_from_slice(&frag_off);
            assert_eq!(is_fragment(&f), fragment, "{frag_off:?}");
        }
        assert_eq!(u16::from_be_bytes([0x40, 0]), IP_DF);
    }
}
