//! The swarm's view of one torrent, and piece selection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, MetaInfo, PeerInfo};
use rand::RngExt;
use rand::rngs::StdRng;

use super::{ConnId, SwarmConfig, TorrentStats};

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
    pub(super) requests: BTreeMap<u32, Vec<Request>>,
    /// Pieces received and being verified and written by the driver.
    pub(super) writing: BTreeSet<u32>,
    /// Peers from the last announce not yet dialed.
    pub(super) candidates: Vec<PeerInfo>,
    pub(super) next_announce: Instant,
    pub(super) announce_in_flight: bool,
    pub(super) tracker_interval: Option<Duration>,
    /// Last piece written (leeching) or sent (seeding).
    pub(super) last_progress: Instant,
    pub(super) stats: TorrentStats,
}

impl Torrent {
    pub(super) fn new(
        meta: Arc<MetaInfo>,
        have: Bitfield,
        namespace: String,
        now: Instant,
    ) -> Self {
        let pieces = meta.piece_count() as usize;
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
            writing: BTreeSet::new(),
            candidates: Vec::new(),
            next_announce: now,
            announce_in_flight: false,
            tracker_interval: None,
            last_progress: now,
            stats: TorrentStats::default(),
        }
    }

    pub(super) fn announce_interval(&self, config: &SwarmConfig) -> Duration {
        match self.phase {
            Phase::Seeding => config.seeder_announce_interval,
            _ => self.tracker_interval.unwrap_or(config.announce_interval),
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
    }

    pub(super) fn forget_request(&mut self, index: u32, conn: ConnId) {
        if let Some(requests) = self.requests.get_mut(&index) {
            requests.retain(|r| r.conn != conn);
            if requests.is_empty() {
                self.requests.remove(&index);
            }
        }
    }

    /// Pieces neither held nor being written.
    pub(super) fn missing(&self) -> u32 {
        self.have.count_zeros() - self.writing.len() as u32
    }

    /// The rarest piece `peer_has` that we still need and have not asked this connection
    /// for, with ties broken at random. Outside endgame, pieces already requested from
    /// anyone are skipped.
    pub(super) fn pick(
        &self,
        peer_has: &Bitfield,
        requested_here: &BTreeMap<u32, Instant>,
        avoid: &BTreeSet<u32>,
        conn: ConnId,
        endgame: bool,
        rng: &mut StdRng,
    ) -> Option<u32> {
        let mut best: Option<(u16, u32)> = None;
        let mut ties = 0u32;
        for index in peer_has.iter_ones() {
            if self.have.get(index)
                || self.writing.contains(&index)
                || requested_here.contains_key(&index)
                || avoid.contains(&index)
            {
                continue;
            }
            let requested_elsewhere = self
                .requests
                .get(&index)
                .is_some_and(|r| r.iter().any(|r| r.conn != conn));
            if requested_elsewhere && !endgame {
                continue;
            }
            let rarity = self.availability[index as usize];
            match best {
                Some((r, _)) if rarity > r => {}
                Some((r, _)) if rarity == r => {
                    // Reservoir sampling: each tied piece ends up chosen with equal odds.
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = Some((rarity, index));
                    }
                }
                _ => {
                    best = Some((rarity, index));
                    ties = 1;
                }
            }
        }
        best.map(|(_, index)| index)
    }
}
