//! Deterministic pseudo-random test data.

use std::path::Path;

/// `len` deterministic pseudo-random (incompressible) bytes; different seeds give different
/// bytes, and the same seed always the same ones.
///
/// xorshift64*, eight bytes per step: fast enough for megabytes in an unoptimised test build.
/// The one generator of the tests: it replaced the xorshift generators of the backends' test
/// helpers, the P2P tests and the CLI's P2P tests, which no test depended on byte for byte.
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

/// Writes [`pseudo_random_bytes`]`(len, seed)` to `path`, as a blob a test seeds or imports.
pub fn write_pseudo_random_file(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, pseudo_random_bytes(len, seed))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
