//! Handshakes and admission: what we tell a peer about ourselves, and whether an inbound
//! peer is let in (capacity, blacklist, crossed dials, mutual neighbours, making room for
//! an under-connected peer).

use std::cmp::Reverse;
use std::time::Instant;

use kraken_core::{Bitfield, InfoHash, PeerId};

use super::conn::{ConnState, Direction};
use super::torrent::Phase;
use super::{Action, ConnId, Swarm};
use crate::wire::{ErrorCode, Handshake, Message, PROTOCOL_VERSION};

impl Swarm {
    pub(super) fn send_handshake(&mut self, conn: ConnId, info_hash: InfoHash) {
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

    pub(super) fn on_handshake(&mut self, now: Instant, conn: ConnId, h: Handshake) {
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
        if c.authenticated.is_some_and(|id| id != h.peer_id) {
            // Its certificate says who it is; the id it claims is someone else's. Nobody
            // is blacklisted: the claimed peer did nothing, and the certificate's holder is
            // refused at every handshake anyway.
            tracing::warn!(%conn, addr = %c.remote, claimed = %h.peer_id.fmt_short(), "handshake claims a peer id its certificate does not bind");
            self.refuse(
                conn,
                ErrorCode::ProtocolViolation,
                "peer id does not match the certificate",
            );
            return;
        }
        match c.direction {
            Direction::Outbound => {
                if Some(h.info_hash) != c.info_hash || Some(h.peer_id) != c.peer_id {
                    self.violation(now, conn, "handshake from the wrong peer or torrent");
                    return;
                }
                self.activate(now, conn, &h);
            }
            Direction::Inbound => {
                if c.pending_handshake.is_some() {
                    // A second handshake while the first waits for its torrent: accepting
                    // both would list the connection twice (found by the swarm_ops fuzzer).
                    self.violation(now, conn, "second handshake");
                    return;
                }
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

    pub(super) fn accept_handshake(&mut self, now: Instant, conn: ConnId, h: Handshake) {
        let info_hash = h.info_hash;
        let remote = self.conns[&conn].remote.ip();
        let key = (remote, h.peer_id);
        if self.is_blacklisted_at(now, remote, &h.peer_id, &info_hash) {
            self.refuse(conn, ErrorCode::TooManyConnections, "blacklisted");
            return;
        }
        let torrent = self.torrents.get(&info_hash).expect("caller checked");
        let same_ip = torrent
            .conns
            .iter()
            .filter(|c| self.conns.get(c).is_some_and(|c| c.remote.ip() == remote))
            .count();
        if same_ip >= self.config.max_conns_per_ip_per_torrent {
            self.refuse(
                conn,
                ErrorCode::TooManyConnections,
                "too many connections from one address",
            );
            return;
        }
        if torrent.conns.len() >= self.config.max_conns_per_torrent {
            // A peer with few neighbours may be stuck in a cluster that has no pieces; a
            // link inside a clique of ours is worth less than being its way in. Only a peer
            // with at least two neighbours fewer than the one it displaces is let in, so
            // degrees even out instead of links churning.
            let dialer_degree = h.neighbours.len();
            // Failing that, a link over which nothing has moved for a while (a peer that
            // asks and never reads, or says nothing) is worth less than a newcomer.
            let redundant = self
                .most_redundant_link(info_hash)
                .filter(|&(_, degree)| dialer_degree + 1 < degree)
                .map(|(id, _)| id)
                .or_else(|| self.stale_link(now, info_hash));
            match redundant {
                Some(redundant) => {
                    tracing::debug!(conn = %redundant, "making room for a new peer");
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
            if existing.key() == Some(key) {
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
        c.last_activity = now;
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

    pub(super) fn refuse(&mut self, conn: ConnId, code: ErrorCode, reason: &str) {
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
}
