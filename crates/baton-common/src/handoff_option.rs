//! The handoff option: the authenticated TCP option the front-end adds to the client's
//! SYN when it replays it to the chosen back-end (the SYN': docs/design.md, "Packet walk",
//! step 4, and "The handoff option").
//!
//! It tells the back-end's tc ingress the terms the client already agreed with the
//! front-end (`isn_f`, `tsv_f`, `ws_f`, whether timestamps and SACK were negotiated), so
//! that the back-end's programs can translate the connection ([`crate::translate`]). The
//! ingress verifies it, records the flow, blanks it to NOPs ([`blank_option`]) and passes
//! the SYN up to an unmodified TCP stack.
//!
//! # Layout
//!
//! 20 bytes, so it fits beside the 20 bytes of options a typical Linux client sends in its
//! SYN (MSS 4, SACK-permitted 2, timestamps 10, NOP 1, window scale 3) within TCP's 40.
//! Integers are big-endian (network order); the tag is the SipHash output's
//! little-endian bytes, the reference implementation's convention.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+-------------------------------+
//! |  Kind = 254   |  Length = 20  |         isn_f (bits 31..16)   |  bytes  0..4
//! +---------------+---------------+-------------------------------+
//! |         isn_f (bits 15..0)    |         tsv_f (bits 31..16)   |  bytes  4..8
//! +-------------------------------+---------------+---------------+
//! |         tsv_f (bits 15..0)    |     ws_f      |     flags     |  bytes  8..12
//! +-------------------------------+---------------+---------------+
//! |                   tag: SipHash-2-4, bytes 0..4                |  bytes 12..16
//! +---------------------------------------------------------------+
//! |                   tag: SipHash-2-4, bytes 4..8                |  bytes 16..20
//! +---------------------------------------------------------------+
//!
//! flags: bit 0 (0x01) timestamps negotiated, bit 1 (0x02) SACK permitted,
//!        bits 2..7 reserved, zero.
//! ws_f:  the window shift F announced to the client, 0..=14 (0: no window scaling).
//! ```
//!
//! # Kind, and why there is no ExID
//!
//! Kind 254 is one of the two experimental kinds (RFC 4727 section 7.2). RFC 6994
//! asks experiments on a shared kind to start with a 16- or 32-bit ExID so that they can
//! tell each other apart. We do not use one: with it the option would take 22 bytes, no
//! longer fitting beside the client's 20, and it would buy nothing here, because the
//! option only travels on the LAN from the front-end to a back-end, whose ingress removes
//! it before its TCP stack sees it, and because the 64-bit tag identifies our option far
//! more reliably than a 16-bit ExID (a foreign kind-254 option fails with
//! [`HandoffOptionError::BadLength`] or [`HandoffOptionError::BadTag`]). RFC 6994
//! section 3 notes an ExID is no security mechanism anyway.
//!
//! # Authentication
//!
//! The tag is SipHash-2-4 ([`crate::siphash`]) under the 128-bit key the front-end and
//! the back-ends share, over a 32-byte message:
//!
//! ```text
//! bytes  0..4   "BTN1": domain separation, and the version of this layout
//! bytes  4..8   client IPv4 address      (the SYN's source address)
//! bytes  8..12  back-end IPv4 address    (the SYN''s destination address)
//! bytes 12..14  client port, big-endian
//! bytes 14..16  back-end port, big-endian
//! bytes 16..20  the client's ISN, big-endian (the SYN''s sequence number)
//! bytes 20..32  option bytes 0..12: kind, length, isn_f, tsv_f, ws_f, flags
//! ```
//!
//! An IPv6 SYN' carries the same 20 option bytes; only the tagged message differs, since
//! it binds 16-byte addresses. Its domain label is "BTN2", so a message of one family can
//! never be read as one of the other, and it is 56 bytes long:
//!
//! ```text
//! bytes  0..4   "BTN2"
//! bytes  4..20  client IPv6 address
//! bytes 20..36  back-end IPv6 address
//! bytes 36..40  client port, back-end port, big-endian
//! bytes 40..44  the client's ISN, big-endian
//! bytes 44..56  option bytes 0..12, as for IPv4
//! ```
//!
//! Binding the tag to the addresses, ports and the client's ISN makes an option copied
//! onto another connection fail verification; a forged or altered option fails too. The
//! same SYN' sent again on the same connection verifies, as it must: that is the
//! front-end's own retransmission, and the back-end's TCP treats it as a duplicate SYN.

use crate::siphash::{SipKey, siphash24};
use crate::translate::{MAX_WINDOW_SHIFT, SynAckTerms, Translation};

/// The TCP option kind of the handoff option: 254, experimental (RFC 4727 section 7.2).
pub const HANDOFF_OPTION_KIND: u8 = 254;

/// The handoff option's length in bytes, kind and length bytes included.
pub const HANDOFF_OPTION_LEN: usize = 20;

/// Most bytes of options a TCP header can carry: a data offset of 15 words less the
/// 20-byte fixed header (RFC 9293 section 3.1).
pub const MAX_OPTIONS_LEN: usize = 40;

/// End of option list (RFC 9293 section 3.2).
pub const OPTION_EOL: u8 = 0;

/// No-operation, one byte of padding (RFC 9293 section 3.2).
pub const OPTION_NOP: u8 = 1;

/// The layout's version and domain label, the first bytes of the tagged message of an
/// IPv4 SYN'.
const TAG_DOMAIN: [u8; 4] = *b"BTN1";

/// Length of the message the tag covers for an IPv4 SYN'.
const TAGGED_LEN: usize = 32;

/// The domain label of an IPv6 SYN''s tagged message.
const TAG_DOMAIN_V6: [u8; 4] = *b"BTN2";

/// Length of the message the tag covers for an IPv6 SYN'.
const TAGGED_LEN_V6: usize = 56;

/// Why a handoff option, or the options area around it, was rejected. Each variant is a
/// separate counter in the back-end's ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoffOptionError {
    /// Fewer bytes than the option, or an option in the area, claims to have.
    #[error("option truncated")]
    Truncated,
    /// The first byte is not [`HANDOFF_OPTION_KIND`].
    #[error("not the handoff option kind")]
    BadKind,
    /// The length byte is not [`HANDOFF_OPTION_LEN`] (for the handoff option), or is
    /// below 2 (for any option in an area being walked).
    #[error("bad option length")]
    BadLength,
    /// The tag does not match: forged, altered, copied from another connection, or made
    /// with another key.
    #[error("handoff option tag does not verify")]
    BadTag,
    /// Authentic, but `ws_f` is above 14: a front-end of another version.
    #[error("window shift above 14")]
    BadWindowScale,
    /// Authentic, but with flags this version does not know: a front-end of another
    /// version.
    #[error("reserved flags set")]
    ReservedFlags,
    /// The options area is longer than the 40 bytes TCP allows.
    #[error("options area longer than 40 bytes")]
    OptionsTooLong,
    /// A span to blank lies outside the options area.
    #[error("span outside the options area")]
    OutOfRange,
}

/// What the handoff tag is bound to: the connection's addresses and ports, and the
/// client's ISN, all as the back-end sees them in the SYN'. `A` is the address in network
/// byte order: `[u8; 4]` for IPv4 (the default), `[u8; 16]` for IPv6
/// ([`HandoffBindingV6`]); each family has its own tagged message ([`BindingAddress`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffBinding<A = [u8; 4]> {
    /// The client's address, the SYN''s source address.
    pub client_ip: A,
    pub client_port: u16,
    /// The back-end's address, the SYN''s destination address.
    pub backend_ip: A,
    pub backend_port: u16,
    /// The client's initial sequence number, the SYN''s `seq`.
    pub client_isn: u32,
}

/// The binding of an IPv6 SYN'.
pub type HandoffBindingV6 = HandoffBinding<[u8; 16]>;

/// An address a handoff tag can bind: IPv4's 4 bytes or IPv6's 16, each with its own
/// domain label and message layout (module documentation, "Authentication"). Sealed: the
/// two layouts are the wire format.
pub trait BindingAddress: Copy + sealed::Sealed {
    /// The SipHash-2-4 tag over the family's domain label, the binding and the option's
    /// first 12 bytes.
    fn tag(key: &SipKey, binding: &HandoffBinding<Self>, fields: &[u8; 12]) -> u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for [u8; 4] {}
    impl Sealed for [u8; 16] {}
}

impl BindingAddress for [u8; 4] {
    fn tag(key: &SipKey, binding: &HandoffBinding<Self>, fields: &[u8; 12]) -> u64 {
        let [d0, d1, d2, d3] = TAG_DOMAIN;
        let [c0, c1, c2, c3] = binding.client_ip;
        let [b0, b1, b2, b3] = binding.backend_ip;
        let [cp0, cp1] = binding.client_port.to_be_bytes();
        let [bp0, bp1] = binding.backend_port.to_be_bytes();
        let [n0, n1, n2, n3] = binding.client_isn.to_be_bytes();
        let [k, l, i0, i1, i2, i3, t0, t1, t2, t3, w, f] = *fields;
        let message: [u8; TAGGED_LEN] = [
            d0, d1, d2, d3, c0, c1, c2, c3, b0, b1, b2, b3, cp0, cp1, bp0, bp1, n0, n1, n2, n3, k,
            l, i0, i1, i2, i3, t0, t1, t2, t3, w, f,
        ];
        siphash24(key, &message)
    }
}

impl BindingAddress for [u8; 16] {
    fn tag(key: &SipKey, binding: &HandoffBinding<Self>, fields: &[u8; 12]) -> u64 {
        // Written field by field at fixed offsets (no slice copies), as the IPv4 message
        // is, so that the eBPF programs see constant offsets only.
        let mut message = [0u8; TAGGED_LEN_V6];
        let mut i = 0;
        while i < 4 {
            message[i] = TAG_DOMAIN_V6[i];
            i += 1;
        }
        let mut i = 0;
        while i < 16 {
            message[4 + i] = binding.client_ip[i];
            message[20 + i] = binding.backend_ip[i];
            i += 1;
        }
        let [cp0, cp1] = binding.client_port.to_be_bytes();
        let [bp0, bp1] = binding.backend_port.to_be_bytes();
        let [n0, n1, n2, n3] = binding.client_isn.to_be_bytes();
        message[36] = cp0;
        message[37] = cp1;
        message[38] = bp0;
        message[39] = bp1;
        message[40] = n0;
        message[41] = n1;
        message[42] = n2;
        message[43] = n3;
        let mut i = 0;
        while i < 12 {
            message[44 + i] = fields[i];
            i += 1;
        }
        siphash24(key, &message)
    }
}

/// The contents of a handoff option: the front-end's side of the handshake the client
/// completed with it. Constructed through [`HandoffOption::new`] or a verified parse, so
/// `ws_f` is at most 14 and no reserved flag is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffOption {
    isn_f: u32,
    tsv_f: u32,
    ws_f: u8,
    flags: u8,
}

impl HandoffOption {
    /// Flag: timestamps were negotiated with the client.
    pub const TIMESTAMPS: u8 = 1 << 0;
    /// Flag: the client and the front-end agreed on SACK.
    pub const SACK: u8 = 1 << 1;
    /// Every flag this version knows.
    const KNOWN_FLAGS: u8 = Self::TIMESTAMPS | Self::SACK;

    /// The option for a front-end that answered the client with `isn_f`, TSval `tsv_f`
    /// (0 without timestamps) and window shift `ws_f` (clamped to 14, as RFC 7323
    /// section 2.3 says). `flags` outside [`HandoffOption::TIMESTAMPS`] and
    /// [`HandoffOption::SACK`] are dropped.
    pub const fn new(isn_f: u32, tsv_f: u32, ws_f: u8, flags: u8) -> Self {
        Self {
            isn_f,
            tsv_f,
            ws_f: crate::translate::clamp_window_shift(ws_f),
            flags: flags & Self::KNOWN_FLAGS,
        }
    }

    pub const fn isn_f(&self) -> u32 {
        self.isn_f
    }

    pub const fn tsv_f(&self) -> u32 {
        self.tsv_f
    }

    pub const fn ws_f(&self) -> u8 {
        self.ws_f
    }

    pub const fn flags(&self) -> u8 {
        self.flags
    }

    pub const fn has_timestamps(&self) -> bool {
        self.flags & Self::TIMESTAMPS != 0
    }

    pub const fn has_sack(&self) -> bool {
        self.flags & Self::SACK != 0
    }

    /// The front-end's terms, as [`Translation::awaiting_syn_ack`] takes them.
    pub const fn front_terms(&self) -> SynAckTerms {
        SynAckTerms {
            isn: self.isn_f,
            tsval: self.tsv_f,
            window_shift: self.ws_f,
        }
    }

    /// The flow entry the back-end's ingress stores on accepting this option; its egress
    /// completes it from B's SYN/ACK' with [`Translation::with_backend`].
    pub const fn translation(&self) -> Translation {
        let mut flags = 0;
        if self.has_timestamps() {
            flags |= Translation::TIMESTAMPS;
        }
        if self.has_sack() {
            flags |= Translation::SACK;
        }
        Translation::awaiting_syn_ack(self.front_terms(), flags)
    }

    /// The option's first 12 bytes: everything but the tag.
    fn fields(&self) -> [u8; 12] {
        let [i0, i1, i2, i3] = self.isn_f.to_be_bytes();
        let [t0, t1, t2, t3] = self.tsv_f.to_be_bytes();
        [
            HANDOFF_OPTION_KIND,
            HANDOFF_OPTION_LEN as u8,
            i0,
            i1,
            i2,
            i3,
            t0,
            t1,
            t2,
            t3,
            self.ws_f,
            self.flags,
        ]
    }

    /// The option as the front-end writes it into the SYN'.
    pub fn encode<A: BindingAddress>(
        &self,
        key: &SipKey,
        binding: &HandoffBinding<A>,
    ) -> [u8; HANDOFF_OPTION_LEN] {
        let fields = self.fields();
        let [g0, g1, g2, g3, g4, g5, g6, g7] = A::tag(key, binding, &fields).to_le_bytes();
        let [k, l, i0, i1, i2, i3, t0, t1, t2, t3, w, f] = fields;
        [
            k, l, i0, i1, i2, i3, t0, t1, t2, t3, w, f, g0, g1, g2, g3, g4, g5, g6, g7,
        ]
    }

    /// Parses the handoff option at the start of `bytes` and verifies its tag against
    /// the connection it arrived on. Bytes after the option's 20 are ignored, so the rest
    /// of an options area may follow.
    ///
    /// The tag is checked before the field values, so anything that is not an authentic
    /// option counts as [`HandoffOptionError::BadTag`], and only an authentic option from
    /// a front-end of another version reaches [`HandoffOptionError::BadWindowScale`] or
    /// [`HandoffOptionError::ReservedFlags`].
    pub fn parse_and_verify<A: BindingAddress>(
        bytes: &[u8],
        key: &SipKey,
        binding: &HandoffBinding<A>,
    ) -> Result<Self, HandoffOptionError> {
        let (&kind, rest) = bytes.split_first().ok_or(HandoffOptionError::Truncated)?;
        if kind != HANDOFF_OPTION_KIND {
            return Err(HandoffOptionError::BadKind);
        }
        let &len = rest.first().ok_or(HandoffOptionError::Truncated)?;
        if usize::from(len) != HANDOFF_OPTION_LEN {
            return Err(HandoffOptionError::BadLength);
        }
        let Some(
            &[
                k,
                l,
                i0,
                i1,
                i2,
                i3,
                t0,
                t1,
                t2,
                t3,
                w,
                f,
                g0,
                g1,
                g2,
                g3,
                g4,
                g5,
                g6,
                g7,
            ],
        ) = bytes.first_chunk::<HANDOFF_OPTION_LEN>()
        else {
            return Err(HandoffOptionError::Truncated);
        };
        let fields = [k, l, i0, i1, i2, i3, t0, t1, t2, t3, w, f];
        let carried = u64::from_le_bytes([g0, g1, g2, g3, g4, g5, g6, g7]);
        // A single 64-bit comparison: no early exit byte by byte that could leak, through
        // timing, how much of a guessed tag was right.
        if carried != A::tag(key, binding, &fields) {
            return Err(HandoffOptionError::BadTag);
        }
        if w > MAX_WINDOW_SHIFT {
            return Err(HandoffOptionError::BadWindowScale);
        }
        if f & !Self::KNOWN_FLAGS != 0 {
            return Err(HandoffOptionError::ReservedFlags);
        }
        Ok(Self {
            isn_f: u32::from_be_bytes([i0, i1, i2, i3]),
            tsv_f: u32::from_be_bytes([t0, t1, t2, t3]),
            ws_f: w,
            flags: f,
        })
    }
}

/// Where an option lies in a TCP options area: `start` is its kind byte's offset from the
/// start of the area (the end of the 20-byte fixed header), `len` its length byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpan {
    pub start: usize,
    pub len: usize,
}

/// Finds the first option of kind `kind` in a TCP options area (the bytes between the
/// fixed header and the data offset).
///
/// Walks the area per RFC 9293 section 3.2: EOL ends the list, NOP is one byte, every
/// other option has a length byte of at least 2. The walk makes at most
/// [`MAX_OPTIONS_LEN`] steps, each consuming at least one byte, which covers any legal
/// area and gives the eBPF verifier a constant bound. A malformed area is an error
/// rather than a guess, because the kernel's own parser (`tcp_parse_options`) stops at
/// the same point and a SYN' the back-end would read differently must not be accepted.
pub fn find_option(options: &[u8], kind: u8) -> Result<Option<OptionSpan>, HandoffOptionError> {
    if options.len() > MAX_OPTIONS_LEN {
        return Err(HandoffOptionError::OptionsTooLong);
    }
    let mut at = 0usize;
    for _ in 0..MAX_OPTIONS_LEN {
        let Some(&this_kind) = options.get(at) else {
            return Ok(None);
        };
        match this_kind {
            OPTION_EOL => return Ok(None),
            OPTION_NOP => at = at.wrapping_add(1),
            _ => {
                let &len = options
                    .get(at.wrapping_add(1))
                    .ok_or(HandoffOptionError::Truncated)?;
                let len = usize::from(len);
                if len < 2 {
                    return Err(HandoffOptionError::BadLength);
                }
                let end = at.wrapping_add(len);
                if end > options.len() {
                    return Err(HandoffOptionError::Truncated);
                }
                if this_kind == kind {
                    return Ok(Some(OptionSpan { start: at, len }));
                }
                at = end;
            }
        }
    }
    // Every step consumed a byte and there are at most 40: the area is exhausted.
    Ok(None)
}

/// [`find_option`] for the handoff option.
pub fn find_handoff_option(options: &[u8]) -> Result<Option<OptionSpan>, HandoffOptionError> {
    find_option(options, HANDOFF_OPTION_KIND)
}

/// Overwrites the option at `span` with NOPs, so the back-end's TCP stack sees a plain
/// SYN, and returns the TCP checksum `check` updated for the change (RFC 1624 section 3,
/// a byte at a time; the area starts at offset 20 of the header, so a byte's offset in
/// the area has the parity of its offset in the header). Lengths and the pseudo-header do
/// not change.
///
/// `check` is the checksum as a big-endian number (`u16::from_be_bytes`). In tc, where
/// the packet may be `CHECKSUM_PARTIAL`, use the kernel's `bpf_l4_csum_replace` instead
/// and ignore the result.
pub fn blank_option(
    options: &mut [u8],
    span: OptionSpan,
    check: u16,
) -> Result<u16, HandoffOptionError> {
    if options.len() > MAX_OPTIONS_LEN {
        return Err(HandoffOptionError::OptionsTooLong);
    }
    let end = span
        .start
        .checked_add(span.len)
        .ok_or(HandoffOptionError::OutOfRange)?;
    if end > options.len() {
        return Err(HandoffOptionError::OutOfRange);
    }
    let mut sum = u32::from(!check);
    for offset in 0..MAX_OPTIONS_LEN {
        if offset >= span.len {
            break;
        }
        let at = span.start.wrapping_add(offset);
        let Some(byte) = options.get_mut(at) else {
            return Err(HandoffOptionError::OutOfRange);
        };
        // A byte at an even offset is the high half of its 16-bit word.
        let shift = if at % 2 == 0 { 8 } else { 0 };
        let old = u32::from(*byte) << shift;
        let new = u32::from(OPTION_NOP) << shift;
        sum = sum.wrapping_add(!old & 0xffff).wrapping_add(new);
        // Fold each step so the sum stays far below 2^32.
        sum = (sum & 0xffff).wrapping_add(sum >> 16);
        *byte = OPTION_NOP;
    }
    let folded = (sum & 0xffff).wrapping_add(sum >> 16);
    let folded = (folded & 0xffff).wrapping_add(folded >> 16);
    Ok(!(folded as u16))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::translate::{ones_complement_add, ones_complement_sum, tcp_ipv4_pseudo_header_sum};
    use std::vec::Vec;

    const KEY: SipKey = SipKey::from_bytes(*b"0123456789abcdef");

    const BINDING: HandoffBinding = HandoffBinding {
        client_ip: [198, 18, 0, 10],
        client_port: 40_000,
        backend_ip: [198, 18, 1, 11],
        backend_port: 80,
        client_isn: 0x1234_5678,
    };

    /// The SYN options of a Linux client: MSS, SACK-permitted, timestamps, NOP, wscale.
    const LINUX_SYN_OPTIONS: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    fn sample() -> HandoffOption {
        HandoffOption::new(
            0xdead_beef,
            0x0102_0304,
            7,
            HandoffOption::TIMESTAMPS | HandoffOption::SACK,
        )
    }

    fn parse(bytes: &[u8]) -> Result<HandoffOption, HandoffOptionError> {
        HandoffOption::parse_and_verify(bytes, &KEY, &BINDING)
    }

    #[test]
    fn fits_beside_a_linux_clients_syn_options() {
        assert!(LINUX_SYN_OPTIONS.len() + HANDOFF_OPTION_LEN <= MAX_OPTIONS_LEN);
    }

    #[test]
    fn encodes_the_documented_layout() {
        let bytes = sample().encode(&KEY, &BINDING);
        assert_eq!(
            &bytes[..12],
            &[254, 20, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 7, 3]
        );
    }

    #[test]
    fn round_trips() {
        let bytes = sample().encode(&KEY, &BINDING);
        assert_eq!(parse(&bytes), Ok(sample()));
    }

    #[test]
    fn rejects_a_forged_tag() {
        let mut bytes = sample().encode(&KEY, &BINDING);
        bytes[19] ^= 0x01;
        assert_eq!(parse(&bytes), Err(HandoffOptionError::BadTag));
    }

    #[test]
    fn rejects_altered_fields() {
        let mut bytes = sample().encode(&KEY, &BINDING);
        bytes[5] ^= 0x80; // isn_f
        assert_eq!(parse(&bytes), Err(HandoffOptionError::BadTag));
    }

    #[test]
    fn rejects_another_key() {
        let bytes = sample().encode(&SipKey::from_bytes([7; 16]), &BINDING);
        assert_eq!(parse(&bytes), Err(HandoffOptionError::BadTag));
    }

    #[test]
    fn rejects_a_replay_on_another_connection() {
        let bytes = sample().encode(&KEY, &BINDING);
        let others = [
            HandoffBinding {
                client_ip: [198, 18, 0, 11],
                ..BINDING
            },
            HandoffBinding {
                client_port: 40_001,
                ..BINDING
            },
            HandoffBinding {
                backend_ip: [198, 18, 1, 12],
                ..BINDING
            },
            HandoffBinding {
                backend_port: 8080,
                ..BINDING
            },
            HandoffBinding {
                client_isn: 0x1234_5679,
                ..BINDING
            },
            // Client and back-end swapped.
            HandoffBinding {
                client_ip: BINDING.backend_ip,
                client_port: BINDING.backend_port,
                backend_ip: BINDING.client_ip,
                backend_port: BINDING.client_port,
                ..BINDING
            },
        ];
        for other in others {
            assert_eq!(
                HandoffOption::parse_and_verify(&bytes, &KEY, &other),
                Err(HandoffOptionError::BadTag),
                "{other:?}"
            );
        }
    }

    const BINDING_V6: HandoffBindingV6 = HandoffBinding {
        client_ip: [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a],
        client_port: 40_000,
        backend_ip: [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b],
        backend_port: 80,
        client_isn: 0x1234_5678,
    };

    /// The IPv6 message: an independent SipHash of the documented 56-byte layout.
    #[test]
    fn an_ipv6_tag_covers_the_documented_message() {
        let option = sample();
        let bytes = option.encode(&KEY, &BINDING_V6);
        assert_eq!(bytes[..12], option.fields());
        let mut message = Vec::new();
        message.extend_from_slice(b"BTN2");
        message.extend_from_slice(&BINDING_V6.client_ip);
        message.extend_from_slice(&BINDING_V6.backend_ip);
        message.extend_from_slice(&40_000u16.to_be_bytes());
        message.extend_from_slice(&80u16.to_be_bytes());
        message.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        message.extend_from_slice(&option.fields());
        let message: [u8; TAGGED_LEN_V6] = message.try_into().unwrap();
        assert_eq!(bytes[12..], siphash24(&KEY, &message).to_le_bytes());
        assert_eq!(
            HandoffOption::parse_and_verify(&bytes, &KEY, &BINDING_V6),
            Ok(option)
        );
    }

    /// Every byte of either IPv6 address is bound, and an option made for one family never
    /// verifies for the other, even for an IPv4-mapped address (RFC 4291 §2.5.5.2).
    #[test]
    fn an_ipv6_option_is_bound_to_every_address_byte_and_to_its_family() {
        let bytes = sample().encode(&KEY, &BINDING_V6);
        for i in 0..16 {
            for side in 0..2 {
                let mut other = BINDING_V6;
                let address = if side == 0 {
                    &mut other.client_ip
                } else {
                    &mut other.backend_ip
                };
                address[i] ^= 1;
                assert_eq!(
                    HandoffOption::parse_and_verify(&bytes, &KEY, &other),
                    Err(HandoffOptionError::BadTag),
                    "byte {i} of side {side}"
                );
            }
        }
        let mapped = |v4: [u8; 4]| {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&v4);
            a
        };
        let as_v6 = HandoffBinding {
            client_ip: mapped(BINDING.client_ip),
            backend_ip: mapped(BINDING.backend_ip),
            client_port: BINDING.client_port,
            backend_port: BINDING.backend_port,
            client_isn: BINDING.client_isn,
        };
        let v4_option = sample().encode(&KEY, &BINDING);
        assert_eq!(
            HandoffOption::parse_and_verify(&v4_option, &KEY, &as_v6),
            Err(HandoffOptionError::BadTag)
        );
        let v6_option = sample().encode(&KEY, &as_v6);
        assert_eq!(
            HandoffOption::parse_and_verify(&v6_option, &KEY, &BINDING),
            Err(HandoffOptionError::BadTag)
        );
    }

    #[test]
    fn rejects_truncated_options() {
        let bytes = sample().encode(&KEY, &BINDING);
        for len in 0..HANDOFF_OPTION_LEN {
            assert_eq!(
                parse(&bytes[..len]),
                Err(HandoffOptionError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn rejects_a_wrong_kind_or_length() {
        let mut bytes = sample().encode(&KEY, &BINDING);
        bytes[0] = 253;
        assert_eq!(parse(&bytes), Err(HandoffOptionError::BadKind));
        let mut bytes = sample().encode(&KEY, &BINDING);
        for len in [0u8, 1, 2, 19, 21, 40, 255] {
            bytes[1] = len;
            assert_eq!(parse(&bytes), Err(HandoffOptionError::BadLength), "{len}");
        }
    }

    #[test]
    fn authentic_options_of_another_version_are_told_apart() {
        // A front-end that set a flag this version does not know, or a shift above 14,
        // with a valid tag: fields written by hand, tag computed as `encode` does.
        let with = |ws_f: u8, flags: u8| {
            let mut fields = sample().fields();
            fields[10] = ws_f;
            fields[11] = flags;
            let mut bytes = [0u8; HANDOFF_OPTION_LEN];
            bytes[..12].copy_from_slice(&fields);
            bytes[12..].copy_from_slice(&<[u8; 4]>::tag(&KEY, &BINDING, &fields).to_le_bytes());
            bytes
        };
        assert_eq!(parse(&with(15, 0)), Err(HandoffOptionError::BadWindowScale));
        assert_eq!(
            parse(&with(7, 0x04)),
            Err(HandoffOptionError::ReservedFlags)
        );
        assert!(parse(&with(14, 0x03)).is_ok());
    }

    #[test]
    fn constructor_keeps_values_in_range() {
        let option = HandoffOption::new(1, 2, 200, 0xff);
        assert_eq!(option.ws_f(), 14);
        assert_eq!(
            option.flags(),
            HandoffOption::TIMESTAMPS | HandoffOption::SACK
        );
        assert_eq!(parse(&option.encode(&KEY, &BINDING)), Ok(option));
    }

    #[test]
    fn option_becomes_a_pending_flow_entry() {
        let t = sample().translation();
        assert!(t.is_awaiting_syn_ack() && t.has_timestamps() && t.has_sack());
        assert_eq!(
            (t.seq_delta, t.ts_delta, t.ws_f),
            (0xdead_beef, 0x0102_0304, 7)
        );
        let plain = HandoffOption::new(5, 0, 0, 0).translation();
        assert!(!plain.has_timestamps() && !plain.has_sack());
    }

    #[test]
    fn finds_the_option_behind_a_linux_clients_options() {
        let mut area = [0u8; 40];
        area[..20].copy_from_slice(&LINUX_SYN_OPTIONS);
        area[20..].copy_from_slice(&sample().encode(&KEY, &BINDING));
        let span = find_handoff_option(&area).unwrap().unwrap();
        assert_eq!(span, OptionSpan { start: 20, len: 20 });
        assert_eq!(parse(&area[span.start..]), Ok(sample()));
    }

    #[test]
    fn walk_handles_eol_nop_and_absence() {
        assert_eq!(find_handoff_option(&[]), Ok(None));
        assert_eq!(find_handoff_option(&LINUX_SYN_OPTIONS), Ok(None));
        // 40 NOPs: the longest walk.
        assert_eq!(find_handoff_option(&[OPTION_NOP; 40]), Ok(None));
        // Our kind after EOL is not an option.
        assert_eq!(find_handoff_option(&[1, 1, 0, 254, 20]), Ok(None));
        // NOPs before it are skipped.
        let mut area = [OPTION_NOP; 23];
        area[3..].copy_from_slice(&sample().encode(&KEY, &BINDING));
        assert_eq!(
            find_handoff_option(&area),
            Ok(Some(OptionSpan { start: 3, len: 20 }))
        );
    }

    #[test]
    fn walk_rejects_malformed_areas() {
        // Length byte missing.
        assert_eq!(
            find_handoff_option(&[1, 2]),
            Err(HandoffOptionError::Truncated)
        );
        // Length 0 or 1 would never advance.
        assert_eq!(
            find_handoff_option(&[2, 0, 1, 1]),
            Err(HandoffOptionError::BadLength)
        );
        assert_eq!(
            find_handoff_option(&[2, 1, 1, 1]),
            Err(HandoffOptionError::BadLength)
        );
        // Option runs past the end of the area.
        assert_eq!(
            find_handoff_option(&[8, 10, 0, 0]),
            Err(HandoffOptionError::Truncated)
        );
        assert_eq!(
            find_handoff_option(&[254, 20, 0]),
            Err(HandoffOptionError::Truncated)
        );
        // More than TCP allows.
        assert_eq!(
            find_handoff_option(&[1; 41]),
            Err(HandoffOptionError::OptionsTooLong)
        );
    }

    /// The checksum of a SYN whose options area is `area`, computed from scratch.
    fn syn_checksum(area: &[u8]) -> u16 {
        let mut segment = [0u8; 60];
        segment[0..2].copy_from_slice(&BINDING.client_port.to_be_bytes());
        segment[2..4].copy_from_slice(&BINDING.backend_port.to_be_bytes());
        segment[4..8].copy_from_slice(&BINDING.client_isn.to_be_bytes());
        let len = 20 + area.len();
        segment[12] = ((len / 4) as u8) << 4;
        segment[13] = 0x02; // SYN
        segment[14..16].copy_from_slice(&64_240u16.to_be_bytes());
        segment[20..len].copy_from_slice(area);
        let pseudo = tcp_ipv4_pseudo_header_sum(BINDING.client_ip, BINDING.backend_ip, len as u16);
        !ones_complement_add(pseudo, ones_complement_sum(&segment[..len]))
    }

    #[test]
    fn blanking_leaves_nops_and_a_correct_checksum() {
        // The Linux options without their NOP end at offset 19, so the option starts at
        // an odd offset there, covering both byte positions of the checksum's words.
        let mut unpadded = [0u8; 19];
        unpadded[..16].copy_from_slice(&LINUX_SYN_OPTIONS[..16]);
        unpadded[16..].copy_from_slice(&LINUX_SYN_OPTIONS[17..]);
        for prefix in [&LINUX_SYN_OPTIONS[..], &unpadded[..]] {
            let start = prefix.len();
            let mut area = [OPTION_NOP; 40];
            area[..start].copy_from_slice(prefix);
            area[start..start + 20].copy_from_slice(&sample().encode(&KEY, &BINDING));
            let check = syn_checksum(&area);
            let span = find_handoff_option(&area).unwrap().unwrap();
            assert_eq!(span.start, start);
            let updated = blank_option(&mut area, span, check).unwrap();
            assert!(area[start..].iter().all(|&b| b == OPTION_NOP));
            assert_eq!(area[..start], *prefix);
            assert_eq!(find_handoff_option(&area), Ok(None));
            assert_eq!(updated, syn_checksum(&area), "start {start}");
        }
    }

    #[test]
    fn blanking_rejects_spans_outside_the_area() {
        let mut area = [OPTION_NOP; 10];
        let beyond = OptionSpan { start: 5, len: 6 };
        assert_eq!(
            blank_option(&mut area, beyond, 0),
            Err(HandoffOptionError::OutOfRange)
        );
        let huge = OptionSpan {
            start: usize::MAX,
            len: 2,
        };
        assert_eq!(
            blank_option(&mut area, huge, 0),
            Err(HandoffOptionError::OutOfRange)
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn binding() -> impl Strategy<Value = HandoffBinding> {
            (
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u32>(),
            )
                .prop_map(
                    |(client_ip, client_port, backend_ip, backend_port, client_isn)| {
                        HandoffBinding {
                            client_ip,
                            client_port,
                            backend_ip,
                            backend_port,
                            client_isn,
                        }
                    },
                )
        }

        proptest! {
            #[test]
            fn any_option_round_trips(
                isn_f: u32, tsv_f: u32, ws_f in 0u8..=14, flags in 0u8..4,
                key: [u8; 16], binding in binding(),
            ) {
                let key = SipKey::from_bytes(key);
                let option = HandoffOption::new(isn_f, tsv_f, ws_f, flags);
                let bytes = option.encode(&key, &binding);
                prop_assert_eq!(HandoffOption::parse_and_verify(&bytes, &key, &binding), Ok(option));
            }

            /// Any single flipped bit past the kind and length bytes is caught by the tag.
            #[test]
            fn any_bit_flip_is_rejected(
                isn_f: u32, tsv_f: u32, ws_f in 0u8..=14, flags in 0u8..4,
                binding in binding(), bit in 16usize..HANDOFF_OPTION_LEN * 8,
            ) {
                let mut bytes = HandoffOption::new(isn_f, tsv_f, ws_f, flags).encode(&KEY, &binding);
                bytes[bit / 8] ^= 1 << (bit % 8);
                prop_assert_eq!(
                    HandoffOption::parse_and_verify(&bytes, &KEY, &binding),
                    Err(HandoffOptionError::BadTag)
                );
            }

            /// An option made for one connection never verifies on another.
            #[test]
            fn another_connection_is_rejected(a in binding(), b in binding(), isn_f: u32) {
                prop_assume!(a != b);
                let bytes = HandoffOption::new(isn_f, 0, 0, 0).encode(&KEY, &a);
                prop_assert_eq!(
                    HandoffOption::parse_and_verify(&bytes, &KEY, &b),
                    Err(HandoffOptionError::BadTag)
                );
            }

            /// Arbitrary bytes never panic the walker or the parser, and any span the
            /// walker returns lies inside the area.
            #[test]
            fn arbitrary_areas_are_handled(area in proptest::collection::vec(any::<u8>(), 0..48)) {
                if let Ok(Some(span)) = find_handoff_option(&area) {
                    prop_assert!(span.start + span.len <= area.len());
                    prop_assert_eq!(area[span.start], HANDOFF_OPTION_KIND);
                    let _ = HandoffOption::parse_and_verify(&area[span.start..], &KEY, &BINDING);
                }
                let _ = HandoffOption::parse_and_verify(&area, &KEY, &BINDING);
            }

            /// Blanking an option anywhere in a well-formed area keeps the checksum equal
            /// to a full recomputation.
            #[test]
            fn blanking_checksum_equals_recomputation(
                nops_before in 0usize..=20, isn_f: u32, tsv_f: u32, ws_f in 0u8..=14,
            ) {
                let option = HandoffOption::new(isn_f, tsv_f, ws_f, HandoffOption::TIMESTAMPS);
                let mut area = [OPTION_NOP; 40];
                area[nops_before..nops_before + 20].copy_from_slice(&option.encode(&KEY, &BINDING));
                let area = &mut area[..nops_before + 20];
                let check = syn_checksum(area);
                let span = find_handoff_option(area).unwrap().unwrap();
                let updated = blank_option(area, span, check).unwrap();
                prop_assert_eq!(updated, syn_checksum(area));
            }
        }
    }
}
