//! Links: dialing tracker-given peers, replacing a link that has nothing to exchange,
//! closing connections (blacklisting the peer on failure) and letting idle ones go.

use std::time::Instant;

use kraken_core::{InfoHash, PeerId};

use super::conn::{Conn, ConnState, Direction};
use super::torrent::Phase;
use super::{Action, ConnId, Swarm, lower};

impl Swarm {
    pub(super) fn allocate_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Closes a connection because the peer broke the protocol; blacklists it.
    pub(super) fn violation(&mut self, now: Instant, conn: ConnId, reason: &'static str) {
        tracing::debug!(%conn, reason, "protocol violation");
        self.close(now, conn, true);
    }

    pub(super) fn close(&mut self, now: Instant, conn: ConnId, failed: bool) {
        if self.conns.contains_key(&conn) {
            self.forget_conn(now, conn, failed);
            self.actions.push_back(Action::Close { conn });
        }
    }

    /// Removes every trace of a connection, blacklists its peer if it `failed`, and lets the
    /// torrent replace it.
    pub(super) fn forget_conn(&mut self, now: Instant, conn: ConnId, failed: bool) {
        let Some((info_hash, peer)) = self.drop_conn_state(conn) else {
            return;
        };
        if failed && let Some(peer) = peer {
            self.blacklist_peer(now, peer, info_hash);
        }
        self.fill_conns(now, info_hash);
        self.fill_all_requests(now, info_hash);
    }

    pub(super) fn drop_conn_state(&mut self, conn: ConnId) -> Option<(InfoHash, Option<PeerId>)> {
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
    pub(super) fn fill_conns(&mut self, now: Instant, info_hash: InfoHash) {
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
    pub(super) fn idle_twin(&self, info_hash: InfoHash) -> Option<ConnId> {
        let torrent = self.torrents.get(&info_hash)?;
        torrent.conns.iter().copied().find(|c| {
            self.conns
                .get(c)
                .is_some_and(|c| c.is_idle_twin(&torrent.have))
        })
    }

    pub(super) fn expire_conns(&mut self, now: Instant) {
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
}
