//! Choosing a piece length from a blob's size.
//!
//! Small pieces let a fresh peer start serving sooner and spread a small blob over more
//! peers; large pieces cost fewer requests, hashes and bitfield bits on a large blob. The
//! policy is a table of size thresholds: the rule with the largest threshold not above the
//! blob's size wins. Go Kraken's shipped configuration uses 4 MiB for everything. Here blobs
//! under 1 GiB — most container layers — get 1 MiB pieces: a fetcher can relay a piece only
//! once it has all of it, so smaller pieces start the swarm sooner (measured: 1 seeder → 8
//! capped fetchers of a 256 MiB blob finished at 1.40 T* with 4 MiB pieces and 1.15 T* with
//! 1 MiB, `docs/benchmarks.md`). Larger blobs get larger pieces, keeping the piece count of a
//! 100 GB blob around 6,000. The simulator (`kraken sim`) is where these numbers get tuned.

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
/// | < 1 GiB | 1 MiB |
/// | 1 GiB – 16 GiB | 4 MiB |
/// | 16 GiB – 64 GiB | 8 MiB |
/// | ≥ 64 GiB | 16 MiB |
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
    /// thresholds and piece lengths in `1..=MAX_PIECE_LENGTH`.
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
        if rules
            .iter()
            .any(|r| r.piece_length.0 == 0 || r.piece_length.0 > MAX_PIECE_LENGTH)
        {
            return invalid("piece lengths must be between 1 byte and 64 MiB");
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
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        Self {
            rules: vec![
                PieceLengthRule::new(0, MIB),
                PieceLengthRule::new(GIB, 4 * MIB),
                PieceLengthRule::new(16 * GIB, 8 * MIB),
                PieceLengthRule::new(64 * GIB, 16 * MIB),
            ],
        }
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
        assert_eq!(p.piece_length_for(0), 1 << 20);
        assert_eq!(p.piece_length_for((1 << 30) - 1), 1 << 20);
        assert_eq!(p.piece_length_for(1 << 30), 4 << 20);
        assert_eq!(p.piece_length_for(20 << 30), 8 << 20);
        assert_eq!(p.piece_length_for(100 << 30), 16 << 20);
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
