//! A torrent's life: announcing, completing, failing and expiring.

use std::time::{Duration, Instant};

use kraken_core::InfoHash;
use rand::RngExt;

use super::conn::ConnState;
use super::torrent::Phase;
use super::{Action, Event, FailReason, Swarm};
use crate::wire::Message;

impl Swarm {
    pub(super) fn check_complete(&mut self, info_hash: InfoHash) {
        let torrent = self.torrents.get_mut(&info_hash).expect("caller checked");
        if torrent.phase == Phase::Leeching && torrent.have.is_full() {
            tracing::debug!(torrent = %info_hash.fmt_short(), "every piece written; verifying the blob");
            torrent.phase = Phase::Verifying;
            self.actions.push_back(Action::Finish { info_hash });
        }
    }

    pub(super) fn on_complete(&mut self, now: Instant, info_hash: InfoHash) {
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

    pub(super) fn fail(&mut self, info_hash: InfoHash, reason: FailReason) {
        tracing::warn!(torrent = %info_hash.fmt_short(), ?reason, "download failed");
        self.remove_torrent(&info_hash);
        self.events.push_back(Event::Failed { info_hash, reason });
    }

    pub(super) fn expire_torrents(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let mut removed = Vec::new();
        for (info_hash, torrent) in &mut self.torrents {
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
                    if torrent.pinned {
                        // Seeded on purpose: stays, and its announces keep it findable.
                        torrent.last_progress = now;
                    } else {
                        removed.push(*info_hash);
                    }
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

    pub(super) fn queue_announce(&mut self, now: Instant, info_hash: InfoHash) {
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
