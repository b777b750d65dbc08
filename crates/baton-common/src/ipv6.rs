//! IPv6 (RFC 8200): the fixed header's layout and accessors, the bounded walk over
//! extension headers to the upper-layer header, the TCP pseudo-header sum over 128-bit
//! addresses, the incremental checksum update for an address rewrite, and the MSS an MTU
//! leaves. The IPv6 counterpart of [`crate::layout`]'s IPv4 part and of the IPv4 sums in
//! [`crate::translate`]; docs/design.md, "IPv6: the plan", says how the programs will
//! use it.
//!
//! As in [`crate::layout`], the accessors read a fixed-size array (the 40-byte header,
//! copied onto the caller's stack) by constant index, so that the eBPF programs and the
//! host run the same code and the verifier follows every access. The walk over extension
//! headers reads each header's first [`EXTENSION_PEEK_LEN`] bytes through a closure the
//! caller supplies (a packet load in eBPF, a slice on the host), at most
//! [`MAX_EXTENSION_HEADERS`] times, so its instruction count is bounded.

use crate::{
    layout::ETH_HLEN,
    translate::{ChecksumDiff, ones_complement_add},
};

/// The IPv6 EtherType (0x86dd), as its bytes on the wire.
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];

/// The fixed IPv6 header (RFC 8200 §3): everything before the first extension header.
pub const IPV6_HLEN: usize = 40;
/// Version (4 bits), traffic class (8 bits) and flow label (20 bits), in one 32-bit word.
pub const IP6_VERSION_CLASS_FLOW: usize = 0;
/// The payload's length: extension headers and upper layer, not the fixed header.
pub const IP6_PAYLOAD_LEN: usize = 4;
pub const IP6_NEXT_HEADER: usize = 6;
pub const IP6_HOP_LIMIT: usize = 7;
pub const IP6_SADDR: usize = 8;
pub const IP6_DADDR: usize = 24;
/// An IPv6 address's length.
pub const IPV6_ALEN: usize = 16;

/// Ethernet and the fixed IPv6 header: the first upper-layer or extension header's
/// offset in a frame.
pub const ETH_IPV6_LEN: usize = ETH_HLEN + IPV6_HLEN;
/// The fixed IPv6 header's bytes.
pub type Ipv6Header = [u8; IPV6_HLEN];
/// An IPv6 address, in network order as on the wire.
pub type Ipv6Address = [u8; IPV6_ALEN];

/// The IPv6 header and the TCP header without options: what an MTU carries besides the
/// segment's data (RFC 8200 §3, RFC 9293 §3.7.1).
pub const IPV6_TCP_HEADERS: u32 = (IPV6_HLEN + crate::layout::TCP_HLEN) as u32;
/// The smallest MTU a link may have to carry IPv6 (RFC 8200 §5).
pub const IPV6_MIN_MTU: u32 = 1280;

/// Next Header values (IANA "Assigned Internet Protocol Numbers"; RFC 8200 §4 lists the
/// extension headers).
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload (RFC 4303).
    pub const ESP: u8 = 50;
    /// Authentication Header (RFC 4302).
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    /// Nothing follows (RFC 8200 §4.7).
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
    /// Mobility (RFC 6275), HIP (RFC 7401), Shim6 (RFC 5533), and the two values for
    /// experiments (RFC 3692): extension headers in IANA's registry that the walk does
    /// not cross.
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
    pub const EXPERIMENT_1: u8 = 253;
    pub const EXPERIMENT_2: u8 = 254;
}

#[inline(always)]
const fn bytes16(h: &Ipv6Header, at: usize) -> Ipv6Address {
    let mut a = [0u8; IPV6_ALEN];
    let mut i = 0;
    while i < IPV6_ALEN {
        a[i] = h[at + i];
        i += 1;
    }
    a
}

/// The version field: 6 for IPv6.
#[inline(always)]
pub const fn ipv6_version(h: &Ipv6Header) -> u8 {
    h[IP6_VERSION_CLASS_FLOW] >> 4
}

/// The traffic class: DSCP and the ECN field in its low two bits (RFC 8200 §7,
/// RFC 3168 §5), which, as for IPv4's TOS byte, a rewriter leaves as it arrived.
#[inline(always)]
pub const fn ipv6_traffic_class(h: &Ipv6Header) -> u8 {
    (h[0] << 4) | (h[1] >> 4)
}

/// The flow label (RFC 6437), 20 bits. A sender may change it mid-connection (Linux
/// does on a retransmission timeout, `sk_rethink_txhash`), so nothing keys a flow by it.
#[inline(always)]
pub const fn ipv6_flow_label(h: &Ipv6Header) -> u32 {
    ((h[1] as u32 & 0x0f) << 16) | ((h[2] as u32) << 8) | h[3] as u32
}

/// The payload's length: extension headers and upper-layer data after the fixed header.
#[inline(always)]
pub const fn ipv6_payload_len(h: &Ipv6Header) -> u16 {
    u16::from_be_bytes([h[IP6_PAYLOAD_LEN], h[IP6_PAYLOAD_LEN + 1]])
}

/// The first header after the fixed one: an extension header or the upper layer.
#[inline(always)]
pub const fn ipv6_next_header(h: &Ipv6Header) -> u8 {
    h[IP6_NEXT_HEADER]
}

/// The hop limit, IPv6's TTL: the SYN' will carry the client's own.
#[inline(always)]
pub const fn ipv6_hop_limit(h: &Ipv6Header) -> u8 {
    h[IP6_HOP_LIMIT]
}

#[inline(always)]
pub const fn ipv6_saddr(h: &Ipv6Header) -> Ipv6Address {
    bytes16(h, IP6_SADDR)
}

#[inline(always)]
pub const fn ipv6_daddr(h: &Ipv6Header) -> Ipv6Address {
    bytes16(h, IP6_DADDR)
}

/// Why an IPv6 packet cannot be read to its upper layer: the caller drops and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ipv6Error {
    /// The version field is not 6.
    #[error("not an IPv6 header: version {0}")]
    NotIpv6(u8),
    /// The packet (or the payload length) ends before a header it announces.
    #[error("truncated IPv6 packet")]
    Truncated,
    /// More extension headers than [`MAX_EXTENSION_HEADERS`] before the upper layer.
    #[error("more than {MAX_EXTENSION_HEADERS} IPv6 extension headers")]
    TooManyExtensionHeaders,
    /// A hop-by-hop options header other than first: RFC 8200 §4.1 allows it only right
    /// after the fixed header, and Linux drops the packet with a parameter problem.
    #[error("hop-by-hop options header not first")]
    MisplacedHopByHop,
}

/// Where a walk over a packet's extension headers ends ([`walk_extension_headers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Payload {
    /// An upper-layer header (TCP, ICMPv6, UDP or any protocol that is no extension
    /// header): its protocol number and its offset, in the caller's terms (from the
    /// fixed header's first byte when the walk starts at [`IPV6_HLEN`]).
    Upper { protocol: u8, offset: usize },
    /// A fragment header (RFC 8200 §4.5). A fragment's upper-layer header may be in
    /// another fragment, and the front-end does not reassemble: a fragment to a VIP is
    /// dropped and counted (as Cilium and Katran do), and so is a first fragment, which
    /// a TCP sender that does path MTU discovery never makes.
    Fragment {
        /// The fragment offset, in 8-byte units.
        offset: u16,
        /// The M flag: more fragments follow.
        more: bool,
        identification: u32,
    },
    /// An Authentication Header (RFC 4302): IPsec, which Baton does not terminate.
    Authentication,
    /// An Encapsulating Security Payload (RFC 4303): the rest is encrypted.
    EncapsulatingSecurity,
    /// No Next Header (RFC 8200 §4.7): nothing follows.
    NoNextHeader,
    /// A routing header with segments left (RFC 8200 §4.4): the destination is one
    /// waypoint, not the packet's final destination, and the TCP checksum covers the
    /// final one (§8.1). Baton is no router: dropped and counted.
    RoutingSegmentsLeft { routing_type: u8, segments_left: u8 },
    /// An extension header the walk does not cross (Mobility, HIP, Shim6, the
    /// experimental values), by its Next Header value.
    UnknownExtension(u8),
}

/// The most extension headers the walk crosses before the upper layer: four, as
/// Cilium's `ipv6_hdrlen` does, so that its instructions are bounded for the verifier.
/// Four covers every chain RFC 8200 §4.1 recommends that Baton would accept: hop-by-hop,
/// destination options, routing (segments left 0), destination options, then TCP; each
/// at most once, destination options twice. Fragment, AH and ESP end the walk without
/// counting against it. A longer chain is [`Ipv6Error::TooManyExtensionHeaders`].
pub const MAX_EXTENSION_HEADERS: usize = 4;

/// The bytes the walk reads of each extension header: the shortest one's length (every
/// extension header is a multiple of 8 bytes, RFC 8200 §4), and the whole of a fragment
/// header (§4.5). Holds the next header (byte 0), the length in 8-byte units not counting
/// the first 8 (byte 1), and for a routing header its type (byte 2) and segments left
/// (byte 3).
pub const EXTENSION_PEEK_LEN: usize = 8;
/// The length of a fragment header (RFC 8200 §4.5).
pub const FRAGMENT_HLEN: usize = 8;

/// An extension header's length in bytes from its first bytes: the generic format of
/// hop-by-hop, routing and destination options headers (RFC 8200 §4.3 to 4.6, RFC 6564):
/// `(Hdr Ext Len + 1) * 8`, from 8 to 2,048.
#[inline(always)]
pub const fn extension_header_len(peek: &[u8; EXTENSION_PEEK_LEN]) -> usize {
    (peek[1] as usize + 1) * 8
}

/// Walks the extension headers that start at `start` with Next Header `first`, up to the
/// upper layer, within `end` (one past the last byte the packet's payload length, or a
/// quote, holds; the same terms as `start`). `read(offset)` gives the
/// [`EXTENSION_PEEK_LEN`] bytes at `offset`, or `None` where the packet holds fewer; the
/// walk calls it only for offsets with 8 bytes before `end`, at most
/// [`MAX_EXTENSION_HEADERS`] + 1 times. For a packet, `start` is [`IPV6_HLEN`] and
/// `first` the fixed header's [`ipv6_next_header`]; for the packet an ICMPv6 error quotes,
/// they are the quoted header's (`crate::icmpv6`).
///
/// A routing header with no segments left is crossed, as its receiver must
/// (RFC 8200 §4.4); hop-by-hop options anywhere but first is an error (§4.1). The options
/// inside hop-by-hop and destination options headers are not read: an option whose type
/// asks an unrecognising node to discard the packet (§4.2) concerns the kernel that
/// would deliver it, and a back-end's kernel still reads them.
#[inline(always)]
pub fn walk_extension_headers<F>(
    first: u8,
    start: usize,
    end: usize,
    mut read: F,
) -> Result<Ipv6Payload, Ipv6Error>
where
    F: FnMut(usize) -> Option<[u8; EXTENSION_PEEK_LEN]>,
{
    let mut kind = first;
    let mut offset = start;
    let mut crossed = 0;
    // One more turn than the bound: the last can only report what follows the fourth.
    while crossed <= MAX_EXTENSION_HEADERS {
        match kind {
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DESTINATION_OPTIONS => {
                if kind == next_header::HOP_BY_HOP && offset != start {
                    return Err(Ipv6Error::MisplacedHopByHop);
                }
                if crossed == MAX_EXTENSION_HEADERS {
                    return Err(Ipv6Error::TooManyExtensionHeaders);
                }
                if offset + EXTENSION_PEEK_LEN > end {
                    return Err(Ipv6Error::Truncated);
                }
                let Some(peek) = read(offset) else {
                    return Err(Ipv6Error::Truncated);
                };
                if kind == next_header::ROUTING && peek[3] != 0 {
                    return Ok(Ipv6Payload::RoutingSegmentsLeft {
                        routing_type: peek[2],
                        segments_left: peek[3],
                    });
                }
                let len = extension_header_len(&peek);
                if offset + len > end {
                    return Err(Ipv6Error::Truncated);
                }
                kind = peek[0];
                offset += len;
                crossed += 1;
            }
            next_header::FRAGMENT => {
                if offset + FRAGMENT_HLEN > end {
                    return Err(Ipv6Error::Truncated);
                }
                let Some(peek) = read(offset) else {
                    return Err(Ipv6Error::Truncated);
                };
                let offset_flags = u16::from_be_bytes([peek[2], peek[3]]);
                return Ok(Ipv6Payload::Fragment {
                    offset: offset_flags >> 3,
                    more: offset_flags & 1 != 0,
                    identification: u32::from_be_bytes([peek[4], peek[5], peek[6], peek[7]]),
                });
            }
            next_header::AH => return Ok(Ipv6Payload::Authentication),
            next_header::ESP => return Ok(Ipv6Payload::EncapsulatingSecurity),
            next_header::NO_NEXT_HEADER => return Ok(Ipv6Payload::NoNextHeader),
            next_header::MOBILITY
            | next_header::HIP
            | next_header::SHIM6
            | next_header::EXPERIMENT_1
            | next_header::EXPERIMENT_2 => return Ok(Ipv6Payload::UnknownExtension(kind)),
            protocol => return Ok(Ipv6Payload::Upper { protocol, offset }),
        }
    }
    Err(Ipv6Error::TooManyExtensionHeaders)
}

/// Checks a fixed header against the bytes a frame holds from its first byte
/// (`available`) and walks its extension headers ([`walk_extension_headers`]) within its
/// payload length; `read` as there, with offsets from the fixed header's first byte.
/// Bytes past the payload length (Ethernet padding) are not the packet's. A jumbogram
/// (payload length 0 and a hop-by-hop jumbo option, RFC 2675) reads as an empty payload:
/// no link Baton serves carries one.
#[inline(always)]
pub fn ipv6_upper_layer<F>(
    h: &Ipv6Header,
    available: usize,
    read: F,
) -> Result<Ipv6Payload, Ipv6Error>
where
    F: FnMut(usize) -> Option<[u8; EXTENSION_PEEK_LEN]>,
{
    if ipv6_version(h) != 6 {
        return Err(Ipv6Error::NotIpv6(ipv6_version(h)));
    }
    let end = IPV6_HLEN + ipv6_payload_len(h) as usize;
    if end > available {
        return Err(Ipv6Error::Truncated);
    }
    walk_extension_headers(ipv6_next_header(h), IPV6_HLEN, end, read)
}

/// [`ipv6_upper_layer`] over a byte slice that starts at the fixed header (the host's
/// form, for userspace, the tests and the fuzz targets).
pub fn ipv6_upper_layer_of(packet: &[u8]) -> Result<Ipv6Payload, Ipv6Error> {
    let Some(h) = packet.first_chunk::<IPV6_HLEN>() else {
        return Err(Ipv6Error::Truncated);
    };
    ipv6_upper_layer(h, packet.len(), |at| {
        packet
            .get(at..)
            .and_then(|b| b.first_chunk::<EXTENSION_PEEK_LEN>())
            .copied()
    })
}

#[inline(always)]
const fn word(a: &Ipv6Address, i: usize) -> u16 {
    u16::from_be_bytes([a[2 * i], a[2 * i + 1]])
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1) that TCP's and ICMPv6's checksums cover:
/// source and destination address, the upper-layer packet's length as 32 bits, three
/// zero bytes and the upper layer's Next Header (6 for TCP, 58 for ICMPv6). The
/// addresses are the packet's own; with a routing header the destination would be the
/// final one, but the walk refuses those with segments left
/// ([`Ipv6Payload::RoutingSegmentsLeft`]), so the fixed header's is the final one.
///
/// A fixed number of word additions and no slice, so the eBPF programs call it too; it
/// is also what a `CHECKSUM_PARTIAL` sender leaves in the checksum field
/// (`tcp_v6_send_check`, net/ipv6/tcp_ipv6.c).
#[inline(always)]
pub const fn ipv6_pseudo_header_sum(
    saddr: &Ipv6Address,
    daddr: &Ipv6Address,
    upper_len: u32,
    protocol: u8,
) -> u16 {
    let mut sum = 0u16;
    let mut i = 0;
    while i < IPV6_ALEN / 2 {
        sum = ones_complement_add(sum, word(saddr, i));
        sum = ones_complement_add(sum, word(daddr, i));
        i += 1;
    }
    sum = ones_complement_add(sum, (upper_len >> 16) as u16);
    sum = ones_complement_add(sum, upper_len as u16);
    ones_complement_add(sum, protocol as u16)
}

/// [`ipv6_pseudo_header_sum`] for TCP: the segment's length is header and data.
#[inline(always)]
pub const fn tcp_ipv6_pseudo_header_sum(
    saddr: &Ipv6Address,
    daddr: &Ipv6Address,
    tcp_len: u32,
) -> u16 {
    ipv6_pseudo_header_sum(saddr, daddr, tcp_len, next_header::TCP)
}

/// A TCP or ICMPv6 checksum `check` after a 128-bit address it covers changes from `old`
/// to `new` (a pseudo-header address, or an address inside an ICMPv6 error's quote at an
/// even offset): RFC 1624 §3's equation 3, `HC' = ~(~HC + ~m + m')`, over the eight
/// 16-bit words at once, so that, like [`crate::translate::csum_replace4`], it never
/// turns a checksum into 0xffff and equals a recomputation bit for bit. IPv6 has no
/// header checksum (RFC 8200 §3): an address rewrite updates only the upper layer's.
#[inline(always)]
pub const fn csum_replace16(check: u16, old: &Ipv6Address, new: &Ipv6Address) -> u16 {
    // 17 terms under 2^16 each: the u32 cannot overflow.
    let mut sum = (!check) as u32;
    let mut i = 0;
    while i < IPV6_ALEN / 2 {
        sum += (!word(old, i)) as u32 + word(new, i) as u32;
        i += 1;
    }
    let once = (sum & 0xffff) + (sum >> 16);
    let twice = (once & 0xffff) + (once >> 16);
    !(twice as u16)
}

impl ChecksumDiff {
    /// A 128-bit address covered by the checksum changed from `old` to `new`: the
    /// eight words at once, for one `bpf_l4_csum_replace` by diff in the tc programs
    /// (the kernel's `inet_proto_csum_replace16` does the same).
    #[inline(always)]
    pub const fn address16(self, old: &Ipv6Address, new: &Ipv6Address) -> Self {
        let mut diff = self;
        let mut i = 0;
        while i < IPV6_ALEN / 2 {
            diff = diff.word([old[2 * i], old[2 * i + 1]], [new[2 * i], new[2 * i + 1]]);
            i += 1;
        }
        diff
    }
}

/// The MSS a TCP segment over IPv6 may announce for an interface whose MTU is `mtu`: the
/// MTU less the fixed IPv6 header and the TCP header ([`IPV6_TCP_HEADERS`], 60 bytes; 20
/// more than IPv4's 40), so 1,440 for Ethernet's 1,500 and 1,220 for IPv6's minimum of
/// 1,280. Below 1,280 a link cannot carry IPv6 at all (RFC 8200 §5) and Linux disables it
/// there; the answer is then what 1,280 leaves, which the caller refuses or logs as it
/// does an IPv4 MTU too small for its MSS. Saturates at 65,535.
#[inline(always)]
pub const fn ipv6_mss(mtu: u32) -> u16 {
    let mtu = if mtu < IPV6_MIN_MTU {
        IPV6_MIN_MTU
    } else {
        mtu
    };
    let mss = mtu - IPV6_TCP_HEADERS;
    if mss > 0xffff { 0xffff } else { mss as u16 }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::translate::ones_complement_sum;

    /// 2001:db8::2, the lab's documentation-range client.
    const CLIENT: Ipv6Address = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// 2001:db8:2::1, a VIP.
    const VIP: Ipv6Address = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn header(next: u8, payload_len: u16) -> Vec<u8> {
        // Version 6, traffic class 0xb9 (DSCP 46, ECN ECT(1)), flow label 0x12345.
        let mut h = std::vec![0x6b, 0x91, 0x23, 0x45];
        h.extend_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&CLIENT);
        h.extend_from_slice(&VIP);
        h
    }

    /// An extension header of the generic format, `len` bytes (a multiple of 8), padded
    /// with PadN (RFC 8200 §4.2) after its two bytes.
    fn extension(next: u8, len: usize) -> Vec<u8> {
        let mut e = std::vec![next, (len / 8 - 1) as u8];
        e.resize(len, 0);
        if len > 2 {
            e[2] = 1;
            e[3] = (len - 4) as u8;
        }
        e
    }

    fn routing(next: u8, segments_left: u8) -> Vec<u8> {
        // A segment routing header (type 4, RFC 8754) with one segment.
        let mut r = std::vec![next, 2, 4, segments_left, 0, 0, 0, 0];
        r.extend_from_slice(&VIP);
        r
    }

    fn fragment(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let mut f = std::vec![next, 0];
        f.extend_from_slice(&((offset << 3) | more as u16).to_be_bytes());
        f.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        f
    }

    /// A packet whose extension headers are `chain` (each its own Next Header value and
    /// bytes), then 20 bytes of TCP.
    fn packet(chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (_, bytes) in chain {
            body.extend_from_slice(bytes);
        }
        body.extend_from_slice(&[0; 20]);
        let first = chain.first().map_or(next_header::TCP, |(kind, _)| *kind);
        let mut p = header(first, body.len() as u16);
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn accessors_read_the_fields_of_a_known_header() {
        let p = header(next_header::TCP, 1234);
        let h: &Ipv6Header = p.first_chunk().unwrap();
        assert_eq!(ipv6_version(h), 6);
        assert_eq!(ipv6_traffic_class(h), 0xb9);
        assert_eq!(ipv6_flow_label(h), 0x12345);
        assert_eq!(ipv6_payload_len(h), 1234);
        assert_eq!(ipv6_next_header(h), next_header::TCP);
        assert_eq!(ipv6_hop_limit(h), 64);
        assert_eq!(ipv6_saddr(h), CLIENT);
        assert_eq!(ipv6_daddr(h), VIP);
        assert_eq!(ETH_IPV6_LEN, 54);
    }

    #[test]
    fn a_walk_crosses_each_kind_to_tcp() {
        use next_header::*;
        assert_eq!(
            ipv6_upper_layer_of(&packet(&[])),
            Ok(Ipv6Payload::Upper {
                protocol: TCP,
                offset: 40
            })
        );
        // The order RFC 8200 §4.1 recommends, every kind Baton crosses, of several sizes.
        let chain = [
            (HOP_BY_HOP, extension(DESTINATION_OPTIONS, 8)),
            (DESTINATION_OPTIONS, extension(ROUTING, 16)),
            (ROUTING, routing(DESTINATION_OPTIONS, 0)),
            (DESTINATION_OPTIONS, extension(TCP, 2048)),
        ];
        assert_eq!(
            ipv6_upper_layer_of(&packet(&chain)),
            Ok(Ipv6Payload::Upper {
                protocol: TCP,
                offset: 40 + 8 + 16 + 24 + 2048
            })
        );
        for (kind, bytes) in chain {
            let mut one = bytes.clone();
            one[0] = ICMPV6;
            assert_eq!(
                ipv6_upper_layer_of(&packet(&[(kind, one)])),
                Ok(Ipv6Payload::Upper {
                    protocol: ICMPV6,
                    offset: 40 + bytes.len()
                }),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_walk_stops_at_its_bound() {
        use next_header::*;
        let dest = |next| (DESTINATION_OPTIONS, extension(next, 8));
        let four = [
            dest(DESTINATION_OPTIONS),
            dest(DESTINATION_OPTIONS),
            dest(DESTINATION_OPTIONS),
            dest(TCP),
        ];
        assert_eq!(
            ipv6_upper_layer_of(&packet(&four)),
            Ok(Ipv6Payload::Upper {
                protocol: TCP,
                offset: 40 + 32
            })
        );
        let mut five = four.to_vec();
        five[3] = dest(DESTINATION_OPTIONS);
        five.push(dest(TCP));
        assert_eq!(
            ipv6_upper_layer_of(&packet(&five)),
            Err(Ipv6Error::TooManyExtensionHeaders)
        );
        // What ends the walk does not count: four crossed, then a fragment header.
        let mut then_fragment = four.to_vec();
        then_fragment[3] = dest(FRAGMENT);
        then_fragment.push((FRAGMENT, fragment(TCP, 0, true)));
        assert!(matches!(
            ipv6_upper_layer_of(&packet(&then_fragment)),
            Ok(Ipv6Payload::Fragment { .. })
        ));
        // The reads are bounded too, whatever the chain.
        let p = packet(&five);
        let mut reads = 0;
        let h = p.first_chunk::<IPV6_HLEN>().unwrap();
        let _ = ipv6_upper_layer(h, p.len(), |at| {
            reads += 1;
            p[at..].first_chunk().copied()
        });
        assert_eq!(reads, MAX_EXTENSION_HEADERS);
    }

    #[test]
    fn fragments_security_headers_and_unknown_ones_are_reported() {
        use next_header::*;
        assert_eq!(
            ipv6_upper_layer_of(&packet(&[(FRAGMENT, fragment(TCP, 0, true))])),
            Ok(Ipv6Payload::Fragment {
                offset: 0,
                more: true,
                identification: 0xdead_beef
            })
        );
        assert_eq!(
            ipv6_upper_layer_of(&packet(&[
                (HOP_BY_HOP, extension(FRAGMENT, 8)),
                (FRAGMENT, fragment(TCP, 185, false)),
            ])),
            Ok(Ipv6Payload::Fragment {
                offset: 185,
                more: false,
                identification: 0xdead_beef
            })
        );
        for (kind, expected) in [
            (AH, Ipv6Payload::Authentication),
            (ESP, Ipv6Payload::EncapsulatingSecurity),
            (NO_NEXT_HEADER, Ipv6Payload::NoNextHeader),
            (MOBILITY, Ipv6Payload::UnknownExtension(MOBILITY)),
            (HIP, Ipv6Payload::UnknownExtension(HIP)),
            (SHIM6, Ipv6Payload::UnknownExtension(SHIM6)),
            (EXPERIMENT_2, Ipv6Payload::UnknownExtension(EXPERIMENT_2)),
        ] {
            assert_eq!(
                ipv6_upper_layer_of(&packet(&[(kind, extension(TCP, 8))])),
                Ok(expected),
                "{kind}"
            );
        }
        assert_eq!(
            ipv6_upper_layer_of(&packet(&[(ROUTING, routing(TCP, 1))])),
            Ok(Ipv6Payload::RoutingSegmentsLeft {
                routing_type: 4,
                segments_left: 1
            })
        );
        assert_eq!(
            ipv6_upper_layer_of(&packet(&[
                (DESTINATION_OPTIONS, extension(HOP_BY_HOP, 8)),
                (HOP_BY_HOP, extension(TCP, 8)),
            ])),
            Err(Ipv6Error::MisplacedHopByHop)
        );
    }

    #[test]
    fn every_cut_and_every_overlong_length_is_refused() {
        use next_header::*;
        let p = packet(&[
            (HOP_BY_HOP, extension(ROUTING, 16)),
            (ROUTING, routing(TCP, 0)),
        ]);
        let tcp_at = 40 + 16 + 24;
        // The payload length shortened to end inside a header: truncated.
        for len in 0..tcp_at - 40 {
            let mut cut = p[..40 + len].to_vec();
            cut[IP6_PAYLOAD_LEN..IP6_PAYLOAD_LEN + 2].copy_from_slice(&(len as u16).to_be_bytes());
            assert_eq!(
                ipv6_upper_layer_of(&cut),
                Err(Ipv6Error::Truncated),
                "{len}"
            );
        }
        // A payload length past the frame's bytes.
        assert_eq!(
            ipv6_upper_layer_of(&p[..p.len() - 1]),
            Err(Ipv6Error::Truncated)
        );
        assert_eq!(ipv6_upper_layer_of(&p[..39]), Err(Ipv6Error::Truncated));
        // An extension length running past the payload.
        let mut long = p.clone();
        long[40 + 1] = 200;
        assert_eq!(ipv6_upper_layer_of(&long), Err(Ipv6Error::Truncated));
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(ipv6_upper_layer_of(&v4), Err(Ipv6Error::NotIpv6(4)));
        // A payload length that ends inside a header the frame holds in full (the rest
        // is Ethernet padding, or another packet's bytes): refused without a read past it.
        for (kind, bytes) in [
            (HOP_BY_HOP, extension(TCP, 8)),
            (FRAGMENT, fragment(TCP, 0, false)),
        ] {
            let mut short = packet(&[(kind, bytes)]);
            short[IP6_PAYLOAD_LEN..IP6_PAYLOAD_LEN + 2].copy_from_slice(&4u16.to_be_bytes());
            let h = short.first_chunk::<IPV6_HLEN>().unwrap();
            let walked = ipv6_upper_layer(h, short.len(), |at| {
                panic!("read at {at}, past the payload's end at 44")
            });
            assert_eq!(walked, Err(Ipv6Error::Truncated), "{kind}");
        }
        // Ethernet padding after the payload is not read as a header.
        let mut padded = packet(&[]);
        padded.extend_from_slice(&[0; 6]);
        assert!(matches!(
            ipv6_upper_layer_of(&padded),
            Ok(Ipv6Payload::Upper { offset: 40, .. })
        ));
    }

    /// A TCP checksum computed by summing the pseudo-header's 40 bytes as RFC 8200 §8.1
    /// draws them, independently of [`ipv6_pseudo_header_sum`]'s words.
    fn tcp_checksum_by_bytes(saddr: &Ipv6Address, daddr: &Ipv6Address, segment: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(saddr);
        pseudo.extend_from_slice(daddr);
        pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next_header::TCP]);
        pseudo.extend_from_slice(segment);
        !ones_complement_sum(&pseudo)
    }

    /// A SYN from [2001:db8::1]:50000 to [2001:db8::2]:80 (seq 1, window 65535, MSS
    /// 1440), its checksum as an independent computation gave it (Python's `struct` and
    /// `ipaddress`, summing RFC 8200 §8.1's pseudo-header and the segment): 0x7924.
    const SYN: [u8; 24] = [
        0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0x79, 0x24, 0, 0,
        2, 4, 0x05, 0xa0,
    ];

    #[test]
    fn a_known_segments_checksum_verifies() {
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut server = client;
        client[15] = 1;
        server[15] = 2;
        let pseudo = tcp_ipv6_pseudo_header_sum(&client, &server, SYN.len() as u32);
        assert_eq!(
            ones_complement_add(pseudo, ones_complement_sum(&SYN)),
            0xffff,
            "the segment and its pseudo-header sum to all ones"
        );
        let mut zeroed = SYN;
        zeroed[16..18].fill(0);
        assert_eq!(tcp_checksum_by_bytes(&client, &server, &zeroed), 0x7924);
    }

    #[test]
    fn the_mss_leaves_room_for_sixty_bytes_of_headers() {
        assert_eq!(ipv6_mss(1500), 1440);
        assert_eq!(ipv6_mss(1280), 1220);
        assert_eq!(ipv6_mss(9000), 8940);
        assert_eq!(
            ipv6_mss(1000),
            1220,
            "below IPv6's minimum: what 1,280 leaves"
        );
        assert_eq!(ipv6_mss(u32::MAX), 0xffff);
    }

    mod prop {
        use super::super::*;
        use super::{Vec, tcp_checksum_by_bytes};
        use crate::translate::ones_complement_sum;
        use proptest::prelude::*;

        proptest! {
            /// The word-by-word pseudo-header sum equals the 40 bytes summed.
            #[test]
            fn pseudo_header_sum_equals_the_bytes_summed(
                saddr: [u8; 16],
                daddr: [u8; 16],
                len: u32,
                protocol: u8,
            ) {
                let mut bytes = Vec::new();
                bytes.extend_from_slice(&saddr);
                bytes.extend_from_slice(&daddr);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, protocol]);
                prop_assert_eq!(
                    ipv6_pseudo_header_sum(&saddr, &daddr, len, protocol),
                    ones_complement_sum(&bytes)
                );
            }

            /// Rewriting either address of a segment (the front-end's destination, the
            /// back-end's source) by [`csum_replace16`], or by a [`ChecksumDiff`] as the
            /// kernel applies it, gives the checksum a recomputation gives.
            #[test]
            fn an_address_rewrite_equals_recomputation(
                saddr: [u8; 16],
                daddr: [u8; 16],
                new: [u8; 16],
                source: bool,
                segment in proptest::collection::vec(any::<u8>(), 20..80),
            ) {
                let mut segment = segment;
                segment[16..18].fill(0);
                let check = tcp_checksum_by_bytes(&saddr, &daddr, &segment);
                let (old, after) = if source {
                    (saddr, tcp_checksum_by_bytes(&new, &daddr, &segment))
                } else {
                    (daddr, tcp_checksum_by_bytes(&saddr, &new, &segment))
                };
                prop_assert_eq!(csum_replace16(check, &old, &new), after);
                let by_diff = ChecksumDiff::new()
                    .address16(&old, &new)
                    .apply(check.to_be_bytes());
                // The field's bytes as they sit in the packet.
                prop_assert_eq!(u16::from_be_bytes(by_diff), after);
            }

            /// The walk never panics, reads only within the packet, and what it names
            /// lies within the payload length.
            #[test]
            fn any_bytes_walk_within_the_packet(
                bytes in proptest::collection::vec(any::<u8>(), 0..200),
                next in prop_oneof![Just(0u8), Just(43), Just(44), Just(60), any::<u8>()],
            ) {
                let mut p = bytes;
                if p.len() >= IPV6_HLEN {
                    p[0] = 0x60;
                    p[IP6_NEXT_HEADER] = next;
                    let len = (p.len() - IPV6_HLEN) as u16;
                    p[IP6_PAYLOAD_LEN..IP6_PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
                }
                if let Ok(Ipv6Payload::Upper { offset, .. }) = ipv6_upper_layer_of(&p) {
                    prop_assert!(offset >= IPV6_HLEN && offset <= p.len());
                    prop_assert_eq!((offset - IPV6_HLEN) % 8, 0);
                }
            }
        }
    }
}
