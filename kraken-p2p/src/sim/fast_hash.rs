//! A cheap, deterministic hash for the simulator's maps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes the simulator's map keys — connection ids, host ids, addresses and SHA-256 info
/// hashes — with one rotate, xor and multiply per word (the scheme of rustc's FxHash) instead
/// of SipHash: these maps are read for every simulated message, and SipHash was a tenth of
/// the simulator's time. The keys come from the simulation itself, never from the network,
/// so the flooding that SipHash's random keys guard against cannot happen; and with no random
/// key, iteration order is the same in every run.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FastHasher(u64);

/// A `HashMap` keyed through [`FastHasher`].
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_nearby_keys_spread() {
        let build = BuildHasherDefault::<FastHasher>::default();
        assert_eq!(
            build.hash_one((3usize, 7u64)),
            build.hash_one((3usize, 7u64))
        );
        // hashbrown groups by the top 7 bits: consecutive ids must not share them all.
        let tops: std::collections::HashSet<u64> =
            (0..64u64).map(|n| build.hash_one(n) >> 57).collect();
        assert!(tops.len() > 32, "only {} distinct top bits", tops.len());
        assert_ne!(build.hash_one([1u8; 32]), build.hash_one([2u8; 32]));
    }
}
