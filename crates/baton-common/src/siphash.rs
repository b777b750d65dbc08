//! SipHash-2-4 with a 64-bit output, over fixed-length messages.
//!
//! The handoff option's tag is a SipHash-2-4 MAC (Aumasson and Bernstein, "SipHash: a fast
//! short-input PRF", 2012): a keyed PRF built for short inputs, which is exactly what the
//! back-end's tc ingress has to authenticate once per replayed SYN. It is written here
//! rather than taken from a crate because the eBPF programs compile this crate: the message
//! length is a const generic, so every loop has a bound the compiler and the verifier can
//! see, and nothing indexes, slices with a run-time bound, or panics.

/// A 128-bit SipHash key, as the two little-endian 64-bit words `k0` and `k1` the
/// algorithm starts from (paper section 2, "Initialization").
///
/// Front-end and back-ends share it; it sits in an eBPF map on each back-end, hence the
/// `#[repr(C)]` layout.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SipKey {
    pub k0: u64,
    pub k1: u64,
}

impl SipKey {
    /// The key from its 16 bytes, in the byte order the paper's test vectors use.
    pub const fn from_bytes(key: [u8; 16]) -> Self {
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
        ] = key;
        Self {
            k0: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            k1: u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        }
    }
}

/// Never prints the key, so a `{:?}` in a log line cannot leak it.
impl core::fmt::Debug for SipKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SipKey(..)")
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, two `u64`s, no padding (size tested below), so every bit
    // pattern is a valid key.
    unsafe impl aya::Pod for super::SipKey {}
}

/// The four words of SipHash's internal state (paper section 2).
struct State {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl State {
    const fn new(key: &SipKey) -> Self {
        // The constants are "somepseudorandomlygeneratedbytes" in ASCII (paper section 2).
        Self {
            v0: key.k0 ^ 0x736f_6d65_7073_6575,
            v1: key.k1 ^ 0x646f_7261_6e64_6f6d,
            v2: key.k0 ^ 0x6c79_6765_6e65_7261,
            v3: key.k1 ^ 0x7465_6462_7974_6573,
        }
    }

    /// One SipRound (paper figure 2.1): additions wrap by definition.
    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// Absorbs one message word with the c = 2 compression rounds of SipHash-2-4.
    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        for _ in 0..2 {
            self.round();
        }
        self.v0 ^= m;
    }
}

/// Reads up to eight bytes as a little-endian word, the way the paper parses message words.
/// A fold with a constant shift rather than an indexed load, so there is no bounds check.
#[inline(always)]
fn le_word(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
}

/// SipHash-2-4 of `msg` under `key`, the 64-bit output of the paper's reference
/// implementation.
///
/// `N` fixes the message length at compile time, so the block loop runs exactly `N / 8`
/// times: a constant bound for the eBPF verifier.
#[inline]
pub fn siphash24<const N: usize>(key: &SipKey, msg: &[u8; N]) -> u64 {
    let mut state = State::new(key);
    let blocks = msg.chunks_exact(8);
    let tail = blocks.remainder();
    for block in blocks {
        state.compress(le_word(block));
    }
    // The last word carries the message length mod 256 in its top byte (paper section 2,
    // "Compression").
    let last = ((N as u64 & 0xff) << 56) | le_word(tail);
    state.compress(last);
    // Finalization: d = 4 rounds after xoring 0xff into v2.
    state.v2 ^= 0xff;
    for _ in 0..4 {
        state.round();
    }
    state.v0 ^ state.v1 ^ state.v2 ^ state.v3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the paper's appendix A and of the reference test vectors: 00 01 .. 0f.
    const VECTOR_KEY: SipKey = SipKey::from_bytes([
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ]);

    /// `vectors_sip64` from the reference implementation (`vectors.h` in the SipHash
    /// repository of Aumasson and Bernstein): the output, as little-endian bytes, of
    /// SipHash-2-4 under [`VECTOR_KEY`] for the message 00 01 .. (len - 1), len = 0..63.
    const VECTORS_SIP64: [[u8; 8]; 64] = [
        [0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72],
        [0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74],
        [0x5a, 0x4f, 0xa9, 0xd9, 0x09, 0x80, 0x6c, 0x0d],
        [0x2d, 0x7e, 0xfb, 0xd7, 0x96, 0x66, 0x67, 0x85],
        [0xb7, 0x87, 0x71, 0x27, 0xe0, 0x94, 0x27, 0xcf],
        [0x8d, 0xa6, 0x99, 0xcd, 0x64, 0x55, 0x76, 0x18],
        [0xce, 0xe3, 0xfe, 0x58, 0x6e, 0x46, 0xc9, 0xcb],
        [0x37, 0xd1, 0x01, 0x8b, 0xf5, 0x00, 0x02, 0xab],
        [0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93],
        [0xb0, 0xe4, 0xa9, 0x0b, 0xdf, 0x82, 0x00, 0x9e],
        [0xf3, 0xb9, 0xdd, 0x94, 0xc5, 0xbb, 0x5d, 0x7a],
        [0xa7, 0xad, 0x6b, 0x22, 0x46, 0x2f, 0xb3, 0xf4],
        [0xfb, 0xe5, 0x0e, 0x86, 0xbc, 0x8f, 0x1e, 0x75],
        [0x90, 0x3d, 0x84, 0xc0, 0x27, 0x56, 0xea, 0x14],
        [0xee, 0xf2, 0x7a, 0x8e, 0x90, 0xca, 0x23, 0xf7],
        [0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1],
        [0xdb, 0x9b, 0xc2, 0x57, 0x7f, 0xcc, 0x2a, 0x3f],
        [0x94, 0x47, 0xbe, 0x2c, 0xf5, 0xe9, 0x9a, 0x69],
        [0x9c, 0xd3, 0x8d, 0x96, 0xf0, 0xb3, 0xc1, 0x4b],
        [0xbd, 0x61, 0x79, 0xa7, 0x1d, 0xc9, 0x6d, 0xbb],
        [0x98, 0xee, 0xa2, 0x1a, 0xf2, 0x5c, 0xd6, 0xbe],
        [0xc7, 0x67, 0x3b, 0x2e, 0xb0, 0xcb, 0xf2, 0xd0],
        [0x88, 0x3e, 0xa3, 0xe3, 0x95, 0x67, 0x53, 0x93],
        [0xc8, 0xce, 0x5c, 0xcd, 0x8c, 0x03, 0x0c, 0xa8],
        [0x94, 0xaf, 0x49, 0xf6, 0xc6, 0x50, 0xad, 0xb8],
        [0xea, 0xb8, 0x85, 0x8a, 0xde, 0x92, 0xe1, 0xbc],
        [0xf3, 0x15, 0xbb, 0x5b, 0xb8, 0x35, 0xd8, 0x17],
        [0xad, 0xcf, 0x6b, 0x07, 0x63, 0x61, 0x2e, 0x2f],
        [0xa5, 0xc9, 0x1d, 0xa7, 0xac, 0xaa, 0x4d, 0xde],
        [0x71, 0x65, 0x95, 0x87, 0x66, 0x50, 0xa2, 0xa6],
        [0x28, 0xef, 0x49, 0x5c, 0x53, 0xa3, 0x87, 0xad],
        [0x42, 0xc3, 0x41, 0xd8, 0xfa, 0x92, 0xd8, 0x32],
        [0xce, 0x7c, 0xf2, 0x72, 0x2f, 0x51, 0x27, 0x71],
        [0xe3, 0x78, 0x59, 0xf9, 0x46, 0x23, 0xf3, 0xa7],
        [0x38, 0x12, 0x05, 0xbb, 0x1a, 0xb0, 0xe0, 0x12],
        [0xae, 0x97, 0xa1, 0x0f, 0xd4, 0x34, 0xe0, 0x15],
        [0xb4, 0xa3, 0x15, 0x08, 0xbe, 0xff, 0x4d, 0x31],
        [0x81, 0x39, 0x62, 0x29, 0xf0, 0x90, 0x79, 0x02],
        [0x4d, 0x0c, 0xf4, 0x9e, 0xe5, 0xd4, 0xdc, 0xca],
        [0x5c, 0x73, 0x33, 0x6a, 0x76, 0xd8, 0xbf, 0x9a],
        [0xd0, 0xa7, 0x04, 0x53, 0x6b, 0xa9, 0x3e, 0x0e],
        [0x92, 0x59, 0x58, 0xfc, 0xd6, 0x42, 0x0c, 0xad],
        [0xa9, 0x15, 0xc2, 0x9b, 0xc8, 0x06, 0x73, 0x18],
        [0x95, 0x2b, 0x79, 0xf3, 0xbc, 0x0a, 0xa6, 0xd4],
        [0xf2, 0x1d, 0xf2, 0xe4, 0x1d, 0x45, 0x35, 0xf9],
        [0x87, 0x57, 0x75, 0x19, 0x04, 0x8f, 0x53, 0xa9],
        [0x10, 0xa5, 0x6c, 0xf5, 0xdf, 0xcd, 0x9a, 0xdb],
        [0xeb, 0x75, 0x09, 0x5c, 0xcd, 0x98, 0x6c, 0xd0],
        [0x51, 0xa9, 0xcb, 0x9e, 0xcb, 0xa3, 0x12, 0xe6],
        [0x96, 0xaf, 0xad, 0xfc, 0x2c, 0xe6, 0x66, 0xc7],
        [0x72, 0xfe, 0x52, 0x97, 0x5a, 0x43, 0x64, 0xee],
        [0x5a, 0x16, 0x45, 0xb2, 0x76, 0xd5, 0x92, 0xa1],
        [0xb2, 0x74, 0xcb, 0x8e, 0xbf, 0x87, 0x87, 0x0a],
        [0x6f, 0x9b, 0xb4, 0x20, 0x3d, 0xe7, 0xb3, 0x81],
        [0xea, 0xec, 0xb2, 0xa3, 0x0b, 0x22, 0xa8, 0x7f],
        [0x99, 0x24, 0xa4, 0x3c, 0xc1, 0x31, 0x57, 0x24],
        [0xbd, 0x83, 0x8d, 0x3a, 0xaf, 0xbf, 0x8d, 0xb7],
        [0x0b, 0x1a, 0x2a, 0x32, 0x65, 0xd5, 0x1a, 0xea],
        [0x13, 0x50, 0x79, 0xa3, 0x23, 0x1c, 0xe6, 0x60],
        [0x93, 0x2b, 0x28, 0x46, 0xe4, 0xd7, 0x06, 0x66],
        [0xe1, 0x91, 0x5f, 0x5c, 0xb1, 0xec, 0xa4, 0x6c],
        [0xf3, 0x25, 0x96, 0x5c, 0xa1, 0x6d, 0x62, 0x9f],
        [0x57, 0x5f, 0xf2, 0x8e, 0x60, 0x38, 0x1b, 0xe5],
        [0x72, 0x45, 0x06, 0xeb, 0x4c, 0x32, 0x8a, 0x95],
    ];

    /// The vector message of length `N`: 00 01 02 .. (N - 1).
    fn counting_message<const N: usize>() -> [u8; N] {
        let mut msg = [0u8; N];
        for (byte, value) in msg.iter_mut().zip(0u8..) {
            *byte = value;
        }
        msg
    }

    fn check_vector<const N: usize>() {
        let got = siphash24(&VECTOR_KEY, &counting_message::<N>());
        assert_eq!(
            got.to_le_bytes(),
            VECTORS_SIP64[N],
            "SipHash-2-4 vector for a {N}-byte message"
        );
    }

    /// Instantiates [`check_vector`] for each listed message length: the length is a
    /// const generic, so each needs its own monomorphization.
    macro_rules! check_vectors {
        ($($len:literal)*) => { $( check_vector::<$len>(); )* };
    }

    #[test]
    fn matches_all_64_reference_vectors() {
        check_vectors!(
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
            30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55
            56 57 58 59 60 61 62 63
        );
    }

    #[test]
    fn matches_the_papers_appendix_a_example() {
        // Appendix A: key 00..0f, 15-byte message 00..0e, output a129ca6149be45e5.
        let got = siphash24(&VECTOR_KEY, &counting_message::<15>());
        assert_eq!(got, 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn key_layout_is_fixed() {
        assert_eq!(core::mem::size_of::<SipKey>(), 16);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        extern crate std;
        let shown = std::format!("{VECTOR_KEY:?}");
        assert_eq!(shown, "SipKey(..)");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Cross-checks against the standard library's own SipHash-2-4 (the deprecated
            /// `core::hash::SipHasher`, whose `write` feeds raw bytes) on 32-byte messages,
            /// the length the handoff tag uses.
            #[test]
            fn agrees_with_core_siphasher(k0: u64, k1: u64, msg: [u8; 32]) {
                #[expect(deprecated, reason = "SipHasher is SipHash-2-4, the reference we want")]
                let reference = {
                    use core::hash::Hasher;
                    let mut hasher = core::hash::SipHasher::new_with_keys(k0, k1);
                    hasher.write(&msg);
                    hasher.finish()
                };
                prop_assert_eq!(siphash24(&SipKey { k0, k1 }, &msg), reference);
            }
        }
    }
}
