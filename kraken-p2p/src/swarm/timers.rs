//! The timer floor: a lower bound on every deadline the swarm keeps per request and per
//! connection, so that [`Swarm::poll_timeout`] needs no scan (see `STATE.md`, invariant 10).

use std::time::Instant;

use super::Swarm;
use super::conn::ConnState;

impl Swarm {
    /// The exact [`timer_floor`](Self::timer_floor): the earliest request deadline,
    /// connection idle expiry, handshake deadline and refusal backoff.
    pub(super) fn exact_timer_floor(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| lower(&mut next, t);
        for torrent in self.torrents.values() {
            for deadline in torrent.request_deadlines() {
                consider(deadline);
            }
        }
        for conn in self.conns.values() {
            consider(conn.last_activity + self.config.conn_idle_timeout);
            if conn.state != ConnState::Active && conn.state != ConnState::Dialing {
                consider(conn.opened + self.config.handshake_timeout);
            }
            // A piece that may be asked of this peer again: nothing else would wake the
            // picker when the peer has nothing new to say.
            if let Some(until) = conn.avoid.earliest() {
                consider(until);
            }
        }
        next
    }
}

/// Lowers `floor` to `t` if `t` is earlier (or there was none).
pub(super) fn lower(floor: &mut Option<Instant>, t: Instant) {
    *floor = Some(floor.map_or(t, |f| f.min(t)));
}
