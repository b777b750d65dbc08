//! The TCP translation both ends of a handed-off connection apply to every packet.
//!
//! After the handoff the client C talks to the back-end B while believing it talks to the
//! front-end F (docs/design.md, "Packet walk", steps 6 and 8, and "Translation
//! arithmetic"). C learned F's initial sequence number `isn_f`, F's first timestamp
//! `tsv_f` and F's window scale `ws_f` from F's SYN/ACK; B chose its own `isn_b`, `tsv_b`
//! and `ws_b` in the SYN/ACK' it sent to F. So:
//!
//! - B→C (back-end egress): `seq += seq_delta`, `TSval += ts_delta`, and the window is
//!   rescaled from `ws_b` to `ws_f`.
//! - C→B (back-end ingress): `ack -= seq_delta`, SACK edges `-= seq_delta`,
//!   `TSecr -= ts_delta`.
//!
//! C's own sequence numbers, timestamps and window scale reach B unchanged (B got C's
//! SYN, replayed), so C's `seq`, C's window, B's `ack`, B's `TSecr` and B's SACK blocks
//! need nothing.
//!
//! Every function is a pure function on integers: sequence numbers and timestamps wrap
//! modulo 2^32 (RFC 9293 section 3.4; RFC 7323 section 5.2), so all arithmetic is
//! `wrapping_*`, nothing can panic, and the eBPF programs call the very code the tests
//! check.
//!
//! # Checksums
//!
//! Each rewritten field changes the TCP checksum. [`csum_replace2`] and [`csum_replace4`]
//! update it incrementally with RFC 1624's equation 3. In tc programs the kernel's
//! `bpf_l4_csum_replace` does the same and also handles `CHECKSUM_PARTIAL` packets, where
//! the header holds only the pseudo-header sum (docs/design.md, "Checksums"); these
//! functions serve the XDP fast path, the front-end's userspace and the tests.
//!
//! All checksum arguments must be in one byte order. Reading fields with
//! `from_be_bytes` gives their numeric value, but because the one's-complement sum is
//! independent of byte order (RFC 1071 section 2(B)) the raw little-endian loads an eBPF
//! program makes of `__be16`/`__be32` fields work too, as long as every argument,
//! checksum included, is loaded the same way.

/// Largest window shift TCP allows; a larger announced shift is treated as 14
/// (RFC 7323 section 2.3).
pub const MAX_WINDOW_SHIFT: u8 = 14;

/// What one end announced in its SYN/ACK: the terms the client's view and the back-end's
/// reality differ by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynAckTerms {
    /// Initial sequence number (the SYN/ACK's `seq`).
    pub isn: u32,
    /// The SYN/ACK's TSval; 0 when timestamps were not negotiated.
    pub tsval: u32,
    /// The window scale shift announced; 0 when window scaling was not negotiated.
    pub window_shift: u8,
}

/// A SACK block: the left edge and the right edge (one past the last byte) of a block of
/// data the receiver holds (RFC 2018 section 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlock {
    pub left: u32,
    pub right: u32,
}

/// How one handed-off flow's packets are translated: the value of the back-end's eBPF
/// flow table, so `#[repr(C)]`, no implicit padding, flags as `u32`.
///
/// It is filled in two steps, in the two programs that see the handshake:
/// 1. B's ingress, on the SYN' carrying the handoff option, stores
///    [`Translation::awaiting_syn_ack`]: `seq_delta` and `ts_delta` hold `isn_f` and `tsv_f`
///    (the deltas against an `isn_b` and `tsv_b` of zero), with
///    [`Translation::AWAITING_SYN_ACK`] set.
/// 2. B's egress, on B's SYN/ACK', applies [`Translation::with_backend`], which subtracts
///    `isn_b` and `tsv_b` and clears the flag.
///
/// So one map value serves the whole connection and nothing needs a second lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// `isn_f - isn_b` (mod 2^32): added to B's `seq`, subtracted from C's `ack`.
    pub seq_delta: u32,
    /// `tsv_f - tsv_b` (mod 2^32): added to B's TSval, subtracted from C's TSecr.
    pub ts_delta: u32,
    /// B's window shift, as B announced it in the SYN/ACK' (clamped to 14).
    pub ws_b: u8,
    /// F's window shift, as F announced it to C (clamped to 14).
    pub ws_f: u8,
    /// The flow's stamp ([`crate::stamp`]), written into the low bits of every TSval B
    /// sends the client; 0 (entries awaiting the SYN/ACK', of older builds, or of a
    /// module that does not stamp): none. Native byte order.
    pub stamp: u16,
    /// [`Translation::TIMESTAMPS`], [`Translation::SACK`], [`Translation::AWAITING_SYN_ACK`]
    /// in the low bits; bits 16..32 hold the window field of the client's ACK the
    /// back-end's egress makes to complete its server's handshake
    /// ([`Translation::client_window`]), in what was unused, so that pinned tables keep
    /// their layout.
    pub flags: u32,
}

impl Translation {
    /// Timestamps were negotiated (RFC 7323 section 3): TSval/TSecr need translating, or
    /// C's PAWS check drops B's segments (RFC 7323 section 5).
    pub const TIMESTAMPS: u32 = 1 << 0;
    /// SACK was negotiated (RFC 2018 section 2): C's SACK blocks need translating.
    pub const SACK: u32 = 1 << 1;
    /// B's SYN/ACK' has not been seen yet: the deltas still hold `isn_f` and `tsv_f`.
    pub const AWAITING_SYN_ACK: u32 = 1 << 2;

    /// Where [`Translation::client_window`] sits in `flags`.
    const CLIENT_WINDOW_SHIFT: u32 = 16;

    /// The entry B's ingress stores when it accepts a SYN' whose handoff option announced
    /// the front-end's terms `front` and the negotiated `flags`
    /// ([`Translation::TIMESTAMPS`], [`Translation::SACK`]).
    pub const fn awaiting_syn_ack(front: SynAckTerms, flags: u32) -> Self {
        Self {
            seq_delta: front.isn,
            ts_delta: front.tsval,
            ws_b: 0,
            ws_f: clamp_window_shift(front.window_shift),
            stamp: 0,
            flags: (flags & (Self::TIMESTAMPS | Self::SACK)) | Self::AWAITING_SYN_ACK,
        }
    }

    /// Completes an entry from [`Translation::awaiting_syn_ack`] with the terms `back` of
    /// B's SYN/ACK'. Applying it to a completed entry returns it unchanged, so a
    /// retransmitted SYN/ACK' (same `isn_b`) cannot corrupt the deltas.
    pub const fn with_backend(self, back: SynAckTerms) -> Self {
        if !self.is_awaiting_syn_ack() {
            return self;
        }
        Self {
            seq_delta: seq_delta(self.seq_delta, back.isn),
            ts_delta: ts_delta(self.ts_delta, back.tsval),
            ws_b: clamp_window_shift(back.window_shift),
            ws_f: self.ws_f,
            stamp: 0,
            flags: self.flags & !Self::AWAITING_SYN_ACK,
        }
    }

    /// The translation between a front-end that announced `front` and a back-end that
    /// announced `back`, in one step (for the front-end and the tests).
    pub const fn new(front: SynAckTerms, back: SynAckTerms, flags: u32) -> Self {
        Self::awaiting_syn_ack(front, flags).with_backend(back)
    }

    /// The translation with `window`, a window field in the client's scale, for the
    /// client's handshake-completing ACK ([`crate::backend::LocalAck`]); the flags that
    /// say how to translate are kept.
    pub const fn with_client_window(self, window: u16) -> Self {
        Self {
            flags: (self.flags & 0xffff) | ((window as u32) << Self::CLIENT_WINDOW_SHIFT),
            ..self
        }
    }

    /// The window field the client's handshake-completing ACK announces: what the
    /// SYN' announced (in bytes, a SYN's window is never scaled) in the client's scale
    /// ([`client_ack_window`]). 0: none known (a SYN' without data, an entry of an older
    /// build), and no such ACK is made.
    pub const fn client_window(self) -> u16 {
        (self.flags >> Self::CLIENT_WINDOW_SHIFT) as u16
    }

    pub const fn has_timestamps(self) -> bool {
        self.flags & Self::TIMESTAMPS != 0
    }

    pub const fn has_sack(self) -> bool {
        self.flags & Self::SACK != 0
    }

    pub const fn is_awaiting_syn_ack(self) -> bool {
        self.flags & Self::AWAITING_SYN_ACK != 0
    }

    /// B→C: B's sequence number in the client's terms.
    #[inline(always)]
    pub const fn seq_to_client(self, seq_b: u32) -> u32 {
        seq_b.wrapping_add(self.seq_delta)
    }

    /// C→B: the client's acknowledgement number in B's terms; the inverse of
    /// [`Translation::seq_to_client`], so C acknowledging byte `n` of B's stream reaches B
    /// as an acknowledgement of B's byte `n`.
    #[inline(always)]
    pub const fn ack_to_backend(self, ack_c: u32) -> u32 {
        ack_c.wrapping_sub(self.seq_delta)
    }

    /// C→B: a sequence number of B's stream as the client knows it, back in B's terms:
    /// the inverse of [`Translation::seq_to_client`]. For the sequence number an ICMP
    /// error quotes (`crate::icmp`), which must fall within the server's
    /// `snd_una..snd_nxt` for its kernel to act on the error.
    #[inline(always)]
    pub const fn seq_to_backend(self, seq_c: u32) -> u32 {
        seq_c.wrapping_sub(self.seq_delta)
    }

    /// C→B: one SACK edge in B's terms. SACK blocks from C name B's data in the sequence
    /// space C knows (RFC 2018 section 3), so each edge moves exactly like an `ack`.
    #[inline(always)]
    pub const fn sack_edge_to_backend(self, edge_c: u32) -> u32 {
        edge_c.wrapping_sub(self.seq_delta)
    }

    /// C→B: both edges of a SACK block (RFC 2018 section 3), including a D-SACK block
    /// (RFC 2883), which has the same format. The block's length and the order of blocks
    /// modulo 2^32 are preserved.
    #[inline(always)]
    pub const fn sack_block_to_backend(self, block_c: SackBlock) -> SackBlock {
        SackBlock {
            left: self.sack_edge_to_backend(block_c.left),
            right: self.sack_edge_to_backend(block_c.right),
        }
    }

    /// B→C: B's TSval in the clock C saw start at `tsv_f`. Adding a constant keeps the
    /// sequence monotonic modulo 2^32, which is what C's PAWS test compares
    /// (RFC 7323 section 5.3).
    #[inline(always)]
    pub const fn tsval_to_client(self, tsval_b: u32) -> u32 {
        let tsval = tsval_b.wrapping_add(self.ts_delta);
        if self.stamp == 0 {
            tsval
        } else {
            // Still monotonic, and never behind B's clock (`crate::stamp`, "The clock").
            crate::stamp::stamped_tsval(tsval, self.stamp)
        }
    }

    /// The translation with `stamp` for the TSvals B sends the client (0: none).
    #[inline(always)]
    pub const fn with_stamp(self, stamp: u16) -> Self {
        Self { stamp, ..self }
    }

    /// C→B: C's TSecr (an echo of a translated TSval) back in B's clock, so B's RTT
    /// measurement and its own PAWS state see its own values (RFC 7323 sections 4.1
    /// and 5). TSecr is meaningful only on segments with ACK set (RFC 7323 section 3.2);
    /// translating the others does no harm because B ignores them.
    #[inline(always)]
    pub const fn tsecr_to_backend(self, tsecr_c: u32) -> u32 {
        tsecr_c.wrapping_sub(self.ts_delta)
    }

    /// B→C: B's window field, which B scaled by `ws_b`, as a field C reads with `ws_f`.
    /// See [`rescale_window`]. Not for SYN segments, whose window is never scaled
    /// (RFC 7323 section 2.2); B's only SYN, the SYN/ACK', goes to F, not to C.
    #[inline(always)]
    pub const fn window_to_client(self, window_b: u16) -> u16 {
        rescale_window(window_b, self.ws_b, self.ws_f)
    }
}

/// The window field, in the client's scale, of an ACK that announces what a SYN' with
/// window field `syn_window` and window scale option `client_shift` announced: a SYN's
/// window is bytes (RFC 7323 section 2.2), an ACK's is shifted, so the bytes are rounded
/// down to the client's scale, never grown. The front-end's SYN' carries the window the
/// client sent with its request, saturated at 65,535 bytes, which Linux's fast-open child
/// takes as its send window (`tcp_fastopen_create_child`); announcing the same again
/// leaves the server's send window where the SYN' put it.
#[inline(always)]
pub const fn client_ack_window(syn_window: u16, client_shift: Option<u8>) -> u16 {
    match client_shift {
        Some(shift) => syn_window >> clamp_window_shift(shift),
        None => syn_window,
    }
}

/// `isn_f - isn_b` modulo 2^32: what B's sequence numbers gain on their way to C.
#[inline(always)]
pub const fn seq_delta(isn_f: u32, isn_b: u32) -> u32 {
    isn_f.wrapping_sub(isn_b)
}

/// `tsv_f - tsv_b` modulo 2^32: what B's TSvals gain on their way to C.
#[inline(always)]
pub const fn ts_delta(tsv_f: u32, tsv_b: u32) -> u32 {
    tsv_f.wrapping_sub(tsv_b)
}

/// Clamps a window shift to [`MAX_WINDOW_SHIFT`], as RFC 7323 section 2.3 tells a
/// receiver of a larger one to do.
#[inline(always)]
pub const fn clamp_window_shift(shift: u8) -> u8 {
    if shift > MAX_WINDOW_SHIFT {
        MAX_WINDOW_SHIFT
    } else {
        shift
    }
}

/// Re-expresses a window field scaled by `from_shift` as one scaled by `to_shift`.
///
/// The window in bytes is `window << from_shift` (RFC 7323 section 2.2). The result `w`
/// is the largest field with `w << to_shift` not above it, saturated at 0xffff: rounding
/// down, so the client can never be allowed to send beyond what the back-end allows; it
/// may be allowed up to `2^to_shift - 1` bytes less, and a small window may become zero,
/// which C handles with window probes. Rounding down can make the right edge appear to
/// move back by less than `2^to_shift` bytes as the acknowledgement advances, the same
/// truncation any scaling receiver produces (RFC 7323 section 2.4) and which senders
/// tolerate (RFC 9293 section 3.8.6.2.1). Shifts above 14 count as 14.
#[inline(always)]
pub const fn rescale_window(window: u16, from_shift: u8, to_shift: u8) -> u16 {
    let from = clamp_window_shift(from_shift) as u32;
    let to = clamp_window_shift(to_shift) as u32;
    // At most 0xffff << 14 < 2^30: no overflow, and the shifts are below 64.
    let bytes = (window as u64).wrapping_shl(from);
    let field = bytes.wrapping_shr(to);
    if field > 0xffff { 0xffff } else { field as u16 }
}

/// Folds a 32-bit sum of 16-bit words into a 16-bit one's-complement sum (end-around
/// carry, RFC 1071 section 4.1). Two folds suffice for sums of fewer than 2^16 words.
#[inline(always)]
const fn fold(sum: u32) -> u16 {
    let once = (sum & 0xffff) + (sum >> 16);
    let twice = (once & 0xffff) + (once >> 16);
    twice as u16
}

/// The TCP (or IPv4 header) checksum `check` after a 16-bit field at an even offset
/// changes from `old` to `new`.
///
/// RFC 1624 section 3, equation 3: `HC' = ~(~HC + ~m + m')`. Unlike equation 2 it never
/// turns a checksum into 0xffff, a form a full computation over a TCP pseudo-header
/// (whose sum is never zero) cannot produce either, so the incremental result equals the
/// recomputed one bit for bit.
#[inline(always)]
pub const fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// [`csum_replace2`] for a 32-bit field at an even offset (sequence and acknowledgement
/// numbers, addresses in the pseudo-header, TSval/TSecr and SACK edges after the usual
/// NOP padding): the two 16-bit halves change at once (RFC 1624 section 3).
#[inline(always)]
pub const fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        (!check) as u32 + (!(old >> 16) & 0xffff) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// [`csum_replace2`] for a 16-bit field that starts at an odd offset from the start of
/// the TCP header (possible for option contents when a sender does not pad with NOPs).
/// Its bytes fall in the low half of one word and the high half of the next, which sums
/// like the byte-swapped value (RFC 1071 section 2(B)).
#[inline(always)]
pub const fn csum_replace2_odd(check: u16, old: u16, new: u16) -> u16 {
    csum_replace2(check, old.swap_bytes(), new.swap_bytes())
}

/// [`csum_replace4`] for a 32-bit field at an odd offset, such as a TSval behind a lone
/// NOP. Bytes `b0 b1 b2 b3` contribute `b0`, `b1b2` and `b3·256`, the same as the words
/// `b3b0` and `b1b2` of the value rotated right by one byte (RFC 1071 section 2(B)).
#[inline(always)]
pub const fn csum_replace4_odd(check: u16, old: u32, new: u32) -> u16 {
    csum_replace4(check, old.rotate_right(8), new.rotate_right(8))
}

/// The one's-complement sum of `bytes` as 16-bit big-endian words starting at an even
/// offset, an odd trailing byte padded with zero (RFC 1071 section 4.1): the building
/// block of a full checksum, used by the tests and by userspace. Not for eBPF, where
/// the kernel's helpers do this.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = bytes.chunks_exact(2);
    for word in words.by_ref() {
        let (hi, lo) = match word {
            [hi, lo] => (*hi, *lo),
            _ => (0, 0),
        };
        // Fold as we go so the u32 cannot overflow however long the input.
        sum = fold(sum + u32::from(u16::from_be_bytes([hi, lo]))) as u32;
    }
    if let [last] = words.remainder() {
        sum = fold(sum + (u32::from(*last) << 8)) as u32;
    }
    fold(sum)
}

/// Adds two one's-complement sums (end-around carry), for combining the pseudo-header
/// sum with the segment's.
#[inline(always)]
pub const fn ones_complement_add(a: u16, b: u16) -> u16 {
    fold(a as u32 + b as u32)
}

/// The IPv4 TCP pseudo-header sum (RFC 9293 section 3.1): source and destination
/// address, zero, protocol 6, and the TCP length (header plus data).
///
/// Six words added straight, no loop over a slice, so the XDP fast path calls it too. It
/// is also what a `CHECKSUM_PARTIAL` sender leaves in the checksum field for the device
/// to complete (`tcp_v4_send_check`, net/ipv4/tcp_ipv4.c), which is how the fast path
/// recognises such a field.
#[inline(always)]
pub const fn tcp_ipv4_pseudo_header_sum(saddr: [u8; 4], daddr: [u8; 4], tcp_len: u16) -> u16 {
    let mut sum = ones_complement_add(
        u16::from_be_bytes([saddr[0], saddr[1]]),
        u16::from_be_bytes([saddr[2], saddr[3]]),
    );
    sum = ones_complement_add(sum, u16::from_be_bytes([daddr[0], daddr[1]]));
    sum = ones_complement_add(sum, u16::from_be_bytes([daddr[2], daddr[3]]));
    sum = ones_complement_add(sum, 6); // zero, then protocol 6 (TCP)
    ones_complement_add(sum, tcp_len)
}

/// The one's-complement difference several field changes make to a TCP checksum, summed
/// so that one `bpf_l4_csum_replace(skb, off, 0, diff, 0)` (the "by diff" form) applies
/// them all: one helper call per packet instead of one per field.
///
/// Values are in memory order: 16-bit words as the bytes sit in the packet, read natively
/// (little-endian on bpfel and x86_64), which is how the kernel's `__wsum` arithmetic
/// reads them; one's-complement sums commute with byte order (RFC 1071 section 2(B)), so
/// the result is the checksum's memory-order form. For a `CHECKSUM_PARTIAL` packet the
/// kernel ignores a non-pseudo-header difference, as it must.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumDiff(u32);

impl ChecksumDiff {
    pub const fn new() -> Self {
        Self(0)
    }

    /// 32-bit end-around addition, the kernel's `csum_add`.
    #[inline(always)]
    const fn add(self, value: u32) -> Self {
        let (sum, carry) = self.0.overflowing_add(value);
        Self(sum.wrapping_add(carry as u32))
    }

    /// A 16-bit word at an even offset from the TCP header changed from `old` to `new`
    /// (memory order).
    #[inline(always)]
    pub const fn word(self, old: [u8; 2], new: [u8; 2]) -> Self {
        self.add(!u16::from_ne_bytes(old) as u32)
            .add(u16::from_ne_bytes(new) as u32)
    }

    /// A 2-byte field changed; `odd` when it starts at an odd offset from the TCP header,
    /// where its bytes sum like the swapped pair.
    #[inline(always)]
    pub const fn field2(self, old: [u8; 2], new: [u8; 2], odd: bool) -> Self {
        if odd {
            self.word([old[1], old[0]], [new[1], new[0]])
        } else {
            self.word(old, new)
        }
    }

    /// A 4-byte field changed; at an odd offset its bytes `b0 b1 b2 b3` sum like the words
    /// `b3 b0` and `b1 b2`.
    #[inline(always)]
    pub const fn field4(self, old: [u8; 4], new: [u8; 4], odd: bool) -> Self {
        let (o, n) = if odd {
            (
                [old[3], old[0], old[1], old[2]],
                [new[3], new[0], new[1], new[2]],
            )
        } else {
            (old, new)
        };
        self.word([o[0], o[1]], [n[0], n[1]])
            .word([o[2], o[3]], [n[2], n[3]])
    }

    /// The value to give the kernel (`to`, with `from` and size 0).
    pub const fn as_wsum(self) -> u32 {
        self.0
    }

    /// What the kernel does with it for a packet whose checksum is complete
    /// (`inet_proto_csum_replace_by_diff`): the new checksum field, in memory order.
    pub const fn apply(self, check: [u8; 2]) -> [u8; 2] {
        let sum = self.add(!u16::from_ne_bytes(check) as u32).0;
        (!fold(sum)).to_ne_bytes()
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers only, padding explicit (checked by the size test), so
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Translation {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// Offset of the checksum field in the TCP header (RFC 9293 section 3.1).
    const CHECK: usize = 16;

    fn terms(isn: u32, tsval: u32, window_shift: u8) -> SynAckTerms {
        SynAckTerms {
            isn,
            tsval,
            window_shift,
        }
    }

    fn full_tcp_checksum(saddr: [u8; 4], daddr: [u8; 4], segment: &[u8]) -> u16 {
        let mut zeroed = [0u8; 64];
        let len = segment.len().min(zeroed.len());
        zeroed[..len].copy_from_slice(&segment[..len]);
        zeroed[CHECK] = 0;
        zeroed[CHECK + 1] = 0;
        let pseudo = tcp_ipv4_pseudo_header_sum(saddr, daddr, len as u16);
        !ones_complement_add(pseudo, ones_complement_sum(&zeroed[..len]))
    }

    fn read_check(segment: &[u8]) -> u16 {
        u16::from_be_bytes([segment[CHECK], segment[CHECK + 1]])
    }

    #[test]
    fn flow_entry_layout_is_fixed() {
        assert_eq!(size_of::<Translation>(), 16);
        assert_eq!(align_of::<Translation>(), 4);
    }

    #[test]
    fn deltas_wrap_at_2_pow_32() {
        // F's ISN just past zero, B's just below 2^32.
        let t = Translation::new(terms(5, 0, 0), terms(0xffff_fff0, 0, 0), 0);
        assert_eq!(t.seq_delta, 0x15);
        assert_eq!(t.seq_to_client(0xffff_fff0), 5);
        assert_eq!(t.seq_to_client(0xffff_ffff), 0x14);
        assert_eq!(t.seq_to_client(0x0000_0010), 0x25);
        assert_eq!(t.ack_to_backend(0x14), 0xffff_ffff);
        assert_eq!(t.ack_to_backend(5), 0xffff_fff0);
    }

    #[test]
    fn sack_block_spanning_the_wrap_moves_as_a_whole() {
        let t = Translation::new(terms(0x10, 0, 0), terms(0x20, 0, 0), Translation::SACK);
        // Client-side block [0xffff_fff8, 0x08) wraps; B sees it 0x10 higher.
        let block = t.sack_block_to_backend(SackBlock {
            left: 0xffff_fff8,
            right: 0x0000_0008,
        });
        assert_eq!(
            block,
            SackBlock {
                left: 0x0000_0008,
                right: 0x0000_0018
            }
        );
    }

    #[test]
    fn timestamps_translate_both_ways() {
        let t = Translation::new(
            terms(0, 1_000, 0),
            terms(0, 4_000_000_000, 0),
            Translation::TIMESTAMPS,
        );
        assert!(t.has_timestamps());
        let tsval_c = t.tsval_to_client(4_000_000_100);
        assert_eq!(tsval_c, 1_100);
        assert_eq!(t.tsecr_to_backend(tsval_c), 4_000_000_100);
    }

    #[test]
    fn two_step_entry_equals_one_step_and_ignores_a_second_syn_ack() {
        let front = terms(111, 222, 7);
        let back = terms(333, 444, 9);
        let flags = Translation::TIMESTAMPS | Translation::SACK;
        let pending = Translation::awaiting_syn_ack(front, flags);
        assert!(pending.is_awaiting_syn_ack());
        let done = pending.with_backend(back);
        assert!(!done.is_awaiting_syn_ack());
        assert_eq!(done, Translation::new(front, back, flags));
        assert_eq!(done.with_backend(terms(1, 2, 3)), done);
        assert_eq!((done.ws_f, done.ws_b), (7, 9));
        // A caller cannot smuggle the internal flag in.
        let forced = Translation::awaiting_syn_ack(front, u32::MAX).with_backend(back);
        assert_eq!(forced.flags, flags);
    }

    #[test]
    fn window_rescaling_rounds_down_and_saturates() {
        // Same scale: unchanged.
        assert_eq!(rescale_window(1234, 7, 7), 1234);
        // B scales by 2^7, C reads by 2^9: 1000 << 7 = 128000 bytes, / 512 = 250.
        assert_eq!(rescale_window(1000, 7, 9), 250);
        // 1001 << 7 = 128128 bytes; 250 << 9 = 128000 fits, 251 << 9 does not.
        assert_eq!(rescale_window(1001, 7, 9), 250);
        // A window smaller than one of C's units becomes zero, never one unit.
        assert_eq!(rescale_window(3, 7, 9), 0);
        // B scales more than C can express: saturate at the largest field.
        assert_eq!(rescale_window(0xffff, 14, 0), 0xffff);
        assert_eq!(rescale_window(600, 8, 0), 0xffff);
        // Shifts above 14 count as 14 (RFC 7323 section 2.3).
        assert_eq!(rescale_window(100, 15, 14), 100);
        assert_eq!(rescale_window(100, 255, 255), 100);
        let t = Translation::new(terms(0, 0, 9), terms(0, 0, 7), 0);
        assert_eq!(t.window_to_client(1001), 250);
    }

    #[test]
    fn rfc_1624_example_and_the_minus_zero_case() {
        // RFC 1624 section 4: the other words sum to 0xcd7a, so with m = 0x5555 the
        // checksum is ~(0xcd7a + 0x5555) = 0xdd2f; m' = 0x3285 makes it ~0xffff = 0x0000,
        // where equation 2 would give the wrong 0xffff.
        assert_eq!(csum_replace2(0xdd2f, 0x5555, 0x3285), 0x0000);
        // Equation 3 never produces 0xffff, which a full computation cannot either.
        for check in [0x0000u16, 0x0001, 0xfffe] {
            for (old, new) in [(0u16, 0u16), (0xffff, 0), (0, 0xffff), (0x1234, 0x1234)] {
                assert_ne!(csum_replace2(check, old, new), 0xffff);
            }
        }
    }

    #[test]
    fn odd_offset_update_matches_recomputation() {
        // A 32-byte header with a lone NOP then the timestamp option at offset 21, so
        // TSval sits at the odd offset 23.
        let saddr = [198, 18, 0, 10];
        let daddr = [198, 18, 1, 1];
        let mut seg = [0u8; 32];
        seg[12] = 8 << 4;
        seg[20] = 1;
        seg[21] = 8;
        seg[22] = 10;
        seg[23..27].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        seg[27..31].copy_from_slice(&0x0506_0708u32.to_be_bytes());
        let check = full_tcp_checksum(saddr, daddr, &seg);
        seg[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());
        let new_tsval = 0xdead_beefu32;
        let updated = csum_replace4_odd(read_check(&seg), 0x0102_0304, new_tsval);
        seg[23..27].copy_from_slice(&new_tsval.to_be_bytes());
        assert_eq!(updated, full_tcp_checksum(saddr, daddr, &seg));
    }

    #[test]
    fn checksum_update_works_on_raw_little_endian_loads() {
        // What an eBPF program sees when it loads __be fields with native (LE) loads.
        let saddr = [198, 18, 0, 10];
        let daddr = [198, 18, 1, 1];
        let mut seg = [0u8; 20];
        seg[4..8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
        seg[12] = 5 << 4;
        let check = full_tcp_checksum(saddr, daddr, &seg);
        seg[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());
        let raw_check = u16::from_le_bytes([seg[CHECK], seg[CHECK + 1]]);
        let raw_old = u32::from_le_bytes([seg[4], seg[5], seg[6], seg[7]]);
        let new_seq = 0x99aa_bbccu32;
        let raw_new = u32::from_le_bytes(new_seq.to_be_bytes());
        let raw_updated = csum_replace4(raw_check, raw_old, raw_new);
        seg[4..8].copy_from_slice(&new_seq.to_be_bytes());
        assert_eq!(
            raw_updated.to_le_bytes(),
            full_tcp_checksum(saddr, daddr, &seg).to_be_bytes()
        );
    }

    mod prop {
        use super::super::*;
        use super::{CHECK, full_tcp_checksum, read_check, terms};
        use proptest::prelude::*;

        /// A field of a TCP segment or its pseudo-header the translation may rewrite.
        #[derive(Clone, Copy, Debug)]
        enum Field {
            SourcePort,
            DestinationPort,
            Seq,
            Ack,
            Window,
            SourceAddress,
            DestinationAddress,
        }

        fn field() -> impl Strategy<Value = Field> {
            prop_oneof![
                Just(Field::SourcePort),
                Just(Field::DestinationPort),
                Just(Field::Seq),
                Just(Field::Ack),
                Just(Field::Window),
                Just(Field::SourceAddress),
                Just(Field::DestinationAddress),
            ]
        }

        proptest! {
            /// The unrolled pseudo-header sum equals the sum of the 12 bytes it stands for.
            #[test]
            fn pseudo_header_sum_equals_the_bytes_summed(saddr: [u8; 4], daddr: [u8; 4], len: u16) {
                let [s0, s1, s2, s3] = saddr;
                let [d0, d1, d2, d3] = daddr;
                let [l0, l1] = len.to_be_bytes();
                prop_assert_eq!(
                    tcp_ipv4_pseudo_header_sum(saddr, daddr, len),
                    ones_complement_sum(&[s0, s1, s2, s3, d0, d1, d2, d3, 0, 6, l0, l1])
                );
            }

            /// The address rewrites of both programs (destination in the front-end's XDP,
            /// source in the back-end's egress) update the IPv4 header checksum
            /// incrementally over the address alone: for any TOS byte, ECT and CE
            /// codepoints included, the result equals a recomputation and the TOS is the
            /// one that arrived (RFC 3168 §5: the ECN field is the routers' to mark and
            /// the end points' to read, never a rewriter's).
            #[test]
            fn an_address_rewrite_keeps_the_tos_and_a_right_header_checksum(
                tos: u8,
                ttl: u8,
                old: [u8; 4],
                new: [u8; 4],
                other: [u8; 4],
                source in any::<bool>(),
            ) {
                let mut header = [0x45, tos, 0, 60, 0, 0, 0x40, 0, ttl, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let (at, other_at) = if source { (12, 16) } else { (16, 12) };
                header[at..at + 4].copy_from_slice(&old);
                header[other_at..other_at + 4].copy_from_slice(&other);
                let check = !ones_complement_sum(&header);
                header[10..12].copy_from_slice(&check.to_be_bytes());
                let updated = csum_replace4(check, u32::from_be_bytes(old), u32::from_be_bytes(new));
                header[at..at + 4].copy_from_slice(&new);
                header[10..12].copy_from_slice(&updated.to_be_bytes());
                prop_assert_eq!(header[1], tos);
                prop_assert_eq!(ones_complement_sum(&header), 0xffff, "the header verifies");
            }

            /// B→C then C's acknowledgement C→B gives back B's own sequence number, for
            /// any ISNs, including every wrap at 2^32.
            #[test]
            fn seq_then_ack_round_trips(isn_f: u32, isn_b: u32, seq_b: u32) {
                let t = Translation::new(terms(isn_f, 0, 0), terms(isn_b, 0, 0), 0);
                prop_assert_eq!(t.ack_to_backend(t.seq_to_client(seq_b)), seq_b);
                // B's byte n (counted from its ISN) is C's byte n counted from isn_f.
                let n = seq_b.wrapping_sub(isn_b);
                prop_assert_eq!(t.seq_to_client(seq_b), isn_f.wrapping_add(n));
            }

            /// Sequences that cross 2^32 on B's side stay contiguous on C's.
            #[test]
            fn wraparound_keeps_distances(isn_f: u32, back_off in 0u32..1 << 20, step in 0u32..1 << 20) {
                let isn_b = 0u32.wrapping_sub(back_off);
                let t = Translation::new(terms(isn_f, 0, 0), terms(isn_b, 0, 0), 0);
                let a = isn_b.wrapping_add(step);
                let b = a.wrapping_add(step);
                prop_assert_eq!(
                    t.seq_to_client(b).wrapping_sub(t.seq_to_client(a)),
                    b.wrapping_sub(a)
                );
            }

            /// SACK edges come back to the B sequence numbers they were made from, with the
            /// block's length kept.
            #[test]
            fn sack_edges_round_trip(isn_f: u32, isn_b: u32, left_b: u32, len in 0u32..1 << 24) {
                let t = Translation::new(terms(isn_f, 0, 0), terms(isn_b, 0, 0), Translation::SACK);
                let right_b = left_b.wrapping_add(len);
                let seen_by_c = SackBlock {
                    left: t.seq_to_client(left_b),
                    right: t.seq_to_client(right_b),
                };
                let back = t.sack_block_to_backend(seen_by_c);
                prop_assert_eq!(back, SackBlock { left: left_b, right: right_b });
                prop_assert_eq!(back.right.wrapping_sub(back.left), len);
            }

            /// TSecr echoing a translated TSval reaches B as B's own TSval, and TSval order
            /// (what PAWS checks) survives translation.
            #[test]
            fn timestamps_round_trip_and_keep_order(
                tsv_f: u32, tsv_b: u32, tsval_b: u32, later in 0u32..1 << 31,
            ) {
                let t = Translation::new(terms(0, tsv_f, 0), terms(0, tsv_b, 0), Translation::TIMESTAMPS);
                prop_assert_eq!(t.tsecr_to_backend(t.tsval_to_client(tsval_b)), tsval_b);
                let next_b = tsval_b.wrapping_add(later);
                prop_assert_eq!(
                    t.tsval_to_client(next_b).wrapping_sub(t.tsval_to_client(tsval_b)),
                    later
                );
            }

            /// The client is never allowed beyond the back-end's window, and is given as
            /// much of it as its scale can express (up to saturation).
            #[test]
            fn rescaled_window_never_exceeds_the_backends(window: u16, ws_b in 0u8..=20, ws_f in 0u8..=20) {
                let field = rescale_window(window, ws_b, ws_f);
                let allowed = u64::from(window) << clamp_window_shift(ws_b);
                let granted = u64::from(field) << clamp_window_shift(ws_f);
                prop_assert!(granted <= allowed);
                let one_more = u64::from(field + u16::from(field < 0xffff)) << clamp_window_shift(ws_f);
                prop_assert!(field == 0xffff || one_more > allowed);
            }

            /// Incremental update equals a full recomputation, for any 20-byte header and
            /// payload, any addresses, and any change of a header or pseudo-header field.
            #[test]
            fn incremental_checksum_equals_recomputation(
                header: [u8; 20],
                payload in proptest::collection::vec(any::<u8>(), 0..24),
                saddr: [u8; 4],
                daddr: [u8; 4],
                which in field(),
                new_value: u32,
            ) {
                let mut seg = [0u8; 44];
                seg[..20].copy_from_slice(&header);
                seg[20..20 + payload.len()].copy_from_slice(&payload);
                let seg = &mut seg[..20 + payload.len()];
                let (mut saddr, mut daddr) = (saddr, daddr);
                let check = full_tcp_checksum(saddr, daddr, seg);
                seg[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());

                let be16 = |s: &[u8], at: usize| u16::from_be_bytes([s[at], s[at + 1]]);
                let be32 = |s: &[u8], at: usize| u32::from_be_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
                let new16 = new_value as u16;
                let updated = match which {
                    Field::SourcePort | Field::DestinationPort | Field::Window => {
                        let at = match which { Field::SourcePort => 0, Field::DestinationPort => 2, _ => 14 };
                        let c = csum_replace2(read_check(seg), be16(seg, at), new16);
                        seg[at..at + 2].copy_from_slice(&new16.to_be_bytes());
                        c
                    }
                    Field::Seq | Field::Ack => {
                        let at = if matches!(which, Field::Seq) { 4 } else { 8 };
                        let c = csum_replace4(read_check(seg), be32(seg, at), new_value);
                        seg[at..at + 4].copy_from_slice(&new_value.to_be_bytes());
                        c
                    }
                    Field::SourceAddress => {
                        let c = csum_replace4(read_check(seg), u32::from_be_bytes(saddr), new_value);
                        saddr = new_value.to_be_bytes();
                        c
                    }
                    Field::DestinationAddress => {
                        let c = csum_replace4(read_check(seg), u32::from_be_bytes(daddr), new_value);
                        daddr = new_value.to_be_bytes();
                        c
                    }
                };
                prop_assert_eq!(updated, full_tcp_checksum(saddr, daddr, seg));
            }

            /// Several field changes summed in one [`ChecksumDiff`] and applied at once
            /// equal a full recomputation, at even and odd offsets alike.
            #[test]
            fn checksum_diff_equals_recomputation(
                seg: [u8; 40],
                changes in proptest::collection::vec((0usize..36, any::<[u8; 4]>(), any::<bool>()), 1..5),
            ) {
                let mut seg = seg;
                seg[16] = 0;
                seg[17] = 0;
                let check = (!ones_complement_sum(&seg)).to_be_bytes();
                seg[16..18].copy_from_slice(&check);
                let mut diff = ChecksumDiff::new();
                for (at, new, wide) in changes {
                    // Never the checksum field itself.
                    let at = if (14..18).contains(&at) || (at < 18 && at + 4 > 16) { 20 + at % 16 } else { at };
                    let odd = at % 2 == 1;
                    if wide {
                        let old: [u8; 4] = seg[at..at + 4].try_into().unwrap();
                        diff = diff.field4(old, new, odd);
                        seg[at..at + 4].copy_from_slice(&new);
                    } else {
                        let old: [u8; 2] = seg[at..at + 2].try_into().unwrap();
                        let new2 = [new[0], new[1]];
                        diff = diff.field2(old, new2, odd);
                        seg[at..at + 2].copy_from_slice(&new2);
                    }
                }
                let applied = diff.apply([seg[16], seg[17]]);
                seg[16] = 0;
                seg[17] = 0;
                let recomputed = (!ones_complement_sum(&seg)).to_be_bytes();
                // 0x0000 and 0xffff are the same one's-complement value.
                let same = applied == recomputed
                    || (applied.iter().all(|b| *b == 0xff) && recomputed == [0, 0])
                    || (applied == [0, 0] && recomputed.iter().all(|b| *b == 0xff));
                prop_assert!(same, "applied {applied:?} recomputed {recomputed:?}");
            }

            /// The odd-offset variants equal recomputation for a 16- or 32-bit field at any
            /// odd offset inside a 40-byte segment.
            #[test]
            fn odd_offset_checksum_equals_recomputation(
                seg: [u8; 40],
                half in 10usize..17,
                wide: bool,
                new_value: u32,
                saddr: [u8; 4],
                daddr: [u8; 4],
            ) {
                let at = 2 * half + 1; // 21, 23, .., 33: inside the options area.
                let mut seg = seg;
                let check = full_tcp_checksum(saddr, daddr, &seg);
                seg[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());
                let updated = if wide {
                    let old = u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
                    seg[at..at + 4].copy_from_slice(&new_value.to_be_bytes());
                    csum_replace4_odd(check, old, new_value)
                } else {
                    let old = u16::from_be_bytes([seg[at], seg[at + 1]]);
                    let new16 = new_value as u16;
                    seg[at..at + 2].copy_from_slice(&new16.to_be_bytes());
                    csum_replace2_odd(check, old, new16)
                };
                prop_assert_eq!(updated, full_tcp_checksum(saddr, daddr, &seg));
            }
        }
    }
}
