//! IPv4 headers (RFC 791 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP/ECN    |          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (IHL > 5 only)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::{Checksums, WireError, be16, checksum, ensure_room};

/// Version (high nibble) and IHL in 32-bit words (low nibble).
const VER_IHL: usize = 0;
/// DSCP (high 6 bits) and ECN (low 2 bits), formerly the type of service.
const DSCP_ECN: usize = 1;
/// Total length of header and payload, in bytes.
const TOTAL_LEN: usize = 2;
/// Identification, used to reassemble fragments.
const IDENT: usize = 4;
/// Flags (reserved, DF, MF) and fragment offset in 8-byte units.
const FLAGS_FRAG_OFFSET: usize = 6;
/// Time to live.
const TTL: usize = 8;
/// The payload's protocol number.
const PROTOCOL: usize = 9;
/// Header checksum.
const CHECKSUM: usize = 10;
/// Source address, bytes 12..16.
const SRC_ADDR: usize = 12;
/// Destination address, bytes 16..20.
const DST_ADDR: usize = 16;
/// Length of a header without options; also what [`Ipv4Repr::emit`] writes.
pub const HEADER_LEN: usize = 20;

/// Don't Fragment flag in the flags/offset word.
const FLAG_DF: u16 = 0x4000;
/// More Fragments flag in the flags/offset word.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset mask in the flags/offset word.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The protocol an IPv4 packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 1.
    Icmp,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// Anything else, kept so that it round-trips.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => Self::Icmp,
            6 => Self::Tcp,
            17 => Self::Udp,
            other => Self::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

/// A checked, zero-copy view of an IPv4 packet.
///
/// `new_checked` proves the version is 4, the IHL is at least 5 words, and
/// header length <= total length <= buffer length, so every accessor is in bounds.
/// The buffer may be longer than the total length (Ethernet padding); [`Ipv4Packet::payload`]
/// stops at the total length.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking the header's length fields against it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "IPv4",
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let version = buf[VER_IHL] >> 4;
        if version != 4 {
            return Err(WireError::BadIpVersion(version));
        }
        let header_len = usize::from(buf[VER_IHL] & 0x0f) * 4;
        let total_len = usize::from(be16(buf, TOTAL_LEN));
        if header_len < HEADER_LEN {
            return Err(WireError::BadIpHeaderLength(header_len));
        }
        if total_len < header_len {
            return Err(WireError::BadIpTotalLength(total_len));
        }
        if buf.len() < total_len {
            return Err(WireError::Truncated {
                layer: "IPv4",
                needed: total_len,
                available: buf.len(),
            });
        }
        Ok(Self { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Header length in bytes, 20..=60.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf()[VER_IHL] & 0x0f) * 4
    }

    /// The DSCP/ECN byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buf()[DSCP_ECN]
    }

    /// Total length of header and payload.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buf(), TOTAL_LEN))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buf(), IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buf(), FLAGS_FRAG_OFFSET) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buf(), FLAGS_FRAG_OFFSET) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf(), FLAGS_FRAG_OFFSET) & FRAG_OFFSET_MASK
    }

    /// Whether this packet is a fragment (first, middle or last) rather than whole.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buf()[TTL]
    }

    /// The payload's protocol.
    pub fn protocol(&self) -> IpProtocol {
        self.buf()[PROTOCOL].into()
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf(), CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buf();
        Ipv4Addr::new(
            b[SRC_ADDR],
            b[SRC_ADDR + 1],
            b[SRC_ADDR + 2],
            b[SRC_ADDR + 3],
        )
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buf();
        Ipv4Addr::new(
            b[DST_ADDR],
            b[DST_ADDR + 1],
            b[DST_ADDR + 2],
            b[DST_ADDR + 3],
        )
    }

    /// IP options, bytes 20..header length (RFC 791 §3.1); usually empty.
    pub fn options(&self) -> &[u8] {
        &self.buf()[HEADER_LEN..self.header_len()]
    }

    /// Whether the header checksum verifies: the sum over the whole header, checksum
    /// field included, is all ones (RFC 791 §3.1, RFC 1071 §1).
    pub fn verify_checksum(&self) -> bool {
        checksum::of(&self.buf()[..self.header_len()]) == 0
    }

    /// The bytes between the header and the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buf()[self.header_len()..self.total_len()]
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        &self.buffer[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn buf_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source address; the header checksum must be filled in again afterwards.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buf_mut()[SRC_ADDR..SRC_ADDR + 4].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (L3-mode handoff rewrites it to the back-end's);
    /// the header checksum must be filled in again afterwards.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buf_mut()[DST_ADDR..DST_ADDR + 4].copy_from_slice(&addr.octets());
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf_mut()[TTL] = ttl;
    }

    /// Recomputes the header checksum over the header as it now stands.
    pub fn fill_checksum(&mut self) {
        let header_len = self.header_len();
        let buf = self.buf_mut();
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let sum = checksum::of(&buf[..header_len]);
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        &mut self.buf_mut()[start..end]
    }
}

/// An IPv4 header, parsed.
///
/// IP options are read past but not kept: nothing Baton forwards depends on them, and
/// [`Ipv4Repr::emit`] writes a 20-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// What the payload is.
    pub protocol: IpProtocol,
    /// Length of the payload in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification. Meaningful only for fragments, which are refused, but kept so that
    /// a replayed packet is byte-for-byte the client's.
    pub ident: u16,
    /// The Don't Fragment flag (Linux sets it on every TCP segment, for path MTU discovery).
    pub dont_frag: bool,
    /// DSCP and ECN bits.
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    /// Validates a checked packet and reads its header.
    ///
    /// Fragments are refused ([`WireError::Fragmented`]): the TCP header might be in
    /// another fragment, and reassembly is the kernel's job, not a load balancer's.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Ipv4Packet<T>,
        checksums: Checksums,
    ) -> Result<Self, WireError> {
        if checksums == Checksums::Verify && !packet.verify_checksum() {
            return Err(WireError::BadIpChecksum);
        }
        if packet.is_fragment() {
            return Err(WireError::Fragmented {
                offset: packet.frag_offset(),
                more: packet.more_frags(),
            });
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }

    /// Bytes [`Ipv4Repr::emit`] writes: the header only, the payload is the caller's.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header, checksum included, at the start of `buf` and returns its
    /// length. The payload (`payload_len` bytes) goes after it, written by the caller.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        ensure_room(buf, HEADER_LEN)?;
        let total_len = HEADER_LEN + self.payload_len;
        let total_len =
            u16::try_from(total_len).map_err(|_| WireError::PacketTooLong(total_len))?;
        let buf = &mut buf[..HEADER_LEN];
        buf[VER_IHL] = 0x45;
        buf[DSCP_ECN] = self.dscp_ecn;
        buf[TOTAL_LEN..TOTAL_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
        buf[IDENT..IDENT + 2].copy_from_slice(&self.ident.to_be_bytes());
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        buf[FLAGS_FRAG_OFFSET..FLAGS_FRAG_OFFSET + 2].copy_from_slice(&flags.to_be_bytes());
        buf[TTL] = self.ttl;
        buf[PROTOCOL] = self.protocol.into();
        buf[SRC_ADDR..SRC_ADDR + 4].copy_from_slice(&self.src_addr.octets());
        buf[DST_ADDR..DST_ADDR + 4].copy_from_slice(&self.dst_addr.octets());
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let sum = checksum::of(buf);
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-byte header (checksum 0xb1e6) followed by 40 bytes of payload.
    fn sample() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6, 0xac, 0x10,
            0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c,
        ];
        p.extend(0..40u8);
        p
    }

    #[test]
    fn parses_a_valid_header() {
        let bytes = sample();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum());
        let repr = Ipv4Repr::parse(&packet, Checksums::Verify).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: Ipv4Addr::new(172, 16, 10, 99),
                dst_addr: Ipv4Addr::new(172, 16, 10, 12),
                protocol: IpProtocol::Tcp,
                payload_len: 40,
                ttl: 64,
                ident: 0x1c46,
                dont_frag: true,
                dscp_ecn: 0,
            }
        );
        assert_eq!(packet.payload().len(), 40);
        let mut out = [0; HEADER_LEN];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[..], bytes[..HEADER_LEN]);
    }

    #[test]
    fn rejects_a_bad_checksum_unless_trusted() {
        let mut bytes = sample();
        bytes[11] ^= 1;
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&packet, Checksums::Verify),
            Err(WireError::BadIpChecksum)
        );
        assert!(Ipv4Repr::parse(&packet, Checksums::Trust).is_ok());
    }

    #[test]
    fn fill_checksum_after_rewrite() {
        let mut bytes = sample();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_dst_addr(Ipv4Addr::new(198, 18, 1, 11));
        packet.set_ttl(63);
        assert!(!packet.verify_checksum());
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(198, 18, 1, 11));
    }

    #[test]
    fn rejects_bad_length_fields() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(Ipv4Packet::new_checked(&bytes[..len]).is_err(), "{len}");
        }
        let mut v6 = sample();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).err(),
            Some(WireError::BadIpVersion(6))
        );
        let mut short_ihl = sample();
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl[..]).err(),
            Some(WireError::BadIpHeaderLength(16))
        );
        let mut long_ihl = sample();
        long_ihl[2..4].copy_from_slice(&24u16.to_be_bytes());
        long_ihl[0] = 0x47; // 28-byte header in a 24-byte packet
        assert_eq!(
            Ipv4Packet::new_checked(&long_ihl[..]).err(),
            Some(WireError::BadIpTotalLength(24))
        );
        let mut oversized = sample();
        oversized[2..4].copy_from_slice(&61u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&oversized[..]),
            Err(WireError::Truncated { needed: 61, .. })
        ));
    }

    #[test]
    fn header_options_are_skipped() {
        let mut bytes = sample();
        bytes[0] = 0x46;
        bytes.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL (RFC 791 option list)
        bytes[2..4].copy_from_slice(&64u16.to_be_bytes());
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum();
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        let repr = Ipv4Repr::parse(&packet, Checksums::Verify).unwrap();
        assert_eq!(repr.payload_len, 40);
        assert_eq!(packet.payload()[0], 0);
    }

    #[test]
    fn rejects_fragments() {
        for (flags, offset, more) in [(0x2000u16, 0, true), (0x0010, 0x10, false)] {
            let mut bytes = sample();
            bytes[6..8].copy_from_slice(&flags.to_be_bytes());
            let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
            packet.fill_checksum();
            assert_eq!(
                Ipv4Repr::parse(&packet, Checksums::Verify),
                Err(WireError::Fragmented { offset, more })
            );
        }
    }

    #[test]
    fn emit_refuses_oversized_packets_and_small_buffers() {
        let bytes = sample();
        let mut repr = Ipv4Repr::parse(
            &Ipv4Packet::new_checked(&bytes[..]).unwrap(),
            Checksums::Verify,
        )
        .unwrap();
        assert!(matches!(
            repr.emit(&mut [0; 19]),
            Err(WireError::BufferTooSmall { .. })
        ));
        repr.payload_len = 65_516;
        assert_eq!(
            repr.emit(&mut [0; 20]),
            Err(WireError::PacketTooLong(65_536))
        );
    }
}
