//! Packet layer: checked parsing and building of Ethernet II, IPv4, IPv6 and TCP.
//!
//! Shaped like smoltcp's `wire/`: each protocol has
//! - a zero-copy view over a buffer ([`EthernetFrame`], [`Ipv4Packet`], [`Ipv6Packet`],
//!   [`TcpSegment`]),
//!   built with `new_checked`, after which no accessor can panic, because `new_checked`
//!   has proved every fixed field and every length field lies inside the buffer;
//! - a parsed representation ([`EthernetRepr`], [`Ipv4Repr`], [`Ipv6Repr`], [`TcpRepr`])
//!   with `parse`
//!   (from a view, validating what the view does not: checksums, fragments, options) and
//!   `emit` (into a caller-provided buffer, returning the length written).
//!
//! [`TcpFrameRepr`] does the three layers at once for the front-end's slow path, which
//! only ever deals in Ethernet + IPv4 + TCP frames so far; TCP's checksum is
//! family-generic ([`checksum::PseudoHeader`]), so a segment parses and emits over either
//! family.
//!
//! Everything here treats its input as hostile: any byte string gives a value or a
//! [`WireError`], never a panic (the `wire_packet` fuzz target checks it).

pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::{
    RawTcpOption, SackBlock, TcpFlags, TcpOption, TcpOptionIter, TcpRepr, TcpSegment,
    TcpTimestamps, UnknownTcpOptions,
};

/// Why a packet could not be parsed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before a fixed header, or before what a length field promises.
    #[error("truncated packet: {layer} needs {needed} bytes, {available} available")]
    Truncated {
        /// The protocol whose header or length field was cut short.
        layer: &'static str,
        /// Bytes that layer needs.
        needed: usize,
        /// Bytes the buffer holds.
        available: usize,
    },
    /// An IPv4 header whose version field is not 4.
    #[error("not an IPv4 header: version {0}")]
    BadIpVersion(u8),
    /// An IPv4 IHL below 5 words, or one that reaches past the total length (RFC 791 §3.1).
    #[error("bad IPv4 header length: {0} bytes")]
    BadIpHeaderLength(usize),
    /// An IPv4 total length shorter than its header (RFC 791 §3.1).
    #[error("bad IPv4 total length: {0} bytes")]
    BadIpTotalLength(usize),
    /// The IPv4 header checksum does not verify (RFC 791 §3.1).
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// An IPv4 fragment: the TCP header may be in another fragment, so it cannot be read.
    #[error("IPv4 fragment (offset {offset}, more fragments {more})")]
    Fragmented {
        /// Fragment offset in 8-byte units.
        offset: u16,
        /// Whether the MF flag was set.
        more: bool,
    },
    /// An IPv6 header whose version field is not 6.
    #[error("not an IPv6 header: version {0}")]
    BadIpv6Version(u8),
    /// An IPv6 packet with a fragment header (RFC 8200 §4.5): as for IPv4, the TCP header
    /// may be in another fragment, and Baton does not reassemble.
    #[error(
        "IPv6 fragment (offset {offset}, more fragments {more}, identification {identification:#x})"
    )]
    Ipv6Fragment {
        /// Fragment offset in 8-byte units.
        offset: u16,
        /// Whether the M flag was set.
        more: bool,
        /// The fragment header's identification.
        identification: u32,
    },
    /// An IPv6 extension header the walk does not cross (AH, ESP, No Next Header, a
    /// routing header with segments left, hop-by-hop options other than first, an
    /// unknown one), by its Next Header value.
    #[error("IPv6 extension header {kind} not crossed")]
    Ipv6ExtensionHeader {
        /// Its Next Header value.
        kind: u8,
    },
    /// More extension headers than `baton_common::ipv6::MAX_EXTENSION_HEADERS`.
    #[error("too many IPv6 extension headers")]
    TooManyIpv6ExtensionHeaders,
    /// A frame whose EtherType is not IPv4.
    #[error("not an IPv4 frame: EtherType {0:#06x}")]
    NotIpv4(u16),
    /// An IPv4 packet whose protocol is not TCP.
    #[error("not a TCP packet: IP protocol {0}")]
    NotTcp(u8),
    /// A TCP data offset below 5 words or past the end of the segment (RFC 9293 §3.1).
    #[error("bad TCP data offset: {0} bytes")]
    BadTcpHeaderLength(usize),
    /// The TCP checksum over the pseudo-header, header and payload does not verify.
    #[error("bad TCP checksum")]
    BadTcpChecksum,
    /// A TCP option whose length byte is impossible for its kind or overruns the header.
    #[error("malformed TCP option of kind {kind}")]
    MalformedTcpOption {
        /// The option's kind byte.
        kind: u8,
    },
    /// Options that do not fit the 40 bytes a TCP header has room for (RFC 9293 §3.1).
    #[error("TCP options need {0} bytes, at most 40 fit")]
    TcpOptionsTooLong(usize),
    /// A packet asked for from an address of one family to one of the other: no such
    /// packet exists, and a connection never mixes families.
    #[error("source and destination addresses of different families")]
    MixedFamilies,
    /// A packet that would exceed IPv4's 65,535-byte total length.
    #[error("IPv4 packet of {0} bytes exceeds 65535")]
    PacketTooLong(usize),
    /// The caller's output buffer is too small for the packet being emitted.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer holds.
        available: usize,
    },
}

/// Whether `parse` verifies checksums.
///
/// Frames the front-end reads from the wire have had their checksums verified by nobody
/// it can trust, so [`Checksums::Verify`] is the default. [`Checksums::Trust`] is for
/// frames whose checksums are known good or deliberately not yet filled in (a locally
/// built packet with `CHECKSUM_PARTIAL` offload, a test fixture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksums {
    /// Reject a packet whose IPv4 or TCP checksum does not verify.
    #[default]
    Verify,
    /// Do not look at checksums.
    Trust,
}

/// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
/// 16-bit big-endian words.
pub mod checksum {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Adds `data` to a running 32-bit ones' complement accumulator. An odd trailing
    /// byte is padded with a zero byte on the right (RFC 1071 §4.1).
    pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
        let mut words = data.chunks_exact(2);
        for word in &mut words {
            sum = add(sum, u32::from(u16::from_be_bytes([word[0], word[1]])));
        }
        if let [last] = words.remainder() {
            sum = add(sum, u32::from(*last) << 8);
        }
        sum
    }

    /// Adds one 32-bit term, folding the carry back in so the accumulator never overflows.
    fn add(sum: u32, term: u32) -> u32 {
        let (s, carry) = sum.overflowing_add(term);
        s + u32::from(carry)
    }

    /// Folds the accumulator to 16 bits and complements it: the value to put in a
    /// checksum field.
    pub fn finish(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// The checksum of `data` alone (what the IPv4 header checksum is, RFC 791 §3.1).
    pub fn of(data: &[u8]) -> u16 {
        finish(accumulate(0, data))
    }

    /// The accumulator after the IPv4 pseudo-header TCP and UDP checksums cover
    /// (RFC 9293 §3.1): source, destination, zero, protocol, transport length.
    pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
        let mut sum = accumulate(0, &src.octets());
        sum = accumulate(sum, &dst.octets());
        sum = add(sum, u32::from(protocol));
        add(sum, u32::from(length))
    }

    /// The accumulator after the IPv6 pseudo-header (RFC 8200 §8.1): source,
    /// destination, the upper-layer length as 32 bits, three zero bytes, Next Header.
    pub fn ipv6_pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, length: u32) -> u32 {
        let mut sum = accumulate(0, &src.octets());
        sum = accumulate(sum, &dst.octets());
        sum = add(sum, length >> 16);
        sum = add(sum, length & 0xffff);
        add(sum, u32::from(protocol))
    }

    /// An address family whose pseudo-header an upper-layer checksum covers: what makes
    /// TCP's checksum, and so [`super::TcpSegment`] and [`super::TcpRepr`], work over
    /// either family.
    pub trait PseudoHeader: Copy {
        /// The accumulator after the pseudo-header for an upper-layer packet of `length`
        /// bytes from `src` to `dst`. A length the family cannot carry gives a sum that
        /// verifies nowhere, the right answer for an impossible packet.
        fn pseudo_header(src: Self, dst: Self, protocol: u8, length: usize) -> u32;
    }

    impl PseudoHeader for Ipv4Addr {
        fn pseudo_header(src: Self, dst: Self, protocol: u8, length: usize) -> u32 {
            ipv4_pseudo_header(src, dst, protocol, length as u16)
        }
    }

    impl PseudoHeader for Ipv6Addr {
        fn pseudo_header(src: Self, dst: Self, protocol: u8, length: usize) -> u32 {
            ipv6_pseudo_header(src, dst, protocol, length as u32)
        }
    }
}

/// An IP header of either family, parsed: what the protocol core reads of a packet's
/// network layer. A connection never mixes families, so both addresses are of the one
/// variant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRepr {
    /// IPv4 (options, if any, not kept).
    V4(Ipv4Repr),
    /// IPv6 (extension headers crossed, not kept).
    V6(Ipv6Repr),
}

impl IpRepr {
    /// The source address.
    pub fn src_addr(&self) -> std::net::IpAddr {
        match self {
            Self::V4(ip) => ip.src_addr.into(),
            Self::V6(ip) => ip.src_addr.into(),
        }
    }

    /// The destination address.
    pub fn dst_addr(&self) -> std::net::IpAddr {
        match self {
            Self::V4(ip) => ip.dst_addr.into(),
            Self::V6(ip) => ip.dst_addr.into(),
        }
    }

    /// The TTL, or IPv6's hop limit: the same field for what Baton does with it (a
    /// client's, replayed to the back-end).
    pub fn ttl(&self) -> u8 {
        match self {
            Self::V4(ip) => ip.ttl,
            Self::V6(ip) => ip.hop_limit,
        }
    }

    /// The DSCP and ECN bits: IPv4's type of service, IPv6's traffic class (RFC 8200 §7
    /// makes them the same bits).
    pub fn dscp_ecn(&self) -> u8 {
        match self {
            Self::V4(ip) => ip.dscp_ecn,
            Self::V6(ip) => ip.traffic_class,
        }
    }
}

/// A whole TCP/IPv4 Ethernet frame, parsed: what the front-end's slow path handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFrameRepr<'a> {
    /// The link-layer header.
    pub ethernet: EthernetRepr,
    /// The network-layer header. Its `payload_len` is recomputed from `tcp` on emit.
    pub ipv4: Ipv4Repr,
    /// The segment, borrowing its payload from the parsed buffer.
    pub tcp: TcpRepr<'a>,
}

impl<'a> TcpFrameRepr<'a> {
    /// Parses an Ethernet II frame carrying an unfragmented IPv4 packet carrying TCP.
    /// Bytes after the IPv4 total length (Ethernet padding to 60 bytes) are ignored.
    pub fn parse(frame: &'a [u8], checksums: Checksums) -> Result<Self, WireError> {
        let eth = EthernetFrame::new_checked(frame)?;
        let ethernet = EthernetRepr::parse(&eth);
        if ethernet.ethertype != EtherType::Ipv4 {
            return Err(WireError::NotIpv4(ethernet.ethertype.into()));
        }
        let ip = Ipv4Packet::new_checked(eth.into_payload())?;
        let ipv4 = Ipv4Repr::parse(&ip, checksums)?;
        if ipv4.protocol != IpProtocol::Tcp {
            return Err(WireError::NotTcp(ipv4.protocol.into()));
        }
        let seg = TcpSegment::new_checked(ip.into_payload())?;
        let tcp = TcpRepr::parse(&seg, ipv4.src_addr, ipv4.dst_addr, checksums)?;
        Ok(Self {
            ethernet,
            ipv4,
            tcp,
        })
    }

    /// Bytes [`TcpFrameRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        ethernet::HEADER_LEN + ipv4::HEADER_LEN + self.tcp.buffer_len()
    }

    /// Writes the frame at the start of `buf` with both checksums filled in, and returns
    /// its length. No Ethernet padding is added: the NIC pads short frames.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(WireError::BufferTooSmall {
                needed: len,
                available: buf.len(),
            });
        }
        let buf = &mut buf[..len];
        let (eth_buf, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
        self.ethernet.emit(eth_buf)?;
        let (ip_buf, tcp_buf) = rest.split_at_mut(ipv4::HEADER_LEN);
        let ipv4 = Ipv4Repr {
            protocol: IpProtocol::Tcp,
            payload_len: tcp_buf.len(),
            ..self.ipv4
        };
        ipv4.emit(ip_buf)?;
        self.tcp.emit(ipv4.src_addr, ipv4.dst_addr, tcp_buf)?;
        Ok(len)
    }

    /// Builds the frame into a new vector (the slow path's convenience).
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf)?;
        Ok(buf)
    }
}

/// Reads a big-endian `u16` at `at`. Callers index only ranges `new_checked` has proved.
fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers index only ranges `new_checked` has proved.
fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Fails with [`WireError::BufferTooSmall`] unless `buf` holds `needed` bytes.
fn ensure_room(buf: &[u8], needed: usize) -> Result<(), WireError> {
    if buf.len() < needed {
        Err(WireError::BufferTooSmall {
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum::of(&data), !0xddf2);
        // An odd length pads with zero on the right.
        assert_eq!(checksum::of(&[0x12]), !0x1200);
    }

    #[test]
    fn checksum_of_data_with_its_checksum_is_zero() {
        let mut data = vec![0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06];
        data.extend_from_slice(&[0, 0, 0xac, 0x10, 0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c]);
        let c = checksum::of(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum::of(&data), 0);
        assert_eq!(
            c, 0xb1e6,
            "the widely quoted worked example of an IPv4 header checksum"
        );
    }

    fn sample_frame(payload: &[u8]) -> Vec<u8> {
        let repr = TcpFrameRepr {
            ethernet: EthernetRepr {
                src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
                dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
                ethertype: EtherType::Ipv4,
            },
            ipv4: Ipv4Repr {
                src_addr: Ipv4Addr::new(198, 18, 0, 2),
                dst_addr: Ipv4Addr::new(198, 18, 1, 10),
                protocol: IpProtocol::Tcp,
                payload_len: 0,
                ttl: 64,
                ident: 7,
                dont_frag: true,
                dscp_ecn: 0,
            },
            tcp: TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq_number: 1,
                ack_number: 2,
                flags: TcpFlags::ACK | TcpFlags::PSH,
                window_len: 502,
                urgent_pointer: 0,
                max_seg_size: None,
                window_scale: None,
                sack_permitted: false,
                sack_blocks: [None; 4],
                timestamps: Some(TcpTimestamps { tsval: 5, tsecr: 6 }),
                unknown_options: UnknownTcpOptions::new(),
                payload,
            },
        };
        repr.to_vec().unwrap()
    }

    /// A Linux SYN frame from 198.18.0.2:51234 to 198.18.1.10:80 (DF, TTL 64, MSS 1460,
    /// SACK-Permitted, Timestamps, NOP, Window Scale 7), checksums computed independently.
    const LINUX_SYN_FRAME: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08,
        0x00, // Ethernet
        0x45, 0x00, 0x00, 0x3c, 0x5f, 0x21, 0x40, 0x00, 0x40, 0x06, 0x4e, 0x6a, 0xc6, 0x12, 0x00,
        0x02, 0xc6, 0x12, 0x01, 0x0a, // IPv4
        0xc8, 0x22, 0x00, 0x50, 0x3d, 0x2a, 0x1c, 0x0e, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0xd8, 0xe1, 0x00, 0x00, // TCP
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x9b, 0x1e, 0x2a, 0x33, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07, // options
    ];

    #[test]
    fn linux_syn_frame_parses_and_re_emits_byte_for_byte() {
        let frame = TcpFrameRepr::parse(&LINUX_SYN_FRAME, Checksums::Verify).unwrap();
        assert_eq!(frame.ethernet.src_addr, EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(frame.ipv4.src_addr, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(frame.ipv4.dst_addr, Ipv4Addr::new(198, 18, 1, 10));
        assert_eq!(frame.ipv4.ident, 0x5f21);
        assert!(frame.ipv4.dont_frag);
        assert_eq!(frame.tcp.flags, TcpFlags::SYN);
        assert_eq!(frame.tcp.max_seg_size, Some(1460));
        assert_eq!(frame.tcp.window_scale, Some(7));
        assert_eq!(frame.to_vec().unwrap(), LINUX_SYN_FRAME);
    }

    #[test]
    fn a_bit_flip_anywhere_in_the_headers_is_caught() {
        // The MAC addresses and the EtherType's low byte are not checksummed; every other
        // bit of the IPv4 and TCP headers is, or makes a length or type check fail.
        for byte in 14..LINUX_SYN_FRAME.len() {
            for bit in 0..8 {
                let mut frame = LINUX_SYN_FRAME;
                frame[byte] ^= 1 << bit;
                assert!(
                    TcpFrameRepr::parse(&frame, Checksums::Verify).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn frame_round_trips_and_ignores_ethernet_padding() {
        let frame = sample_frame(b"GET / HTTP/1.1\r\n\r\n");
        let parsed = TcpFrameRepr::parse(&frame, Checksums::Verify).unwrap();
        assert_eq!(parsed.tcp.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(parsed.to_vec().unwrap(), frame);
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 8]);
        let padded = TcpFrameRepr::parse(&padded, Checksums::Verify).unwrap();
        assert_eq!(padded, parsed);
    }

    #[test]
    fn frame_rejects_other_protocols() {
        let mut frame = sample_frame(b"");
        frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(
            TcpFrameRepr::parse(&frame, Checksums::Verify),
            Err(WireError::NotIpv4(0x86dd))
        );
        let mut frame = sample_frame(b"");
        frame[14 + 9] = 17;
        assert_eq!(
            TcpFrameRepr::parse(&frame, Checksums::Trust),
            Err(WireError::NotTcp(17))
        );
    }

    #[test]
    fn frame_emit_reports_a_short_buffer() {
        let frame = sample_frame(b"abc");
        let parsed = TcpFrameRepr::parse(&frame, Checksums::Verify).unwrap();
        let mut small = [0; 40];
        assert_eq!(
            parsed.emit(&mut small),
            Err(WireError::BufferTooSmall {
                needed: frame.len(),
                available: 40
            })
        );
    }

    #[test]
    fn every_truncation_of_a_frame_is_an_error() {
        let frame = sample_frame(b"hello");
        for len in 0..frame.len() {
            assert!(
                TcpFrameRepr::parse(&frame[..len], Checksums::Verify).is_err(),
                "{len}"
            );
        }
    }
}
