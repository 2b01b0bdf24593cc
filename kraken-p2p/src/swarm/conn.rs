//! The swarm's view of one connection.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use kraken_core::{Bitfield, InfoHash, PeerId};

use crate::wire::Handshake;

/// Who a peer is, as far as the swarm can tell: the peer id it claims (or its certificate
/// proves) at the address it connects from. Blacklists and the one-link-per-peer rule use
/// it, so a peer claiming another's id from elsewhere gets only itself refused.
pub(super) type PeerKey = (IpAddr, PeerId);

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum ConnState {
    /// Outbound, waiting for the transport.
    Dialing,
    /// Outbound, our handshake sent, waiting for theirs.
    Handshaking,
    /// Inbound, waiting for their handshake (or for the driver to resolve its torrent).
    AwaitingHandshake,
    /// Both handshakes exchanged.
    Active,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) direction: Direction,
    pub(super) remote: SocketAddr,
    pub(super) state: ConnState,
    /// Known from the start for outbound connections, from the handshake for inbound ones.
    pub(super) info_hash: Option<InfoHash>,
    pub(super) peer_id: Option<PeerId>,
    /// The peer id the transport authenticated (bound to the peer's certificate), if any:
    /// a handshake claiming another is refused.
    pub(super) authenticated: Option<PeerId>,
    pub(super) origin: bool,
    /// The peer's pieces; empty until the connection is active.
    pub(super) have: Bitfield,
    /// Our outstanding requests to the peer, with their deadlines.
    pub(super) requested: BTreeMap<u32, Instant>,
    /// Requests we cancelled or gave up on: their payloads may still arrive and are not a
    /// violation.
    pub(super) cancelled: BTreeSet<u32>,
    /// Pieces this peer refused or failed to deliver, and until when not to ask it again.
    pub(super) avoid: Backoff,
    /// Pieces the driver is sending to the peer.
    pub(super) queued_uploads: usize,
    pub(super) last_activity: Instant,
    /// When the connection was opened (dialed or accepted): its handshake must be done by
    /// `opened + handshake_timeout`.
    pub(super) opened: Instant,
    /// The peer's neighbours as its handshake listed them.
    pub(super) neighbours: Vec<PeerId>,
    /// An inbound handshake waiting for `Action::Resolve`.
    pub(super) pending_handshake: Option<Handshake>,
}

impl Conn {
    pub(super) fn new(
        direction: Direction,
        remote: SocketAddr,
        info_hash: Option<InfoHash>,
        now: Instant,
    ) -> Self {
        Self {
            direction,
            remote,
            state: match direction {
                Direction::Outbound => ConnState::Dialing,
                Direction::Inbound => ConnState::AwaitingHandshake,
            },
            info_hash,
            peer_id: None,
            authenticated: None,
            origin: false,
            have: Bitfield::new(0),
            requested: BTreeMap::new(),
            cancelled: BTreeSet::new(),
            avoid: Backoff::default(),
            queued_uploads: 0,
            last_activity: now,
            opened: now,
            neighbours: Vec::new(),
            pending_handshake: None,
        }
    }

    /// The peer's [`PeerKey`], once its id is known.
    pub(super) fn key(&self) -> Option<PeerKey> {
        Some((self.remote.ip(), self.peer_id?))
    }

    /// Whether nothing has moved over this link either way (no piece sent or received, no
    /// handshake finished) since `since`: the least useful link to give up for a new peer.
    pub(super) fn is_stale(&self, since: Instant) -> bool {
        self.last_activity <= since
    }

    /// Whether nothing can flow over this link either way: the peer holds exactly the
    /// pieces we hold (`ours`), and no request or upload is in flight.
    pub(super) fn is_idle_twin(&self, ours: &Bitfield) -> bool {
        self.state == ConnState::Active
            && self.requested.is_empty()
            && self.queued_uploads == 0
            && self.have == *ours
    }
}

/// Pieces not to ask a peer for again until a time: it refused them or let them time out.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    until: BTreeMap<u32, Instant>,
    /// The earliest entry's end, kept so that the swarm's timeout needs no scan.
    earliest: Option<Instant>,
}

impl Backoff {
    pub(super) fn insert(&mut self, index: u32, until: Instant) {
        self.until.insert(index, until);
        self.earliest = Some(self.earliest.map_or(until, |e| e.min(until)));
    }

    pub(super) fn contains(&self, index: u32, now: Instant) -> bool {
        self.until.get(&index).is_some_and(|until| *until > now)
    }

    pub(super) fn earliest(&self) -> Option<Instant> {
        self.earliest
    }

    /// Forgets every entry; returns whether there was any.
    pub(super) fn clear(&mut self) -> bool {
        self.earliest = None;
        let any = !self.until.is_empty();
        self.until.clear();
        any
    }

    /// Forgets the entries that ended by `now`; returns whether any did.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        if self.earliest.is_none_or(|e| e > now) {
            return false;
        }
        self.until.retain(|_, until| *until > now);
        self.earliest = self.until.values().min().copied();
        true
    }
}
