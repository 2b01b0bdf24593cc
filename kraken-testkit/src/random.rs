//! Deterministic pseudo-random test data.

/// `len` deterministic pseudo-random (incompressible) bytes; different seeds give different
/// bytes, and the same seed always the same ones.
///
/// xorshift64*, eight bytes per step: fast enough for megabytes in an unoptimised test build.
/// The one generator of the tests: it replaced a byte-per-step xorshift of the backends' test
/// helpers and of the P2P tests, which no test depended on byte for byte.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
