//! What crosses the swarm's boundary: the actions it asks of its driver, the events it tells
//! the application, and the outcomes the driver reports back.

use std::collections::BTreeMap;

use kraken_core::{Digest, InfoHash, PeerId, PeerInfo, PieceIndex};

#[cfg(doc)]
use super::{Swarm, SwarmConfig};
use crate::wire::Message;

/// A connection, as the swarm names it. The driver maps it to a socket.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId(pub(super) u64);

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
    /// The peer stopped reading: a write made no progress for the stall timeout.
    Stalled,
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
