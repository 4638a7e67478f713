//! A stable 64-bit hash: the same input gives the same value in every hail version and on every
//! host (std's hashers are randomised per process). For fingerprints and rollout slots, not
//! security.

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `fnv1a64` with a final mix (splitmix64's), so that inputs differing in one byte spread over
/// the whole range: a fleet's hosts land evenly across a rollout window.
pub fn spread(bytes: &[u8]) -> u64 {
    let mut z = fnv1a64(bytes).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(spread(b"host-1"), spread(b"host-2"));
    }
}
