//! Byte sizes as operators write them: `4MiB`, `20GB`, `1.5 GiB`, `512`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes that parses from and prints as a human-readable size.
///
/// Units are case-insensitive: `B`; decimal `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of
/// 1000); binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024). A bare number is bytes. A
/// fraction is allowed when the result is a whole number of bytes (`1.5KiB`, not `0.3B`).
/// In serde formats a size is either such a string or a plain integer.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ByteSize(pub u64);

/// Why a string is not a size.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum ByteSizeError {
    /// Nothing but whitespace.
    #[error("empty size")]
    Empty,
    /// The number part is not a decimal number.
    #[error("{0:?} is not a number (expected e.g. `4MiB`, `20GB`, `1048576`)")]
    BadNumber(String),
    /// The unit is not one of the known ones.
    #[error("unknown size unit {0:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    UnknownUnit(String),
    /// The value does not fit in 64 bits.
    #[error("size is too large")]
    Overflow,
    /// The value is not a whole number of bytes.
    #[error("size is not a whole number of bytes")]
    Fractional,
}

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl ByteSize {
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ByteSizeError::Empty);
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit = unit.trim_start().to_ascii_lowercase();
        let multiplier = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, m)| m)
            .ok_or_else(|| ByteSizeError::UnknownUnit(unit.chars().take(16).collect()))?;
        let bad_number = || ByteSizeError::BadNumber(number.chars().take(32).collect());
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(bad_number());
        }
        // Exact integer arithmetic: value = (whole * 10^k + fraction) * multiplier / 10^k.
        let digits = format!("{whole}{fraction}");
        let scaled: u128 = digits.parse().map_err(|_| bad_number())?;
        let denominator = 10u128
            .checked_pow(u32::try_from(fraction.len()).map_err(|_| bad_number())?)
            .ok_or(ByteSizeError::Overflow)?;
        let numerator = scaled
            .checked_mul(u128::from(multiplier))
            .ok_or(ByteSizeError::Overflow)?;
        if numerator % denominator != 0 {
            return Err(ByteSizeError::Fractional);
        }
        u64::try_from(numerator / denominator)
            .map(ByteSize)
            .map_err(|_| ByteSizeError::Overflow)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly (`4MiB`), else bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 != 0 && self.0.trailing_zeros() >= shift {
                return write!(f, "{}{name}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<'a> {
            Bytes(u64),
            Text(std::borrow::Cow<'a, str>),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Bytes(n) => Ok(Self(n)),
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("0", 0),
            ("512", 512),
            ("4MiB", 4 << 20),
            ("4 mib", 4 << 20),
            ("20GB", 20_000_000_000),
            ("1.5KiB", 1536),
            ("1.5 GiB", 3 << 29),
            ("2k", 2000),
            ("7B", 7),
            ("1TiB", 1 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!("".parse::<ByteSize>(), Err(ByteSizeError::Empty));
        assert!(matches!(
            "4XB".parse::<ByteSize>(),
            Err(ByteSizeError::UnknownUnit(_))
        ));
        assert!(matches!(
            "MiB".parse::<ByteSize>(),
            Err(ByteSizeError::BadNumber(_))
        ));
        assert!(matches!(
            "1.2.3MiB".parse::<ByteSize>(),
            Err(ByteSizeError::BadNumber(_))
        ));
        assert_eq!("0.3B".parse::<ByteSize>(), Err(ByteSizeError::Fractional));
        assert_eq!(
            "99999999999TiB".parse::<ByteSize>(),
            Err(ByteSizeError::Overflow)
        );
        assert!("-1".parse::<ByteSize>().is_err());
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"4MiB\"").unwrap(),
            ByteSize(4 << 20)
        );
        assert_eq!(
            serde_json::from_str::<ByteSize>("1024").unwrap(),
            ByteSize(1024)
        );
        assert_eq!(
            serde_json::to_string(&ByteSize(4 << 20)).unwrap(),
            "\"4MiB\""
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(n in any::<u64>()) {
            let s = ByteSize(n).to_string();
            prop_assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<ByteSize>();
        }
    }
}
