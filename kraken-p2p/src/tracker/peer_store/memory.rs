//! The in-memory peer store: one tracker's own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kraken_core::{InfoHash, PeerId, PeerInfo};
use rand::Rng;

use super::{Announcer, CapReached, DEFAULT_PEER_TTL, PeerStoreLimits, class_of};

/// An entry's key: who announced it and the peer id it claims.
type Key = (IpAddr, PeerId);

#[derive(Debug)]
struct Entry {
    peer: PeerInfo,
    announcer: IpAddr,
    expires: Instant,
}

impl Entry {
    fn key(&self) -> Key {
        (self.announcer, self.peer.peer_id)
    }
}

/// The peers of one torrent, by handout class, each class indexable for sampling.
#[derive(Debug, Default)]
struct TorrentPeers {
    classes: [Vec<Entry>; 3],
    /// Where each entry is: its class and position.
    index: HashMap<Key, (usize, usize)>,
    /// Which entry names each address.
    by_addr: HashMap<SocketAddr, Key>,
}

impl TorrentPeers {
    fn get(&self, key: &Key) -> Option<&Entry> {
        let &(class, position) = self.index.get(key)?;
        self.classes[class].get(position)
    }

    /// Records `entry`, replacing the entry of the same key. Returns the entry it displaced
    /// at the same address, if any: a peer of the same announcer that named that address
    /// before (an earlier run of this host, restarted with a new id). Only one process
    /// listens at an address, and handing out the gone one would send peers to nobody.
    fn insert(&mut self, entry: Entry) -> Option<Key> {
        let key = entry.key();
        let addr = entry.peer.addr();
        let mut displaced = None;
        if let Some(&previous) = self.by_addr.get(&addr)
            && previous != key
            && previous.0 == key.0
        {
            self.remove(&previous);
            displaced = Some(previous);
        }
        if let Some(old) = self.get(&key) {
            // The same peer at a new address no longer holds the old one.
            let old_addr = old.peer.addr();
            if self.by_addr.get(&old_addr) == Some(&key) {
                self.by_addr.remove(&old_addr);
            }
        }
        // A foreign entry at the same address (possible only where declared addresses are
        // trusted) keeps the address index; both stay listed.
        self.by_addr.entry(addr).or_insert(key);
        let class = class_of(&entry.peer);
        match self.index.get(&key).copied() {
            Some((old, position)) if old == class => self.classes[class][position] = entry,
            Some((old, position)) => {
                self.remove_at(old, position);
                self.push(class, entry);
            }
            None => self.push(class, entry),
        }
        displaced
    }

    fn push(&mut self, class: usize, entry: Entry) {
        self.index
            .insert(entry.key(), (class, self.classes[class].len()));
        self.classes[class].push(entry);
    }

    fn remove(&mut self, key: &Key) -> bool {
        match self.index.get(key).copied() {
            Some((class, position)) => {
                self.remove_at(class, position);
                true
            }
            None => false,
        }
    }

    fn remove_at(&mut self, class: usize, position: usize) {
        let removed = self.classes[class].swap_remove(position);
        let key = removed.key();
        self.index.remove(&key);
        if self.by_addr.get(&removed.peer.addr()) == Some(&key) {
            self.by_addr.remove(&removed.peer.addr());
        }
        if let Some(moved) = self.classes[class].get(position) {
            self.index.insert(moved.key(), (class, position));
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &PeerInfo> + '_ {
        self.classes
            .iter()
            .flatten()
            .filter(move |entry| entry.expires > now)
            .map(|entry| &entry.peer)
    }
}

/// An in-memory peer store: peers per torrent, each forgotten `ttl` after its last announce.
///
/// Time is a parameter, so the same store serves the tracker service, the test harness and
/// the simulator. An announce and a [`handout`](Self::handout) cost time in the size of the
/// handout, not of the swarm, which is what lets one tracker answer 15,000 hosts announcing
/// every few seconds.
#[derive(Debug)]
pub struct MemoryPeerStore {
    ttl: Duration,
    limits: PeerStoreLimits,
    torrents: HashMap<InfoHash, TorrentPeers>,
    /// Entries in all torrents.
    entries: usize,
    /// Entries per announcer address.
    per_announcer: HashMap<IpAddr, usize>,
    /// One item per entry, oldest first: when it was due to expire as last queued. An entry
    /// refreshed since is queued again when its item comes up.
    expiry: VecDeque<(Instant, InfoHash, Key)>,
}

impl MemoryPeerStore {
    /// A store that forgets peers `ttl` after their last announce, with the default limits.
    pub fn new(ttl: Duration) -> Self {
        Self::with_limits(ttl, PeerStoreLimits::default())
    }

    /// A store that forgets peers `ttl` after their last announce and holds at most `limits`.
    pub fn with_limits(ttl: Duration, limits: PeerStoreLimits) -> Self {
        Self {
            ttl,
            limits,
            torrents: HashMap::new(),
            entries: 0,
            per_announcer: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Records (or refreshes) an announce of `peer`, believed as it is: the announcer is the
    /// address it declares, trusted. For the simulator and tests; the tracker service calls
    /// [`announce_from`](Self::announce_from) with what it saw.
    pub fn announce(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        peer: PeerInfo,
    ) -> Result<(), CapReached> {
        let announcer = Announcer {
            ip: peer.ip,
            trusted: true,
        };
        self.announce_from(now, info_hash, announcer, peer)
    }

    /// Records (or refreshes) an announce of `peer` that came from `announcer`. The entry is
    /// the announcer's own: a later announce from another address never replaces it.
    /// Refreshing an entry always succeeds; a new one is refused when a cap is reached.
    pub fn announce_from(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        announcer: Announcer,
        peer: PeerInfo,
    ) -> Result<(), CapReached> {
        self.expire(now);
        let key = (announcer.ip, peer.peer_id);
        let exists = self
            .torrents
            .get(&info_hash)
            .is_some_and(|t| t.index.contains_key(&key));
        if !exists {
            self.admit(&info_hash, announcer)?;
        }
        let expires = now + self.ttl;
        let torrent = self.torrents.entry(info_hash).or_default();
        let displaced = torrent.insert(Entry {
            peer,
            announcer: announcer.ip,
            expires,
        });
        if !exists {
            self.entries += 1;
            *self.per_announcer.entry(announcer.ip).or_default() += 1;
            self.expiry.push_back((expires, info_hash, key));
            self.compact_if_due();
        }
        if displaced.is_some() {
            self.forget_one(announcer.ip);
        }
        Ok(())
    }

    /// Whether a new entry of `announcer` in `info_hash` fits under the caps.
    fn admit(&self, info_hash: &InfoHash, announcer: Announcer) -> Result<(), CapReached> {
        let limits = &self.limits;
        match self.torrents.get(info_hash) {
            None if self.torrents.len() >= limits.max_torrents => {
                return Err(CapReached::Torrents);
            }
            Some(t) if t.len() >= limits.max_peers_per_torrent => {
                return Err(CapReached::TorrentPeers);
            }
            _ => {}
        }
        if self.entries >= limits.max_peers {
            return Err(CapReached::Peers);
        }
        let held = self.per_announcer.get(&announcer.ip).copied().unwrap_or(0);
        if !announcer.trusted && held >= limits.max_entries_per_announcer {
            return Err(CapReached::Announcer);
        }
        Ok(())
    }

    /// Counts one entry of `announcer` gone.
    fn forget_one(&mut self, announcer: IpAddr) {
        self.entries -= 1;
        if let Some(held) = self.per_announcer.get_mut(&announcer) {
            *held -= 1;
            if *held == 0 {
                self.per_announcer.remove(&announcer);
            }
        }
    }

    /// Removes one entry and its torrent if that was the last.
    fn remove_entry(&mut self, info_hash: &InfoHash, key: &Key) {
        let Some(torrent) = self.torrents.get_mut(info_hash) else {
            return;
        };
        if torrent.remove(key) {
            let empty = torrent.len() == 0;
            self.forget_one(key.0);
            if empty {
                self.torrents.remove(info_hash);
            }
        }
    }

    /// Drops the entries whose time is up, oldest first; each step is O(1).
    fn expire(&mut self, now: Instant) {
        while let Some(&(due, info_hash, key)) = self.expiry.front() {
            if due > now {
                break;
            }
            self.expiry.pop_front();
            let current = self
                .torrents
                .get(&info_hash)
                .and_then(|t| t.get(&key))
                .map(|entry| entry.expires);
            match current {
                Some(expires) if expires > now => {
                    // Refreshed since it was queued: queue it again for its new time.
                    self.expiry.push_back((expires, info_hash, key));
                }
                Some(_) => self.remove_entry(&info_hash, &key),
                None => {}
            }
        }
    }

    /// Rebuilds the expiry queue once it holds many items of entries replaced or removed
    /// since (each entry has one item; a removed one's stays until it comes up), so churn
    /// cannot grow it without bound. Amortised over the pushes since the last rebuild.
    fn compact_if_due(&mut self) {
        if self.expiry.len() <= 2 * self.entries + 1024 {
            return;
        }
        let mut items: Vec<(Instant, InfoHash, Key)> = self
            .torrents
            .iter()
            .flat_map(|(info_hash, t)| {
                t.classes
                    .iter()
                    .flatten()
                    .map(|entry| (entry.expires, *info_hash, entry.key()))
            })
            .collect();
        items.sort_unstable_by_key(|item| item.0);
        self.expiry = items.into();
    }

    /// Forgets a peer id in a torrent, whoever announced it (for example a host that left).
    pub fn remove(&mut self, info_hash: &InfoHash, peer: &PeerId) {
        let keys: Vec<Key> = self
            .torrents
            .get(info_hash)
            .map(|t| t.index.keys().filter(|k| k.1 == *peer).copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_entry(info_hash, &key);
        }
    }

    /// The live peers of a torrent, in peer id order. Lists the whole torrent: for tests
    /// and tools, not for answering announces.
    pub fn peers(&self, now: Instant, info_hash: &InfoHash) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .torrents
            .get(info_hash)
            .map_or_else(Vec::new, |t| t.live(now).cloned().collect());
        peers.sort_by_key(|p| p.peer_id);
        peers
    }

    /// Chooses the peers to hand `announcer`: up to `limit`, never the announcer itself,
    /// complete peers first, then origins, then leechers, each class a uniform random sample.
    /// A complete announcer gets none: it does not dial. Costs time in `limit`, not in the
    /// size of the torrent.
    pub fn handout<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        info_hash: &InfoHash,
        announcer: &PeerInfo,
        limit: usize,
        rng: &mut R,
    ) -> Vec<PeerInfo> {
        self.expire(now);
        let Some(torrent) = self.torrents.get(info_hash) else {
            return Vec::new();
        };
        if announcer.complete {
            return Vec::new();
        }
        let usable = |entry: &Entry| entry.expires > now && entry.peer.peer_id != announcer.peer_id;
        let mut out = Vec::with_capacity(limit);
        for class in &torrent.classes {
            let want = limit - out.len();
            if want == 0 {
                break;
            }
            out.extend(sample(class, want, rng, usable));
        }
        out
    }

    /// Number of torrents with at least one peer.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    /// Number of entries (peers in torrents) held, expired ones not yet dropped included.
    pub fn entry_count(&self) -> usize {
        self.entries
    }
}

/// Up to `want` usable entries of `class`, a uniform random sample. A small class is listed
/// and shuffled; a large one is sampled by index, a few rounds at most, so that entries not
/// usable (the announcer's own, or expired ones not yet dropped) cost no full scan.
fn sample<R: Rng + ?Sized>(
    class: &[Entry],
    want: usize,
    rng: &mut R,
    usable: impl Fn(&Entry) -> bool,
) -> Vec<PeerInfo> {
    use rand::seq::SliceRandom;
    if class.len() <= 2 * want + 2 {
        let mut all: Vec<PeerInfo> = class
            .iter()
            .filter(|entry| usable(entry))
            .map(|entry| entry.peer.clone())
            .collect();
        all.shuffle(rng);
        all.truncate(want);
        return all;
    }
    let mut picked = HashSet::with_capacity(want + 1);
    let mut out = Vec::with_capacity(want);
    for _ in 0..8 {
        let draw = (2 * (want - out.len()) + 1).min(class.len());
        for i in rand::seq::index::sample(rng, class.len(), draw) {
            if out.len() < want && picked.insert(i) && usable(&class[i]) {
                out.push(class[i].peer.clone());
            }
        }
        if out.len() == want {
            break;
        }
    }
    out
}

impl Default for MemoryPeerStore {
    fn default() -> Self {
        Self::new(DEFAULT_PEER_TTL)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::{COMPLETE, ORIGIN};
    use super::*;

    fn peer(n: u8, complete: bool, origin: bool) -> PeerInfo {
        PeerInfo::new(
            PeerId::from_bytes([n; 20]),
            format!("127.0.0.{n}:7000").parse().unwrap(),
            origin,
            complete,
        )
    }

    fn ids(store: &MemoryPeerStore, now: Instant, info_hash: &InfoHash) -> Vec<u8> {
        store
            .peers(now, info_hash)
            .iter()
            .map(|p| p.peer_id.as_bytes()[0])
            .collect()
    }

    #[test]
    fn store_handout_samples_by_class_and_skips_stale_peers_and_the_announcer() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        for n in 1..=200u8 {
            store
                .announce(t0, info_hash, peer(n, n % 20 == 0, n % 50 == 0))
                .unwrap();
        }
        // Peer 3 completes: it moves to the front class.
        store.announce(t0, info_hash, peer(3, true, false)).unwrap();
        // Peers 100..=200 go stale.
        let later = t0 + Duration::from_secs(8);
        for n in 1..100u8 {
            store
                .announce(
                    later,
                    info_hash,
                    peer(n, n % 20 == 0 || n == 3, n % 50 == 0),
                )
                .unwrap();
        }
        let now = t0 + Duration::from_secs(12);
        let me = peer(7, false, false);
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = HashSet::new();
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
    fn a_peer_of_the_same_host_announcing_its_address_replaces_the_old_one() {
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
        store
            .announce(now, info_hash, at(1, "127.0.0.1:7000"))
            .unwrap();
        store
            .announce(now, info_hash, at(2, "127.0.0.2:7000"))
            .unwrap();
        // Peer 1 restarted as peer 3 on the same address.
        store
            .announce(now, info_hash, at(3, "127.0.0.1:7000"))
            .unwrap();
        assert_eq!(ids(&store, now, &info_hash), vec![2, 3]);
        // Peer 2 moves to another port; whoever takes its old address next replaces nobody.
        store
            .announce(now, info_hash, at(2, "127.0.0.2:7001"))
            .unwrap();
        store
            .announce(now, info_hash, at(4, "127.0.0.2:7000"))
            .unwrap();
        assert_eq!(ids(&store, now, &info_hash), vec![2, 3, 4]);
        store.remove(&info_hash, &PeerId::from_bytes([4; 20]));
        store
            .announce(now, info_hash, at(5, "127.0.0.2:7000"))
            .unwrap();
        assert_eq!(ids(&store, now, &info_hash), vec![2, 3, 5]);
        assert_eq!(store.entry_count(), 3);
    }

    #[test]
    fn another_host_cannot_evict_or_overwrite_a_peer() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let now = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        let victim = peer(1, true, false);
        let victim_host = Announcer::at(victim.ip);
        store
            .announce_from(now, info_hash, victim_host, victim.clone())
            .unwrap();
        // Another host claims the victim's id, then its address (as a trusted declared
        // address could): the victim's entry stays as it was.
        let attacker = Announcer::at("127.0.0.66".parse().unwrap());
        let mut forged = peer(66, false, false);
        forged.peer_id = victim.peer_id;
        store
            .announce_from(now, info_hash, attacker, forged)
            .unwrap();
        let mut squatter = peer(67, false, false);
        squatter.ip = victim.ip;
        store
            .announce_from(now, info_hash, attacker, squatter)
            .unwrap();
        let peers = store.peers(now, &info_hash);
        assert_eq!(peers.len(), 3, "{peers:?}");
        assert!(peers.contains(&victim), "{peers:?}");
    }

    #[test]
    fn caps_bound_torrents_peers_and_each_announcer() {
        let limits = PeerStoreLimits {
            max_torrents: 3,
            max_peers: 5,
            max_peers_per_torrent: 2,
            max_entries_per_announcer: 2,
        };
        let mut store = MemoryPeerStore::with_limits(Duration::from_secs(10), limits);
        let now = Instant::now();
        let flooder = Announcer::at("127.0.0.9".parse().unwrap());
        let torrent = |n: u8| InfoHash::from_bytes([n; 32]);
        store
            .announce_from(now, torrent(1), flooder, peer(9, false, false))
            .unwrap();
        store
            .announce_from(now, torrent(2), flooder, peer(9, false, false))
            .unwrap();
        assert_eq!(
            store.announce_from(now, torrent(3), flooder, peer(9, false, false)),
            Err(CapReached::Announcer)
        );
        // Refreshing what it holds still works.
        store
            .announce_from(now, torrent(1), flooder, peer(9, true, false))
            .unwrap();
        // A trusted announcer is exempt from the per-announcer cap, not from the others.
        let origin = Announcer {
            ip: "127.0.0.8".parse().unwrap(),
            trusted: true,
        };
        store
            .announce_from(now, torrent(1), origin, peer(8, true, true))
            .unwrap();
        assert_eq!(
            store.announce_from(now, torrent(1), origin, peer(7, false, false)),
            Err(CapReached::TorrentPeers)
        );
        store
            .announce_from(now, torrent(3), origin, peer(8, true, true))
            .unwrap();
        assert_eq!(
            store.announce_from(now, torrent(4), origin, peer(8, true, true)),
            Err(CapReached::Torrents)
        );
        store
            .announce_from(now, torrent(2), origin, peer(8, true, true))
            .unwrap();
        assert_eq!(store.entry_count(), 5);
        assert_eq!(
            store.announce_from(now, torrent(3), origin, peer(6, true, true)),
            Err(CapReached::Peers)
        );
        // Once they expire, room is made without a sweep.
        let later = now + Duration::from_secs(11);
        store
            .announce_from(later, torrent(5), flooder, peer(9, false, false))
            .unwrap();
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.torrent_count(), 1);
    }

    #[test]
    fn churn_keeps_the_expiry_queue_bounded() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let now = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        // One host restarting over and over on one address: one entry at a time.
        for n in 0..20_000u32 {
            let mut p = peer(1, false, false);
            p.peer_id = PeerId::from_bytes([(n % 251) as u8; 20]);
            store.announce(now, info_hash, p).unwrap();
        }
        assert_eq!(store.entry_count(), 1);
        assert!(
            store.expiry.len() <= 2 * store.entry_count() + 1025,
            "{}",
            store.expiry.len()
        );
    }

    #[test]
    fn store_expires_peers() {
        let mut store = MemoryPeerStore::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let info_hash = InfoHash::from_bytes([1; 32]);
        store
            .announce(t0, info_hash, peer(1, false, false))
            .unwrap();
        store
            .announce(t0 + Duration::from_secs(5), info_hash, peer(2, true, false))
            .unwrap();
        assert_eq!(
            store.peers(t0 + Duration::from_secs(9), &info_hash).len(),
            2
        );
        assert_eq!(
            store.peers(t0 + Duration::from_secs(11), &info_hash).len(),
            1
        );
        store
            .announce(
                t0 + Duration::from_secs(12),
                info_hash,
                peer(2, true, false),
            )
            .unwrap();
        // Peer 1 is gone for good: dropped by the announce, not just hidden.
        assert_eq!(store.entry_count(), 1);
        store.remove(&info_hash, &PeerId::from_bytes([2; 20]));
        assert_eq!(store.torrent_count(), 0);
        assert!(store.peers(t0, &info_hash).is_empty());
    }
}
