//! Where the options a translator rewrites lie in a TCP options area: timestamps, SACK
//! blocks and window scale, found with the bounded walk the eBPF programs and the host
//! share ([`find_option`]).

use crate::handoff_option::find_option;

/// Option kinds (IANA "TCP Option Kind Numbers").
pub const KIND_WINDOW_SCALE: u8 = 3;
pub const KIND_SACK: u8 = 5;
pub const KIND_TIMESTAMPS: u8 = 8;
/// Most SACK blocks an option can hold (40 bytes of options, RFC 2018 section 3).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Offset of the timestamps option's kind byte in `options`: TSval at +2, TSecr at +6
/// (RFC 7323 section 3). `None` when absent, malformed, or of another length, which the
/// kernel's `tcp_parse_options` ignores too, so nothing is rewritten that the receiver
/// will not read.
///
/// Each lookup is its own bounded walk ([`find_option`]) rather than one walk collecting
/// everything: the eBPF verifier explores one walk's few states cheaply, but a walk that
/// carries several found-or-not results multiplies them past its instruction limit.
#[inline(always)]
pub fn timestamps(options: &[u8]) -> Option<usize> {
    match find_option(options, KIND_TIMESTAMPS) {
        Ok(Some(span)) if span.len == 10 => Some(span.start),
        _ => None,
    }
}

/// Offset of the SACK option's kind byte and its number of blocks: block `i`'s left edge
/// is at `+2 + 8i`, its right edge at `+6 + 8i` (RFC 2018 section 3).
#[inline(always)]
pub fn sack(options: &[u8]) -> Option<(usize, usize)> {
    match find_option(options, KIND_SACK) {
        Ok(Some(span)) if span.len >= 10 && (span.len - 2) % 8 == 0 => {
            Some((span.start, ((span.len - 2) / 8).min(MAX_SACK_BLOCKS)))
        }
        _ => None,
    }
}

/// The window scale shift, as sent (RFC 7323 section 2.2).
#[inline(always)]
pub fn window_shift(options: &[u8]) -> Option<u8> {
    match find_option(options, KIND_WINDOW_SCALE) {
        Ok(Some(span)) if span.len == 3 => options.get(span.start + 2).copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_linux_syn_options() {
        // MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: what Linux sends.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(timestamps(&opts), Some(6));
        assert_eq!(window_shift(&opts), Some(7));
        assert_eq!(sack(&opts), None);
    }

    #[test]
    fn finds_sack_blocks_after_timestamps() {
        // NOP NOP TS, NOP NOP SACK with two blocks: 12 + 2 + 18 = 32 bytes.
        let mut opts = [0u8; 32];
        opts[..12].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9]);
        opts[12..14].copy_from_slice(&[1, 1]);
        opts[14] = 5;
        opts[15] = 18;
        assert_eq!(timestamps(&opts), Some(2));
        assert_eq!(sack(&opts), Some((14, 2)));
    }

    #[test]
    fn ignores_wrong_lengths_and_malformed_areas() {
        assert_eq!(timestamps(&[8, 6, 0, 0, 0, 0]), None);
        assert_eq!(sack(&[5, 9, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(timestamps(&[8, 1]), None);
        assert_eq!(timestamps(&[8, 10, 0]), None);
        assert_eq!(window_shift(&[1, 3]), None);
        assert_eq!(timestamps(&[0u8; 41]), None);
        // EOL ends the list: what follows is padding, as in the eBPF programs' zeroed
        // 40-byte buffers.
        assert_eq!(timestamps(&[0, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        let mut padded = [0u8; 40];
        padded[..12].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9]);
        assert_eq!(timestamps(&padded), Some(2));
    }

    #[test]
    fn never_panics_on_any_short_area() {
        let values = [0u8, 1, 2, 3, 5, 8, 10, 18, 255];
        for &a in &values {
            for &b in &values {
                for &c in &values {
                    for area in [&[a, b, c][..], &[a, b], &[a]] {
                        let _ = (timestamps(area), sack(area), window_shift(area));
                    }
                }
            }
        }
    }
}
