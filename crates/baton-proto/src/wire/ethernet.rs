//! Ethernet II frames (IEEE 802.3 with an EtherType, RFC 894).
//!
//! Only untagged frames are understood: an 802.1Q tag shows up as
//! [`EtherType::Unknown`]`(0x8100)`, which the front-end does not handle.

use std::fmt;

use super::{WireError, be16, ensure_room};

/// Destination MAC address, bytes 0..6.
const DST_ADDR: std::ops::Range<usize> = 0..6;
/// Source MAC address, bytes 6..12.
const SRC_ADDR: std::ops::Range<usize> = 6..12;
/// EtherType, bytes 12..14.
const ETHERTYPE: usize = 12;
/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    fn from_slice(bytes: &[u8]) -> Self {
        let mut addr = [0; 6];
        addr.copy_from_slice(bytes);
        Self(addr)
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The protocol an Ethernet frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x0806.
    Arp,
    /// 0x86dd.
    Ipv6,
    /// Anything else, kept so that it round-trips.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => Self::Ipv4,
            0x0806 => Self::Arp,
            0x86dd => Self::Ipv6,
            other => Self::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A checked, zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds a whole Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "Ethernet",
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(Self { buffer })
    }

    /// The destination MAC address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_slice(&self.buffer.as_ref()[DST_ADDR])
    }

    /// The source MAC address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_slice(&self.buffer.as_ref()[SRC_ADDR])
    }

    /// The EtherType.
    pub fn ethertype(&self) -> EtherType {
        be16(self.buffer.as_ref(), ETHERTYPE).into()
    }

    /// The bytes after the header, including any padding to the 60-byte minimum frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<'a> EthernetFrame<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address (the XDP fast path's rewrite, done here for tests
    /// and the slow path).
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[DST_ADDR].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[SRC_ADDR].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let value: u16 = ethertype.into();
        self.buffer.as_mut()[ETHERTYPE..ETHERTYPE + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An Ethernet II header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source MAC address.
    pub src_addr: EthernetAddress,
    /// Destination MAC address.
    pub dst_addr: EthernetAddress,
    /// What the payload is.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header out of a checked frame (every 14-byte header is valid).
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Self {
        Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Bytes [`EthernetRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        ensure_room(buf, HEADER_LEN)?;
        let mut frame = EthernetFrame {
            buffer: &mut buf[..HEADER_LEN],
        };
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x02, // dst
        0x02, 0, 0, 0, 0, 0x01, // src
        0x08, 0x00, // IPv4
        0x45, 0x00, // start of the payload
    ];

    #[test]
    fn parses_and_emits() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        let repr = EthernetRepr::parse(&frame);
        assert_eq!(repr.dst_addr, EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(repr.src_addr.to_string(), "02:00:00:00:00:01");
        assert_eq!(repr.ethertype, EtherType::Ipv4);
        assert_eq!(frame.payload(), &[0x45, 0x00]);
        let mut out = [0; HEADER_LEN];
        assert_eq!(repr.emit(&mut out), Ok(HEADER_LEN));
        assert_eq!(out, FRAME[..HEADER_LEN]);
    }

    #[test]
    fn keeps_unknown_ethertypes() {
        let mut bytes = FRAME;
        bytes[12..14].copy_from_slice(&[0x81, 0x00]);
        let repr = EthernetRepr::parse(&EthernetFrame::new_checked(&bytes[..]).unwrap());
        assert_eq!(repr.ethertype, EtherType::Unknown(0x8100));
        assert_eq!(u16::from(repr.ethertype), 0x8100);
    }

    #[test]
    fn rejects_short_frames() {
        for len in 0..HEADER_LEN {
            assert!(matches!(
                EthernetFrame::new_checked(&FRAME[..len]),
                Err(WireError::Truncated { needed: 14, .. })
            ));
        }
        let repr = EthernetRepr::parse(&EthernetFrame::new_checked(&FRAME[..]).unwrap());
        assert!(repr.emit(&mut [0; 13]).is_err());
    }
}
