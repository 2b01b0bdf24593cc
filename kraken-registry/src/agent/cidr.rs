//! Address ranges in CIDR notation, for the registry port's allowed clients (what Go Kraken's
//! nginx `allow`/`deny` lines do).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A range of IP addresses: `10.0.0.0/8`, `fd00::/8`, or a bare address for one host.
/// IPv4 clients that reach an IPv6 listener as IPv4-mapped addresses (`::ffff:10.0.0.1`)
/// match IPv4 ranges.
///
/// An `ipnet` network with its host bits cleared; this type adds the bare-address form, the
/// IPv4-mapped matching and the string form in configuration files.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Cidr(IpNet);

/// Why a CIDR did not parse.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: Self = Self(IpNet::V4(Ipv4Net::new_assert(
        Ipv4Addr::new(127, 0, 0, 0),
        8,
    )));
    /// `::1/128`.
    pub const LOOPBACK_V6: Self = Self(IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)));

    /// The range of `prefix` leading bits of `address` (the other bits are cleared).
    /// `None` when `prefix` is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        IpNet::new(address, prefix).ok().map(Self::truncated)
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }

    /// The range of `net`, its host bits cleared. An IPv4-mapped range (`::ffff:10.0.0.1`,
    /// `::ffff:10.0.0.0/104`) becomes the IPv4 range it maps: [`Cidr::contains`] sees
    /// addresses in their canonical form, so as IPv6 it could never match.
    fn truncated(net: IpNet) -> Self {
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
                .addr()
                .to_ipv4_mapped()
                .and_then(|v4| Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
                .map_or(net, IpNet::V4),
            _ => net,
        };
        Self(net.trunc())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| CidrError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let s = s.trim();
        // The standard library's address syntax, stricter than ipnet's: `010.0.0.1` could be
        // meant as octal, so it is refused rather than read as decimal.
        let address = s.split_once('/').map_or(s, |(address, _)| address);
        let address: IpAddr = address.parse().map_err(|_| error("not an IP address"))?;
        if !s.contains('/') {
            return Ok(Self::truncated(IpNet::from(address)));
        }
        let net: IpNet = s.parse().map_err(|_| {
            error("the prefix length is not a number of bits within the address (0 to 32, or 128 for IPv6)")
        })?;
        Ok(Self::truncated(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!net.contains(ip("fd00::1")));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.5")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::2")));
        // Host bits are cleared.
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::LOOPBACK_V6.contains(ip("::1")));
        assert!(Cidr::LOOPBACK_V4.contains(ip("127.0.0.5")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("::1")));
        for mapped in ["::ffff:10.0.0.1", "::ffff:10.0.0.0/104", "::ffff:a00:1/128"] {
            let net: Cidr = mapped.parse().unwrap();
            assert!(net.contains(ip("10.0.0.1")), "{mapped}");
            assert!(net.contains(ip("::ffff:10.0.0.1")), "{mapped}");
            assert_eq!(net.to_string().parse::<Cidr>().unwrap(), net, "{mapped}");
        }
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/8/8",
            "10.0.0.0/999",
            "010.0.0.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
