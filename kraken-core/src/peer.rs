//! Peers: who takes part in a swarm.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::digest::{hex_decode_into, hex_encode};
use crate::error::{Error, Result};

/// A peer's identity within the swarm: 20 random bytes, written as 40 lowercase hex characters.
///
/// It names a process, not a host: a restarted agent picks a new one. It is not a credential;
/// authentication belongs to the transport (TLS).
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct PeerId([u8; 20]);

impl PeerId {
    /// A peer id from raw bytes.
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    /// A fresh random peer id.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self(rng.random())
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The first 8 hex characters, for logs.
    pub fn fmt_short(&self) -> String {
        hex_encode(&self.0[..4])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = Error;

    /// Exactly 40 lowercase hex characters.
    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = [0; 20];
        hex_decode_into(s, &mut bytes).map_err(|_| Error::InvalidPeerId)?;
        Ok(Self(bytes))
    }
}

crate::serde_str::serde_via_str!(PeerId);

/// What the tracker knows of a peer: where to reach it and what it holds.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// Address of its peer (P2P) listener.
    pub ip: IpAddr,
    /// Port of its peer listener.
    pub port: u16,
    /// Whether it is an origin (a seeder of last resort, backed by durable storage).
    pub origin: bool,
    /// Whether it holds the whole blob.
    pub complete: bool,
}

impl PeerInfo {
    /// A peer reachable at `addr`.
    pub fn new(peer_id: PeerId, addr: SocketAddr, origin: bool, complete: bool) -> Self {
        Self {
            peer_id,
            ip: addr.ip(),
            port: addr.port(),
            origin,
            complete,
        }
    }

    /// Address of its peer listener.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn peer_id_round_trips_and_rejects() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = PeerId::random(&mut rng);
        assert_ne!(id, PeerId::random(&mut rng));
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        assert!("abc".parse::<PeerId>().is_err());
        assert!("g".repeat(40).parse::<PeerId>().is_err());
        assert!("AB".repeat(20).parse::<PeerId>().is_err());
    }

    #[test]
    fn peer_info_json() {
        let info = PeerInfo::new(
            PeerId::from_bytes([0xab; 20]),
            "127.0.0.2:16001".parse().unwrap(),
            true,
            false,
        );
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"peer_id":"abababababababababababababababababababab","ip":"127.0.0.2","port":16001,"origin":true,"complete":false}"#
        );
        assert_eq!(serde_json::from_str::<PeerInfo>(&json).unwrap(), info);
        assert_eq!(info.addr().to_string(), "127.0.0.2:16001");
    }
}
