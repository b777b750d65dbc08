//! IPv6 headers (RFC 8200 §3), and the walk over extension headers to the upper layer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                   Source Address (128 bits)                   |
//! |                Destination Address (128 bits)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The fixed header's fields and the walk are `baton_common::ipv6`'s, the code the eBPF
//! programs run; this module wraps them in the checked view and the representation the
//! rest of `wire` has, so that the protocol core and the simulation read IPv6 exactly as
//! the programs do.

use std::net::Ipv6Addr;

use baton_common::ipv6::{
    self as common, IP6_DADDR, IP6_NEXT_HEADER, IP6_PAYLOAD_LEN, IP6_SADDR, Ipv6Error, Ipv6Header,
    Ipv6Payload,
};

use super::{IpProtocol, WireError, ensure_room};

/// Length of the fixed header; also what [`Ipv6Repr::emit`] writes (no extension
/// headers).
pub const HEADER_LEN: usize = common::IPV6_HLEN;

/// A checked, zero-copy view of an IPv6 packet.
///
/// `new_checked` proves the version is 6 and that the fixed header and the payload its
/// length field announces lie within the buffer, so every accessor is in bounds. The
/// buffer may be longer (Ethernet padding); [`Ipv6Packet::payload`] stops at the payload
/// length.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` after checking the header's version and length against it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                layer: "IPv6",
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let version = common::ipv6_version(header);
        if version != 6 {
            return Err(WireError::BadIpv6Version(version));
        }
        let total = HEADER_LEN + usize::from(common::ipv6_payload_len(header));
        if buf.len() < total {
            return Err(WireError::Truncated {
                layer: "IPv6",
                needed: total,
                available: buf.len(),
            });
        }
        Ok(Self { buffer })
    }

    fn header(&self) -> &Ipv6Header {
        // `new_checked` proved the buffer holds the fixed header.
        self.buffer
            .as_ref()
            .first_chunk()
            .unwrap_or(&[0; HEADER_LEN])
    }

    /// Traffic class: DSCP and ECN.
    pub fn traffic_class(&self) -> u8 {
        common::ipv6_traffic_class(self.header())
    }

    /// Flow label, 20 bits.
    pub fn flow_label(&self) -> u32 {
        common::ipv6_flow_label(self.header())
    }

    /// Length of the payload: extension headers and upper layer.
    pub fn payload_len(&self) -> usize {
        usize::from(common::ipv6_payload_len(self.header()))
    }

    /// The first header after the fixed one.
    pub fn next_header(&self) -> u8 {
        common::ipv6_next_header(self.header())
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        common::ipv6_hop_limit(self.header())
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(common::ipv6_saddr(self.header()))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(common::ipv6_daddr(self.header()))
    }

    /// The payload after the fixed header, up to the payload length: extension headers
    /// and upper layer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }

    /// Walks the extension headers (`baton_common::ipv6::walk_extension_headers`, at
    /// most [`common::MAX_EXTENSION_HEADERS`]) to the upper layer: its protocol and its
    /// offset from the fixed header's first byte. What ends the walk short of an upper
    /// layer is an error: a fragment ([`WireError::Ipv6Fragment`]), AH, ESP, no next
    /// header, a routing header with segments left or an unknown extension header
    /// ([`WireError::Ipv6ExtensionHeader`]), too long a chain
    /// ([`WireError::TooManyIpv6ExtensionHeaders`]).
    pub fn upper_layer(&self) -> Result<(IpProtocol, usize), WireError> {
        let buf = self.buffer.as_ref();
        let end = HEADER_LEN + self.payload_len();
        let read = |at: usize| {
            buf.get(at..end)
                .and_then(|b| b.first_chunk::<{ common::EXTENSION_PEEK_LEN }>())
                .copied()
        };
        match common::walk_extension_headers(self.next_header(), HEADER_LEN, end, read) {
            Ok(Ipv6Payload::Upper { protocol, offset }) => Ok((protocol.into(), offset)),
            Ok(Ipv6Payload::Fragment {
                offset,
                more,
                identification,
            }) => Err(WireError::Ipv6Fragment {
                offset,
                more,
                identification,
            }),
            Ok(Ipv6Payload::Authentication) => Err(WireError::Ipv6ExtensionHeader {
                kind: common::next_header::AH,
            }),
            Ok(Ipv6Payload::EncapsulatingSecurity) => Err(WireError::Ipv6ExtensionHeader {
                kind: common::next_header::ESP,
            }),
            Ok(Ipv6Payload::NoNextHeader) => Err(WireError::Ipv6ExtensionHeader {
                kind: common::next_header::NO_NEXT_HEADER,
            }),
            Ok(Ipv6Payload::RoutingSegmentsLeft { .. }) => Err(WireError::Ipv6ExtensionHeader {
                kind: common::next_header::ROUTING,
            }),
            Ok(Ipv6Payload::UnknownExtension(kind)) => Err(WireError::Ipv6ExtensionHeader { kind }),
            Err(Ipv6Error::TooManyExtensionHeaders) => Err(WireError::TooManyIpv6ExtensionHeaders),
            Err(Ipv6Error::MisplacedHopByHop) => Err(WireError::Ipv6ExtensionHeader {
                kind: common::next_header::HOP_BY_HOP,
            }),
            Err(Ipv6Error::NotIpv6(version)) => Err(WireError::BadIpv6Version(version)),
            Err(Ipv6Error::Truncated) => Err(WireError::Truncated {
                layer: "IPv6 extension header",
                needed: end + 1,
                available: end,
            }),
        }
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// The bytes from the upper-layer header to the payload length's end, with the
    /// lifetime of the underlying buffer ([`Ipv6Packet::upper_layer`] gives the offset).
    pub fn into_upper_layer_payload(self, offset: usize) -> &'a [u8] {
        let end = HEADER_LEN + self.payload_len();
        self.buffer.get(offset..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the source address. IPv6 has no header checksum: the upper layer's, which
    /// covers the address in its pseudo-header, is the caller's to update.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[IP6_SADDR..IP6_SADDR + 16].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address; as [`Ipv6Packet::set_src_addr`].
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[IP6_DADDR..IP6_DADDR + 16].copy_from_slice(&addr.octets());
    }
}

/// An IPv6 packet's headers, parsed: the fixed header's fields, with the upper layer the
/// extension headers lead to.
///
/// Extension headers are crossed but not kept: nothing Baton forwards depends on them,
/// and [`Ipv6Repr::emit`] writes the fixed header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The upper layer: what follows the fixed header and any extension headers.
    pub next_header: IpProtocol,
    /// Length of the upper layer's header and data (the payload less extension headers).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// DSCP and ECN bits.
    pub traffic_class: u8,
    /// Flow label (20 bits). Kept so that a replayed packet is the client's; Baton keys
    /// nothing by it (a sender may change it mid-connection, RFC 6437 §2).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads a checked packet's header and walks its extension headers
    /// ([`Ipv6Packet::upper_layer`]); returns the representation and the upper-layer
    /// header's offset from the fixed header's first byte. There is no header checksum to
    /// verify (RFC 8200 §3).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<(Self, usize), WireError> {
        let (next_header, offset) = packet.upper_layer()?;
        Ok((
            Self {
                src_addr: packet.src_addr(),
                dst_addr: packet.dst_addr(),
                next_header,
                payload_len: HEADER_LEN + packet.payload_len() - offset,
                hop_limit: packet.hop_limit(),
                traffic_class: packet.traffic_class(),
                flow_label: packet.flow_label(),
            },
            offset,
        ))
    }

    /// Bytes [`Ipv6Repr::emit`] writes: the fixed header only, the payload is the
    /// caller's.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header at the start of `buf` and returns its length. The payload
    /// (`payload_len` bytes) goes after it, written by the caller.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        ensure_room(buf, HEADER_LEN)?;
        let payload_len = u16::try_from(self.payload_len)
            .map_err(|_| WireError::PacketTooLong(HEADER_LEN + self.payload_len))?;
        let buf = &mut buf[..HEADER_LEN];
        let first =
            (6 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        buf[0..4].copy_from_slice(&first.to_be_bytes());
        buf[IP6_PAYLOAD_LEN..IP6_PAYLOAD_LEN + 2].copy_from_slice(&payload_len.to_be_bytes());
        buf[IP6_NEXT_HEADER] = self.next_header.into();
        buf[common::IP6_HOP_LIMIT] = self.hop_limit;
        buf[IP6_SADDR..IP6_SADDR + 16].copy_from_slice(&self.src_addr.octets());
        buf[IP6_DADDR..IP6_DADDR + 16].copy_from_slice(&self.dst_addr.octets());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Checksums, TcpFlags, TcpRepr, TcpSegment, TcpTimestamps, UnknownTcpOptions};

    const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

    fn syn() -> TcpRepr<'static> {
        TcpRepr {
            max_seg_size: Some(1440),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some(TcpTimestamps { tsval: 9, tsecr: 0 }),
            unknown_options: UnknownTcpOptions::new(),
            ..TcpRepr::bare(40_000, 80, 7, 0, TcpFlags::SYN, 64_800)
        }
    }

    /// A SYN over IPv6 with the extension headers `chain` (each with its Next Header
    /// value) between the fixed header and TCP.
    fn packet(chain: &[(u8, &[u8])]) -> Vec<u8> {
        let tcp = syn();
        let mut segment = vec![0; tcp.buffer_len()];
        tcp.emit(CLIENT, VIP, &mut segment).unwrap();
        let mut rest = Vec::new();
        for (i, (_, bytes)) in chain.iter().enumerate() {
            let mut bytes = bytes.to_vec();
            bytes[0] = chain.get(i + 1).map_or(6, |(k, _)| *k);
            rest.extend_from_slice(&bytes);
        }
        rest.extend_from_slice(&segment);
        let ip = Ipv6Repr {
            src_addr: CLIENT,
            dst_addr: VIP,
            next_header: chain.first().map_or(6, |(k, _)| *k).into(),
            payload_len: rest.len(),
            hop_limit: 64,
            traffic_class: 0x02,
            flow_label: 0xabcde,
        };
        let mut p = vec![0; HEADER_LEN];
        ip.emit(&mut p).unwrap();
        p.extend_from_slice(&rest);
        p
    }

    #[test]
    fn a_syn_parses_through_its_extension_headers_and_its_checksum_verifies() {
        let hop_by_hop: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
        let destination: &[u8] = &[0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for chain in [vec![], vec![(0, hop_by_hop), (60, destination)]] {
            let bytes = packet(&chain);
            let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(view.flow_label(), 0xabcde);
            assert_eq!(view.traffic_class(), 0x02);
            let (ip, offset) = Ipv6Repr::parse(&view).unwrap();
            let extensions: usize = chain.iter().map(|(_, b)| b.len()).sum();
            assert_eq!(offset, HEADER_LEN + extensions);
            assert_eq!(ip.next_header, IpProtocol::Tcp);
            assert_eq!((ip.src_addr, ip.dst_addr), (CLIENT, VIP));
            let tcp = view.into_upper_layer_payload(offset);
            assert_eq!(ip.payload_len, tcp.len());
            let segment = TcpSegment::new_checked(tcp).unwrap();
            assert!(segment.verify_checksum(CLIENT, VIP));
            assert!(
                !segment.verify_checksum(VIP, VIP),
                "the addresses are covered"
            );
            let parsed = TcpRepr::parse(&segment, CLIENT, VIP, Checksums::Verify).unwrap();
            assert_eq!(parsed, syn());
        }
    }

    /// A SYN from [2001:db8::1]:50000 to [2001:db8::2]:80 with MSS 1440, its checksum
    /// (0x7924) computed independently (Python, summing RFC 8200 §8.1's pseudo-header),
    /// as in `baton_common::ipv6`'s test: the view's checksum agrees, over IPv6's
    /// pseudo-header and not IPv4's.
    #[test]
    fn a_known_segment_verifies_over_the_ipv6_pseudo_header() {
        let syn = [
            0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0x79, 0x24, 0,
            0, 2, 4, 0x05, 0xa0,
        ];
        let client = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let server = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
        let segment = TcpSegment::new_checked(&syn[..]).unwrap();
        assert!(segment.verify_checksum(client, server));
        let repr = TcpRepr::parse(&segment, client, server, Checksums::Verify).unwrap();
        let mut out = [0; 24];
        assert_eq!(repr.emit(client, server, &mut out), Ok(24));
        assert_eq!(out, syn, "re-emitted with the same checksum");
    }

    #[test]
    fn a_fixed_header_round_trips() {
        let bytes = packet(&[]);
        let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let (ip, _) = Ipv6Repr::parse(&view).unwrap();
        let mut out = [0; HEADER_LEN];
        ip.emit(&mut out).unwrap();
        assert_eq!(out[..], bytes[..HEADER_LEN]);
    }

    #[test]
    fn fragments_and_headers_baton_does_not_cross_are_errors() {
        let fragment: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 42];
        let bytes = packet(&[(44, fragment)]);
        let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Ipv6Repr::parse(&view),
            Err(WireError::Ipv6Fragment {
                offset: 0,
                more: true,
                identification: 42
            })
        );
        let generic: &[u8] = &[0; 8];
        for kind in [50, 51, 59, 135] {
            let bytes = packet(&[(kind, generic)]);
            let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(
                Ipv6Repr::parse(&view),
                Err(WireError::Ipv6ExtensionHeader { kind })
            );
        }
        let five = [(60u8, generic); 5];
        let bytes = packet(&five);
        let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Ipv6Repr::parse(&view),
            Err(WireError::TooManyIpv6ExtensionHeaders)
        );
    }

    #[test]
    fn every_truncation_is_an_error_and_padding_is_ignored() {
        let bytes = packet(&[(0, &[0, 0, 1, 4, 0, 0, 0, 0])]);
        for len in 0..bytes.len() {
            assert!(Ipv6Packet::new_checked(&bytes[..len]).is_err(), "{len}");
        }
        let mut v4 = bytes.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).unwrap_err(),
            WireError::BadIpv6Version(4)
        );
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 8]);
        let view = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(view.payload().len(), bytes.len() - HEADER_LEN);
        assert!(Ipv6Repr::parse(&view).is_ok());
    }
}
