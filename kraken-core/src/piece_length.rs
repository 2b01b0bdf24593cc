//! Choosing a piece length from a blob's size.
//!
//! Small pieces let a fresh peer start serving sooner and spread a small blob over more
//! peers; large pieces cost fewer requests, hashes and bitfield bits on a large blob. The
//! policy is a table of size thresholds: the rule with the largest threshold not above the
//! blob's size wins. Go Kraken's shipped configuration uses 4 MiB for everything. The
//! default table here aims at 1,024 to 2,048 pieces per blob, between 256 KiB and 16 MiB, as
//! BitTorrent tools do: a fetcher can relay a piece only once it has all of it, so small
//! pieces start a swarm sooner, while the count stays low enough for cheap bitfields and
//! metainfo. Measured on 1 seeder → 16 capped fetchers of a 256 MiB blob: 1.29 T* with 1 MiB
//! pieces, 1.22 with 512 KiB, 1.20 with 256 KiB (`docs/benchmarks.md`). The simulator
//! (`kraken sim`) is where these numbers get tuned further.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metainfo::MAX_PIECE_LENGTH;
use crate::size::ByteSize;

/// One row of a [`PieceLengthPolicy`]: blobs of at least `min_blob_size` bytes use
/// `piece_length`, unless a later row with a larger threshold applies.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PieceLengthRule {
    /// Smallest blob size this rule applies to.
    pub min_blob_size: ByteSize,
    /// Piece length for those blobs.
    pub piece_length: ByteSize,
}

impl PieceLengthRule {
    /// A rule mapping blobs of at least `min_blob_size` bytes to `piece_length`.
    pub const fn new(min_blob_size: u64, piece_length: u64) -> Self {
        Self {
            min_blob_size: ByteSize(min_blob_size),
            piece_length: ByteSize(piece_length),
        }
    }
}

/// A validated table from blob size to piece length.
///
/// The default:
///
/// | blob size | piece length |
/// |---|---|
/// | < 512 MiB | 256 KiB |
/// | 512 MiB – 1 GiB | 512 KiB |
/// | 1 GiB – 2 GiB | 1 MiB |
/// | 2 GiB – 4 GiB | 2 MiB |
/// | 4 GiB – 8 GiB | 4 MiB |
/// | 8 GiB – 16 GiB | 8 MiB |
/// | ≥ 16 GiB | 16 MiB |
///
/// In configuration files it is a list of rules, e.g.
/// `[{ min_blob_size = 0, piece_length = "4MiB" }]`.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(try_from = "Vec<PieceLengthRule>", into = "Vec<PieceLengthRule>")]
pub struct PieceLengthPolicy {
    rules: Vec<PieceLengthRule>,
}

impl PieceLengthPolicy {
    /// A policy from its rules, which must start at size 0, have strictly increasing
    /// thresholds and piece lengths that are multiples of 64 bytes (SHA-256's block) in
    /// `64..=MAX_PIECE_LENGTH`.
    pub fn new(rules: Vec<PieceLengthRule>) -> Result<Self> {
        let invalid = |reason| Err(Error::InvalidPieceLengthPolicy(reason));
        match rules.first() {
            None => return invalid("the table is empty"),
            Some(first) if first.min_blob_size.0 != 0 => {
                return invalid("the first rule must apply from size 0");
            }
            Some(_) => {}
        }
        if rules
            .windows(2)
            .any(|w| w[0].min_blob_size >= w[1].min_blob_size)
        {
            return invalid("thresholds must be strictly increasing");
        }
        if rules.iter().any(|r| {
            r.piece_length.0 == 0
                || r.piece_length.0 > MAX_PIECE_LENGTH
                || !r.piece_length.0.is_multiple_of(64)
        }) {
            return invalid("piece lengths must be multiples of 64 bytes, from 64 bytes to 64 MiB");
        }
        Ok(Self { rules })
    }

    /// Every blob gets the same piece length.
    pub fn fixed(piece_length: u64) -> Result<Self> {
        Self::new(vec![PieceLengthRule::new(0, piece_length)])
    }

    /// The piece length for a blob of `size` bytes.
    pub fn piece_length_for(&self, size: u64) -> u64 {
        self.rules
            .iter()
            .rev()
            .find(|r| r.min_blob_size.0 <= size)
            .map_or(self.rules[0].piece_length.0, |r| r.piece_length.0)
    }

    /// The rules, in increasing threshold order.
    pub fn rules(&self) -> &[PieceLengthRule] {
        &self.rules
    }
}

impl Default for PieceLengthPolicy {
    fn default() -> Self {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        // Blobs of at least 1,024 × L get pieces of 2L (L from 256 KiB to 8 MiB).
        let mut rules = vec![PieceLengthRule::new(0, 256 * KIB)];
        let mut piece = 256 * KIB;
        while piece < 16 * MIB {
            rules.push(PieceLengthRule::new(2048 * piece, 2 * piece));
            piece *= 2;
        }
        Self { rules }
    }
}

impl TryFrom<Vec<PieceLengthRule>> for PieceLengthPolicy {
    type Error = Error;

    fn try_from(rules: Vec<PieceLengthRule>) -> Result<Self> {
        Self::new(rules)
    }
}

impl From<PieceLengthPolicy> for Vec<PieceLengthRule> {
    fn from(policy: PieceLengthPolicy) -> Self {
        policy.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table() {
        let p = PieceLengthPolicy::default();
        assert_eq!(PieceLengthPolicy::new(p.rules().to_vec()).unwrap(), p);
        assert_eq!(p.piece_length_for(0), 256 << 10);
        assert_eq!(p.piece_length_for(256 << 20), 256 << 10);
        assert_eq!(p.piece_length_for((512 << 20) - 1), 256 << 10);
        assert_eq!(p.piece_length_for(512 << 20), 512 << 10);
        assert_eq!(p.piece_length_for(1 << 30), 1 << 20);
        assert_eq!(p.piece_length_for(3 << 30), 2 << 20);
        assert_eq!(p.piece_length_for(15 << 30), 8 << 20);
        assert_eq!(p.piece_length_for(16 << 30), 16 << 20);
        assert_eq!(p.piece_length_for(100 << 30), 16 << 20);
        assert_eq!(p.piece_length_for(u64::MAX), 16 << 20);
        // Between 1,024 and 2,048 pieces from 256 MiB to 32 GiB.
        for size in [256u64 << 20, 700 << 20, 5 << 30, 31 << 30] {
            let pieces = size.div_ceil(p.piece_length_for(size));
            assert!((1024..=2048).contains(&pieces), "{size}: {pieces} pieces");
        }
        assert_eq!(p.piece_length_for(u64::MAX), 16 << 20);
    }

    #[test]
    fn rejects_bad_tables() {
        assert!(PieceLengthPolicy::new(vec![]).is_err());
        assert!(PieceLengthPolicy::new(vec![PieceLengthRule::new(1, 1024)]).is_err());
        assert!(
            PieceLengthPolicy::new(vec![
                PieceLengthRule::new(0, 1024),
                PieceLengthRule::new(0, 2048)
            ])
            .is_err()
        );
        assert!(PieceLengthPolicy::fixed(0).is_err());
        assert!(PieceLengthPolicy::fixed(MAX_PIECE_LENGTH + 1).is_err());
        assert!(PieceLengthPolicy::fixed(1000).is_err());
        assert!(PieceLengthPolicy::fixed(1024).is_ok());
    }

    #[test]
    fn loads_from_config() {
        let p: PieceLengthPolicy = serde_json::from_str(
            r#"[{"min_blob_size": 0, "piece_length": "2MiB"},
                {"min_blob_size": "1GiB", "piece_length": "8MiB"}]"#,
        )
        .unwrap();
        assert_eq!(p.piece_length_for(1 << 30), 8 << 20);
        assert!(
            serde_json::from_str::<PieceLengthPolicy>(
                r#"[{"min_blob_size": 5, "piece_length": "2MiB"}]"#
            )
            .is_err()
        );
    }
}
