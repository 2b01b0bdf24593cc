//! Which peers announced which torrent, and whom to hand out.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kraken_core::{InfoHash, PeerId, PeerInfo};
use rand::Rng;
use rand::seq::SliceRandom;

/// Default lifetime of an announced peer without a fresh announce: 5 minutes. Complete peers
/// re-announce every minute by default, leechers every few seconds.
pub const DEFAULT_PEER_TTL: Duration = Duration::from_secs(300);

/// Default size of a handout: 50 peers, as in Go Kraken.
pub const DEFAULT_HANDOUT_LIMIT: usize = 50;

/// An in-memory peer store: peers per torrent, each forgotten `ttl` after its last announce.
///
/// Time is a parameter, so the same store serves the tracker service, the test harness and
/// the simulator.
#[derive(Debug)]
pub struct MemoryPeerStore {
    ttl: Duration,
    /// Peers ordered by id, so that equal histories give equal handouts (for seeded tests).
    torrents: HashMap<InfoHash, BTreeMap<PeerId, (PeerInfo, Instant)>>,
}

impl MemoryPeerStore {
    /// A store that forgets peers `ttl` after their last announce.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            torrents: HashMap::new(),
        }
    }

    /// Records (or refreshes) an announce.
    pub fn announce(&mut self, now: Instant, info_hash: InfoHash, peer: PeerInfo) {
        self.torrents
            .entry(info_hash)
            .or_default()
            .insert(peer.peer_id, (peer, now + self.ttl));
    }

    /// Forgets a peer (for example one that announced it is leaving).
    pub fn remove(&mut self, info_hash: &InfoHash, peer: &PeerId) {
        if let Some(peers) = self.torrents.get_mut(info_hash) {
            peers.remove(peer);
        }
    }

    /// The live peers of a torrent, in peer id order.
    pub fn peers(&self, now: Instant, info_hash: &InfoHash) -> Vec<PeerInfo> {
        self.torrents.get(info_hash).map_or_else(Vec::new, |peers| {
            peers
                .values()
                .filter(|(_, expires)| *expires > now)
                .map(|(peer, _)| peer.clone())
                .collect()
        })
    }

    /// Drops expired peers and empty torrents; call it now and then.
    pub fn sweep(&mut self, now: Instant) {
        for peers in self.torrents.values_mut() {
            peers.retain(|_, (_, expires)| *expires > now);
        }
        self.torrents.retain(|_, peers| !peers.is_empty());
    }

    /// Number of torrents with at least one peer.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }
}

impl Default for MemoryPeerStore {
    fn default() -> Self {
        Self::new(DEFAULT_PEER_TTL)
    }
}

/// Chooses the peers to hand an announcer: up to `limit`, never the announcer itself,
/// complete peers and origins first (each group in random order), then leechers at random.
/// A complete announcer gets none: it does not dial.
pub fn handout<R: Rng + ?Sized>(
    mut peers: Vec<PeerInfo>,
    announcer: &PeerInfo,
    limit: usize,
    rng: &mut R,
) -> Vec<PeerInfo> {
    if announcer.complete {
        return Vec::new();
    }
    peers.retain(|p| p.peer_id != announcer.peer_id);
    peers.shuffle(rng);
    // Stable: the shuffle's order survives within each class.
    peers.sort_by_key(|p| match (p.complete, p.origin) {
        (true, false) => 0,
        (_, true) => 1,
        (false, false) => 2,
    });
    peers.truncate(limit);
    peers
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn peer(n: u8, complete: bool, origin: bool) -> PeerInfo {
        PeerInfo::new(
            PeerId::from_bytes([n; 20]),
            format!("127.0.0.{n}:7000").parse().unwrap(),
            origin,
            complete,
        )
    }

    #[test]
    fn handout_puts_seeders_and_origins_first_and_never_the_announcer() {
        let mut rng = StdRng::seed_from_u64(1);
        let peers: Vec<PeerInfo> = (1..=60)
            .map(|n| peer(n, n % 10 == 0, n % 15 == 0))
            .collect();
        let me = peer(7, false, false);
        let out = handout(peers.clone(), &me, DEFAULT_HANDOUT_LIMIT, &mut rng);
        assert_eq!(out.len(), 50);
        assert!(out.iter().all(|p| p.peer_id != me.peer_id));
        let rank = |p: &PeerInfo| if p.complete || p.origin { 0 } else { 1 };
        assert!(out.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
        let special = peers.iter().filter(|p| p.complete || p.origin).count();
        assert_eq!(out.iter().filter(|p| rank(p) == 0).count(), special);
        // A complete announcer needs nobody.
        assert!(handout(peers, &peer(8, true, false), 50, &mut rng).is_empty());
    }

    #[test]
    fn handout_is_a_random_sample() {
        let peers: Vec<PeerInfo> = (1..=100).map(|n| peer(n, false, false)).collect();
        let me = peer(200, false, false);
        let mut seen = std::collections::HashSet::new();
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..20 {
            for p in handout(peers.clone(), &me, 10, &mut rng) {
                seen.insert(p.peer_id);
            }
        }
        assert!(
            seen.len() > 80,
            "only {} distinct peers handed out",
            seen.len()
        );
    }

    #[test]
    fn store_expires_peers() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        store.announce(t0, info_hash, peer(1, false, false));
        store.announce(t0 + Duration::from_secs(5), info_hash, peer(2, true, false));
        assert_eq!(
            store.peers(t0 + Duration::from_secs(9), &info_hash).len(),
            2
        );
        assert_eq!(
            store.peers(t0 + Duration::from_secs(11), &info_hash).len(),
            1
        );
        store.announce(
            t0 + Duration::from_secs(12),
            info_hash,
            peer(2, true, false),
        );
        store.sweep(t0 + Duration::from_secs(30));
        assert_eq!(store.torrent_count(), 0);
        store.announce(t0, info_hash, peer(3, false, false));
        store.remove(&info_hash, &PeerId::from_bytes([3; 20]));
        assert!(store.peers(t0, &info_hash).is_empty());
    }
}
