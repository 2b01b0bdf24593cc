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
//! this file.

mod config;
mod conn;
mod torrent;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, Digest, InfoHash, MetaInfo, PeerId, PeerInfo, PieceIndex};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use self::config::SwarmConfig;
use self::conn::{Conn, ConnState, Direction};
use self::torrent::{Phase, Torrent};
use crate::wire::{ErrorCode, Handshake, Message, PROTOCOL_VERSION};

/// A connection, as the swarm names it. The driver maps it to a socket.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId(u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Something the driver must do.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a connection to `peer` for `info_hash`; report the outcome with
    /// [`Swarm::handle_connected`] or [`Swarm::handle_closed`].
    Dial {
        /// The connection's name.
        conn: ConnId,
        /// Whom to dial.
        peer: PeerInfo,
        /// The torrent.
        info_hash: InfoHash,
    },
    /// Send a message on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message (never a piece payload; see `SendPiece`).
        message: Message,
    },
    /// Read a piece from the store and send it as a payload; report with
    /// [`Swarm::handle_piece_sent`].
    SendPiece {
        /// The connection.
        conn: ConnId,
        /// The torrent.
        info_hash: InfoHash,
        /// The piece.
        index: PieceIndex,
    },
    /// Close a connection. The swarm has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Announce a torrent to the tracker; report with [`Swarm::handle_announce_response`] or
    /// [`Swarm::handle_announce_failed`].
    Announce {
        /// The torrent.
        info_hash: InfoHash,
        /// Its blob.
        digest: Digest,
        /// Its namespace.
        namespace: String,
        /// Whether this node has the whole blob.
        complete: bool,
    },
    /// An inbound handshake names a torrent the swarm does not have: look for the blob
    /// locally, [`add_torrent`](Swarm::add_torrent) it if found, then call
    /// [`Swarm::handle_resolved`] either way.
    Resolve {
        /// The connection waiting.
        conn: ConnId,
        /// The torrent asked for.
        info_hash: InfoHash,
        /// The blob the peer says it is.
        digest: Digest,
    },
    /// Every piece is written: check the whole blob against its digest and report with
    /// [`Swarm::handle_finished`].
    Finish {
        /// The torrent.
        info_hash: InfoHash,
    },
}

/// Something the application may want to know.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A piece was verified and written.
    Progress {
        /// The torrent.
        info_hash: InfoHash,
        /// Pieces held.
        have: u32,
        /// Pieces in all.
        total: u32,
    },
    /// The blob is complete and verified; the torrent now seeds.
    Completed {
        /// The torrent.
        info_hash: InfoHash,
    },
    /// The download failed and the torrent was dropped.
    Failed {
        /// The torrent.
        info_hash: InfoHash,
        /// Why.
        reason: FailReason,
    },
    /// An idle seeding torrent was dropped from the swarm (the blob stays on disk).
    Removed {
        /// The torrent.
        info_hash: InfoHash,
    },
}

/// Why a download failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum FailReason {
    /// No piece arrived for [`SwarmConfig::leecher_idle_timeout`].
    Idle,
    /// Every piece matched its hash but the blob did not match its digest.
    DigestMismatch,
    /// The local store failed.
    Storage,
    /// The tracker refused to hand out peers (a `4xx` answer to the announce, such as `403`
    /// for a missing client certificate): no peer can be found, so the download fails now
    /// instead of after [`SwarmConfig::leecher_idle_timeout`].
    TrackerRefused,
}

/// How a connection ended, as the driver saw it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ConnClosed {
    /// The peer closed it, or the transport reported an ordinary error: not held against
    /// the peer.
    Normal,
    /// The dial or the transport handshake failed.
    DialFailed,
    /// The peer sent bytes that are not the protocol.
    ProtocolError,
}

/// Why writing a received piece failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum PieceWriteError {
    /// The bytes did not match the piece's hash: the sender is blacklisted.
    Corrupt,
    /// The local store failed.
    Storage,
}

/// Why verifying a complete blob failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum FinishError {
    /// The blob did not match its digest.
    DigestMismatch,
    /// The local store failed.
    Storage,
}

/// Why a torrent could not be added.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum AddTorrentError {
    /// The bitfield has the wrong number of bits for the metainfo.
    #[error("bitfield of {found} bits for a blob of {expected} pieces")]
    BitfieldLength {
        /// Pieces in the metainfo.
        expected: u32,
        /// Bits given.
        found: u32,
    },
}

/// Counters of one torrent, for progress reports and tests.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct TorrentStats {
    /// Bytes of verified pieces received, by sender.
    pub received_from: BTreeMap<PeerId, u64>,
    /// Bytes of pieces sent.
    pub sent: u64,
    /// Pieces received that failed verification.
    pub corrupt_pieces: u32,
    /// Pieces held.
    pub have: u32,
    /// Pieces in all.
    pub total: u32,
    /// Connections open now.
    pub conns: usize,
}

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
    blacklist: HashMap<(PeerId, InfoHash), Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// A lower bound on every request deadline, connection idle expiry and refusal backoff.
    /// [`poll_timeout`](Self::poll_timeout) reports it instead of scanning them all (it runs
    /// after every input, and the scan was half the simulator's time); whatever adds an
    /// earlier one lowers it, [`handle_timeout`](Self::handle_timeout) makes it exact. A
    /// stale (too early) floor only costs one extra wake-up.
    timer_floor: Option<Instant>,
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

    /// Drops a torrent and closes its connections.
    pub fn remove_torrent(&mut self, info_hash: &InfoHash) {
        if let Some(torrent) = self.torrents.remove(info_hash) {
            for conn in torrent.conns {
                self.conns.remove(&conn);
                self.actions.push_back(Action::Close { conn });
            }
        }
    }

    /// A connection was accepted; returns its name. The peer's handshake comes next.
    pub fn handle_incoming(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let id = self.allocate_conn();
        self.conns
            .insert(id, Conn::new(Direction::Inbound, remote, None, now));
        lower(&mut self.timer_floor, now + self.config.conn_idle_timeout);
        id
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

    /// A piece payload of `length` bytes arrived. Returns the piece to verify and write if
    /// it was wanted; report the write with [`handle_piece_written`](Self::handle_piece_written).
    /// Unwanted payloads return `None` (and unsolicited ones close the connection).
    pub fn handle_piece_received(
        &mut self,
        now: Instant,
        conn: ConnId,
        index: u32,
        length: u64,
    ) -> Option<(InfoHash, PieceIndex)> {
        let c = self.conns.get_mut(&conn)?;
        let info_hash = c.info_hash?;
        let requested = c.requested.remove(&index).is_some();
        let cancelled = c.cancelled.remove(&index);
        if c.state != ConnState::Active || !(requested || cancelled) {
            self.violation(now, conn, "unsolicited piece");
            return None;
        }
        c.last_activity = now;
        let torrent = self.torrents.get_mut(&info_hash)?;
        let Ok(piece) = torrent.meta.piece_index(index) else {
            self.violation(now, conn, "piece index out of range");
            return None;
        };
        if torrent.meta.piece_len(piece) != length {
            self.violation(now, conn, "wrong payload length");
            return None;
        }
        torrent.forget_request(index, conn);
        if torrent.have.get(index) || torrent.is_writing(index) {
            // An endgame duplicate.
            self.fill_requests(now, conn);
            return None;
        }
        // The sender is remembered with the piece: the link may be gone by the time the
        // piece is written, and the piece must still be credited (or blamed) to it.
        let sender = self.conns.get(&conn).and_then(|c| c.peer_id);
        torrent.start_writing(index, sender);
        self.fill_requests(now, conn);
        Some((info_hash, piece))
    }

    /// The driver's report on a piece from [`handle_piece_received`](Self::handle_piece_received).
    pub fn handle_piece_written(
        &mut self,
        now: Instant,
        conn: ConnId,
        info_hash: InfoHash,
        index: PieceIndex,
        result: Result<(), PieceWriteError>,
    ) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        let writes_were_full = torrent.writing_count() >= self.config.max_pending_writes;
        let sender = torrent.finish_writing(index.get());
        match result {
            Ok(()) => {
                if torrent.mark_have(index.get()) {
                    let length = torrent.meta.piece_len(index);
                    torrent.last_progress = now;
                    if let Some(peer) = sender {
                        *torrent.stats.received_from.entry(peer).or_default() += length;
                    }
                    self.on_piece_done(now, info_hash, index.get(), writes_were_full);
                }
            }
            Err(PieceWriteError::Corrupt) => {
                torrent.stats.corrupt_pieces += 1;
                tracing::warn!(%conn, torrent = %info_hash.fmt_short(), piece = index.get(), "peer sent a corrupt piece");
                if self.conns.contains_key(&conn) {
                    self.violation(now, conn, "corrupt piece");
                } else if let Some(peer) = sender {
                    self.blacklist
                        .insert((peer, info_hash), now + self.config.blacklist_duration);
                }
                self.fill_all_requests(now, info_hash);
            }
            Err(PieceWriteError::Storage) => self.fail(info_hash, FailReason::Storage),
        }
    }

    /// A piece from [`Action::SendPiece`] has been sent (or failed to be).
    pub fn handle_piece_sent(&mut self, now: Instant, conn: ConnId, bytes: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.queued_uploads = c.queued_uploads.saturating_sub(1);
        c.last_activity = now;
        if let Some(torrent) = c.info_hash.and_then(|h| self.torrents.get_mut(&h)) {
            torrent.stats.sent += bytes;
            torrent.last_progress = torrent.last_progress.max(now);
        }
    }

    /// The driver's answer to [`Action::Finish`].
    pub fn handle_finished(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        result: Result<(), FinishError>,
    ) {
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

    /// The exact [`timer_floor`](Self::timer_floor): the earliest request deadline,
    /// connection idle expiry and refusal backoff.
    fn exact_timer_floor(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| lower(&mut next, t);
        for torrent in self.torrents.values() {
            for deadline in torrent.request_deadlines() {
                consider(deadline);
            }
        }
        for conn in self.conns.values() {
            consider(conn.last_activity + self.config.conn_idle_timeout);
            // A piece that may be asked of this peer again: nothing else would wake the
            // picker when the peer has nothing new to say.
            if let Some(until) = conn.avoid.earliest() {
                consider(until);
            }
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

    /// Whether `peer` is blacklisted for `info_hash` at `now`.
    pub fn is_blacklisted(&self, now: Instant, peer: &PeerId, info_hash: &InfoHash) -> bool {
        self.blacklist
            .get(&(*peer, *info_hash))
            .is_some_and(|until| *until > now)
    }

    // ---- connections -------------------------------------------------------------------

    fn allocate_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn send_handshake(&mut self, conn: ConnId, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return;
        };
        let neighbours = torrent
            .conns
            .iter()
            .filter(|&&c| c != conn)
            .filter_map(|c| self.conns.get(c))
            // Only established links: a node dialing many peers at once would otherwise
            // look clustered with each of them and be refused by all.
            .filter(|c| c.state == ConnState::Active)
            .filter_map(|c| c.peer_id)
            .take(crate::wire::MAX_NEIGHBOURS)
            .collect();
        let handshake = Handshake {
            protocol_version: PROTOCOL_VERSION,
            peer_id: self.local_peer,
            info_hash,
            digest: *torrent.meta.digest(),
            namespace: torrent.namespace.clone(),
            bitfield: bytes::Bytes::copy_from_slice(torrent.have.as_bytes()),
            neighbours,
            origin: self.config.origin,
        };
        self.actions.push_back(Action::Send {
            conn,
            message: Message::Handshake(handshake),
        });
    }

    fn on_handshake(&mut self, now: Instant, conn: ConnId, h: Handshake) {
        if h.protocol_version != PROTOCOL_VERSION {
            self.refuse(
                conn,
                ErrorCode::UnsupportedVersion,
                "unsupported protocol version",
            );
            return;
        }
        if h.peer_id == self.local_peer {
            self.close(now, conn, false);
            return;
        }
        let c = self.conns.get_mut(&conn).expect("caller checked");
        match c.direction {
            Direction::Outbound => {
                if Some(h.info_hash) != c.info_hash || Some(h.peer_id) != c.peer_id {
                    self.violation(now, conn, "handshake from the wrong peer or torrent");
                    return;
                }
                self.activate(now, conn, &h);
            }
            Direction::Inbound => {
                if self.torrents.contains_key(&h.info_hash) {
                    self.accept_handshake(now, conn, h);
                } else {
                    let (info_hash, digest) = (h.info_hash, h.digest);
                    c.pending_handshake = Some(h);
                    self.actions.push_back(Action::Resolve {
                        conn,
                        info_hash,
                        digest,
                    });
                }
            }
        }
    }

    fn accept_handshake(&mut self, now: Instant, conn: ConnId, h: Handshake) {
        let info_hash = h.info_hash;
        if self.is_blacklisted(now, &h.peer_id, &info_hash) {
            self.refuse(conn, ErrorCode::TooManyConnections, "blacklisted");
            return;
        }
        let torrent = self.torrents.get(&info_hash).expect("caller checked");
        if torrent.conns.len() >= self.config.max_conns_per_torrent {
            // A peer with few neighbours may be stuck in a cluster that has no pieces; a
            // link inside a clique of ours is worth less than being its way in. Only a peer
            // with at least two neighbours fewer than the one it displaces is let in, so
            // degrees even out instead of links churning.
            let dialer_degree = h.neighbours.len();
            match self
                .most_redundant_link(info_hash)
                .filter(|&(_, degree)| dialer_degree + 1 < degree)
            {
                Some((redundant, _)) => {
                    tracing::debug!(conn = %redundant, "making room for an under-connected peer");
                    self.drop_conn_state(redundant);
                    self.actions.push_back(Action::Close { conn: redundant });
                }
                None => {
                    self.refuse(conn, ErrorCode::TooManyConnections, "at connection limit");
                    return;
                }
            }
        }
        let torrent = self.torrents.get(&info_hash).expect("caller checked");
        let mut mutual = 0;
        let mut superseded = None;
        for &other in &torrent.conns {
            let existing = &self.conns[&other];
            if existing.peer_id == Some(h.peer_id) {
                // Both sides dialed each other at once. Refusing on both sides would lose
                // both connections (and the two retry in lockstep after every announce), so
                // both sides keep the dial of the smaller peer id.
                let crossed = existing.direction == Direction::Outbound
                    && existing.state != ConnState::Active;
                if crossed && h.peer_id < self.local_peer {
                    superseded = Some(other);
                    continue;
                }
                self.refuse(conn, ErrorCode::TooManyConnections, "already connected");
                return;
            }
            if existing.state == ConnState::Active
                && existing.peer_id.is_some_and(|p| h.neighbours.contains(&p))
            {
                mutual += 1;
            }
        }
        if mutual > self.config.max_mutual_conns {
            self.refuse(
                conn,
                ErrorCode::TooManyMutualConnections,
                "too many mutual connections",
            );
            return;
        }
        if let Some(outbound) = superseded {
            self.drop_conn_state(outbound);
            self.actions.push_back(Action::Close { conn: outbound });
        }
        let c = self.conns.get_mut(&conn).expect("caller checked");
        c.info_hash = Some(info_hash);
        c.peer_id = Some(h.peer_id);
        self.torrents
            .get_mut(&info_hash)
            .expect("checked")
            .conns
            .push(conn);
        self.send_handshake(conn, info_hash);
        self.activate(now, conn, &h);
    }

    /// The active link to a downloading, non-origin peer that shares the most neighbours
    /// with us (at least two; then the fewest requests in flight): the cheapest link to give
    /// up. Returns it with the peer's degree.
    fn most_redundant_link(&self, info_hash: InfoHash) -> Option<(ConnId, usize)> {
        let torrent = self.torrents.get(&info_hash)?;
        let ours: Vec<PeerId> = torrent
            .conns
            .iter()
            .filter_map(|c| self.conns.get(c))
            .filter(|c| c.state == ConnState::Active)
            .filter_map(|c| c.peer_id)
            .collect();
        torrent
            .conns
            .iter()
            .filter_map(|&id| Some((id, self.conns.get(&id)?)))
            .filter(|(_, c)| c.state == ConnState::Active && !c.origin && !c.have.is_full())
            .map(|(id, c)| {
                let mutual = c.neighbours.iter().filter(|p| ours.contains(p)).count();
                let in_flight = c.requested.len() + c.queued_uploads;
                (mutual, Reverse(in_flight), id, c.neighbours.len() + 1)
            })
            .filter(|&(mutual, ..)| mutual >= 2)
            .max()
            .map(|(_, _, id, degree)| (id, degree))
    }

    /// Both handshakes are exchanged: record the peer's pieces and start requesting.
    fn activate(&mut self, now: Instant, conn: ConnId, h: &Handshake) {
        let torrent = self.torrents.get_mut(&h.info_hash).expect("caller checked");
        let Ok(bitfield) = Bitfield::from_bytes(torrent.meta.piece_count(), &h.bitfield) else {
            self.violation(now, conn, "bad bitfield");
            return;
        };
        let c = self.conns.get_mut(&conn).expect("caller checked");
        c.state = ConnState::Active;
        c.origin = h.origin;
        c.neighbours.clone_from(&h.neighbours);
        c.last_activity = now;
        torrent.add_availability(&bitfield);
        c.have = bitfield;
        tracing::debug!(%conn, torrent = %h.info_hash.fmt_short(), peer = %h.peer_id.fmt_short(), addr = %c.remote, "connection active");
        let both_complete = torrent.phase == Phase::Seeding && c.have.is_full();
        if both_complete {
            self.close(now, conn, false);
            return;
        }
        self.fill_requests(now, conn);
    }

    fn refuse(&mut self, conn: ConnId, code: ErrorCode, reason: &str) {
        tracing::debug!(%conn, %code, reason, "refusing connection");
        self.actions.push_back(Action::Send {
            conn,
            message: Message::Error {
                code,
                index: None,
                message: reason.to_owned(),
            },
        });
        self.drop_conn_state(conn);
        self.actions.push_back(Action::Close { conn });
    }

    /// Closes a connection because the peer broke the protocol; blacklists it.
    fn violation(&mut self, now: Instant, conn: ConnId, reason: &'static str) {
        tracing::debug!(%conn, reason, "protocol violation");
        self.close(now, conn, true);
    }

    fn close(&mut self, now: Instant, conn: ConnId, failed: bool) {
        if self.conns.contains_key(&conn) {
            self.forget_conn(now, conn, failed);
            self.actions.push_back(Action::Close { conn });
        }
    }

    /// Removes every trace of a connection, blacklists its peer if it `failed`, and lets the
    /// torrent replace it.
    fn forget_conn(&mut self, now: Instant, conn: ConnId, failed: bool) {
        let Some((info_hash, peer)) = self.drop_conn_state(conn) else {
            return;
        };
        if failed && let Some(peer) = peer {
            self.blacklist
                .insert((peer, info_hash), now + self.config.blacklist_duration);
        }
        self.fill_conns(now, info_hash);
        self.fill_all_requests(now, info_hash);
    }

    fn drop_conn_state(&mut self, conn: ConnId) -> Option<(InfoHash, Option<PeerId>)> {
        let c = self.conns.remove(&conn)?;
        let info_hash = c.info_hash?;
        if let Some(torrent) = self.torrents.get_mut(&info_hash) {
            torrent.conns.retain(|&x| x != conn);
            if c.state == ConnState::Active {
                torrent.remove_availability(&c.have);
            }
            for index in c.requested.keys() {
                torrent.forget_request(*index, conn);
            }
        }
        Some((info_hash, c.peer_id))
    }

    /// Dials tracker-given peers until the torrent is at its connection limit.
    fn fill_conns(&mut self, now: Instant, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return;
        };
        if torrent.phase != Phase::Leeching {
            // Complete peers don't go looking for neighbours; leechers find them.
            return;
        }
        loop {
            let Some(torrent) = self.torrents.get_mut(&info_hash) else {
                return;
            };
            let Some(peer) = torrent.candidates.pop() else {
                return;
            };
            let blacklisted = self
                .blacklist
                .get(&(peer.peer_id, info_hash))
                .is_some_and(|until| *until > now);
            let connected = torrent
                .conns
                .iter()
                .any(|c| self.conns.get(c).and_then(|c| c.peer_id) == Some(peer.peer_id));
            if blacklisted || connected || peer.peer_id == self.local_peer {
                continue;
            }
            if torrent.conns.len() >= self.config.max_conns_per_torrent {
                // Full: a seeder or origin may take the place of a link over which nothing
                // can flow either way. Candidates come best first, so one that is neither
                // ends the search.
                let twin = if peer.complete || peer.origin {
                    self.idle_twin(info_hash)
                } else {
                    None
                };
                let Some(twin) = twin else {
                    if let Some(torrent) = self.torrents.get_mut(&info_hash) {
                        torrent.candidates.push(peer);
                    }
                    return;
                };
                tracing::debug!(conn = %twin, "replacing a link that has nothing to exchange");
                self.drop_conn_state(twin);
                self.actions.push_back(Action::Close { conn: twin });
            }
            self.next_conn += 1;
            let id = ConnId(self.next_conn);
            let mut c = Conn::new(Direction::Outbound, peer.addr(), Some(info_hash), now);
            c.peer_id = Some(peer.peer_id);
            self.conns.insert(id, c);
            lower(&mut self.timer_floor, now + self.config.conn_idle_timeout);
            self.torrents
                .get_mut(&info_hash)
                .expect("checked above")
                .conns
                .push(id);
            self.actions.push_back(Action::Dial {
                conn: id,
                peer,
                info_hash,
            });
        }
    }

    /// An active link of the torrent over which nothing can flow either way (see
    /// `Conn::is_idle_twin`), if there is one.
    fn idle_twin(&self, info_hash: InfoHash) -> Option<ConnId> {
        let torrent = self.torrents.get(&info_hash)?;
        torrent.conns.iter().copied().find(|c| {
            self.conns
                .get(c)
                .is_some_and(|c| c.is_idle_twin(&torrent.have))
        })
    }

    fn expire_conns(&mut self, now: Instant) {
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| now >= c.last_activity + self.config.conn_idle_timeout)
            .filter(|(_, c)| c.requested.is_empty() && c.queued_uploads == 0)
            .map(|(id, _)| *id)
            .collect();
        for conn in idle {
            let failed = self.conns[&conn].state != ConnState::Active;
            tracing::debug!(%conn, "closing idle connection");
            self.close(now, conn, failed);
        }
    }

    // ---- pieces ------------------------------------------------------------------------

    fn on_piece_request(&mut self, now: Instant, conn: ConnId, index: u32) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        let info_hash = c.info_hash.expect("active connections have a torrent");
        let torrent = &self.torrents[&info_hash];
        let Ok(piece) = torrent.meta.piece_index(index) else {
            self.violation(now, conn, "request out of range");
            return;
        };
        let spread = self.config.spread_uploads
            && self.config.origin
            && torrent.phase == Phase::Seeding
            && torrent.should_spread(index, &c.have);
        if !torrent.have.get(index)
            || c.queued_uploads >= self.config.max_queued_uploads_per_conn
            || spread
        {
            self.actions.push_back(Action::Send {
                conn,
                message: Message::Error {
                    code: ErrorCode::PieceUnavailable,
                    index: Some(index),
                    message: String::new(),
                },
            });
            return;
        }
        c.queued_uploads += 1;
        if let Some(torrent) = self.torrents.get_mut(&info_hash) {
            torrent.uploads[index as usize] += 1;
        }
        self.actions.push_back(Action::SendPiece {
            conn,
            info_hash,
            index: piece,
        });
    }

    fn on_announce_piece(&mut self, now: Instant, conn: ConnId, index: u32) {
        let Some((c, torrent)) = active_conn(&mut self.conns, &mut self.torrents, conn) else {
            return;
        };
        if index >= torrent.meta.piece_count() {
            self.violation(now, conn, "announce out of range");
            return;
        }
        if c.have.set(index).unwrap_or(false) {
            torrent.availability[index as usize] += 1;
        }
        if torrent.phase == Phase::Seeding && c.have.is_full() {
            self.close(now, conn, false);
            return;
        }
        self.fill_requests(now, conn);
    }

    fn on_peer_complete(&mut self, now: Instant, conn: ConnId) {
        let Some((c, torrent)) = active_conn(&mut self.conns, &mut self.torrents, conn) else {
            return;
        };
        torrent.remove_availability(&c.have);
        c.have = Bitfield::full(torrent.meta.piece_count());
        torrent.add_availability(&c.have);
        if torrent.phase == Phase::Seeding {
            self.close(now, conn, false);
        } else {
            self.fill_requests(now, conn);
        }
    }

    fn on_peer_error(&mut self, now: Instant, conn: ConnId, code: ErrorCode, index: Option<u32>) {
        let c = self.conns.get_mut(&conn).expect("caller checked");
        match index {
            Some(index) if c.requested.remove(&index).is_some() => {
                let until = now + self.config.refused_piece_backoff;
                c.avoid.insert(index, until);
                let info_hash = c.info_hash.expect("active connections have a torrent");
                lower(&mut self.timer_floor, until);
                if let Some(t) = self.torrents.get_mut(&info_hash) {
                    t.forget_request(index, conn);
                }
                self.fill_all_requests(now, info_hash);
            }
            _ => tracing::debug!(%conn, %code, "peer reported an error"),
        }
    }

    /// A piece was verified and written: tell the neighbours that lack it, cancel endgame
    /// duplicates, and finish the torrent if it was the last.
    /// `index` is held now. `writes_were_full`: requests were held back by
    /// `max_pending_writes` until it was written.
    fn on_piece_done(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        index: u32,
        writes_were_full: bool,
    ) {
        let torrent = self.torrents.get_mut(&info_hash).expect("caller checked");
        let duplicates = torrent.take_requests(index);
        let mut freed = Vec::with_capacity(duplicates.len());
        for request in duplicates {
            if let Some(c) = self.conns.get_mut(&request.conn)
                && c.requested.remove(&index).is_some()
            {
                c.cancelled.insert(index);
                freed.push(request.conn);
                self.actions.push_back(Action::Send {
                    conn: request.conn,
                    message: Message::CancelPiece { index },
                });
            }
        }
        for &conn in &torrent.conns {
            let c = &self.conns[&conn];
            if c.state == ConnState::Active && !c.have.get(index) {
                self.actions.push_back(Action::Send {
                    conn,
                    message: Message::AnnouncePiece { index },
                });
            }
        }
        self.events.push_back(Event::Progress {
            info_hash,
            have: torrent.have.count_ones(),
            total: torrent.have.len(),
        });
        self.check_complete(info_hash);
        // A held piece opens no new request by itself: only connections whose duplicate was
        // just cancelled have room they did not have, unless the write limit held everyone
        // back or endgame (which asks for pieces in flight) begins. Visiting every connection
        // after every piece was a seventh of the simulator's time, mostly cache misses.
        let torrent = &self.torrents[&info_hash];
        let endgame = torrent.missing() <= self.config.endgame_threshold as u32;
        if writes_were_full || endgame {
            self.fill_all_requests(now, info_hash);
        } else {
            for conn in freed {
                self.fill_requests(now, conn);
            }
        }
    }

    fn check_complete(&mut self, info_hash: InfoHash) {
        let torrent = self.torrents.get_mut(&info_hash).expect("caller checked");
        if torrent.phase == Phase::Leeching && torrent.have.is_full() {
            tracing::debug!(torrent = %info_hash.fmt_short(), "every piece written; verifying the blob");
            torrent.phase = Phase::Verifying;
            self.actions.push_back(Action::Finish { info_hash });
        }
    }

    fn on_complete(&mut self, now: Instant, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        torrent.phase = Phase::Seeding;
        torrent.last_progress = now;
        torrent.candidates.clear();
        self.blacklist.retain(|(_, h), _| *h != info_hash);
        self.events.push_back(Event::Completed { info_hash });
        let conns = torrent.conns.clone();
        for conn in conns {
            let c = &self.conns[&conn];
            if c.state != ConnState::Active || c.have.is_full() {
                self.close(now, conn, false);
            } else {
                self.actions.push_back(Action::Send {
                    conn,
                    message: Message::Complete,
                });
            }
        }
        self.queue_announce(now, info_hash);
    }

    fn fail(&mut self, info_hash: InfoHash, reason: FailReason) {
        tracing::warn!(torrent = %info_hash.fmt_short(), ?reason, "download failed");
        self.remove_torrent(&info_hash);
        self.events.push_back(Event::Failed { info_hash, reason });
    }

    fn fill_all_requests(&mut self, now: Instant, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return;
        };
        for conn in torrent.conns.clone() {
            self.fill_requests(now, conn);
        }
    }

    /// Requests pieces from `conn` until its pipeline is full or it has nothing we need.
    fn fill_requests(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Active {
            return;
        }
        let Some(torrent) = c.info_hash.and_then(|h| self.torrents.get_mut(&h)) else {
            return;
        };
        if torrent.phase != Phase::Leeching {
            return;
        }
        let limit = if c.origin || c.have.is_full() {
            self.config.seeder_pipeline_limit
        } else {
            self.config.pipeline_limit
        };
        let timeout = self.config.request_timeout(torrent.meta.piece_length());
        // With more neighbours, picking the same pieces as they do costs more: widen the
        // window of candidates as the neighbourhood grows.
        let window = self.config.sequential_window * torrent.conns.len().max(1);
        while c.requested.len() < limit && torrent.writing_count() < self.config.max_pending_writes
        {
            let endgame = torrent.missing() <= self.config.endgame_threshold as u32;
            let Some(index) = torrent.pick(
                &c.have,
                &c.requested,
                &c.avoid,
                now,
                conn,
                endgame,
                window,
                &mut self.rng,
            ) else {
                break;
            };
            let deadline = now + timeout;
            c.requested.insert(index, deadline);
            torrent.add_request(index, conn, deadline);
            lower(&mut self.timer_floor, deadline);
            self.actions.push_back(Action::Send {
                conn,
                message: Message::PieceRequest { index },
            });
        }
    }

    /// Forgets refusals whose backoff is over and asks those peers again.
    fn expire_avoidance(&mut self, now: Instant) {
        let mut retry = Vec::new();
        for (&id, conn) in &mut self.conns {
            if conn.avoid.expire(now) {
                retry.push(id);
            }
        }
        for conn in retry {
            self.fill_requests(now, conn);
        }
    }

    fn expire_requests(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (info_hash, torrent) in &mut self.torrents {
            let mut timed_out = Vec::new();
            torrent.expire_requests(now, &mut timed_out);
            expired.extend(
                timed_out
                    .into_iter()
                    .map(|(index, conn)| (*info_hash, index, conn)),
            );
        }
        for (info_hash, index, conn) in expired {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.requested.remove(&index);
                c.cancelled.insert(index);
                c.avoid
                    .insert(index, now + self.config.refused_piece_backoff);
                tracing::debug!(%conn, piece = index, "piece request timed out");
            }
            self.fill_all_requests(now, info_hash);
        }
    }

    fn expire_torrents(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let mut removed = Vec::new();
        for (info_hash, torrent) in &self.torrents {
            match torrent.phase {
                Phase::Leeching
                    if now >= torrent.last_progress + self.config.leecher_idle_timeout =>
                {
                    failed.push(*info_hash);
                }
                Phase::Seeding
                    if torrent.conns.is_empty()
                        && now >= torrent.last_progress + self.config.seeder_idle_timeout =>
                {
                    removed.push(*info_hash);
                }
                _ => {}
            }
        }
        for info_hash in failed {
            self.fail(info_hash, FailReason::Idle);
        }
        for info_hash in removed {
            self.remove_torrent(&info_hash);
            self.events.push_back(Event::Removed { info_hash });
        }
    }

    // ---- tracker -----------------------------------------------------------------------

    fn queue_announce(&mut self, now: Instant, info_hash: InfoHash) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        let interval = torrent.announce_interval(&self.config);
        torrent.last_announce = Some(now);
        let full = torrent.conns.len() >= self.config.max_conns_per_torrent;
        let leeching = torrent.phase == Phase::Leeching;
        if leeching && full && self.idle_twin(info_hash).is_none() {
            let torrent = self.torrents.get_mut(&info_hash).expect("checked above");
            // A full torrent needs no new peers; look again later.
            torrent.next_announce = now + interval;
            return;
        }
        let torrent = self.torrents.get_mut(&info_hash).expect("checked above");
        torrent.announce_in_flight = true;
        torrent.announces = torrent.announces.saturating_add(1);
        torrent.next_announce = now + interval;
        // Spread announces of many torrents a little so they don't all fire in one tick.
        let jitter = self.rng.random_range(0..=interval.as_millis() as u64 / 10);
        torrent.next_announce += Duration::from_millis(jitter);
        self.actions.push_back(Action::Announce {
            info_hash,
            digest: *torrent.meta.digest(),
            namespace: torrent.namespace.clone(),
            complete: torrent.phase == Phase::Seeding,
        });
    }
}

/// A connection and its torrent, borrowed together (they live in different maps).
fn active_conn<'a>(
    conns: &'a mut BTreeMap<ConnId, Conn>,
    torrents: &'a mut BTreeMap<InfoHash, Torrent>,
    conn: ConnId,
) -> Option<(&'a mut Conn, &'a mut Torrent)> {
    let c = conns.get_mut(&conn)?;
    let torrent = torrents.get_mut(&c.info_hash?)?;
    Some((c, torrent))
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

/// Lowers `floor` to `t` if `t` is earlier (or there was none).
fn lower(floor: &mut Option<Instant>, t: Instant) {
    *floor = Some(floor.map_or(t, |f| f.min(t)));
}
