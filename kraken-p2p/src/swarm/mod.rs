//! The sans-IO swarm: every scheduling decision of one node, for all its torrents.
//!
//! A [`Swarm`] holds torrent, connection and piece state and decides which peers to dial or
//! accept, which piece to request from whom, when to time a request out, whom to blacklist,
//! when to announce and when to let a connection or a torrent go. It performs no I/O, spawns
//! nothing, never reads a clock and draws randomness only from its own seeded RNG: the same
//! code runs in the tokio node, in the deterministic test harness and in the simulator.
//!
//! # Driving it
//!
//! Inputs are `handle_*` calls, each given the current time. Outputs are drained after every
//! input, in this order:
//!
//! 1. [`poll_action`](Swarm::poll_action) until `None`: dial, send, serve a piece, close,
//!    announce, look up a torrent, verify a finished blob;
//! 2. [`poll_event`](Swarm::poll_event) until `None`: progress, completion, failure;
//! 3. [`poll_timeout`](Swarm::poll_timeout): when to call [`handle_timeout`](Swarm::handle_timeout)
//!    next.
//!
//! The invariants the state keeps and its transitions are written down in `STATE.md` beside
//! this file, which also says which submodule holds which part of the logic.

mod config;
mod conn;
mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod handshake;
#[cfg(any(test, feature = "fuzzing"))]
mod invariants;
mod lifecycle;
mod links;
mod pieces;
mod timers;
mod torrent;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, InfoHash, MetaInfo, PeerId, PeerInfo};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use self::config::SwarmConfig;
use self::conn::{Conn, ConnState, Direction, PeerKey};
pub use self::events::{
    Action, AddTorrentError, ConnClosed, ConnId, Event, FailReason, FinishError, PieceWriteError,
    TorrentStats,
};
use self::timers::lower;
use self::torrent::{Phase, Torrent};
use crate::wire::{ErrorCode, Message};

/// The scheduler of one node. See the [module docs](self).
#[derive(Debug)]
pub struct Swarm {
    config: SwarmConfig,
    local_peer: PeerId,
    /// Where other peers reach this node, if known: a candidate there is this node under an
    /// older peer id (a restart the tracker has not forgotten yet), never worth a dial.
    local_addr: Option<SocketAddr>,
    rng: StdRng,
    torrents: BTreeMap<InfoHash, Torrent>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    /// Peers that failed, per torrent, and until when they stay refused.
    blacklist: HashMap<(PeerKey, InfoHash), Instant>,
    /// Peers blacklisted since the swarm started, for the driver's metrics.
    blacklistings: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// A lower bound on every request deadline, connection idle expiry and refusal backoff.
    /// [`poll_timeout`](Self::poll_timeout) reports it instead of scanning them all (it runs
    /// after every input, and the scan led the simulator's profile); whatever adds an
    /// earlier one lowers it, [`handle_timeout`](Self::handle_timeout) makes it exact. A
    /// stale (too early) floor only costs one extra wake-up.
    timer_floor: Option<Instant>,
    /// A leeching torrent left candidates undialed because the node was at
    /// [`SwarmConfig::max_conns`]: the next freed slot goes to it.
    waiting_for_slot: bool,
}

impl Swarm {
    /// A swarm for the node `local_peer`.
    pub fn new(config: SwarmConfig, local_peer: PeerId) -> Self {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Self {
            config,
            local_peer,
            local_addr: None,
            rng,
            torrents: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            blacklist: HashMap::new(),
            blacklistings: 0,
            waiting_for_slot: false,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            timer_floor: None,
        }
    }

    /// Tells the swarm the address other peers reach it at (the one it announces), so that
    /// it never dials that address: a tracker may still list it there under the peer id of
    /// a previous run.
    pub fn set_local_addr(&mut self, addr: SocketAddr) {
        self.local_addr = Some(addr);
    }

    /// Starts downloading (or seeding, if `have` is full) the torrent of `meta`, and
    /// announces it at once. Adding a torrent that is already there does nothing.
    pub fn add_torrent(
        &mut self,
        now: Instant,
        meta: Arc<MetaInfo>,
        have: Bitfield,
        namespace: String,
    ) -> Result<(), AddTorrentError> {
        if have.len() != meta.piece_count() {
            return Err(AddTorrentError::BitfieldLength {
                expected: meta.piece_count(),
                found: have.len(),
            });
        }
        let info_hash = meta.info_hash();
        if self.torrents.contains_key(&info_hash) {
            return Ok(());
        }
        let complete = have.is_full();
        let torrent = Torrent::new(meta, have, namespace, now);
        tracing::debug!(torrent = %info_hash.fmt_short(), complete, "torrent added");
        self.torrents.insert(info_hash, torrent);
        if complete {
            // Seeders are announced at once too, so the tracker can hand them out.
            self.queue_announce(now, info_hash);
        } else {
            self.queue_announce(now, info_hash);
            self.check_complete(info_hash);
        }
        Ok(())
    }

    /// Keeps a torrent in the swarm when it is complete and idle: it goes on announcing
    /// (at `seeder_announce_interval`) instead of being dropped after
    /// `seeder_idle_timeout`. For blobs seeded on purpose.
    pub fn pin(&mut self, info_hash: &InfoHash) {
        if let Some(torrent) = self.torrents.get_mut(info_hash) {
            torrent.pinned = true;
        }
    }

    /// Restarts a complete torrent's `seeder_idle_timeout` clock, as if a piece had just
    /// moved: for an embedder that keeps a blob in the swarm while it is asked for without
    /// pinning it. Does nothing to a torrent still downloading (its clock is its progress).
    pub fn keep_alive(&mut self, now: Instant, info_hash: &InfoHash) {
        if let Some(torrent) = self.torrents.get_mut(info_hash)
            && torrent.phase == Phase::Seeding
        {
            torrent.last_progress = torrent.last_progress.max(now);
        }
    }

    /// Connections the node holds over all its torrents, in any state (at most
    /// [`SwarmConfig::max_conns`]).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether [`pin`](Self::pin) keeps the torrent.
    pub fn is_pinned(&self, info_hash: &InfoHash) -> bool {
        self.torrents.get(info_hash).is_some_and(|t| t.pinned)
    }

    /// Drops a torrent and closes its connections.
    pub fn remove_torrent(&mut self, info_hash: &InfoHash) {
        if let Some(torrent) = self.torrents.remove(info_hash) {
            for conn in torrent.conns {
                self.conns.remove(&conn);
                self.actions.push_back(Action::Close { conn });
            }
        }
    }

    /// A connection was accepted; returns its name. The peer's handshake comes next, unless
    /// the address already has [`max_inbound_per_ip`](SwarmConfig::max_inbound_per_ip)
    /// connections: then an [`Action::Close`] of it follows at once.
    pub fn handle_incoming(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let id = self.allocate_conn();
        let from_ip = self
            .conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && c.remote.ip() == remote.ip())
            .count();
        if from_ip >= self.config.max_inbound_per_ip {
            tracing::debug!(conn = %id, %remote, "too many connections from one address");
            self.actions.push_back(Action::Close { conn: id });
            return id;
        }
        if self.conns.len() >= self.config.max_conns {
            tracing::debug!(conn = %id, %remote, "at the node's connection cap");
            self.actions.push_back(Action::Close { conn: id });
            return id;
        }
        self.conns
            .insert(id, Conn::new(Direction::Inbound, remote, None, now));
        lower(&mut self.timer_floor, now + self.config.handshake_timeout);
        lower(&mut self.timer_floor, now + self.config.conn_idle_timeout);
        id
    }

    /// The transport authenticated the peer of `conn` as `peer` (its certificate binds that
    /// id): a handshake claiming any other id is refused, and blames no one else. Call it
    /// right after [`handle_incoming`](Self::handle_incoming) or
    /// [`handle_connected`](Self::handle_connected), before any message of the connection.
    pub fn handle_authenticated(&mut self, conn: ConnId, peer: PeerId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.authenticated = Some(peer);
        }
    }

    /// An outbound connection from [`Action::Dial`] is up: the swarm sends its handshake.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Dialing {
            return;
        }
        c.state = ConnState::Handshaking;
        c.last_activity = now;
        lower(
            &mut self.timer_floor,
            c.opened + self.config.handshake_timeout,
        );
        let info_hash = c
            .info_hash
            .expect("outbound connections know their torrent");
        self.send_handshake(conn, info_hash);
    }

    /// A connection ended (or a dial failed). Nothing more will be sent on it.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId, how: ConnClosed) {
        let failed = !matches!(how, ConnClosed::Normal);
        self.forget_conn(now, conn, failed);
    }

    /// The driver's answer to [`Action::Resolve`]: call it after adding the torrent, or
    /// without adding it if the blob is not here.
    pub fn handle_resolved(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::AwaitingHandshake {
            return;
        }
        let Some(handshake) = c.pending_handshake.take() else {
            return;
        };
        if self.torrents.contains_key(&handshake.info_hash) {
            self.accept_handshake(now, conn, handshake);
        } else {
            self.refuse(conn, ErrorCode::UnknownTorrent, "torrent not found");
        }
    }

    /// A control message arrived. Piece payloads go to
    /// [`handle_piece_received`](Self::handle_piece_received) instead.
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, message: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let state = c.state;
        match (state, message) {
            (ConnState::Handshaking | ConnState::AwaitingHandshake, Message::Handshake(h)) => {
                self.on_handshake(now, conn, h);
            }
            (ConnState::Active, Message::PieceRequest { index }) => {
                self.on_piece_request(now, conn, index);
            }
            (ConnState::Active, Message::AnnouncePiece { index }) => {
                self.on_announce_piece(now, conn, index);
            }
            (ConnState::Active, Message::Complete) => self.on_peer_complete(now, conn),
            (ConnState::Active, Message::CancelPiece { .. }) => {
                // Pieces are sent as soon as they are read; there is nothing queued to drop.
            }
            (ConnState::Active, Message::Error { code, index, .. }) => {
                self.on_peer_error(now, conn, code, index);
            }
            (_, Message::Error { code, .. }) => {
                tracing::debug!(%conn, %code, "peer refused the connection");
                self.close(now, conn, false);
            }
            (_, message) => {
                tracing::debug!(%conn, ?state, kind = message_kind(&message), "unexpected message");
                self.violation(now, conn, "unexpected message");
            }
        }
    }

    /// The driver's answer to [`Action::Finish`].
    pub fn handle_finished(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        result: Result<(), FinishError>,
    ) {
        // Only the torrent that asked: a late answer for one that failed and was added
        // again must not declare the new download complete (found by the fuzzer).
        if self
            .torrents
            .get(&info_hash)
            .is_none_or(|t| t.phase != Phase::Verifying)
        {
            return;
        }
        match result {
            Ok(()) => self.on_complete(now, info_hash),
            Err(FinishError::DigestMismatch) => self.fail(info_hash, FailReason::DigestMismatch),
            Err(FinishError::Storage) => self.fail(info_hash, FailReason::Storage),
        }
    }

    /// The tracker answered an announce with peers and the interval it wants.
    pub fn handle_announce_response(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        peers: Vec<PeerInfo>,
        interval: Option<Duration>,
    ) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        torrent.announce_in_flight = false;
        if let Some(interval) = interval {
            torrent.tracker_interval = Some(interval.max(Duration::from_millis(100)));
        }
        let next = torrent.announce_interval(&self.config);
        torrent.next_announce = now + next;
        let (local, local_addr) = (self.local_peer, self.local_addr);
        // Best last: candidates are taken from the end, and the tracker lists complete
        // peers and origins first.
        torrent.candidates = peers
            .into_iter()
            .rev()
            .filter(|p| p.peer_id != local && Some(p.addr()) != local_addr)
            .collect();
        self.fill_conns(now, info_hash);
    }

    /// An announce failed; it is retried after the announce interval.
    pub fn handle_announce_failed(&mut self, now: Instant, info_hash: InfoHash) {
        if let Some(torrent) = self.torrents.get_mut(&info_hash) {
            torrent.announce_in_flight = false;
            torrent.next_announce = now + torrent.announce_interval(&self.config);
        }
    }

    /// The tracker refused an announce for good (a client error, not an outage). A download
    /// fails with [`FailReason::TrackerRefused`]; a seeding torrent keeps its links and
    /// retries like [`handle_announce_failed`](Self::handle_announce_failed).
    pub fn handle_announce_refused(&mut self, now: Instant, info_hash: InfoHash) {
        match self.torrents.get(&info_hash) {
            Some(torrent) if torrent.phase == Phase::Leeching => {
                self.fail(info_hash, FailReason::TrackerRefused);
            }
            _ => self.handle_announce_failed(now, info_hash),
        }
    }

    /// Time has passed: time out requests, close idle connections, expire torrents, announce.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.blacklist.retain(|_, until| *until > now);
        self.expire_requests(now);
        self.expire_avoidance(now);
        self.expire_conns(now);
        self.expire_torrents(now);
        let due: Vec<InfoHash> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.announce_due(&self.config).is_some_and(|due| due <= now))
            .map(|(h, _)| *h)
            .collect();
        for info_hash in due {
            self.queue_announce(now, info_hash);
        }
        self.timer_floor = self.exact_timer_floor();
    }

    /// The next action for the driver.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.timer_floor;
        let mut consider = |t: Instant| lower(&mut next, t);
        for torrent in self.torrents.values() {
            if let Some(due) = torrent.announce_due(&self.config) {
                consider(due);
            }
            let idle = match torrent.phase {
                Phase::Seeding => self.config.seeder_idle_timeout,
                _ => self.config.leecher_idle_timeout,
            };
            consider(torrent.last_progress + idle);
        }
        next
    }

    /// Whether `conn` has exchanged handshakes and carries pieces.
    pub fn is_established(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.state == ConnState::Active)
    }

    /// This node's peer id.
    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    /// The settings.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }

    /// Counters of a torrent.
    pub fn torrent_stats(&self, info_hash: &InfoHash) -> Option<TorrentStats> {
        let torrent = self.torrents.get(info_hash)?;
        let mut stats = torrent.stats.clone();
        stats.have = torrent.have.count_ones();
        stats.total = torrent.have.len();
        stats.conns = torrent.conns.len();
        Some(stats)
    }

    /// The torrents in the swarm.
    pub fn torrents(&self) -> impl Iterator<Item = &InfoHash> + '_ {
        self.torrents.keys()
    }

    /// Whether the peer on `conn` said in its handshake that it is an origin.
    pub fn is_origin(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.origin)
    }

    /// How many times a peer has been blacklisted since the swarm started.
    pub fn blacklistings(&self) -> u64 {
        self.blacklistings
    }

    /// The peers blacklisted at `now`, each for one torrent, with the time left.
    pub fn blacklist(&self, now: Instant) -> Vec<BlacklistEntry> {
        let mut entries: Vec<BlacklistEntry> = self
            .blacklist
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(((ip, peer_id), info_hash), until)| BlacklistEntry {
                ip: *ip,
                peer_id: *peer_id,
                info_hash: *info_hash,
                remaining: *until - now,
            })
            .collect();
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.remaining));
        entries
    }

    /// Keeps `peer` out of `info_hash` for the blacklist duration.
    pub(super) fn blacklist_peer(&mut self, now: Instant, peer: PeerKey, info_hash: InfoHash) {
        self.blacklistings += 1;
        self.blacklist
            .insert((peer, info_hash), now + self.config.blacklist_duration);
    }

    /// Whether `peer` is blacklisted for `info_hash` at `now`, at any address.
    pub fn is_blacklisted(&self, now: Instant, peer: &PeerId, info_hash: &InfoHash) -> bool {
        self.blacklist
            .iter()
            .any(|(((_, p), h), until)| p == peer && h == info_hash && *until > now)
    }

    /// Whether `peer` at `ip` is blacklisted for `info_hash` at `now`.
    pub fn is_blacklisted_at(
        &self,
        now: Instant,
        ip: IpAddr,
        peer: &PeerId,
        info_hash: &InfoHash,
    ) -> bool {
        self.blacklist
            .get(&((ip, *peer), *info_hash))
            .is_some_and(|until| *until > now)
    }
}

/// A peer kept out of one torrent (after a failed handshake, a bad piece, a stalled or
/// closed link) and for how much longer; see [`Swarm::blacklist`].
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BlacklistEntry {
    /// The peer's address: the blacklist is kept per address and peer id.
    pub ip: IpAddr,
    /// The peer's id.
    pub peer_id: PeerId,
    /// The torrent it is kept out of.
    pub info_hash: InfoHash,
    /// How long until it may connect for this torrent again.
    pub remaining: Duration,
}

fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Handshake(_) => "handshake",
        Message::PieceRequest { .. } => "piece request",
        Message::PiecePayload { .. } => "piece payload",
        Message::AnnouncePiece { .. } => "announce piece",
        Message::CancelPiece { .. } => "cancel piece",
        Message::Error { .. } => "error",
        Message::Complete => "complete",
    }
}

#[cfg(test)]
mod tests;
