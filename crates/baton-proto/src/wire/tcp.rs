//! TCP segments (RFC 9293 §3.1) and their options.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! |           Checksum            |         Urgent Pointer        |
//! |                           [Options]                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Options understood: End of Option List and No-Operation (RFC 9293 §3.2), Maximum
//! Segment Size (RFC 9293 §3.2), Window Scale and Timestamps (RFC 7323 §2 and §3),
//! SACK-Permitted and SACK (RFC 2018 §2 and §3). Every other option, Baton's handoff
//! option included, is kept as raw bytes ([`UnknownTcpOptions`]) so that a client's SYN
//! can be replayed to a back-end without losing anything.

use std::{fmt, ops};

use super::{Checksums, WireError, be16, be32, checksum, checksum::PseudoHeader, ensure_room};

/// Source port.
const SRC_PORT: usize = 0;
/// Destination port.
const DST_PORT: usize = 2;
/// Sequence number.
const SEQ_NUM: usize = 4;
/// Acknowledgment number.
const ACK_NUM: usize = 8;
/// Data offset (high 4 bits, in 32-bit words), reserved bits and control bits.
const OFFSET_FLAGS: usize = 12;
/// Receive window, scaled by the peer's window-scale shift except in SYNs (RFC 7323 §2.2).
const WINDOW: usize = 14;
/// Checksum over the pseudo-header, header and payload.
const CHECKSUM: usize = 16;
/// Urgent pointer.
const URGENT: usize = 18;
/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// The most option bytes a header can hold: the data offset is 4 bits of 32-bit words,
/// so a header is at most 60 bytes (RFC 9293 §3.1).
pub const MAX_OPTIONS_LEN: usize = 40;
/// How many SACK blocks fit in the option space: (40 - 2) / 8 (RFC 2018 §3).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    /// End of Option List (RFC 9293 §3.2).
    pub const END: u8 = 0;
    /// No-Operation, used to align options (RFC 9293 §3.2).
    pub const NOP: u8 = 1;
    /// Maximum Segment Size (RFC 9293 §3.2), SYN only.
    pub const MSS: u8 = 2;
    /// Window Scale (RFC 7323 §2), SYN only.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK-Permitted (RFC 2018 §2), SYN only.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks (RFC 2018 §3).
    pub const SACK: u8 = 5;
    /// Timestamps (RFC 7323 §3).
    pub const TIMESTAMPS: u8 = 8;
}

/// The control bits and the reserved bits beside them: the low 12 bits of header word 3.
///
/// Reserved bits are kept rather than zeroed so that a replayed SYN is the client's own
/// (RFC 9293 §3.1 reserves them; RFC 3168 and its successors give some of them meaning).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: Self = Self(0x001);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x002);
    /// Reset the connection.
    pub const RST: Self = Self(0x004);
    /// Push function.
    pub const PSH: Self = Self(0x008);
    /// The acknowledgment number is significant.
    pub const ACK: Self = Self(0x010);
    /// The urgent pointer is significant.
    pub const URG: Self = Self(0x020);
    /// ECN-Echo (RFC 3168).
    pub const ECE: Self = Self(0x040);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: Self = Self(0x080);
    /// No flags.
    pub const EMPTY: Self = Self(0);
    const MASK: u16 = 0x0fff;

    /// Flags from the low 12 bits of `bits`.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits & Self::MASK)
    }

    /// The bits, as in the header's low 12 bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl ops::BitOr for TcpFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 8] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let rest = self.0 & !0xff;
        if rest != 0 || first {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

/// One SACK block: the first and one-past-last sequence numbers of a received range
/// (RFC 2018 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SackBlock {
    /// Left edge: the first sequence number of the block.
    pub left: u32,
    /// Right edge: the sequence number just past the block.
    pub right: u32,
}

/// The Timestamps option's two values (RFC 7323 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpTimestamps {
    /// TSval: the sender's clock.
    pub tsval: u32,
    /// TSecr: the most recent TSval received from the peer (zero in a SYN).
    pub tsecr: u32,
}

/// A TCP option as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: no options follow; the rest of the header is padding.
    EndOfList,
    /// Kind 1: a one-byte filler used for alignment.
    NoOperation,
    /// Kind 2: the largest segment the sender can receive.
    MaxSegmentSize(u16),
    /// Kind 3: the sender's window-scale shift count. Kept as sent; RFC 7323 §2.3 says a
    /// receiver treats values above 14 as 14.
    WindowScale(u8),
    /// Kind 4: the sender can receive SACK blocks.
    SackPermitted,
    /// Kind 5: 1 to 4 received ranges, present blocks first.
    Sack([Option<SackBlock>; MAX_SACK_BLOCKS]),
    /// Kind 8: TSval and TSecr.
    Timestamps(TcpTimestamps),
    /// Any other kind, with its data (the bytes after kind and length).
    Unknown(RawTcpOption<'a>),
}

/// An option this layer does not interpret: its kind and the bytes after the length byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawTcpOption<'a> {
    /// The kind byte.
    pub kind: u8,
    /// The option's data, without the kind and length bytes.
    pub data: &'a [u8],
}

impl<'a> TcpOption<'a> {
    /// Parses the option at the start of `buf`, returning it and the bytes after it.
    /// `buf` must not be empty.
    fn parse(buf: &'a [u8]) -> Result<(Self, &'a [u8]), WireError> {
        let Some((&kind, rest)) = buf.split_first() else {
            // An empty option list ends like an explicit EOL would.
            return Ok((Self::EndOfList, buf));
        };
        match kind {
            kind::END => return Ok((Self::EndOfList, rest)),
            kind::NOP => return Ok((Self::NoOperation, rest)),
            _ => {}
        }
        // Every other option is kind, length (counting kind and length), data.
        let malformed = WireError::MalformedTcpOption { kind };
        let len = usize::from(*rest.first().ok_or(malformed)?);
        if len < 2 || len > buf.len() {
            return Err(malformed);
        }
        let (option, rest) = buf.split_at(len);
        let data = &option[2..];
        let parsed = match (kind, data.len()) {
            (kind::MSS, 2) => Self::MaxSegmentSize(be16(data, 0)),
            (kind::WINDOW_SCALE, 1) => Self::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => Self::SackPermitted,
            (kind::SACK, n) if n > 0 && n % 8 == 0 && n / 8 <= MAX_SACK_BLOCKS => {
                let mut blocks = [None; MAX_SACK_BLOCKS];
                for (slot, edges) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some(SackBlock {
                        left: be32(edges, 0),
                        right: be32(edges, 4),
                    });
                }
                Self::Sack(blocks)
            }
            (kind::TIMESTAMPS, 8) => Self::Timestamps(TcpTimestamps {
                tsval: be32(data, 0),
                tsecr: be32(data, 4),
            }),
            (
                kind::MSS
                | kind::WINDOW_SCALE
                | kind::SACK_PERMITTED
                | kind::SACK
                | kind::TIMESTAMPS,
                _,
            ) => return Err(malformed),
            _ => Self::Unknown(RawTcpOption { kind, data }),
        };
        Ok((parsed, rest))
    }

    /// Bytes [`TcpOption::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::EndOfList | Self::NoOperation => 1,
            Self::MaxSegmentSize(_) => 4,
            Self::WindowScale(_) => 3,
            Self::SackPermitted => 2,
            Self::Sack(blocks) => 2 + 8 * blocks.iter().flatten().count(),
            Self::Timestamps(_) => 10,
            Self::Unknown(raw) => 2 + raw.data.len(),
        }
    }

    /// Writes the option at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if matches!(self, Self::Sack(blocks) if blocks.iter().all(Option::is_none)) {
            // RFC 2018 §3: a SACK option carries at least one block.
            return Err(WireError::MalformedTcpOption { kind: kind::SACK });
        }
        let len = self.buffer_len();
        ensure_room(buf, len)?;
        if len > MAX_OPTIONS_LEN {
            return Err(WireError::TcpOptionsTooLong(len));
        }
        let buf = &mut buf[..len];
        let (head, data) = buf.split_at_mut(len.min(2));
        match self {
            Self::EndOfList => head[0] = kind::END,
            Self::NoOperation => head[0] = kind::NOP,
            Self::MaxSegmentSize(mss) => {
                head[0] = kind::MSS;
                data.copy_from_slice(&mss.to_be_bytes());
            }
            Self::WindowScale(shift) => {
                head[0] = kind::WINDOW_SCALE;
                data[0] = *shift;
            }
            Self::SackPermitted => head[0] = kind::SACK_PERMITTED,
            Self::Sack(blocks) => {
                head[0] = kind::SACK;
                for (edges, block) in data.chunks_exact_mut(8).zip(blocks.iter().flatten()) {
                    edges[..4].copy_from_slice(&block.left.to_be_bytes());
                    edges[4..].copy_from_slice(&block.right.to_be_bytes());
                }
            }
            Self::Timestamps(ts) => {
                head[0] = kind::TIMESTAMPS;
                data[..4].copy_from_slice(&ts.tsval.to_be_bytes());
                data[4..].copy_from_slice(&ts.tsecr.to_be_bytes());
            }
            Self::Unknown(raw) => {
                head[0] = raw.kind;
                data.copy_from_slice(raw.data);
            }
        }
        if len >= 2 {
            // Checked against MAX_OPTIONS_LEN above, so it fits the length byte.
            head[1] = len as u8;
        }
        Ok(len)
    }
}

/// Iterates over the options of a header, stopping after End of Option List, at the end
/// of the option bytes, or after the first error.
#[derive(Debug, Clone)]
pub struct TcpOptionIter<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> TcpOptionIter<'a> {
    /// Iterates over `options`, the bytes between the fixed header and the data offset.
    pub fn new(options: &'a [u8]) -> Self {
        Self {
            rest: options,
            done: false,
        }
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        match TcpOption::parse(self.rest) {
            Ok((option, rest)) => {
                // RFC 9293 §3.2: after End of Option List the rest is padding.
                self.done = option == TcpOption::EndOfList;
                self.rest = rest;
                Some(Ok(option))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Options this layer does not interpret, in order, in their wire encoding.
///
/// Stored inline (at most 40 bytes, the whole option space) so that a [`TcpRepr`] can be
/// copied, kept and extended (the front-end adds its handoff option to a client's SYN)
/// without allocating or borrowing.
#[derive(Clone, Copy)]
pub struct UnknownTcpOptions {
    bytes: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl UnknownTcpOptions {
    /// No options.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }

    /// Appends an option of `kind` with `data` (the bytes after kind and length).
    ///
    /// Refuses kinds this layer interprets (0, 1, 2, 3, 4, 5, 8): those belong in the
    /// typed fields of [`TcpRepr`], and keeping them here would make a parse of the
    /// emitted segment differ from the representation it came from.
    pub fn push(&mut self, kind: u8, data: &[u8]) -> Result<(), WireError> {
        if matches!(
            kind,
            kind::END
                | kind::NOP
                | kind::MSS
                | kind::WINDOW_SCALE
                | kind::SACK_PERMITTED
                | kind::SACK
                | kind::TIMESTAMPS
        ) {
            return Err(WireError::MalformedTcpOption { kind });
        }
        let start = usize::from(self.len);
        let needed = start + 2 + data.len();
        if needed > MAX_OPTIONS_LEN {
            return Err(WireError::TcpOptionsTooLong(needed));
        }
        let option = TcpOption::Unknown(RawTcpOption { kind, data });
        option.emit(&mut self.bytes[start..needed])?;
        // needed <= 40, checked above.
        self.len = needed as u8;
        Ok(())
    }

    /// The first option of `kind`, if present.
    pub fn find(&self, kind: u8) -> Option<RawTcpOption<'_>> {
        self.iter().find(|raw| raw.kind == kind)
    }

    /// Removes every option of `kind`, returning how many there were.
    pub fn remove(&mut self, kind: u8) -> usize {
        let old = *self;
        *self = Self::new();
        let mut removed = 0;
        for raw in old.iter() {
            if raw.kind == kind {
                removed += 1;
            } else {
                // Re-adding what was already there cannot overflow the 40 bytes.
                let _ = self.push(raw.kind, raw.data);
            }
        }
        removed
    }

    /// The options in order.
    pub fn iter(&self) -> impl Iterator<Item = RawTcpOption<'_>> {
        // Only `push` writes `bytes`, always as well-formed kind-length-data triples.
        TcpOptionIter::new(self.as_bytes()).filter_map(|option| match option {
            Ok(TcpOption::Unknown(raw)) => Some(raw),
            _ => None,
        })
    }

    /// The options' wire encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length of the wire encoding.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for UnknownTcpOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for UnknownTcpOptions {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for UnknownTcpOptions {}

impl fmt::Debug for UnknownTcpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A checked, zero-copy view of a TCP segment: the buffer is exactly the segment (the
/// IPv4 payload), so that checksums and the payload end where the segment does.
///
/// `new_checked` proves the fixed header fits and 20 <= data offset <= buffer length.
#[derive(Debug, Clone)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps `buffer` after checking the data offset against it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "TCP",
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let header_len = usize::from(buf[OFFSET_FLAGS] >> 4) * 4;
        if header_len < HEADER_LEN || header_len > buf.len() {
            return Err(WireError::BadTcpHeaderLength(header_len));
        }
        Ok(Self { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf(), SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf(), DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buf(), SEQ_NUM)
    }

    /// Acknowledgment number (meaningful when ACK is set).
    pub fn ack_number(&self) -> u32 {
        be32(self.buf(), ACK_NUM)
    }

    /// Header length in bytes (data offset times 4), 20..=60.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf()[OFFSET_FLAGS] >> 4) * 4
    }

    /// Control and reserved bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits(be16(self.buf(), OFFSET_FLAGS))
    }

    /// The window field as sent (unscaled).
    pub fn window_len(&self) -> u16 {
        be16(self.buf(), WINDOW)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf(), CHECKSUM)
    }

    /// The urgent pointer.
    pub fn urgent_pointer(&self) -> u16 {
        be16(self.buf(), URGENT)
    }

    /// The option bytes, between the fixed header and the data offset.
    pub fn options(&self) -> &[u8] {
        &self.buf()[HEADER_LEN..self.header_len()]
    }

    /// Iterates over the options.
    pub fn options_iter(&self) -> TcpOptionIter<'_> {
        TcpOptionIter::new(self.options())
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buf()[self.header_len()..]
    }

    /// Whether the checksum over the pseudo-header, header and payload verifies
    /// (RFC 9293 §3.1; over IPv6, RFC 8200 §8.1).
    pub fn verify_checksum<A: PseudoHeader>(&self, src: A, dst: A) -> bool {
        let buf = self.buf();
        checksum::finish(checksum::accumulate(
            pseudo_header(src, dst, buf.len()),
            buf,
        )) == 0
    }
}

impl<'a> TcpSegment<&'a [u8]> {
    /// The option bytes with the lifetime of the underlying buffer.
    pub fn into_options(self) -> &'a [u8] {
        let end = self.header_len();
        &self.buffer[HEADER_LEN..end]
    }

    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let start = self.header_len();
        &self.buffer[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    fn buf_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source port; the checksum must be filled in again afterwards.
    pub fn set_src_port(&mut self, port: u16) {
        self.buf_mut()[SRC_PORT..SRC_PORT + 2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port; the checksum must be filled in again afterwards.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buf_mut()[DST_PORT..DST_PORT + 2].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the sequence number; the checksum must be filled in again afterwards.
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buf_mut()[SEQ_NUM..SEQ_NUM + 4].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the acknowledgment number; the checksum must be filled in again afterwards.
    pub fn set_ack_number(&mut self, ack: u32) {
        self.buf_mut()[ACK_NUM..ACK_NUM + 4].copy_from_slice(&ack.to_be_bytes());
    }

    /// Sets the window field; the checksum must be filled in again afterwards.
    pub fn set_window_len(&mut self, window: u16) {
        self.buf_mut()[WINDOW..WINDOW + 2].copy_from_slice(&window.to_be_bytes());
    }

    /// The option bytes, writable (to blank an option with NOPs, as a back-end does with
    /// the handoff option before its TCP sees the SYN).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buf_mut()[HEADER_LEN..end]
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buf_mut()[start..]
    }

    /// Recomputes the checksum for a segment travelling from `src` to `dst`.
    pub fn fill_checksum<A: PseudoHeader>(&mut self, src: A, dst: A) {
        let buf = self.buf_mut();
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let sum = checksum::finish(checksum::accumulate(
            pseudo_header(src, dst, buf.len()),
            buf,
        ));
        buf[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The pseudo-header sum for a TCP segment of `len` bytes (RFC 9293 §3.1, RFC 8200 §8.1)
/// in the family of `src` and `dst`. A segment inside an IPv4 packet is under 64 KiB; a
/// longer buffer gets a checksum that does not verify anywhere, which is the right answer
/// for an impossible segment.
fn pseudo_header<A: PseudoHeader>(src: A, dst: A, len: usize) -> u32 {
    A::pseudo_header(src, dst, 6, len)
}

/// A TCP segment, parsed, with its options decoded.
///
/// Duplicate options (which no sane stack sends) resolve to the last one, as in Linux's
/// `tcp_parse_options`. SACK blocks are stored present-first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number (meaningful when `flags` has ACK).
    pub ack_number: u32,
    /// Control and reserved bits.
    pub flags: TcpFlags,
    /// Window field as sent (unscaled).
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_pointer: u16,
    /// MSS option (RFC 9293 §3.2).
    pub max_seg_size: Option<u16>,
    /// Window Scale option shift count, as sent (RFC 7323 §2).
    pub window_scale: Option<u8>,
    /// SACK-Permitted option (RFC 2018 §2).
    pub sack_permitted: bool,
    /// SACK option blocks, present first (RFC 2018 §3); all `None` means no SACK option.
    pub sack_blocks: [Option<SackBlock>; MAX_SACK_BLOCKS],
    /// Timestamps option (RFC 7323 §3).
    pub timestamps: Option<TcpTimestamps>,
    /// Every other option, the handoff option included.
    pub unknown_options: UnknownTcpOptions,
    /// The data.
    pub payload: &'a [u8],
}

impl TcpRepr<'static> {
    /// A segment with no options and no payload: the base that builders of control
    /// segments (SYN/ACKs, ACKs, resets) and tests start from.
    pub fn bare(
        src_port: u16,
        dst_port: u16,
        seq_number: u32,
        ack_number: u32,
        flags: TcpFlags,
        window_len: u16,
    ) -> Self {
        Self {
            src_port,
            dst_port,
            seq_number,
            ack_number,
            flags,
            window_len,
            urgent_pointer: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; MAX_SACK_BLOCKS],
            timestamps: None,
            unknown_options: UnknownTcpOptions::new(),
            payload: &[],
        }
    }
}

impl<'a> TcpRepr<'a> {
    /// Validates a checked segment sent from `src` to `dst` and decodes it.
    pub fn parse<A: PseudoHeader>(
        segment: &TcpSegment<&'a [u8]>,
        src: A,
        dst: A,
        checksums: Checksums,
    ) -> Result<Self, WireError> {
        if checksums == Checksums::Verify && !segment.verify_checksum(src, dst) {
            return Err(WireError::BadTcpChecksum);
        }
        let mut repr = Self {
            src_port: segment.src_port(),
            dst_port: segment.dst_port(),
            seq_number: segment.seq_number(),
            ack_number: segment.ack_number(),
            flags: segment.flags(),
            window_len: segment.window_len(),
            urgent_pointer: segment.urgent_pointer(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; MAX_SACK_BLOCKS],
            timestamps: None,
            unknown_options: UnknownTcpOptions::new(),
            payload: segment.clone().into_payload(),
        };
        for option in TcpOptionIter::new(segment.clone().into_options()) {
            match option? {
                TcpOption::EndOfList | TcpOption::NoOperation => {}
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Sack(blocks) => repr.sack_blocks = blocks,
                TcpOption::Timestamps(ts) => repr.timestamps = Some(ts),
                TcpOption::Unknown(raw) => repr.unknown_options.push(raw.kind, raw.data)?,
            }
        }
        Ok(repr)
    }

    /// How many sequence numbers the segment occupies: its data, plus one each for SYN
    /// and FIN (RFC 9293 §3.4).
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags.contains(TcpFlags::SYN))
            + usize::from(self.flags.contains(TcpFlags::FIN))
    }

    fn sack_block_count(&self) -> usize {
        self.sack_blocks.iter().flatten().count()
    }

    /// Option bytes without any alignment padding.
    fn packed_options_len(&self) -> usize {
        let sack_blocks = self.sack_block_count();
        usize::from(self.max_seg_size.is_some()) * 4
            + usize::from(self.window_scale.is_some()) * 3
            + usize::from(self.sack_permitted) * 2
            + usize::from(self.timestamps.is_some()) * 10
            + if sack_blocks > 0 {
                2 + 8 * sack_blocks
            } else {
                0
            }
            + self.unknown_options.len()
    }

    /// Option bytes in Linux's word-aligned layout (`tcp_options_write`).
    fn aligned_options_len(&self) -> usize {
        let sack_blocks = self.sack_block_count();
        usize::from(self.max_seg_size.is_some()) * 4
            + match (self.sack_permitted, self.timestamps.is_some()) {
                (_, true) => 12,
                (true, false) => 4,
                (false, false) => 0,
            }
            + usize::from(self.window_scale.is_some()) * 4
            + if sack_blocks > 0 {
                4 + 8 * sack_blocks
            } else {
                0
            }
            + self.unknown_options.len()
    }

    /// Whether the options fit with alignment NOPs; if not, they are packed.
    fn options_aligned(&self) -> bool {
        self.aligned_options_len().next_multiple_of(4) <= MAX_OPTIONS_LEN
    }

    /// Header length [`TcpRepr::emit`] writes: 20 bytes plus options padded to a word.
    pub fn header_len(&self) -> usize {
        let options = if self.options_aligned() {
            self.aligned_options_len()
        } else {
            self.packed_options_len()
        };
        HEADER_LEN + options.next_multiple_of(4)
    }

    /// Bytes [`TcpRepr::emit`] writes: header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the options into `buf` (exactly the padded option space) in Linux's order:
    /// MSS, SACK-Permitted + Timestamps, Window Scale, SACK, then the unknown options in
    /// their original order, then zero padding (End of Option List, RFC 9293 §3.1).
    /// When alignment NOPs would not fit, the same options go without them.
    fn emit_options(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let aligned = self.options_aligned();
        let mut at = 0;
        let mut put = |option: TcpOption<'_>, at: &mut usize| -> Result<(), WireError> {
            *at += option.emit(buf.get_mut(*at..).unwrap_or_default())?;
            Ok(())
        };
        if let Some(mss) = self.max_seg_size {
            put(TcpOption::MaxSegmentSize(mss), &mut at)?;
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some(_)) => put(TcpOption::SackPermitted, &mut at)?,
            (true, None) | (false, Some(_)) if aligned => {
                put(TcpOption::NoOperation, &mut at)?;
                put(TcpOption::NoOperation, &mut at)?;
                if self.sack_permitted {
                    put(TcpOption::SackPermitted, &mut at)?;
                }
            }
            (true, None) => put(TcpOption::SackPermitted, &mut at)?,
            _ => {}
        }
        if let Some(ts) = self.timestamps {
            put(TcpOption::Timestamps(ts), &mut at)?;
        }
        if let Some(shift) = self.window_scale {
            if aligned {
                put(TcpOption::NoOperation, &mut at)?;
            }
            put(TcpOption::WindowScale(shift), &mut at)?;
        }
        if self.sack_block_count() > 0 {
            if aligned {
                put(TcpOption::NoOperation, &mut at)?;
                put(TcpOption::NoOperation, &mut at)?;
            }
            let mut blocks = [None; MAX_SACK_BLOCKS];
            for (slot, block) in blocks.iter_mut().zip(self.sack_blocks.iter().flatten()) {
                *slot = Some(*block);
            }
            put(TcpOption::Sack(blocks), &mut at)?;
        }
        let unknown = self.unknown_options.as_bytes();
        ensure_room(buf, at + unknown.len())?;
        buf[at..at + unknown.len()].copy_from_slice(unknown);
        at += unknown.len();
        buf[at..].fill(kind::END);
        Ok(())
    }

    /// Writes the segment at the start of `buf`, checksum computed for `src` to `dst`, and
    /// returns its length.
    pub fn emit<A: PseudoHeader>(
        &self,
        src: A,
        dst: A,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        let header_len = self.header_len();
        if header_len - HEADER_LEN > MAX_OPTIONS_LEN {
            return Err(WireError::TcpOptionsTooLong(header_len - HEADER_LEN));
        }
        let len = header_len + self.payload.len();
        ensure_room(buf, len)?;
        let buf = &mut buf[..len];
        buf[SRC_PORT..SRC_PORT + 2].copy_from_slice(&self.src_port.to_be_bytes());
        buf[DST_PORT..DST_PORT + 2].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[SEQ_NUM..SEQ_NUM + 4].copy_from_slice(&self.seq_number.to_be_bytes());
        buf[ACK_NUM..ACK_NUM + 4].copy_from_slice(&self.ack_number.to_be_bytes());
        // header_len <= 60, so the data offset fits its 4 bits.
        let offset_flags = ((header_len as u16 / 4) << 12) | self.flags.bits();
        buf[OFFSET_FLAGS..OFFSET_FLAGS + 2].copy_from_slice(&offset_flags.to_be_bytes());
        buf[WINDOW..WINDOW + 2].copy_from_slice(&self.window_len.to_be_bytes());
        buf[URGENT..URGENT + 2].copy_from_slice(&self.urgent_pointer.to_be_bytes());
        self.emit_options(&mut buf[HEADER_LEN..header_len])?;
        buf[header_len..].copy_from_slice(self.payload);
        let mut segment = TcpSegment { buffer: buf };
        segment.fill_checksum(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

    /// A SYN as Linux 6.x sends it from 198.18.0.2:51234 to 198.18.1.10:80: data offset
    /// 10, window 64240, options MSS 1460, SACK-Permitted, Timestamps, NOP, Window Scale 7
    /// (20 bytes). Checksum 0xd8e1 computed independently of this crate.
    const LINUX_SYN: [u8; 40] = [
        0xc8, 0x22, 0x00, 0x50, 0x3d, 0x2a, 0x1c, 0x0e, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0xd8, 0xe1, 0x00, 0x00, // fixed header
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK-Permitted
        0x08, 0x0a, 0x9b, 0x1e, 0x2a, 0x33, 0x00, 0x00, 0x00, 0x00, // TSval, TSecr 0
        0x01, // NOP
        0x03, 0x03, 0x07, // Window Scale 7
    ];

    fn parse(bytes: &[u8]) -> Result<TcpRepr<'_>, WireError> {
        TcpRepr::parse(
            &TcpSegment::new_checked(bytes)?,
            CLIENT,
            VIP,
            Checksums::Verify,
        )
    }

    fn emit(repr: &TcpRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0; repr.buffer_len()];
        assert_eq!(repr.emit(CLIENT, VIP, &mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn parses_a_linux_syn() {
        let segment = TcpSegment::new_checked(&LINUX_SYN[..]).unwrap();
        assert!(segment.verify_checksum(CLIENT, VIP));
        assert_eq!(segment.header_len(), 40);
        let options: Vec<_> = segment.options_iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            options,
            [
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps(TcpTimestamps {
                    tsval: 0x9b1e2a33,
                    tsecr: 0
                }),
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );
        let repr = parse(&LINUX_SYN).unwrap();
        assert_eq!(repr.src_port, 51234);
        assert_eq!(repr.dst_port, 80);
        assert_eq!(repr.seq_number, 0x3d2a1c0e);
        assert_eq!(repr.flags, TcpFlags::SYN);
        assert_eq!(repr.window_len, 64240);
        assert_eq!(repr.max_seg_size, Some(1460));
        assert_eq!(repr.window_scale, Some(7));
        assert!(repr.sack_permitted);
        assert_eq!(repr.timestamps.unwrap().tsval, 0x9b1e2a33);
        assert!(repr.unknown_options.is_empty());
        assert!(repr.payload.is_empty());
        assert_eq!(repr.segment_len(), 1);
    }

    #[test]
    fn emits_a_linux_syn_byte_for_byte() {
        let repr = parse(&LINUX_SYN).unwrap();
        assert_eq!(emit(&repr), LINUX_SYN);
    }

    #[test]
    fn a_handoff_sized_raw_option_fits_beside_a_linux_syn() {
        let mut repr = parse(&LINUX_SYN).unwrap();
        // 18 bytes (kind, length, 16 of data) beside the client's 20 is 38 of 40.
        let data: Vec<u8> = (0..16).collect();
        repr.unknown_options.push(253, &data).unwrap();
        let bytes = emit(&repr);
        assert_eq!(bytes.len(), 60);
        let again = parse(&bytes).unwrap();
        assert_eq!(again, repr);
        assert_eq!(
            again.unknown_options.find(253),
            Some(RawTcpOption {
                kind: 253,
                data: &data
            })
        );
        // Four more bytes no longer fit, even packed without NOPs (41 bytes, 44 padded).
        repr.unknown_options.push(254, &[1, 2]).unwrap();
        let mut buf = [0; 80];
        assert_eq!(
            repr.emit(CLIENT, VIP, &mut buf),
            Err(WireError::TcpOptionsTooLong(44))
        );
    }

    #[test]
    fn unknown_options_keep_their_order_and_can_be_removed() {
        let mut unknown = UnknownTcpOptions::new();
        unknown.push(30, &[1, 2, 3]).unwrap();
        unknown.push(253, &[0xab; 4]).unwrap();
        unknown.push(30, &[]).unwrap();
        assert_eq!(
            unknown.as_bytes(),
            [30, 5, 1, 2, 3, 253, 6, 0xab, 0xab, 0xab, 0xab, 30, 2]
        );
        assert_eq!(unknown.remove(30), 2);
        assert_eq!(unknown.as_bytes(), [253, 6, 0xab, 0xab, 0xab, 0xab]);
        for known in [0, 1, 2, 3, 4, 5, 8] {
            assert_eq!(
                unknown.push(known, &[]),
                Err(WireError::MalformedTcpOption { kind: known })
            );
        }
    }

    fn data_segment() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 80,
            dst_port: 51234,
            seq_number: 1000,
            ack_number: 0xffff_fff0,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window_len: 501,
            urgent_pointer: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; MAX_SACK_BLOCKS],
            timestamps: Some(TcpTimestamps {
                tsval: u32::MAX,
                tsecr: 1,
            }),
            unknown_options: UnknownTcpOptions::new(),
            payload: b"HTTP/1.1 200 OK\r\n\r\n",
        }
    }

    #[test]
    fn options_round_trip_in_every_combination() {
        let block = |n: u32| SackBlock {
            left: n.wrapping_mul(0x0101_0101),
            right: n.wrapping_mul(0x0101_0101).wrapping_add(1448),
        };
        for mask in 0..64u32 {
            for sack_blocks in 0..=MAX_SACK_BLOCKS {
                let mut repr = data_segment();
                repr.max_seg_size = (mask & 1 != 0).then_some(536);
                repr.window_scale = (mask & 2 != 0).then_some(14);
                repr.sack_permitted = mask & 4 != 0;
                repr.timestamps = (mask & 8 != 0).then_some(TcpTimestamps {
                    tsval: 7,
                    tsecr: 0xdead_beef,
                });
                if mask & 16 != 0 {
                    repr.unknown_options.push(34, &[9; 6]).unwrap(); // TFO cookie
                }
                if mask & 32 != 0 {
                    repr.unknown_options.push(253, &[0x12, 0x34]).unwrap();
                }
                for (i, slot) in repr.sack_blocks.iter_mut().take(sack_blocks).enumerate() {
                    *slot = Some(block(i as u32 + 1));
                }
                let mut buf = [0; 100];
                match repr.emit(CLIENT, VIP, &mut buf) {
                    Ok(len) => {
                        assert_eq!(len, repr.buffer_len());
                        assert_eq!(parse(&buf[..len]).unwrap(), repr, "{mask} {sack_blocks}");
                    }
                    Err(WireError::TcpOptionsTooLong(n)) => {
                        assert!(n > MAX_OPTIONS_LEN && repr.packed_options_len() > 40);
                    }
                    Err(e) => panic!("{mask} {sack_blocks}: {e}"),
                }
            }
        }
    }

    #[test]
    fn four_sack_blocks_fit_with_their_alignment() {
        let mut repr = data_segment();
        repr.timestamps = None;
        for (i, slot) in repr.sack_blocks.iter_mut().enumerate() {
            *slot = Some(SackBlock {
                left: i as u32 * 10,
                right: i as u32 * 10 + 5,
            });
        }
        let bytes = emit(&repr);
        assert_eq!(&bytes[20..24], [1, 1, 5, 34]);
        // NOP NOP and 2 + 4 * 8 bytes of SACK (RFC 2018 §3: at most 4 blocks fit).
        assert_eq!(bytes.len() - repr.payload.len(), 20 + 36);
        assert_eq!(parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn packed_options_are_accepted_and_emitted_packed_when_needed() {
        // MSS, WS, TS, SACK-Permitted, SACK (1 block), an 11-byte unknown option: 40 bytes
        // with no NOPs at all, which the aligned layout would push to 44.
        let mut options = vec![
            2, 4, 0x05, 0xb4, 3, 3, 7, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 4, 2,
        ];
        options.extend_from_slice(&[5, 10, 0, 0, 0, 10, 0, 0, 0, 20]);
        options.extend_from_slice(&[99, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(options.len(), 40);
        let mut seg = LINUX_SYN[..20].to_vec();
        seg[12] = 0xf0;
        seg.extend_from_slice(&options);
        let mut view = TcpSegment::new_checked(&mut seg[..]).unwrap();
        view.fill_checksum(CLIENT, VIP);
        let repr = parse(&seg).unwrap();
        assert_eq!(
            repr.sack_blocks[0],
            Some(SackBlock {
                left: 10,
                right: 20
            })
        );
        let bytes = emit(&repr);
        assert_eq!(bytes.len(), 60);
        assert_eq!(parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn options_after_end_of_list_are_padding() {
        let mut seg = LINUX_SYN;
        seg[36] = 0; // EOL where the NOP was: the window scale is now padding
        TcpSegment::new_checked(&mut seg[..])
            .unwrap()
            .fill_checksum(CLIENT, VIP);
        let repr = parse(&seg).unwrap();
        assert_eq!(repr.window_scale, None);
        assert_eq!(repr.max_seg_size, Some(1460));
    }

    #[test]
    fn malformed_options_are_errors() {
        // (offset in LINUX_SYN, new byte, kind reported)
        for (at, byte, kind) in [
            (21, 3, 2),  // MSS of length 3
            (21, 41, 2), // MSS overrunning the header
            (25, 3, 4),  // SACK-Permitted of length 3
            (27, 9, 8),  // Timestamps of length 9
            (38, 4, 3),  // Window Scale of length 4, past the end of the header
            (21, 0, 2),  // length 0 would loop forever in a naive parser
            (21, 1, 2),  // length 1 likewise
        ] {
            let mut seg = LINUX_SYN;
            seg[at] = byte;
            let parsed = TcpRepr::parse(
                &TcpSegment::new_checked(&seg[..]).unwrap(),
                CLIENT,
                VIP,
                Checksums::Trust,
            );
            assert_eq!(
                parsed,
                Err(WireError::MalformedTcpOption { kind }),
                "{at} {byte}"
            );
        }
        // A SACK option with no blocks, and one with a partial block.
        for len in [2u8, 9] {
            let mut seg = LINUX_SYN;
            seg[20..22].copy_from_slice(&[5, len]);
            assert_eq!(
                TcpRepr::parse(
                    &TcpSegment::new_checked(&seg[..]).unwrap(),
                    CLIENT,
                    VIP,
                    Checksums::Trust
                ),
                Err(WireError::MalformedTcpOption { kind: 5 })
            );
        }
        // A lone kind byte at the very end of the options.
        let mut seg = LINUX_SYN;
        seg[36..40].copy_from_slice(&[1, 1, 1, 30]);
        assert_eq!(
            TcpRepr::parse(
                &TcpSegment::new_checked(&seg[..]).unwrap(),
                CLIENT,
                VIP,
                Checksums::Trust
            ),
            Err(WireError::MalformedTcpOption { kind: 30 })
        );
    }

    #[test]
    fn rejects_bad_checksums_and_lengths() {
        let mut seg = LINUX_SYN;
        seg[17] ^= 0x80;
        assert_eq!(parse(&seg), Err(WireError::BadTcpChecksum));
        // The same bytes from another address are another segment.
        assert_eq!(
            TcpRepr::parse(
                &TcpSegment::new_checked(&LINUX_SYN[..]).unwrap(),
                CLIENT,
                Ipv4Addr::new(198, 18, 1, 11),
                Checksums::Verify
            ),
            Err(WireError::BadTcpChecksum)
        );
        for len in 0..LINUX_SYN.len() {
            assert!(TcpSegment::new_checked(&LINUX_SYN[..len]).is_err(), "{len}");
        }
        let mut short = LINUX_SYN;
        short[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&short[..]).err(),
            Some(WireError::BadTcpHeaderLength(16))
        );
        let mut long = LINUX_SYN;
        long[12] = 0xb0;
        assert_eq!(
            TcpSegment::new_checked(&long[..]).err(),
            Some(WireError::BadTcpHeaderLength(44))
        );
        let repr = parse(&LINUX_SYN).unwrap();
        assert_eq!(
            repr.emit(CLIENT, VIP, &mut [0; 39]),
            Err(WireError::BufferTooSmall {
                needed: 40,
                available: 39
            })
        );
    }

    #[test]
    fn rewrites_through_the_view_keep_the_checksum_valid() {
        let mut seg = emit(&data_segment());
        let mut view = TcpSegment::new_checked(&mut seg[..]).unwrap();
        view.set_seq_number(view.seq_number().wrapping_add(0x8000_0000));
        view.set_ack_number(3);
        view.set_window_len(1);
        view.set_dst_port(40000);
        view.set_src_port(8080);
        assert!(!view.verify_checksum(CLIENT, VIP));
        view.fill_checksum(CLIENT, VIP);
        assert!(view.verify_checksum(CLIENT, VIP));
        assert_eq!(view.payload(), data_segment().payload);
        let repr = parse(&seg).unwrap();
        assert_eq!(repr.seq_number, 1000 + 0x8000_0000);
        assert_eq!((repr.src_port, repr.dst_port), (8080, 40000));
    }

    #[test]
    fn flags_debug_names_the_bits() {
        assert_eq!(format!("{:?}", TcpFlags::SYN | TcpFlags::ACK), "SYN|ACK");
        assert_eq!(format!("{:?}", TcpFlags::EMPTY), "0x0");
        assert_eq!(format!("{:?}", TcpFlags::from_bits(0xf011)), "FIN|ACK");
        assert_eq!(format!("{:?}", TcpFlags::from_bits(0x0101)), "FIN|0x100");
    }
}
