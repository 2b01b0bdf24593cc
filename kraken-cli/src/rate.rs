//! Transfer rates on the command line: a size per second.

use std::str::FromStr;

use kraken_core::ByteSize;

/// Bytes per second, written as a size with an optional `/s`: `20MB`, `50MiB/s`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Rate(pub(crate) ByteSize);

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let size = s.trim().strip_suffix("/s").unwrap_or(s);
        let bytes: ByteSize = size.parse().map_err(|e| format!("{e}"))?;
        if bytes.bytes() == 0 {
            return Err("a rate must be positive".into());
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!("20MB".parse(), Ok(Rate(ByteSize(20_000_000))));
        assert_eq!("50MiB/s".parse(), Ok(Rate(ByteSize(50 << 20))));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
