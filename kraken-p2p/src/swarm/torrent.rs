//! The swarm's view of one torrent, and piece selection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, MetaInfo, PeerInfo};
use rand::RngExt;
use rand::rngs::StdRng;

use super::conn::{Backoff, PeerKey};
use super::{ConnId, SwarmConfig, TorrentStats};

/// In endgame, how many neighbours may be asked for the same piece at once. Asking every
/// neighbour that has it (twenty, say) mostly multiplies the bytes sent for nothing; a second
/// copy already covers a slow or stalled first sender.
const ENDGAME_COPIES: usize = 2;

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Phase {
    /// Pieces are missing.
    Leeching,
    /// Every piece is written; the driver is checking the whole blob.
    Verifying,
    /// Complete and verified.
    Seeding,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    pub(super) conn: ConnId,
    pub(super) deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Torrent {
    pub(super) meta: Arc<MetaInfo>,
    pub(super) namespace: String,
    pub(super) have: Bitfield,
    pub(super) phase: Phase,
    /// Every connection of the torrent, in any state.
    pub(super) conns: Vec<ConnId>,
    /// How many active neighbours have each piece.
    pub(super) availability: Vec<u16>,
    /// Outstanding requests by piece; more than one only in endgame.
    requests: BTreeMap<u32, Vec<Request>>,
    /// Pieces received and being verified and written by the driver, with their senders.
    writing: BTreeMap<u32, Option<PeerKey>>,
    /// Pieces in `requests` or `writing`: one bit test instead of two map lookups for each
    /// piece [`pick`](Self::pick) considers. Kept in step by [`sync_in_flight`](Self::sync_in_flight).
    in_flight: Bitfield,
    /// Pieces held or in flight: outside endgame, [`pick`](Self::pick) scans only what a
    /// peer has beyond these, skipping the requested pieces word by word instead of one by
    /// one (the picker's scan stood out in the simulator's profile).
    taken: Bitfield,
    /// How many times we have started uploading each piece (seeding only).
    pub(super) uploads: Vec<u32>,
    /// Peers from the last announce not yet dialed.
    pub(super) candidates: Vec<PeerInfo>,
    pub(super) next_announce: Instant,
    /// When the torrent last considered announcing (whether or not it did).
    pub(super) last_announce: Option<Instant>,
    /// Announces sent since the torrent was added.
    pub(super) announces: u32,
    pub(super) announce_in_flight: bool,
    pub(super) tracker_interval: Option<Duration>,
    /// Last piece written (leeching) or sent (seeding).
    pub(super) last_progress: Instant,
    pub(super) stats: TorrentStats,
    /// Seeded on purpose ([`Swarm::pin`](super::Swarm::pin)): stays, announcing, when idle.
    pub(super) pinned: bool,
}

impl Torrent {
    pub(super) fn new(
        meta: Arc<MetaInfo>,
        have: Bitfield,
        namespace: String,
        now: Instant,
    ) -> Self {
        let pieces = meta.piece_count() as usize;
        let taken = have.clone();
        Self {
            phase: if have.is_full() {
                Phase::Seeding
            } else {
                Phase::Leeching
            },
            meta,
            namespace,
            have,
            conns: Vec::new(),
            availability: vec![0; pieces],
            requests: BTreeMap::new(),
            writing: BTreeMap::new(),
            in_flight: Bitfield::new(pieces as u32),
            taken,
            uploads: vec![0; pieces],
            candidates: Vec::new(),
            next_announce: now,
            last_announce: None,
            announces: 0,
            announce_in_flight: false,
            tracker_interval: None,
            last_progress: now,
            stats: TorrentStats::default(),
            pinned: false,
        }
    }

    pub(super) fn announce_interval(&self, config: &SwarmConfig) -> Duration {
        match self.phase {
            Phase::Seeding => config.seeder_announce_interval,
            _ => self.tracker_interval.unwrap_or(config.announce_interval),
        }
    }

    /// When the torrent should next announce: at its interval, or sooner while it is
    /// downloading and starving (nothing requested: only new neighbours can help) or
    /// under-connected (a free connection slot and no candidate left to dial). Hosts that
    /// start together announce together, and the first ones learn of few peers: waiting a
    /// whole interval for more left them well below their connection limit for seconds,
    /// which slowed simulated downloads; a quick first retry, doubling after, did better.
    pub(super) fn announce_due(&self, config: &SwarmConfig) -> Option<Instant> {
        if self.announce_in_flight {
            return None;
        }
        let leeching = self.phase == Phase::Leeching;
        let starving = leeching && self.nothing_in_flight();
        let under_connected = leeching
            && self.candidates.is_empty()
            && self.conns.len() < config.max_conns_per_torrent;
        let sooner = if under_connected {
            // Doubling from `quick_announce_interval`: a fast start, then no more tracker load
            // than a starving download's.
            let doublings = self.announces.saturating_sub(1).min(16);
            config
                .quick_announce_interval
                .saturating_mul(1 << doublings)
                .min(config.starving_announce_interval)
        } else {
            config.starving_announce_interval
        };
        match self.last_announce {
            Some(last) if starving || under_connected => {
                Some(self.next_announce.min(last + sooner))
            }
            _ => Some(self.next_announce),
        }
    }

    pub(super) fn add_availability(&mut self, peer: &Bitfield) {
        for index in peer.iter_ones() {
            let count = &mut self.availability[index as usize];
            *count = count.saturating_add(1);
        }
    }

    pub(super) fn remove_availability(&mut self, peer: &Bitfield) {
        for index in peer.iter_ones() {
            let count = &mut self.availability[index as usize];
            *count = count.saturating_sub(1);
        }
    }

    pub(super) fn add_request(&mut self, index: u32, conn: ConnId, deadline: Instant) {
        self.requests
            .entry(index)
            .or_default()
            .push(Request { conn, deadline });
        self.sync_in_flight(index);
    }

    pub(super) fn forget_request(&mut self, index: u32, conn: ConnId) {
        if let Some(requests) = self.requests.get_mut(&index) {
            requests.retain(|r| r.conn != conn);
            if requests.is_empty() {
                self.requests.remove(&index);
            }
        }
        self.sync_in_flight(index);
    }

    /// Every outstanding request for `index`, removed.
    pub(super) fn take_requests(&mut self, index: u32) -> Vec<Request> {
        let taken = self.requests.remove(&index).unwrap_or_default();
        self.sync_in_flight(index);
        taken
    }

    /// Removes the requests past their deadline, reporting each as `(index, conn)`.
    pub(super) fn expire_requests(&mut self, now: Instant, expired: &mut Vec<(u32, ConnId)>) {
        let mut emptied = Vec::new();
        for (&index, requests) in &mut self.requests {
            requests.retain(|r| {
                let live = r.deadline > now;
                if !live {
                    expired.push((index, r.conn));
                }
                live
            });
            if requests.is_empty() {
                emptied.push(index);
            }
        }
        for index in emptied {
            self.requests.remove(&index);
            self.sync_in_flight(index);
        }
    }

    /// Records that `index` arrived from `sender` and is being verified and written.
    pub(super) fn start_writing(&mut self, index: u32, sender: Option<PeerKey>) {
        self.writing.insert(index, sender);
        self.sync_in_flight(index);
    }

    /// `index` is written (or failed); returns its sender.
    pub(super) fn finish_writing(&mut self, index: u32) -> Option<PeerKey> {
        let sender = self.writing.remove(&index).flatten();
        self.sync_in_flight(index);
        sender
    }

    /// Whether `index` is being verified and written.
    pub(super) fn is_writing(&self, index: u32) -> bool {
        self.writing.contains_key(&index)
    }

    /// Whether no piece is requested or being written.
    pub(super) fn nothing_in_flight(&self) -> bool {
        self.requests.is_empty() && self.writing.is_empty()
    }

    /// Pieces being verified and written.
    pub(super) fn writing_count(&self) -> usize {
        self.writing.len()
    }

    /// The deadline of every outstanding request.
    pub(super) fn request_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.requests.values().flatten().map(|r| r.deadline)
    }

    /// Records that `index` is held; returns whether it was new.
    pub(super) fn mark_have(&mut self, index: u32) -> bool {
        let new = self.have.set(index).unwrap_or(false);
        self.sync_in_flight(index);
        new
    }

    fn sync_in_flight(&mut self, index: u32) {
        let busy = self.requests.contains_key(&index) || self.writing.contains_key(&index);
        let _ = if busy {
            self.in_flight.set(index)
        } else {
            self.in_flight.unset(index)
        };
        let _ = if busy || self.have.get(index) {
            self.taken.set(index)
        } else {
            self.taken.unset(index)
        };
    }

    /// Whether a complete torrent should refuse to upload `index` to a peer lacking
    /// `peer_has`' pieces, because another piece that peer lacks has been uploaded fewer
    /// times. Spreading a seeder's copies evenly gets every piece into the swarm before any
    /// is sent twice, which is what bounds an origin's egress.
    pub(super) fn should_spread(&self, index: u32, peer_has: &Bitfield) -> bool {
        let sent = self.uploads[index as usize];
        sent > 0
            && peer_has
                .iter_zeros()
                .any(|other| self.uploads[other as usize] < sent)
    }

    /// Pieces neither held nor being written.
    pub(super) fn missing(&self) -> u32 {
        self.have.count_zeros() - self.writing.len() as u32
    }

    /// The first piece neither held nor asked for, if `window` pieces or more after it are
    /// held already (every piece before it is held or in flight).
    fn straggler(&self, window: usize) -> Option<u32> {
        let first = self.taken.iter_zeros().next()?;
        let past = self.have.count_ones().saturating_sub(first) as usize;
        (past >= window).then_some(first)
    }

    /// A piece `peer_has` that we still need and have not asked this connection for: one of
    /// the first `window` (by index) of the rarest such pieces, at random, unless the first
    /// piece nobody was asked for is one of them and a `window` behind (`straggler`).
    /// Outside endgame, pieces already requested from anyone are skipped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pick(
        &self,
        peer_has: &Bitfield,
        requested_here: &BTreeMap<u32, Instant>,
        avoid: &Backoff,
        now: Instant,
        conn: ConnId,
        endgame: bool,
        window: usize,
        rng: &mut StdRng,
    ) -> Option<u32> {
        let window = window.max(1);
        let mut rarest = u16::MAX;
        let mut candidates: Vec<u32> = Vec::with_capacity(window);
        // Endgame asks again for pieces in flight; it runs with a few pieces missing, so its
        // scan is short anyway.
        let skip = if endgame { &self.have } else { &self.taken };
        for index in peer_has.iter_difference(skip) {
            // Rarity first: it is one array read, and a piece that cannot make the candidate
            // list needs none of the lookups below (most pieces, once a rare one is found).
            // Whether a piece may be asked for does not depend on the others, so the result
            // is the same as checking everything.
            let rarity = self.availability[index as usize];
            if rarity > rarest || (rarity == rarest && candidates.len() >= window) {
                continue;
            }
            if requested_here.contains_key(&index) || avoid.contains(index, now) {
                continue;
            }
            debug_assert_eq!(
                self.in_flight.get(index),
                self.requests.contains_key(&index) || self.writing.contains_key(&index),
                "in_flight out of step for piece {index}"
            );
            if self.in_flight.get(index) {
                if !endgame || self.writing.contains_key(&index) {
                    continue;
                }
                let elsewhere = self
                    .requests
                    .get(&index)
                    .map_or(0, |r| r.iter().filter(|r| r.conn != conn).count());
                if elsewhere >= ENDGAME_COPIES {
                    continue;
                }
            }
            if rarity < rarest {
                rarest = rarity;
                candidates.clear();
            }
            candidates.push(index);
        }
        // Among the rarest, a piece the download has run a window past goes first: picked
        // at random, one piece in a blob of many would wait many windows' worth of picks,
        // and a reader in order (an agent's client streaming the blob) with it. Being the
        // first piece nobody was asked for, it leads the candidates if it is one of them.
        if let Some(&first) = candidates.first()
            && !endgame
            && self.straggler(window) == Some(first)
        {
            return Some(first);
        }
        match candidates.len() {
            0 => None,
            n => Some(candidates[rng.random_range(0..n)]),
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Torrent {
    /// Every outstanding request as (piece, connection).
    pub(super) fn request_pairs(&self) -> impl Iterator<Item = (u32, ConnId)> + '_ {
        self.requests
            .iter()
            .flat_map(|(&i, rs)| rs.iter().map(move |r| (i, r.conn)))
    }

    /// Invariants 1 and 9 of `STATE.md`, which only the torrent's own maps decide.
    pub(super) fn check(&self, endgame_threshold: usize) -> Result<(), String> {
        let endgame = self.missing() <= endgame_threshold as u32;
        for i in 0..self.have.len() {
            let (have, writing) = (self.have.get(i), self.writing.contains_key(&i));
            let requested = self.requests.get(&i).map_or(0, Vec::len);
            if have && writing {
                return Err(format!("piece {i} is both held and being written"));
            }
            if have && requested > 0 {
                return Err(format!("piece {i} is held and still requested"));
            }
            if !endgame && requested > 1 {
                return Err(format!(
                    "piece {i} requested {requested} times outside endgame"
                ));
            }
            if self.in_flight.get(i) != (requested > 0 || writing) {
                return Err(format!("piece {i}: in_flight out of step"));
            }
        }
        Ok(())
    }
}
