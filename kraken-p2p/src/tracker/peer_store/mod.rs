//! Which peers announced which torrent, and whom to hand out.
//!
//! Every entry is keyed by its announcer (the address the announce came from, as the
//! tracker saw it) and the peer id it claims, so an announce can refresh or replace only
//! entries its own host made: nobody can evict another host's peer by claiming its id or its
//! address. Caps on torrents, peers per torrent, peers in all and entries per announcer bound
//! the memory a flood of announces can take, and expired entries leave in expiry order, so no
//! announce walks the whole store.
//!
//! Two stores keep these rules: [`MemoryPeerStore`] (`memory`), one tracker's own, and with
//! the `redis` feature `RedisPeerStore` (`redis`), shared by several trackers through one
//! Redis server so that any of them answers for any torrent and a restarted one forgets
//! nobody.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::net::IpAddr;
use std::time::Duration;

use kraken_core::PeerInfo;
use serde::{Deserialize, Serialize};

pub use self::memory::MemoryPeerStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisPeerStore;

/// Default lifetime of an announced peer without a fresh announce: 5 minutes. Complete peers
/// re-announce every minute by default, leechers every few seconds.
pub const DEFAULT_PEER_TTL: Duration = Duration::from_secs(300);

/// Default size of a handout: 50 peers, as in Go Kraken.
pub const DEFAULT_HANDOUT_LIMIT: usize = 50;

/// Where a tracker keeps announced peers: its own memory (the default), or a Redis server
/// shared by several trackers (`[peer_store] redis = "redis://127.0.0.1:6379"`; the `redis`
/// feature). Keys are documented in `docs/operations.md`.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerStoreConfig {
    /// The Redis server, `redis://[[user]:password@]host:port[/db]` (`rediss://` is not
    /// supported). A password belongs in the secrets file. Default: none (peers in this
    /// tracker's memory).
    pub redis: Option<String>,
    /// Most time one Redis call (connecting included) may take before the tracker answers
    /// from its own memory. Default: 500ms.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After a Redis call fails, how long the tracker answers from its own memory before it
    /// asks Redis again. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// Prepended to every key, so that several clusters can share one server. Default:
    /// `kraken:peers:`.
    pub key_prefix: String,
}

impl Default for PeerStoreConfig {
    fn default() -> Self {
        Self {
            redis: None,
            timeout: Duration::from_millis(500),
            retry_interval: Duration::from_secs(1),
            key_prefix: "kraken:peers:".into(),
        }
    }
}

impl PeerStoreConfig {
    /// Checks what has no sensible meaning: zero times, a URL that is not `redis://`.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.retry_interval.is_zero() {
            return Err("peer_store: timeout and retry_interval must be more than zero".into());
        }
        if let Some(url) = &self.redis
            && !url.starts_with("redis://")
        {
            return Err(format!(
                "peer_store.redis must be a redis:// URL, not {:?}",
                url.split('@').next_back().unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// Bounds on what a peer store holds. An entry (one peer in one torrent) costs about 300
/// bytes with its indexes, so the defaults bound the store near 300 MiB.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerStoreLimits {
    /// Most torrents with at least one peer. Default: 100000.
    pub max_torrents: usize,
    /// Most peers (entries) in all torrents together. Default: 1000000.
    pub max_peers: usize,
    /// Most peers in one torrent. Default: 50000.
    pub max_peers_per_torrent: usize,
    /// Most entries one unauthenticated announcer (one source address) may hold across all
    /// torrents; authenticated origins are exempt. Default: 10000.
    pub max_entries_per_announcer: usize,
}

impl Default for PeerStoreLimits {
    fn default() -> Self {
        Self {
            max_torrents: 100_000,
            max_peers: 1_000_000,
            max_peers_per_torrent: 50_000,
            max_entries_per_announcer: 10_000,
        }
    }
}

/// Who sent an announce, as far as the tracker can tell.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Announcer {
    /// The address the announce came from (the connection's source address).
    pub ip: IpAddr,
    /// Whether it is authenticated as an origin or a publisher: exempt from the
    /// per-announcer cap.
    pub trusted: bool,
}

impl Announcer {
    /// An announcer at `ip`, unauthenticated.
    pub fn at(ip: IpAddr) -> Self {
        Self { ip, trusted: false }
    }
}

/// An announce the store refused because a cap is reached.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum CapReached {
    /// [`PeerStoreLimits::max_torrents`].
    #[error("the tracker holds its most torrents")]
    Torrents,
    /// [`PeerStoreLimits::max_peers`].
    #[error("the tracker holds its most peers")]
    Peers,
    /// [`PeerStoreLimits::max_peers_per_torrent`].
    #[error("the torrent holds its most peers")]
    TorrentPeers,
    /// [`PeerStoreLimits::max_entries_per_announcer`].
    #[error("this announcer holds its most entries")]
    Announcer,
}

/// The handout classes, in the order they are handed out.
const COMPLETE: usize = 0;
const ORIGIN: usize = 1;
const LEECHER: usize = 2;

/// A peer's handout class.
fn class_of(peer: &PeerInfo) -> usize {
    match (peer.complete, peer.origin) {
        (_, true) => ORIGIN,
        (true, false) => COMPLETE,
        (false, false) => LEECHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_store_config_needs_a_redis_url_and_times_above_zero() {
        let config: PeerStoreConfig =
            toml::from_str("redis = \"redis://:secret@10.0.0.5:6379/2\"\ntimeout = \"250ms\"")
                .unwrap();
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(config.retry_interval, Duration::from_secs(1));
        config.validate().unwrap();
        let wrong: PeerStoreConfig =
            toml::from_str("redis = \"http://:secret@host:6379\"").unwrap();
        let error = wrong.validate().unwrap_err();
        assert!(
            error.contains("redis://") && !error.contains("secret"),
            "{error}"
        );
        let zero: PeerStoreConfig = toml::from_str("timeout = \"0s\"").unwrap();
        assert!(zero.validate().is_err());
        assert!(toml::from_str::<PeerStoreConfig>("redis_url = \"x\"").is_err());
    }
}
