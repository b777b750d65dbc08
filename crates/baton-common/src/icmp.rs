//! ICMP errors about handed-off connections: the wire view of an ICMPv4 "fragmentation
//! needed" (destination unreachable, code 4; RFC 792, RFC 1191) sent to a VIP, the flow
//! it is about, and the rewrite of its quote into the server's terms.
//!
//! A back-end answers its clients with the VIP as source (docs/design.md, "Packet
//! walk", step 8), so a router on the way back that needs a smaller packet sends its
//! error to the VIP, where the front-end gets it. The error quotes the offending
//! segment's IP header and at least its first 8 bytes of TCP (RFC 792; RFC 1812 §4.3.2.3
//! has routers quote more, up to 576 bytes in all): the VIP's port, the client's port and
//! the sequence number, in the client's terms. The front-end finds the flow by the
//! quoted 4-tuple and forwards the error to its back-end ([`parse_icmpv4_head`],
//! [`quoted_segment_v4`], [`QuotedSegment::frontend_flow_key`]); the back-end's module
//! rewrites the quote into the terms of the segment its server sent
//! ([`quote_to_backend_v4`]), so that the kernel's `tcp_v4_err` finds the socket and
//! accepts the sequence number (it drops an error whose quoted number is not within
//! `snd_una..snd_nxt`, counting `OutOfWindowIcmps`), lowers the route's MTU towards the
//! client and retransmits smaller (docs/design.md, "ICMP errors and path MTU").
//!
//! Everything is read from fixed-size arrays by constant index, so that the eBPF
//! programs copy the bytes onto their stack once and the verifier follows every access:
//! the first [`ICMPV4_HEAD_LEN`] bytes from the outer IPv4 header (outer header, ICMP
//! header, quoted IPv4 header without its options), then the [`QUOTED_TCP_LEN`] bytes at
//! [`FragNeededV4::quoted_tcp`], whose place the quoted header length sets. The host's
//! [`parse_icmpv4`] composes the two steps over a byte slice, for the tests and the fuzz
//! target.
//!
//! Addresses are kept as byte arrays of their family ([`Endpoint`] is generic over
//! them): an ICMPv6 packet-too-big view (RFC 4443 §3.2) will yield a
//! `QuotedSegment<[u8; 16]>` through the same steps.

use crate::{
    backend::BackendFlowKey,
    frontend::FrontendFlowKey,
    layout::{
        IP_CHECK, IP_DADDR, IP_FRAG_OFF, IP_FRAGMENT_MASK, IP_PROTOCOL, IP_SADDR, IP_TOT_LEN,
        IP_VERSION_IHL, IPPROTO_TCP, IPV4_HLEN, IPV4_VERSION_IHL_NO_OPTIONS, TCP_DEST, TCP_SEQ,
        TCP_SOURCE,
    },
    translate::{Translation, csum_replace2, csum_replace4},
};

/// The IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// The ICMP header: type, code, checksum, and four bytes the type defines (for
/// "fragmentation needed", unused and the next-hop MTU; RFC 1191 §4).
pub const ICMP_HLEN: usize = 8;
pub const ICMP_TYPE: usize = 0;
pub const ICMP_CODE: usize = 1;
pub const ICMP_CHECK: usize = 2;
pub const ICMP_NEXT_HOP_MTU: usize = 6;
/// Destination unreachable (RFC 792).
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Destination unreachable's code "fragmentation needed and DF set" (RFC 792, RFC 1191).
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// The quoted TCP bytes read: ports and sequence number, the 8 bytes every ICMPv4 error
/// quotes at least (RFC 792).
pub const QUOTED_TCP_LEN: usize = 8;
/// Where the ICMP header and the quoted IPv4 header start, from the outer IPv4 header
/// (which the front-end forwards only without options).
pub const ICMP: usize = IPV4_HLEN;
pub const QUOTED_IP: usize = ICMP + ICMP_HLEN;
/// The bytes [`parse_icmpv4_head`] reads, from the outer IPv4 header's start.
pub const ICMPV4_HEAD_LEN: usize = QUOTED_IP + IPV4_HLEN;
/// The outer IPv4 header, the ICMP header and the quoted IPv4 header without options.
pub type Icmpv4Head = [u8; ICMPV4_HEAD_LEN];
/// The first bytes of the quoted TCP header.
pub type QuotedTcp = [u8; QUOTED_TCP_LEN];

/// One end of the quoted segment: an address of its family (`[u8; 4]`, later
/// `[u8; 16]`), in network order as on the wire, and a port (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint<A> {
    pub addr: A,
    pub port: u16,
}

/// The segment an ICMP error quotes: one the back-end sent a client as the VIP's, so
/// from `vip` to `client`, with its sequence number in the client's terms (the
/// front-end's, [`Translation::seq_to_client`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedSegment<A> {
    pub vip: Endpoint<A>,
    pub client: Endpoint<A>,
    pub seq: u32,
}

impl QuotedSegment<[u8; 4]> {
    /// The front-end's flow key of the connection the segment belongs to: the quoted
    /// destination is the client, the quoted source the service (the key a client
    /// segment of the connection is forwarded by).
    #[inline(always)]
    pub const fn frontend_flow_key(&self) -> FrontendFlowKey {
        FrontendFlowKey {
            client_addr_be: u32::from_ne_bytes(self.client.addr),
            vip_addr_be: u32::from_ne_bytes(self.vip.addr),
            client_port_be: u16::from_ne_bytes(self.client.port.to_be_bytes()),
            vip_port_be: u16::from_ne_bytes(self.vip.port.to_be_bytes()),
        }
    }

    /// The back-end's flow key of the connection: `backend` is the back-end's own
    /// address (the forwarded error's destination, which the front-end set as it does a
    /// client segment's) and the port its server listens on.
    #[inline(always)]
    pub const fn backend_flow_key(&self, backend: Endpoint<[u8; 4]>) -> BackendFlowKey {
        BackendFlowKey {
            client_addr_be: u32::from_ne_bytes(self.client.addr),
            backend_addr_be: u32::from_ne_bytes(backend.addr),
            client_port_be: u16::from_ne_bytes(self.client.port.to_be_bytes()),
            backend_port_be: u16::from_ne_bytes(backend.port.to_be_bytes()),
        }
    }
}

/// An ICMPv4 "fragmentation needed" error about a TCP segment, as far as its first
/// [`ICMPV4_HEAD_LEN`] bytes tell ([`parse_icmpv4_head`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragNeededV4 {
    /// The next-hop MTU the router announced (0 from routers older than RFC 1191).
    pub next_hop_mtu: u16,
    /// The error's destination: the VIP at the front-end, the back-end's own address
    /// once the front-end has forwarded it.
    pub destination: [u8; 4],
    /// The quoted segment's source (the VIP) and destination (the client).
    pub vip: [u8; 4],
    pub client: [u8; 4],
    /// Where the quoted TCP header starts, from the outer IPv4 header: after the quoted
    /// IPv4 header, options included. Its [`QUOTED_TCP_LEN`] bytes lie within the
    /// datagram's total length.
    pub quoted_tcp: usize,
}

impl FragNeededV4 {
    /// Whether the quoted segment came from the error's destination, as every error
    /// a router sends does (it goes to the offending datagram's source): the
    /// front-end forwards no other (`drop_icmp_malformed`).
    #[inline(always)]
    pub const fn quotes_its_destination(&self) -> bool {
        u32::from_ne_bytes(self.vip) == u32::from_ne_bytes(self.destination)
    }
}

/// What an ICMPv4 datagram to a VIP is ([`parse_icmpv4_head`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Message {
    /// Not a "fragmentation needed" error about a TCP segment (an echo request, another
    /// unreachable, an error about UDP): none of the flows', left as before.
    Other,
    /// A "fragmentation needed" error quoting a TCP segment from the VIP.
    FragNeeded(FragNeededV4),
}

/// Why an ICMPv4 "fragmentation needed" error to a VIP cannot be forwarded: dropped and
/// counted (the front-end's `drop_icmp_malformed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IcmpError {
    /// The outer IPv4 header has options, or is not version 4.
    #[error("outer IPv4 header with options")]
    OuterHeader,
    /// The error arrived in fragments: only the first would carry the quote.
    #[error("fragmented ICMP error")]
    Fragment,
    /// The datagram ends before the quoted TCP header's first 8 bytes.
    #[error("truncated quote")]
    Truncated,
    /// The quote is no IPv4 header (another version, a header length under 20).
    #[error("quoted header is not IPv4")]
    QuotedNotIpv4,
    /// The quoted datagram is a later fragment: no TCP header in it.
    #[error("quoted datagram is a later fragment")]
    QuotedFragment,
}

#[inline(always)]
const fn b2(h: &Icmpv4Head, at: usize) -> [u8; 2] {
    [h[at], h[at + 1]]
}

#[inline(always)]
const fn b4(h: &Icmpv4Head, at: usize) -> [u8; 4] {
    [h[at], h[at + 1], h[at + 2], h[at + 3]]
}

/// Whether an ICMP type and code are "fragmentation needed": the one check the fast
/// path makes before it reads further, so that other ICMP (echo requests, shorter than
/// [`ICMPV4_HEAD_LEN`]) goes on as before.
#[inline(always)]
pub const fn is_frag_needed(icmp_type: u8, code: u8) -> bool {
    icmp_type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED
}

/// Reads an ICMPv4 datagram's first [`ICMPV4_HEAD_LEN`] bytes (`head`, from the outer
/// IPv4 header's first byte); `available` is how many bytes from there the frame holds
/// (the caller's bound; the datagram's total length must fit in it). Every length is
/// checked against the datagram's total length and `available`, so the quoted TCP bytes
/// at [`FragNeededV4::quoted_tcp`] can be read without a further check beyond the
/// caller's own load.
#[inline(always)]
pub const fn parse_icmpv4_head(
    head: &Icmpv4Head,
    available: usize,
) -> Result<Icmpv4Message, IcmpError> {
    if head[IP_PROTOCOL] != IPPROTO_ICMP {
        return Ok(Icmpv4Message::Other);
    }
    if !is_frag_needed(head[ICMP + ICMP_TYPE], head[ICMP + ICMP_CODE]) {
        return Ok(Icmpv4Message::Other);
    }
    if head[IP_VERSION_IHL] != IPV4_VERSION_IHL_NO_OPTIONS {
        return Err(IcmpError::OuterHeader);
    }
    if u16::from_be_bytes(b2(head, IP_FRAG_OFF)) & IP_FRAGMENT_MASK != 0 {
        return Err(IcmpError::Fragment);
    }
    let total = u16::from_be_bytes(b2(head, IP_TOT_LEN)) as usize;
    if total > available || total < ICMPV4_HEAD_LEN {
        return Err(IcmpError::Truncated);
    }
    let quoted = head[QUOTED_IP + IP_VERSION_IHL];
    let quoted_ihl = (quoted & 0x0f) as usize * 4;
    if quoted >> 4 != 4 || quoted_ihl < IPV4_HLEN {
        return Err(IcmpError::QuotedNotIpv4);
    }
    if head[QUOTED_IP + IP_PROTOCOL] != IPPROTO_TCP {
        return Ok(Icmpv4Message::Other);
    }
    // Only the offset matters: a first fragment (More Fragments set) still starts with
    // the TCP header.
    if u16::from_be_bytes(b2(head, QUOTED_IP + IP_FRAG_OFF)) & 0x1fff != 0 {
        return Err(IcmpError::QuotedFragment);
    }
    let quoted_tcp = QUOTED_IP + quoted_ihl;
    if total < quoted_tcp + QUOTED_TCP_LEN {
        return Err(IcmpError::Truncated);
    }
    Ok(Icmpv4Message::FragNeeded(FragNeededV4 {
        next_hop_mtu: u16::from_be_bytes(b2(head, ICMP + ICMP_NEXT_HOP_MTU)),
        destination: b4(head, IP_DADDR),
        vip: b4(head, QUOTED_IP + IP_SADDR),
        client: b4(head, QUOTED_IP + IP_DADDR),
        quoted_tcp,
    }))
}

/// The quoted segment, from the error and the first bytes of its quoted TCP header.
#[inline(always)]
pub const fn quoted_segment_v4(error: &FragNeededV4, tcp: &QuotedTcp) -> QuotedSegment<[u8; 4]> {
    QuotedSegment {
        vip: Endpoint {
            addr: error.vip,
            port: u16::from_be_bytes([tcp[TCP_SOURCE], tcp[TCP_SOURCE + 1]]),
        },
        client: Endpoint {
            addr: error.client,
            port: u16::from_be_bytes([tcp[TCP_DEST], tcp[TCP_DEST + 1]]),
        },
        seq: u32::from_be_bytes([
            tcp[TCP_SEQ],
            tcp[TCP_SEQ + 1],
            tcp[TCP_SEQ + 2],
            tcp[TCP_SEQ + 3],
        ]),
    }
}

/// A "fragmentation needed" error and the segment it quotes ([`parse_icmpv4`]).
pub type FragNeededQuoteV4 = (FragNeededV4, QuotedSegment<[u8; 4]>);

/// Both steps over one IPv4 datagram (`packet`, from its header's first byte), for
/// userspace, the tests and the fuzz target: `Ok(None)` for [`Icmpv4Message::Other`],
/// and any datagram shorter than [`ICMPV4_HEAD_LEN`] that is not "fragmentation needed".
pub fn parse_icmpv4(packet: &[u8]) -> Result<Option<FragNeededQuoteV4>, IcmpError> {
    let Some(head) = packet.first_chunk::<ICMPV4_HEAD_LEN>() else {
        // Too short for the view: an error only if it claims to be one.
        let claims = packet.len() > ICMP + ICMP_CODE
            && packet[IP_PROTOCOL] == IPPROTO_ICMP
            && is_frag_needed(packet[ICMP + ICMP_TYPE], packet[ICMP + ICMP_CODE]);
        return if claims {
            Err(IcmpError::Truncated)
        } else {
            Ok(None)
        };
    };
    match parse_icmpv4_head(head, packet.len())? {
        Icmpv4Message::Other => Ok(None),
        Icmpv4Message::FragNeeded(error) => {
            let tcp = packet
                .get(error.quoted_tcp..)
                .and_then(|t| t.first_chunk::<QUOTED_TCP_LEN>())
                .ok_or(IcmpError::Truncated)?;
            Ok(Some((error, quoted_segment_v4(&error, tcp))))
        }
    }
}

/// The quote's fields as the back-end's server sent the segment, and the checksums that
/// cover them ([`quote_to_backend_v4`]): each to be written at its offset (from the
/// outer IPv4 header; the TCP fields from [`FragNeededV4::quoted_tcp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteRewriteV4 {
    /// At `QUOTED_IP + IP_SADDR`: the back-end's own address for the VIP.
    pub quoted_saddr: [u8; 4],
    /// At `QUOTED_IP + IP_CHECK`: the quoted header's checksum for that address.
    pub quoted_ip_check: [u8; 2],
    /// At `quoted_tcp + TCP_SOURCE`: the server's port for the VIP's.
    pub quoted_sport: [u8; 2],
    /// At `quoted_tcp + TCP_SEQ`: the sequence number in the server's terms.
    pub quoted_seq: [u8; 4],
    /// At `ICMP + ICMP_CHECK`: the ICMP checksum, which covers the quote.
    pub icmp_check: [u8; 2],
}

/// The rewrite that turns a forwarded error's quote into the segment the server sent:
/// its source the back-end's own `backend` address and port rather than the VIP's, its
/// sequence number back in the server's terms ([`Translation::seq_to_backend`], the
/// inverse of the egress's [`Translation::seq_to_client`]), and the checksums updated
/// incrementally (RFC 1624): the quoted IPv4 header's, and the ICMP checksum over the
/// message. An ICMP checksum that was wrong stays exactly as wrong, and the kernel drops
/// the error (`icmp_rcv` verifies it): nothing is laundered. The quoted TCP checksum is
/// left as the client's path saw it; the kernel reads no more of the quote than the
/// ports and the sequence number.
#[inline(always)]
pub const fn quote_to_backend_v4(
    head: &Icmpv4Head,
    tcp: &QuotedTcp,
    backend: Endpoint<[u8; 4]>,
    translation: &Translation,
) -> QuoteRewriteV4 {
    let old_saddr = u32::from_be_bytes(b4(head, QUOTED_IP + IP_SADDR));
    let new_saddr = u32::from_be_bytes(backend.addr);
    let old_ip_check = u16::from_be_bytes(b2(head, QUOTED_IP + IP_CHECK));
    let new_ip_check = csum_replace4(old_ip_check, old_saddr, new_saddr);
    let old_sport = u16::from_be_bytes([tcp[TCP_SOURCE], tcp[TCP_SOURCE + 1]]);
    let old_seq = u32::from_be_bytes([
        tcp[TCP_SEQ],
        tcp[TCP_SEQ + 1],
        tcp[TCP_SEQ + 2],
        tcp[TCP_SEQ + 3],
    ]);
    let new_seq = translation.seq_to_backend(old_seq);
    // Every field sits at an even offset from the ICMP header (the quoted header's
    // length is a multiple of 4), so each enters the sum as whole 16-bit words.
    let check = u16::from_be_bytes(b2(head, ICMP + ICMP_CHECK));
    let check = csum_replace4(check, old_saddr, new_saddr);
    let check = csum_replace2(check, old_ip_check, new_ip_check);
    let check = csum_replace2(check, old_sport, backend.port);
    let check = csum_replace4(check, old_seq, new_seq);
    QuoteRewriteV4 {
        quoted_saddr: backend.addr,
        quoted_ip_check: new_ip_check.to_be_bytes(),
        quoted_sport: backend.port.to_be_bytes(),
        quoted_seq: new_seq.to_be_bytes(),
        icmp_check: check.to_be_bytes(),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::translate::{SynAckTerms, ones_complement_sum};

    const VIP: [u8; 4] = [198, 18, 2, 1];
    const CLIENT: [u8; 4] = [198, 18, 0, 2];
    const ROUTER: [u8; 4] = [198, 18, 1, 1];
    const BACKEND: [u8; 4] = [198, 18, 1, 11];

    fn ipv4_header(
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        total: u16,
        options: &[u8],
    ) -> Vec<u8> {
        let ihl = (IPV4_HLEN + options.len()) / 4;
        let mut h = std::vec![0x40 | ihl as u8, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(options);
        let check = !ones_complement_sum(&h);
        h[IP_CHECK..IP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
        h
    }

    /// A router's "fragmentation needed" to the VIP, quoting `quoted_tcp` bytes of a
    /// 1,500-byte segment VIP:80 -> client:40000 with `seq`, the quoted header carrying
    /// `quoted_options`.
    fn frag_needed(seq: u32, quoted_options: &[u8], quoted_tcp: usize) -> Vec<u8> {
        let mut tcp = std::vec![0u8; 20];
        tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40_000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x10;
        tcp[16..18].copy_from_slice(&[0xab, 0xcd]);
        let mut quote = ipv4_header(VIP, CLIENT, IPPROTO_TCP, 1500, quoted_options);
        quote.extend_from_slice(&tcp[..quoted_tcp]);
        let mut icmp = std::vec![ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0];
        icmp.extend_from_slice(&1000u16.to_be_bytes());
        icmp.extend_from_slice(&quote);
        let check = !ones_complement_sum(&icmp);
        icmp[ICMP_CHECK..ICMP_CHECK + 2].copy_from_slice(&check.to_be_bytes());
        let mut packet = ipv4_header(ROUTER, VIP, IPPROTO_ICMP, (20 + icmp.len()) as u16, &[]);
        packet.extend_from_slice(&icmp);
        packet
    }

    #[test]
    fn a_routers_error_names_the_flow_by_its_quote() {
        for options in [&[][..], &[1, 1, 1, 0][..], &[1; 40][..]] {
            for quoted in [8, 20] {
                let packet = frag_needed(0xffff_fff0, options, quoted);
                let (error, segment) = parse_icmpv4(&packet).unwrap().unwrap();
                assert_eq!(error.next_hop_mtu, 1000);
                assert_eq!(error.quoted_tcp, QUOTED_IP + IPV4_HLEN + options.len());
                assert_eq!(
                    segment.vip,
                    Endpoint {
                        addr: VIP,
                        port: 80
                    }
                );
                assert_eq!(
                    segment.client,
                    Endpoint {
                        addr: CLIENT,
                        port: 40_000
                    }
                );
                assert_eq!(segment.seq, 0xffff_fff0);
                let key = segment.frontend_flow_key();
                assert_eq!(key.client_addr_be, u32::from_ne_bytes(CLIENT));
                assert_eq!(key.vip_addr_be, u32::from_ne_bytes(VIP));
                assert_eq!(key.client_port_be.to_ne_bytes(), 40_000u16.to_be_bytes());
                assert_eq!(key.vip_port_be.to_ne_bytes(), 80u16.to_be_bytes());
                let key = segment.backend_flow_key(Endpoint {
                    addr: BACKEND,
                    port: 8080,
                });
                assert_eq!(key.backend_addr_be, u32::from_ne_bytes(BACKEND));
                assert_eq!(key.backend_port_be.to_ne_bytes(), 8080u16.to_be_bytes());
            }
        }
    }

    #[test]
    fn other_icmp_and_errors_about_other_protocols_are_not_the_flows() {
        // An echo request, 28 bytes of IP: too short for the view, and no error.
        let mut echo = ipv4_header(CLIENT, VIP, IPPROTO_ICMP, 28, &[]);
        echo.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(parse_icmpv4(&echo), Ok(None));
        // Port unreachable, and "fragmentation needed" about UDP.
        let mut unreachable = frag_needed(1, &[], 8);
        unreachable[ICMP + ICMP_CODE] = 3;
        assert_eq!(parse_icmpv4(&unreachable), Ok(None));
        let mut udp = frag_needed(1, &[], 8);
        udp[QUOTED_IP + IP_PROTOCOL] = 17;
        assert_eq!(parse_icmpv4(&udp), Ok(None));
        // Not ICMP at all.
        let mut tcp = frag_needed(1, &[], 8);
        tcp[IP_PROTOCOL] = IPPROTO_TCP;
        assert_eq!(parse_icmpv4(&tcp), Ok(None));
    }

    #[test]
    fn bad_and_short_quotes_are_refused() {
        let good = frag_needed(1, &[], 8);
        // Cut anywhere before the quoted ports and sequence number end.
        for len in ICMP + ICMP_HLEN..good.len() {
            let mut cut = good[..len].to_vec();
            cut[IP_TOT_LEN..IP_TOT_LEN + 2].copy_from_slice(&(len as u16).to_be_bytes());
            assert_eq!(parse_icmpv4(&cut), Err(IcmpError::Truncated), "{len} bytes");
        }
        // A total length past the frame.
        assert_eq!(
            parse_icmpv4(&good[..good.len() - 1]),
            Err(IcmpError::Truncated)
        );
        // The quote says it has options the datagram does not hold.
        let mut options = good.clone();
        options[QUOTED_IP] = 0x4f;
        assert_eq!(parse_icmpv4(&options), Err(IcmpError::Truncated));
        for (at, value, error) in [
            (IP_VERSION_IHL, 0x46, IcmpError::OuterHeader),
            (IP_FRAG_OFF, 0x20, IcmpError::Fragment),
            (IP_FRAG_OFF + 1, 0x01, IcmpError::Fragment),
            (QUOTED_IP, 0x65, IcmpError::QuotedNotIpv4),
            (QUOTED_IP, 0x44, IcmpError::QuotedNotIpv4),
            (QUOTED_IP + IP_FRAG_OFF + 1, 0x10, IcmpError::QuotedFragment),
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(parse_icmpv4(&bad), Err(error), "byte {at} = {value:#x}");
        }
        assert!(
            parse_icmpv4(&good)
                .unwrap()
                .unwrap()
                .0
                .quotes_its_destination()
        );
        let mut elsewhere = good.clone();
        elsewhere[QUOTED_IP + IP_SADDR + 3] = 2;
        let (error, _) = parse_icmpv4(&elsewhere).unwrap().unwrap();
        assert!(
            !error.quotes_its_destination(),
            "a quote from another address"
        );
        // A quoted first fragment (More Fragments alone) still has its TCP header.
        let mut first = good.clone();
        first[QUOTED_IP + IP_FRAG_OFF] = 0x20;
        assert!(parse_icmpv4(&first).unwrap().is_some());
        // Short, claiming to be the error: truncated; short and anything else: not ours.
        assert_eq!(parse_icmpv4(&good[..30]), Err(IcmpError::Truncated));
        assert_eq!(parse_icmpv4(&good[..5]), Ok(None));
        assert_eq!(parse_icmpv4(&[]), Ok(None));
    }

    #[test]
    fn the_quote_returns_to_the_servers_terms_with_checksums_whole() {
        let t = Translation::new(
            SynAckTerms {
                isn: 0xffff_ff00,
                tsval: 5,
                window_shift: 7,
            },
            SynAckTerms {
                isn: 0x1234_5678,
                tsval: 9,
                window_shift: 9,
            },
            Translation::TIMESTAMPS,
        );
        let server_seq = 0x1234_5678u32.wrapping_add(1 + 300_000);
        let client_seq = t.seq_to_client(server_seq);
        assert_eq!(t.seq_to_backend(client_seq), server_seq, "the inverse");
        for quoted in [8, 20] {
            for options in [&[][..], &[1, 1, 1, 0][..]] {
                let packet = frag_needed(client_seq, options, quoted);
                let (error, _) = parse_icmpv4(&packet).unwrap().unwrap();
                let head = packet.first_chunk::<ICMPV4_HEAD_LEN>().unwrap();
                let tcp = packet[error.quoted_tcp..]
                    .first_chunk::<QUOTED_TCP_LEN>()
                    .unwrap();
                let backend = Endpoint {
                    addr: BACKEND,
                    port: 8080,
                };
                let r = quote_to_backend_v4(head, tcp, backend, &t);
                let mut out = packet.clone();
                let q = QUOTED_IP;
                out[q + IP_SADDR..q + IP_SADDR + 4].copy_from_slice(&r.quoted_saddr);
                out[q + IP_CHECK..q + IP_CHECK + 2].copy_from_slice(&r.quoted_ip_check);
                let qt = error.quoted_tcp;
                out[qt..qt + 2].copy_from_slice(&r.quoted_sport);
                out[qt + 4..qt + 8].copy_from_slice(&r.quoted_seq);
                out[ICMP + ICMP_CHECK..ICMP + ICMP_CHECK + 2].copy_from_slice(&r.icmp_check);
                // The ICMP message and the quoted header sum whole.
                assert_eq!(ones_complement_sum(&out[ICMP..]), 0xffff, "ICMP checksum");
                assert_eq!(
                    ones_complement_sum(&out[q..qt]),
                    0xffff,
                    "quoted IP checksum"
                );
                let (_, seg) = parse_icmpv4(&{
                    // Parsed again with the back-end as the error's destination.
                    let mut again = out.clone();
                    again[IP_DADDR..IP_DADDR + 4].copy_from_slice(&BACKEND);
                    again
                })
                .unwrap()
                .unwrap();
                assert_eq!(seg.vip, backend);
                assert_eq!(seg.seq, server_seq);
                assert_eq!(
                    seg.client,
                    Endpoint {
                        addr: CLIENT,
                        port: 40_000
                    }
                );
            }
        }
        // A wrong ICMP checksum stays wrong by the same amount.
        let mut bad = frag_needed(client_seq, &[], 8);
        bad[ICMP + ICMP_CHECK] ^= 0x10;
        let head = bad.first_chunk::<ICMPV4_HEAD_LEN>().unwrap();
        let tcp = bad[48..].first_chunk::<QUOTED_TCP_LEN>().unwrap();
        let r = quote_to_backend_v4(
            head,
            tcp,
            Endpoint {
                addr: BACKEND,
                port: 80,
            },
            &t,
        );
        let mut out = bad.clone();
        out[QUOTED_IP + IP_SADDR..QUOTED_IP + IP_SADDR + 4].copy_from_slice(&r.quoted_saddr);
        out[QUOTED_IP + IP_CHECK..QUOTED_IP + IP_CHECK + 2].copy_from_slice(&r.quoted_ip_check);
        out[52..56].copy_from_slice(&r.quoted_seq);
        out[ICMP + ICMP_CHECK..ICMP + ICMP_CHECK + 2].copy_from_slice(&r.icmp_check);
        assert_ne!(ones_complement_sum(&out[ICMP..]), 0xffff);
    }
}
