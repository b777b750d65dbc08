//! ICMPv6 "packet too big" (type 2; RFC 4443 §3.2, RFC 8201) about a handed-off
//! connection: the wire view, the flow it quotes, and the rewrite of its quote into the
//! server's terms. The IPv6 counterpart of [`crate::icmp`]'s "fragmentation needed", for
//! the same reason (docs/design.md, "ICMP errors and path MTU"): a router on the way back
//! to the client sends it to the VIP, the back-end's source, and only the back-end can
//! lower its path MTU.
//!
//! The view starts at the ICMPv6 header, not at the outer IPv6 header: an outer packet
//! may carry extension headers, which the caller has walked already
//! ([`crate::ipv6::walk_extension_headers`]) to find that it is ICMPv6 at all, and the
//! caller passes the outer destination in. It reads [`ICMPV6_HEAD_LEN`] bytes (the ICMPv6
//! header and the quoted fixed IPv6 header), walks the quoted packet's extension headers
//! with the same bounded walk, and names where the quoted TCP header's first
//! [`QUOTED_TCP_LEN`] bytes lie ([`PacketTooBig::quoted_tcp`]); [`quoted_segment_v6`]
//! reads them. An ICMPv6 error quotes as much of the offending packet as fits in 1,280
//! bytes (RFC 4443 §2.4 (c)), so the quote always holds the ports and sequence number of
//! any segment whose headers fit; the quoted payload length is the original packet's and
//! bounds nothing here.
//!
//! Unlike ICMPv4's, the ICMPv6 checksum covers a pseudo-header (RFC 4443 §2.3, the one of
//! RFC 8200 §8.1 with Next Header 58): the front-end's rewrite of the outer destination
//! from the VIP to the back-end changes it, by [`crate::ipv6::csum_replace16`]. IPv6 has
//! no header checksum, so the quote's rewrite ([`quote_to_backend_v6`]) updates the
//! ICMPv6 checksum alone.

use crate::{
    backend::BackendFlowKeyV6,
    icmp::{Endpoint, QUOTED_TCP_LEN, QuotedSegment, QuotedTcp},
    ipv6::{
        EXTENSION_PEEK_LEN, IP6_DADDR, IP6_NEXT_HEADER, IP6_SADDR, IPV6_ALEN, IPV6_HLEN,
        Ipv6Address, Ipv6Error, Ipv6Payload, csum_replace16, ipv6_upper_layer, next_header,
        walk_extension_headers,
    },
    layout::{TCP_DEST, TCP_SEQ, TCP_SOURCE},
    translate::{Translation, csum_replace2, csum_replace4},
};

/// The ICMPv6 header: type, code, checksum, and four bytes the type defines (for "packet
/// too big", the MTU; RFC 4443 §3.2).
pub const ICMPV6_HLEN: usize = 8;
pub const ICMPV6_TYPE: usize = 0;
pub const ICMPV6_CODE: usize = 1;
pub const ICMPV6_CHECK: usize = 2;
/// The MTU of the next-hop link, 32 bits.
pub const ICMPV6_MTU: usize = 4;
/// Packet Too Big (RFC 4443 §3.2). Its code is 0 and ignored by receivers.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// Where the quoted IPv6 header starts, from the ICMPv6 header.
pub const QUOTED_IPV6: usize = ICMPV6_HLEN;
/// The bytes [`parse_packet_too_big`] reads at once: the ICMPv6 header and the quoted
/// fixed IPv6 header.
pub const ICMPV6_HEAD_LEN: usize = QUOTED_IPV6 + IPV6_HLEN;
/// The ICMPv6 header and the quoted fixed IPv6 header.
pub type Icmpv6Head = [u8; ICMPV6_HEAD_LEN];

/// An ICMPv6 "packet too big" about a TCP segment ([`parse_packet_too_big`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketTooBig {
    /// The next-hop link's MTU. Linux takes no path MTU below 1,280
    /// (`__ip6_rt_update_pmtu`, net/ipv6/route.c, raises a smaller one to
    /// `IPV6_MIN_MTU`), so a smaller one cannot push the back-end's segments below IPv6's
    /// minimum.
    pub mtu: u32,
    /// The error's destination, as the caller read it from the outer header: the VIP at
    /// the front-end, the back-end's own address once forwarded.
    pub destination: Ipv6Address,
    /// The quoted packet's source (the VIP) and destination (the client).
    pub vip: Ipv6Address,
    pub client: Ipv6Address,
    /// Where the quoted TCP header starts, from the ICMPv6 header: after the quoted fixed
    /// header and its extension headers. Its [`QUOTED_TCP_LEN`] bytes lie within the
    /// message.
    pub quoted_tcp: usize,
}

impl PacketTooBig {
    /// Whether the quoted packet came from the error's destination, as every error a
    /// router sends does: the front-end forwards no other (as for ICMPv4).
    #[inline(always)]
    pub const fn quotes_its_destination(&self) -> bool {
        let mut i = 0;
        while i < IPV6_ALEN {
            if self.vip[i] != self.destination[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// What an ICMPv6 message to a VIP is ([`parse_packet_too_big`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Message {
    /// Not a "packet too big" about a TCP segment (an echo request, neighbour discovery,
    /// another error, an error about UDP): none of the flows', left as before.
    Other,
    /// A "packet too big" quoting a TCP segment.
    PacketTooBig(PacketTooBig),
}

/// Why an ICMPv6 "packet too big" to a VIP cannot be forwarded: dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Icmpv6Error {
    /// The outer packet is no IPv6, or its extension headers cannot be walked.
    #[error("outer IPv6 header: {0}")]
    OuterHeader(Ipv6Error),
    /// The error arrived in fragments: a router's error fits 1,280 bytes unfragmented.
    #[error("fragmented ICMPv6 error")]
    Fragment,
    /// The message ends before the quoted TCP header's first 8 bytes.
    #[error("truncated quote")]
    Truncated,
    /// The quote is no IPv6 header.
    #[error("quoted header is not IPv6")]
    QuotedNotIpv6,
    /// The quoted packet is a fragment: a back-end's TCP over IPv6 never sends one (only a
    /// source fragments, RFC 8200 §5, and TCP sizes its segments to the path MTU).
    #[error("quoted packet is a fragment")]
    QuotedFragment,
    /// The quoted packet's extension headers cannot be walked to its upper layer (too
    /// many, AH or ESP, a routing header with segments left, an unknown one).
    #[error("quoted extension headers not walked")]
    QuotedExtensionHeaders,
}

#[inline(always)]
const fn b16(h: &Icmpv6Head, at: usize) -> Ipv6Address {
    let mut a = [0u8; IPV6_ALEN];
    let mut i = 0;
    while i < IPV6_ALEN {
        a[i] = h[at + i];
        i += 1;
    }
    a
}

/// Reads an ICMPv6 message's first [`ICMPV6_HEAD_LEN`] bytes (`head`, from the ICMPv6
/// header), and walks the quoted packet's extension headers with `read` (the
/// [`EXTENSION_PEEK_LEN`] bytes at an offset from the ICMPv6 header, as
/// [`walk_extension_headers`] wants). `destination` is the outer header's destination;
/// `available` how many bytes the message holds from its first (the outer upper-layer
/// length, within the frame). Every offset is checked against `available`, so the
/// quoted TCP bytes at [`PacketTooBig::quoted_tcp`] can be read without a further check
/// beyond the caller's own load.
#[inline(always)]
pub fn parse_packet_too_big<F>(
    head: &Icmpv6Head,
    destination: Ipv6Address,
    available: usize,
    read: F,
) -> Result<Icmpv6Message, Icmpv6Error>
where
    F: FnMut(usize) -> Option<[u8; EXTENSION_PEEK_LEN]>,
{
    if head[ICMPV6_TYPE] != ICMPV6_PACKET_TOO_BIG {
        return Ok(Icmpv6Message::Other);
    }
    if available < ICMPV6_HEAD_LEN {
        return Err(Icmpv6Error::Truncated);
    }
    if head[QUOTED_IPV6] >> 4 != 6 {
        return Err(Icmpv6Error::QuotedNotIpv6);
    }
    let quoted_tcp = match walk_extension_headers(
        head[QUOTED_IPV6 + IP6_NEXT_HEADER],
        ICMPV6_HEAD_LEN,
        available,
        read,
    ) {
        Ok(Ipv6Payload::Upper {
            protocol: next_header::TCP,
            offset,
        }) => offset,
        Ok(Ipv6Payload::Upper { .. }) => return Ok(Icmpv6Message::Other),
        Ok(Ipv6Payload::Fragment { .. }) => return Err(Icmpv6Error::QuotedFragment),
        Ok(_) => return Err(Icmpv6Error::QuotedExtensionHeaders),
        Err(Ipv6Error::Truncated) => return Err(Icmpv6Error::Truncated),
        Err(_) => return Err(Icmpv6Error::QuotedExtensionHeaders),
    };
    if quoted_tcp + QUOTED_TCP_LEN > available {
        return Err(Icmpv6Error::Truncated);
    }
    let m = ICMPV6_MTU;
    Ok(Icmpv6Message::PacketTooBig(PacketTooBig {
        mtu: u32::from_be_bytes([head[m], head[m + 1], head[m + 2], head[m + 3]]),
        destination,
        vip: b16(head, QUOTED_IPV6 + IP6_SADDR),
        client: b16(head, QUOTED_IPV6 + IP6_DADDR),
        quoted_tcp,
    }))
}

/// The quoted segment, from the error and the first bytes of its quoted TCP header.
#[inline(always)]
pub const fn quoted_segment_v6(
    error: &PacketTooBig,
    tcp: &QuotedTcp,
) -> QuotedSegment<Ipv6Address> {
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

impl QuotedSegment<Ipv6Address> {
    /// The back-end's IPv6 flow key of the connection (`BACKEND_FLOWS_V6`), as IPv4's
    /// `backend_flow_key` gives the IPv4 one: `backend` is the back-end's own
    /// address (the forwarded error's destination, which the front-end set as it does a
    /// client segment's) and the port its server listens on.
    #[inline(always)]
    pub const fn backend_flow_key(&self, backend: Endpoint<Ipv6Address>) -> BackendFlowKeyV6 {
        BackendFlowKeyV6 {
            client_addr: self.client.addr,
            backend_addr: backend.addr,
            client_port_be: u16::from_ne_bytes(self.client.port.to_be_bytes()),
            backend_port_be: u16::from_ne_bytes(backend.port.to_be_bytes()),
        }
    }
}

/// A "packet too big" and the segment it quotes ([`parse_icmpv6`]).
pub type PacketTooBigQuote = (PacketTooBig, QuotedSegment<Ipv6Address>);

/// Everything over one IPv6 packet (`packet`, from its fixed header's first byte), for
/// userspace, the tests and the fuzz target: the outer header checked and its extension
/// headers walked to ICMPv6, then [`parse_packet_too_big`] and [`quoted_segment_v6`].
/// `Ok(None)` for anything that is not a "packet too big" about TCP; an outer fragment
/// is [`Icmpv6Error::Fragment`] whatever it carries, since the front-end drops every
/// fragment to a VIP.
pub fn parse_icmpv6(packet: &[u8]) -> Result<Option<PacketTooBigQuote>, Icmpv6Error> {
    let Some(outer) = packet.first_chunk::<IPV6_HLEN>() else {
        return Err(Icmpv6Error::OuterHeader(Ipv6Error::Truncated));
    };
    let peek = |at: usize| {
        packet
            .get(at..)
            .and_then(|b| b.first_chunk::<EXTENSION_PEEK_LEN>())
            .copied()
    };
    let icmp = match ipv6_upper_layer(outer, packet.len(), peek) {
        Ok(Ipv6Payload::Upper {
            protocol: next_header::ICMPV6,
            offset,
        }) => offset,
        Ok(Ipv6Payload::Fragment { .. }) => return Err(Icmpv6Error::Fragment),
        Ok(_) => return Ok(None),
        Err(e) => return Err(Icmpv6Error::OuterHeader(e)),
    };
    let end = IPV6_HLEN + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let message = &packet[icmp..end];
    let Some(head) = message.first_chunk::<ICMPV6_HEAD_LEN>() else {
        return if message.first() == Some(&ICMPV6_PACKET_TOO_BIG) {
            Err(Icmpv6Error::Truncated)
        } else {
            Ok(None)
        };
    };
    let destination = packet[IP6_DADDR..IP6_DADDR + IPV6_ALEN]
        .try_into()
        .map_err(|_| Icmpv6Error::Truncated)?;
    let read = |at: usize| {
        message
            .get(at..)
            .and_then(|b| b.first_chunk::<EXTENSION_PEEK_LEN>())
            .copied()
    };
    match parse_packet_too_big(head, destination, message.len(), read)? {
        Icmpv6Message::Other => Ok(None),
        Icmpv6Message::PacketTooBig(error) => {
            let tcp = message
                .get(error.quoted_tcp..)
                .and_then(|t| t.first_chunk::<QUOTED_TCP_LEN>())
                .ok_or(Icmpv6Error::Truncated)?;
            Ok(Some((error, quoted_segment_v6(&error, tcp))))
        }
    }
}

/// The quote's fields as the back-end's server sent the segment, and the ICMPv6
/// checksum that covers them ([`quote_to_backend_v6`]): each to be written at its offset
/// from the ICMPv6 header (the TCP fields from [`PacketTooBig::quoted_tcp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteRewriteV6 {
    /// At `QUOTED_IPV6 + IP6_SADDR`: the back-end's own address for the VIP.
    pub quoted_saddr: Ipv6Address,
    /// At `quoted_tcp + TCP_SOURCE`: the server's port for the VIP's.
    pub quoted_sport: [u8; 2],
    /// At `quoted_tcp + TCP_SEQ`: the sequence number in the server's terms.
    pub quoted_seq: [u8; 4],
    /// At `ICMPV6_CHECK`: the ICMPv6 checksum, which covers the quote.
    pub icmp_check: [u8; 2],
}

/// The rewrite that turns a forwarded "packet too big"'s quote into the segment the
/// server sent, as [`crate::icmp::quote_to_backend_v4`] does for ICMPv4: the quoted
/// source the back-end's own `backend` address and port, the sequence number back in the
/// server's terms ([`Translation::seq_to_backend`]; Linux's `tcp_v6_err` drops an error
/// whose quoted number is not within `snd_una..snd_nxt`), and the ICMPv6 checksum updated
/// incrementally (RFC 1624), so that a wrong one stays exactly as wrong and the kernel
/// (`icmpv6_rcv`) drops it: nothing is laundered. Every field lies at an even offset from
/// the ICMPv6 header (the quoted header is 40 bytes, extension headers multiples of 8), so
/// each enters the sum as whole 16-bit words.
#[inline(always)]
pub const fn quote_to_backend_v6(
    head: &Icmpv6Head,
    tcp: &QuotedTcp,
    backend: Endpoint<Ipv6Address>,
    translation: &Translation,
) -> QuoteRewriteV6 {
    let old_saddr = b16(head, QUOTED_IPV6 + IP6_SADDR);
    let old_sport = u16::from_be_bytes([tcp[TCP_SOURCE], tcp[TCP_SOURCE + 1]]);
    let old_seq = u32::from_be_bytes([
        tcp[TCP_SEQ],
        tcp[TCP_SEQ + 1],
        tcp[TCP_SEQ + 2],
        tcp[TCP_SEQ + 3],
    ]);
    let new_seq = translation.seq_to_backend(old_seq);
    let check = u16::from_be_bytes([head[ICMPV6_CHECK], head[ICMPV6_CHECK + 1]]);
    let check = csum_replace16(check, &old_saddr, &backend.addr);
    let check = csum_replace2(check, old_sport, backend.port);
    let check = csum_replace4(check, old_seq, new_seq);
    QuoteRewriteV6 {
        quoted_saddr: backend.addr,
        quoted_sport: backend.port.to_be_bytes(),
        quoted_seq: new_seq.to_be_bytes(),
        icmp_check: check.to_be_bytes(),
    }
}

/// The ICMPv6 checksum after the front-end rewrites the outer destination from the VIP
/// to the flow's back-end, as it does a client segment's: the pseudo-header's
/// destination changes, and nothing else the checksum covers.
#[inline(always)]
pub const fn icmpv6_check_for_destination(
    check: [u8; 2],
    vip: &Ipv6Address,
    backend: &Ipv6Address,
) -> [u8; 2] {
    csum_replace16(u16::from_be_bytes(check), vip, backend).to_be_bytes()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{
        ipv6::{IP6_PAYLOAD_LEN, ipv6_pseudo_header_sum},
        translate::{SynAckTerms, ones_complement_add, ones_complement_sum},
    };

    const fn addr(last: u8, net: u8) -> Ipv6Address {
        [
            0x20, 0x01, 0x0d, 0xb8, 0, net, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
        ]
    }
    const VIP: Ipv6Address = addr(1, 2);
    const CLIENT: Ipv6Address = addr(2, 0);
    const ROUTER: Ipv6Address = addr(1, 1);
    const BACKEND: Ipv6Address = addr(11, 1);

    fn ipv6_header(src: &Ipv6Address, dst: &Ipv6Address, next: u8, payload_len: usize) -> Vec<u8> {
        let mut h = std::vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload_len as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        h
    }

    /// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 4443 §2.3), summed over
    /// the pseudo-header's bytes.
    fn icmpv6_checksum(src: &Ipv6Address, dst: &Ipv6Address, message: &[u8]) -> u16 {
        let mut all = Vec::new();
        all.extend_from_slice(src);
        all.extend_from_slice(dst);
        all.extend_from_slice(&(message.len() as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, next_header::ICMPV6]);
        all.extend_from_slice(message);
        !ones_complement_sum(&all)
    }

    /// Whether `message`'s checksum verifies for `src` to `dst`.
    fn verifies(src: &Ipv6Address, dst: &Ipv6Address, message: &[u8]) -> bool {
        let pseudo = ipv6_pseudo_header_sum(src, dst, message.len() as u32, next_header::ICMPV6);
        ones_complement_add(pseudo, ones_complement_sum(message)) == 0xffff
    }

    /// A router's "packet too big" to `to`, MTU 1280, quoting `quoted_tcp` bytes of a
    /// 1,500-byte segment VIP:80 -> client:40000 with `seq`, its quoted packet carrying
    /// the extension headers `quoted_chain` (Next Header values and bytes) first.
    fn packet_too_big(
        to: &Ipv6Address,
        seq: u32,
        quoted_chain: &[(u8, Vec<u8>)],
        quoted_tcp: usize,
    ) -> Vec<u8> {
        let mut tcp = std::vec![0u8; 20];
        tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40_000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x10;
        let first = quoted_chain.first().map_or(next_header::TCP, |(k, _)| *k);
        let mut message = std::vec![ICMPV6_PACKET_TOO_BIG, 0, 0, 0];
        message.extend_from_slice(&1280u32.to_be_bytes());
        message.extend_from_slice(&ipv6_header(&VIP, &CLIENT, first, 1460));
        for (_, bytes) in quoted_chain {
            message.extend_from_slice(bytes);
        }
        message.extend_from_slice(&tcp[..quoted_tcp]);
        let check = icmpv6_checksum(&ROUTER, to, &message);
        message[ICMPV6_CHECK..ICMPV6_CHECK + 2].copy_from_slice(&check.to_be_bytes());
        let mut packet = ipv6_header(&ROUTER, to, next_header::ICMPV6, message.len());
        packet.extend_from_slice(&message);
        packet
    }

    fn destination_options(next: u8, len: usize) -> Vec<u8> {
        let mut e = std::vec![next, (len / 8 - 1) as u8, 1, (len - 4) as u8];
        e.resize(len, 0);
        e
    }

    #[test]
    fn a_routers_error_names_the_flow_by_its_quote() {
        let dest = (
            next_header::DESTINATION_OPTIONS,
            destination_options(next_header::TCP, 16),
        );
        for chain in [std::vec![], std::vec![dest]] {
            for quoted in [8, 20] {
                let packet = packet_too_big(&VIP, 0xffff_fff0, &chain, quoted);
                assert!(verifies(&ROUTER, &VIP, &packet[40..]), "the fixture");
                let (error, segment) = parse_icmpv6(&packet).unwrap().unwrap();
                assert_eq!(error.mtu, 1280);
                assert_eq!(error.destination, VIP);
                assert!(error.quotes_its_destination());
                let extensions: usize = chain.iter().map(|(_, b)| b.len()).sum();
                assert_eq!(error.quoted_tcp, ICMPV6_HEAD_LEN + extensions);
                assert_eq!(
                    segment,
                    QuotedSegment {
                        vip: Endpoint {
                            addr: VIP,
                            port: 80
                        },
                        client: Endpoint {
                            addr: CLIENT,
                            port: 40_000
                        },
                        seq: 0xffff_fff0,
                    }
                );
            }
        }
        // Quoted from elsewhere: named, and not from its destination.
        let elsewhere = packet_too_big(&BACKEND, 1, &[], 8);
        let (error, _) = parse_icmpv6(&elsewhere).unwrap().unwrap();
        assert!(!error.quotes_its_destination());
    }

    #[test]
    fn other_icmpv6_and_errors_about_other_protocols_are_not_the_flows() {
        // An echo request: too short for the view, and no error.
        let mut echo = ipv6_header(&CLIENT, &VIP, next_header::ICMPV6, 8);
        echo.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(parse_icmpv6(&echo), Ok(None));
        // A neighbour solicitation is as long as the view and still not ours.
        let mut solicitation = ipv6_header(&CLIENT, &VIP, next_header::ICMPV6, 48);
        solicitation.push(135);
        solicitation.resize(40 + 48, 0);
        assert_eq!(parse_icmpv6(&solicitation), Ok(None));
        // Destination unreachable, an error about UDP, and TCP itself.
        let mut unreachable = packet_too_big(&VIP, 1, &[], 8);
        unreachable[40 + ICMPV6_TYPE] = 1;
        assert_eq!(parse_icmpv6(&unreachable), Ok(None));
        let mut udp = packet_too_big(&VIP, 1, &[], 8);
        udp[40 + QUOTED_IPV6 + IP6_NEXT_HEADER] = next_header::UDP;
        assert_eq!(parse_icmpv6(&udp), Ok(None));
        let mut tcp = packet_too_big(&VIP, 1, &[], 8);
        tcp[IP6_NEXT_HEADER] = next_header::TCP;
        assert_eq!(parse_icmpv6(&tcp), Ok(None));
    }

    #[test]
    fn bad_and_short_quotes_are_refused() {
        let good = packet_too_big(&VIP, 1, &[], 8);
        // Cut anywhere before the quoted ports and sequence number end.
        for len in 40 + ICMPV6_HLEN..good.len() {
            let mut cut = good[..len].to_vec();
            cut[IP6_PAYLOAD_LEN..IP6_PAYLOAD_LEN + 2]
                .copy_from_slice(&((len - 40) as u16).to_be_bytes());
            assert_eq!(
                parse_icmpv6(&cut),
                Err(Icmpv6Error::Truncated),
                "{len} bytes"
            );
            // The view alone, as a program calls it, bounds what it names by itself:
            // nothing after it checks the quoted TCP bytes lie within the message.
            let message = &good[40..len];
            let read = |at: usize| message.get(at..).and_then(|b| b.first_chunk()).copied();
            let mut head = [0; ICMPV6_HEAD_LEN];
            let n = message.len().min(ICMPV6_HEAD_LEN);
            head[..n].copy_from_slice(&message[..n]);
            assert_eq!(
                parse_packet_too_big(&head, VIP, message.len(), read),
                Err(Icmpv6Error::Truncated),
                "the view over {len} bytes"
            );
        }
        // A payload length past the frame.
        assert_eq!(
            parse_icmpv6(&good[..good.len() - 1]),
            Err(Icmpv6Error::OuterHeader(Ipv6Error::Truncated))
        );
        let mut v4 = good.clone();
        v4[40 + QUOTED_IPV6] = 0x45;
        assert_eq!(parse_icmpv6(&v4), Err(Icmpv6Error::QuotedNotIpv6));
        // Quoted fragments, security headers, routing with segments left.
        let fragment = (
            next_header::FRAGMENT,
            std::vec![next_header::TCP, 0, 0, 1, 0, 0, 0, 7],
        );
        assert_eq!(
            parse_icmpv6(&packet_too_big(&VIP, 1, &[fragment], 8)),
            Err(Icmpv6Error::QuotedFragment)
        );
        for kind in [next_header::AH, next_header::ESP, next_header::ROUTING] {
            let mut header = destination_options(next_header::TCP, 8);
            header[3] = 1;
            assert_eq!(
                parse_icmpv6(&packet_too_big(&VIP, 1, &[(kind, header)], 8)),
                Err(Icmpv6Error::QuotedExtensionHeaders),
                "{kind}"
            );
        }
        // The quote's extension header runs past the message.
        let mut long = packet_too_big(
            &VIP,
            1,
            &[(
                next_header::DESTINATION_OPTIONS,
                destination_options(next_header::TCP, 8),
            )],
            8,
        );
        long[40 + ICMPV6_HEAD_LEN + 1] = 3;
        assert_eq!(parse_icmpv6(&long), Err(Icmpv6Error::Truncated));
        // An outer fragment, whatever it carries.
        let mut outer = ipv6_header(&ROUTER, &VIP, next_header::FRAGMENT, 8 + good.len() - 40);
        outer.extend_from_slice(&[next_header::ICMPV6, 0, 0, 0, 0, 0, 0, 9]);
        outer.extend_from_slice(&good[40..]);
        assert_eq!(parse_icmpv6(&outer), Err(Icmpv6Error::Fragment));
        assert_eq!(
            parse_icmpv6(&good[..20]),
            Err(Icmpv6Error::OuterHeader(Ipv6Error::Truncated))
        );
    }

    #[test]
    fn the_quote_returns_to_the_servers_terms_with_the_checksum_whole() {
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
        let backend = Endpoint {
            addr: BACKEND,
            port: 8080,
        };
        let dest = (
            next_header::DESTINATION_OPTIONS,
            destination_options(next_header::TCP, 8),
        );
        for chain in [std::vec![], std::vec![dest]] {
            for quoted in [8, 20] {
                let packet = packet_too_big(&VIP, client_seq, &chain, quoted);
                // The front-end: the outer destination becomes the back-end's.
                let mut out = packet.clone();
                out[IP6_DADDR..IP6_DADDR + 16].copy_from_slice(&BACKEND);
                let c = 40 + ICMPV6_CHECK;
                let check = icmpv6_check_for_destination([out[c], out[c + 1]], &VIP, &BACKEND);
                out[c..c + 2].copy_from_slice(&check);
                assert!(verifies(&ROUTER, &BACKEND, &out[40..]), "forwarded");
                // The back-end: the quote becomes the server's segment.
                let (error, _) = parse_icmpv6(&out).unwrap().unwrap();
                let m = 40;
                let head = out[m..].first_chunk::<ICMPV6_HEAD_LEN>().unwrap();
                let qt = m + error.quoted_tcp;
                let tcp = out[qt..].first_chunk::<QUOTED_TCP_LEN>().unwrap();
                let r = quote_to_backend_v6(head, tcp, backend, &t);
                let q = m + QUOTED_IPV6 + IP6_SADDR;
                out[q..q + 16].copy_from_slice(&r.quoted_saddr);
                out[qt..qt + 2].copy_from_slice(&r.quoted_sport);
                out[qt + 4..qt + 8].copy_from_slice(&r.quoted_seq);
                out[c..c + 2].copy_from_slice(&r.icmp_check);
                assert!(verifies(&ROUTER, &BACKEND, &out[40..]), "translated");
                let (error, seg) = parse_icmpv6(&out).unwrap().unwrap();
                assert!(error.quotes_its_destination());
                assert_eq!(seg.vip, backend);
                // The back-end's key of the flow: the client's end, and its own.
                let (_, quoted) = parse_icmpv6(&packet).unwrap().unwrap();
                assert_eq!(
                    quoted.backend_flow_key(backend),
                    BackendFlowKeyV6 {
                        client_addr: CLIENT,
                        backend_addr: BACKEND,
                        client_port_be: u16::from_ne_bytes(40_000u16.to_be_bytes()),
                        backend_port_be: u16::from_ne_bytes(8080u16.to_be_bytes()),
                    }
                );
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
        // A wrong checksum stays wrong.
        let mut bad = packet_too_big(&BACKEND, client_seq, &[], 8);
        bad[40 + ICMPV6_CHECK] ^= 0x10;
        let head = bad[40..].first_chunk::<ICMPV6_HEAD_LEN>().unwrap();
        let tcp = bad[40 + ICMPV6_HEAD_LEN..].first_chunk().unwrap();
        let r = quote_to_backend_v6(head, tcp, backend, &t);
        let mut out = bad.clone();
        out[40 + QUOTED_IPV6 + IP6_SADDR..][..16].copy_from_slice(&r.quoted_saddr);
        out[40 + ICMPV6_HEAD_LEN..][..2].copy_from_slice(&r.quoted_sport);
        out[40 + ICMPV6_HEAD_LEN + 4..][..4].copy_from_slice(&r.quoted_seq);
        out[40 + ICMPV6_CHECK..][..2].copy_from_slice(&r.icmp_check);
        assert!(!verifies(&ROUTER, &BACKEND, &out[40..]));
    }
}
