//! Links: dialing tracker-given peers, replacing a link that has nothing to exchange,
//! closing connections (blacklisting the peer on failure) and letting idle ones go.

use std::time::Instant;

use kraken_core::InfoHash;

use super::conn::{Conn, ConnState, Direction, PeerKey};
use super::timers::lower;
use super::torrent::Phase;
use super::{Action, ConnId, Swarm};

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
        self.retry_origin_refusals(info_hash);
        self.fill_conns(now, info_hash);
        self.fill_all_requests(now, info_hash);
        self.offer_freed_slots(now);
    }

    /// A connection slot of the node freed while some torrent waited for one (see
    /// [`SwarmConfig::max_conns`](super::SwarmConfig::max_conns)): the leeching torrents
    /// with candidates dial, fewest connections first, until the slots are taken again.
    pub(super) fn offer_freed_slots(&mut self, now: Instant) {
        if !self.waiting_for_slot || self.conns.len() >= self.config.max_conns {
            return;
        }
        self.waiting_for_slot = false;
        let mut waiting: Vec<(usize, InfoHash)> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.phase == Phase::Leeching && !t.candidates.is_empty())
            .map(|(h, t)| (t.conns.len(), *h))
            .collect();
        // Sorted, so the order is the same whatever the map's: the simulator is
        // deterministic.
        waiting.sort_unstable();
        for (_, info_hash) in waiting {
            if self.conns.len() >= self.config.max_conns {
                self.waiting_for_slot = true;
                return;
            }
            self.fill_conns(now, info_hash);
        }
    }

    pub(super) fn drop_conn_state(&mut self, conn: ConnId) -> Option<(InfoHash, Option<PeerKey>)> {
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
        Some((info_hash, c.key()))
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
            let key = (peer.addr().ip(), peer.peer_id);
            let blacklisted = self
                .blacklist
                .get(&(key, info_hash))
                .is_some_and(|until| *until > now);
            // The same id at another address is another peer (or an impostor holding a
            // link in its name, which must not keep us from the real one).
            let connected = torrent
                .conns
                .iter()
                .any(|c| self.conns.get(c).and_then(Conn::key) == Some(key));
            if blacklisted || connected || peer.peer_id == self.local_peer {
                continue;
            }
            let node_full = self.conns.len() >= self.config.max_conns;
            if node_full && torrent.conns.len() < self.config.max_conns_per_torrent {
                // The node is at its cap: wait for a slot (`forget_conn` calls again).
                torrent.candidates.push(peer);
                self.waiting_for_slot = true;
                return;
            }
            if torrent.conns.len() >= self.config.max_conns_per_torrent {
                // Full: a seeder or origin may take the place of a link over which nothing
                // can flow either way. Candidates come best first, so one that is neither
                // ends the search.
                let twin = if peer.complete || peer.origin {
                    self.idle_twin(info_hash)
                        .or_else(|| self.stale_link(now, info_hash))
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
            lower(&mut self.timer_floor, now + self.config.handshake_timeout);
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

    /// The active link of the torrent over which nothing has moved for
    /// [`stale_link_after`](super::SwarmConfig::stale_link_after), the longest-quiet first:
    /// a full torrent gives it up for a new peer.
    pub(super) fn stale_link(&self, now: Instant, info_hash: InfoHash) -> Option<ConnId> {
        let since = now.checked_sub(self.config.stale_link_after)?;
        let torrent = self.torrents.get(&info_hash)?;
        torrent
            .conns
            .iter()
            .filter_map(|&id| Some((id, self.conns.get(&id)?)))
            .filter(|(_, c)| c.state == ConnState::Active && c.is_stale(since))
            .min_by_key(|(id, c)| (c.last_activity, *id))
            .map(|(id, _)| id)
    }

    pub(super) fn expire_conns(&mut self, now: Instant) {
        let handshake_timeout = self.config.handshake_timeout;
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let idle = now >= c.last_activity + self.config.conn_idle_timeout
                    && c.requested.is_empty()
                    && c.queued_uploads == 0;
                // Dials have their own timeout in the driver.
                let silent = c.state != ConnState::Active
                    && c.state != ConnState::Dialing
                    && now >= c.opened + handshake_timeout;
                idle || silent
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in idle {
            // Closing one may already have replaced another of the list (refilling the
            // torrent drops an idle twin or a stale link; found by the swarm_ops fuzzer).
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let failed = c.state != ConnState::Active;
            tracing::debug!(%conn, "closing idle connection");
            self.close(now, conn, failed);
        }
    }
}
