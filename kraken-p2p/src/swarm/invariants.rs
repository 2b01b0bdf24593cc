//! The invariants of `STATE.md`, checked against the whole state: the fuzz target and the
//! swarm's property test call [`Swarm::check_invariants`] after every input and
//! [`Swarm::check_action`] on every output.

use std::collections::HashMap;

use super::conn::{ConnState, Direction};
use super::torrent::Phase;
use super::{Action, Swarm};

impl Swarm {
    /// Checks every invariant of `STATE.md` that the swarm's state alone decides; the
    /// error says which broke.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (info_hash, torrent) in &self.torrents {
            let name = info_hash.fmt_short();
            torrent
                .check(self.config.endgame_threshold)
                .map_err(|e| format!("torrent {name}: {e}"))?;
            // 2: requests are recorded on both sides.
            for (index, conn) in torrent.request_pairs() {
                if !self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.requested.contains_key(&index))
                {
                    return Err(format!(
                        "torrent {name}: request {index} on {conn} unknown to it"
                    ));
                }
            }
            // 4: connections listed, within the cap.
            if torrent.conns.len() > self.config.max_conns_per_torrent {
                return Err(format!(
                    "torrent {name}: {} connections",
                    torrent.conns.len()
                ));
            }
            let mut availability = vec![0u16; torrent.have.len() as usize];
            let mut keys = HashMap::new();
            for id in &torrent.conns {
                let Some(c) = self.conns.get(id) else {
                    return Err(format!("torrent {name}: lists {id}, which is gone"));
                };
                if c.info_hash != Some(*info_hash) {
                    return Err(format!("torrent {name}: lists {id} of another torrent"));
                }
                // 6: one link per peer.
                if let Some(key) = c.key()
                    && let Some(other) = keys.insert(key, *id)
                {
                    return Err(format!("torrent {name}: {other} and {id} reach one peer"));
                }
                if c.state == ConnState::Active {
                    // 5: an active peer's bitfield fits the torrent.
                    if c.have.len() != torrent.have.len() {
                        return Err(format!("{id}: bitfield of {} pieces", c.have.len()));
                    }
                    for i in c.have.iter_ones() {
                        availability[i as usize] += 1;
                    }
                }
                for &index in c.requested.keys() {
                    if !torrent
                        .request_pairs()
                        .any(|(i, conn)| i == index && conn == *id)
                    {
                        return Err(format!("{id}: request {index} unknown to the torrent"));
                    }
                }
            }
            // 3: availability counts active neighbours.
            if availability != torrent.availability {
                return Err(format!("torrent {name}: availability out of step"));
            }
            // 7 (the swarm's half: the digest is the driver's).
            if torrent.phase == Phase::Seeding && !torrent.have.is_full() {
                return Err(format!("torrent {name}: seeding without every piece"));
            }
        }
        let mut inbound = HashMap::<_, usize>::new();
        for (id, c) in &self.conns {
            if let Some(h) = c.info_hash
                && !self.torrents.get(&h).is_some_and(|t| t.conns.contains(id))
            {
                return Err(format!("{id} has a torrent that does not list it"));
            }
            if c.direction == Direction::Inbound {
                *inbound.entry(c.remote.ip()).or_default() += 1;
            }
        }
        if let Some((ip, n)) = inbound
            .into_iter()
            .find(|&(_, n)| n > self.config.max_inbound_per_ip)
        {
            return Err(format!("{n} inbound connections from {ip}"));
        }
        // 13: the node's connections, over all torrents, within its cap.
        if self.conns.len() > self.config.max_conns {
            return Err(format!(
                "{} connections over the node's cap of {}",
                self.conns.len(),
                self.config.max_conns
            ));
        }
        // 10: the timer floor is never later than a deadline.
        if let Some(exact) = self.exact_timer_floor()
            && self.timer_floor.is_none_or(|floor| floor > exact)
        {
            return Err("the timer floor is later than a deadline".to_owned());
        }
        Ok(())
    }

    /// Checks one action just polled: no piece leaves unless held (verified), and no dial
    /// is made for a torrent that is not downloading (invariant 8).
    pub fn check_action(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::SendPiece {
                info_hash, index, ..
            } => match self.torrents.get(info_hash) {
                Some(t) if t.have.get(index.get()) => Ok(()),
                _ => Err(format!("piece {} served unverified", index.get())),
            },
            // A torrent that failed later in the same input is gone; its dial is moot.
            Action::Dial { info_hash, .. } => match self.torrents.get(info_hash) {
                Some(t) if t.phase != Phase::Leeching => {
                    Err("dial for a complete torrent".to_owned())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}
