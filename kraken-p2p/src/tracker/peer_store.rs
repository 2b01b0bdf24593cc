//! Which peers announced which torrent, and whom to hand out.

use std::collections::HashMap;
use std::net::SocketAddr;
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
/// the simulator. [`handout`](Self::handout) costs time in the size of the handout, not of
/// the swarm, which is what lets one tracker answer 15,000 hosts announcing every few
/// seconds.
#[derive(Debug)]
pub struct MemoryPeerStore {
    ttl: Duration,
    torrents: HashMap<InfoHash, TorrentPeers>,
}

/// The handout classes, in the order they are handed out.
const COMPLETE: usize = 0;
const ORIGIN: usize = 1;
const LEECHER: usize = 2;

fn class_of(peer: &PeerInfo) -> usize {
    match (peer.complete, peer.origin) {
        (_, true) => ORIGIN,
        (true, false) => COMPLETE,
        (false, false) => LEECHER,
    }
}

/// The peers of one torrent, by handout class, each class indexable for sampling.
#[derive(Debug, Default)]
struct TorrentPeers {
    classes: [Vec<(PeerInfo, Instant)>; 3],
    /// Where each peer is: its class and position.
    index: HashMap<PeerId, (usize, usize)>,
    /// Which peer listens at each address.
    by_addr: HashMap<SocketAddr, PeerId>,
}

impl TorrentPeers {
    /// Records `peer`. A peer announcing an address that another peer id holds replaces
    /// that one: only one process listens at an address, so the other is an earlier run of
    /// this node (restarted with a new id) or gone, and handing it out would send peers —
    /// this node among them — to a peer that is not there.
    fn insert(&mut self, peer: PeerInfo, expires: Instant) {
        if let Some(&previous) = self.by_addr.get(&peer.addr())
            && previous != peer.peer_id
        {
            self.remove(&previous);
        }
        if let Some(&(class, position)) = self.index.get(&peer.peer_id) {
            // The same peer at a new address no longer holds the old one.
            self.by_addr.remove(&self.classes[class][position].0.addr());
        }
        self.by_addr.insert(peer.addr(), peer.peer_id);
        let class = class_of(&peer);
        match self.index.get(&peer.peer_id).copied() {
            Some((old, position)) if old == class => {
                self.classes[class][position] = (peer, expires);
            }
            Some((old, position)) => {
                self.remove_at(old, position);
                self.push(class, peer, expires);
            }
            None => self.push(class, peer, expires),
        }
    }

    fn push(&mut self, class: usize, peer: PeerInfo, expires: Instant) {
        self.index
            .insert(peer.peer_id, (class, self.classes[class].len()));
        self.classes[class].push((peer, expires));
    }

    fn remove(&mut self, peer: &PeerId) {
        if let Some((class, position)) = self.index.get(peer).copied() {
            self.remove_at(class, position);
        }
    }

    fn remove_at(&mut self, class: usize, position: usize) {
        let (removed, _) = self.classes[class].swap_remove(position);
        self.index.remove(&removed.peer_id);
        if self.by_addr.get(&removed.addr()) == Some(&removed.peer_id) {
            self.by_addr.remove(&removed.addr());
        }
        if let Some((moved, _)) = self.classes[class].get(position) {
            self.index.insert(moved.peer_id, (class, position));
        }
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &PeerInfo> + '_ {
        self.classes
            .iter()
            .flatten()
            .filter(move |(_, expires)| *expires > now)
            .map(|(peer, _)| peer)
    }
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
            .insert(peer, now + self.ttl);
    }

    /// Forgets a peer (for example one that announced it is leaving).
    pub fn remove(&mut self, info_hash: &InfoHash, peer: &PeerId) {
        if let Some(peers) = self.torrents.get_mut(info_hash) {
            peers.remove(peer);
        }
    }

    /// The live peers of a torrent, in peer id order.
    pub fn peers(&self, now: Instant, info_hash: &InfoHash) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .torrents
            .get(info_hash)
            .map_or_else(Vec::new, |t| t.live(now).cloned().collect());
        peers.sort_by_key(|p| p.peer_id);
        peers
    }

    /// The peers to hand `announcer`, chosen as the free function [`handout`] chooses them
    /// from [`peers`](Self::peers), but sampled without listing the whole swarm.
    pub fn handout<R: Rng + ?Sized>(
        &self,
        now: Instant,
        info_hash: &InfoHash,
        announcer: &PeerInfo,
        limit: usize,
        rng: &mut R,
    ) -> Vec<PeerInfo> {
        let Some(torrent) = self.torrents.get(info_hash) else {
            return Vec::new();
        };
        if announcer.complete {
            return Vec::new();
        }
        let usable = |(peer, expires): &(PeerInfo, Instant)| {
            *expires > now && peer.peer_id != announcer.peer_id
        };
        let mut out = Vec::with_capacity(limit);
        for class in &torrent.classes {
            let want = limit - out.len();
            if want == 0 {
                break;
            }
            // Sampling indices is exact only when none is skipped; a class with stale entries
            // or the announcer in it may come up short, and is then listed in full.
            let sampled: Vec<PeerInfo> = if class.len() > 2 * want {
                rand::seq::index::sample(rng, class.len(), want)
                    .into_iter()
                    .map(|i| &class[i])
                    .filter(|entry| usable(entry))
                    .map(|(peer, _)| peer.clone())
                    .collect()
            } else {
                Vec::new()
            };
            if sampled.len() == want {
                out.extend(sampled);
            } else {
                let mut all: Vec<PeerInfo> = class
                    .iter()
                    .filter(|entry| usable(entry))
                    .map(|(peer, _)| peer.clone())
                    .collect();
                all.shuffle(rng);
                all.truncate(want);
                out.extend(all);
            }
        }
        out
    }

    /// Drops expired peers and empty torrents; call it now and then.
    pub fn sweep(&mut self, now: Instant) {
        for peers in self.torrents.values_mut() {
            let expired: Vec<PeerId> = peers
                .classes
                .iter()
                .flatten()
                .filter(|(_, expires)| *expires <= now)
                .map(|(peer, _)| peer.peer_id)
                .collect();
            for peer in expired {
                peers.remove(&peer);
            }
        }
        self.torrents.retain(|_, peers| !peers.is_empty());
    }

    /// Number of torrents with at least one peer.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    /// Number of peers over all torrents (a peer in two torrents counts twice), including
    /// expired ones not swept yet.
    pub fn peer_count(&self) -> usize {
        self.torrents.values().map(|peers| peers.index.len()).sum()
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
    peers.sort_by_key(class_of);
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
    fn store_handout_samples_by_class_and_skips_stale_peers_and_the_announcer() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        for n in 1..=200u8 {
            store.announce(t0, info_hash, peer(n, n % 20 == 0, n % 50 == 0));
        }
        // Peer 3 completes: it moves to the front class.
        store.announce(t0, info_hash, peer(3, true, false));
        // Peers 100..=200 go stale.
        let later = t0 + Duration::from_secs(8);
        for n in 1..100u8 {
            store.announce(
                later,
                info_hash,
                peer(n, n % 20 == 0 || n == 3, n % 50 == 0),
            );
        }
        let now = t0 + Duration::from_secs(12);
        let me = peer(7, false, false);
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..30 {
            let out = store.handout(now, &info_hash, &me, 20, &mut rng);
            assert_eq!(out.len(), 20);
            assert!(out.iter().all(|p| p.peer_id != me.peer_id));
            assert!(
                out.iter().all(|p| p.peer_id.as_bytes()[0] < 100),
                "stale peer"
            );
            // Complete peers 3, 20, 40, 60, 80 first, then origin 50, then leechers.
            let classes: Vec<usize> = out.iter().map(class_of).collect();
            assert!(classes.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(classes.iter().filter(|&&c| c == COMPLETE).count(), 5);
            assert_eq!(classes.iter().filter(|&&c| c == ORIGIN).count(), 1);
            seen.extend(out.into_iter().map(|p| p.peer_id));
        }
        assert!(
            seen.len() > 80,
            "only {} distinct peers handed out",
            seen.len()
        );
        assert!(
            store
                .handout(now, &info_hash, &peer(9, true, false), 20, &mut rng)
                .is_empty()
        );
    }

    #[test]
    fn a_peer_announcing_another_peers_address_replaces_it() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let now = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        let at = |n: u8, addr: &str| {
            PeerInfo::new(
                PeerId::from_bytes([n; 20]),
                addr.parse().unwrap(),
                false,
                false,
            )
        };
        store.announce(now, info_hash, at(1, "127.0.0.1:7000"));
        store.announce(now, info_hash, at(2, "127.0.0.2:7000"));
        // Peer 1 restarted as peer 3 on the same address.
        store.announce(now, info_hash, at(3, "127.0.0.1:7000"));
        let ids = |store: &MemoryPeerStore| -> Vec<u8> {
            store
                .peers(now, &info_hash)
                .iter()
                .map(|p| p.peer_id.as_bytes()[0])
                .collect()
        };
        assert_eq!(ids(&store), vec![2, 3]);
        // Peer 2 moves; whoever takes its old address next replaces nobody.
        store.announce(now, info_hash, at(2, "127.0.0.9:7000"));
        store.announce(now, info_hash, at(4, "127.0.0.2:7000"));
        assert_eq!(ids(&store), vec![2, 3, 4]);
        store.remove(&info_hash, &PeerId::from_bytes([4; 20]));
        store.announce(now, info_hash, at(5, "127.0.0.2:7000"));
        assert_eq!(ids(&store), vec![2, 3, 5]);
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
