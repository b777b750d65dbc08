//! A stable 64-bit hash for consistent hashing and LARD targets.
//!
//! Stable means: the same key hashes to the same value across runs, builds and Rust
//! releases, so a restarted front-end sends each cache key to the same back-end as before
//! (std's `DefaultHasher` promises none of that). It is not keyed: the keys are chosen by
//! clients, but a client that crafts keys only chooses its own back-end, which it could
//! do anyway with the matching rules' help; flooding one back-end takes many clients, and
//! the front-end's connection limits bound them.

/// Multipliers from the 64-bit murmur3 finaliser and from wyhash's constants.
const K1: u64 = 0xff51_afd7_ed55_8ccd;
const K2: u64 = 0xc4ce_b9fe_1a85_ec53;
const K3: u64 = 0x9e37_79b9_7f4a_7c15;

/// The murmur3 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub(crate) const fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(K1);
    h ^= h >> 33;
    h = h.wrapping_mul(K2);
    h ^= h >> 33;
    h
}

/// Hashes `bytes`, eight at a time, then finalises.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = K3 ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        h = (h ^ mix64(word)).rotate_left(29).wrapping_mul(K3);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = (h ^ mix64(u64::from_le_bytes(tail)))
            .rotate_left(29)
            .wrapping_mul(K3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable() {
        // Pinned: a change here moves every consistently hashed key to another back-end.
        assert_eq!(hash_bytes(b""), 0x9ca0_66f1_a4ab_2eea);
        assert_eq!(hash_bytes(b"/img/logo.svg"), 0x1fce_971a_2581_8fc2);
    }

    #[test]
    fn length_and_tail_matter() {
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
        assert_ne!(hash_bytes(b"/a/1"), hash_bytes(b"/a/2"));
    }
}
