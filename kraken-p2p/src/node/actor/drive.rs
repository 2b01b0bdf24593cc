//! Carrying out the swarm's actions (dials, sends, closes, announces, store work) and
//! passing its events on to waiters and progress watchers.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use kraken_core::{Digest, PeerInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::seed::resolve;
use super::{Actor, ActorEvent, done_progress, set_progress, verified_bytes};
use crate::error::Error;
use crate::node::conn::{ConnHandle, Outgoing, PieceSource};
use crate::swarm::{Action, ConnClosed, ConnId, Event, FinishError};
use crate::tracker::api::AnnounceRequest;

impl Actor {
    /// Carries out the swarm's actions and forwards its events.
    pub(super) fn drive(&mut self) {
        let now = Instant::now();
        while let Some(action) = self.swarm.poll_action() {
            self.act(now, action);
        }
        while let Some(event) = self.swarm.poll_event() {
            self.on_swarm_event(now, event);
        }
        self.counters.blacklistings(self.swarm.blacklistings());
        if self.counters.gauges_due(now) {
            let downloading = self
                .torrents
                .values()
                .filter(|t| matches!(t.source, PieceSource::Partial(_)))
                .count();
            let seeding = self.torrents.len() - downloading;
            self.counters.state(downloading, seeding, self.conns.len());
        }
    }

    fn act(&mut self, now: Instant, action: Action) {
        match action {
            Action::Dial {
                conn,
                peer,
                info_hash,
            } => {
                let max = self
                    .torrents
                    .get(&info_hash)
                    .map_or(0, |t| t.meta.piece_length() as u32);
                // A placeholder until the dial completes; cancelling it abandons the dial.
                let cancel = self.shutdown.child_token();
                let (outgoing, _) = mpsc::channel(1);
                self.conns.insert(
                    conn,
                    ConnHandle {
                        outgoing,
                        cancel: cancel.clone(),
                        closing: CancellationToken::new(),
                        max_payload: Arc::new(AtomicU32::new(max)),
                    },
                );
                let transport = Arc::clone(&self.transport);
                let events = self.events_tx.clone();
                let timeout = self.config.dial_timeout;
                let addr = peer.addr();
                self.spawn_task(async move {
                    let result = tokio::select! {
                        () = cancel.cancelled() => return,
                        r = tokio::time::timeout(timeout, transport.connect(addr)) => {
                            r.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                        }
                    };
                    let _ = events.send(ActorEvent::Dialed { conn, addr, result }).await;
                });
            }
            Action::Send { conn, message } => self.send(now, conn, Outgoing::Message(message)),
            Action::SendPiece {
                conn,
                info_hash,
                index,
            } => {
                let Some(torrent) = self.torrents.get(&info_hash) else {
                    return;
                };
                let item = Outgoing::Piece {
                    index,
                    range: torrent.meta.piece_range(index),
                    source: torrent.source.clone(),
                };
                self.send(now, conn, item);
            }
            Action::Close { conn } => {
                if let Some(handle) = self.conns.remove(&conn) {
                    // The writer sends what was queued (a refusal, say), flushes and closes;
                    // a dial still under way is abandoned (its placeholder queue has room).
                    if handle.outgoing.is_closed() {
                        handle.cancel.cancel();
                    } else {
                        handle.close();
                    }
                }
            }
            Action::Announce {
                info_hash,
                digest,
                namespace,
                complete,
            } => {
                let peer = PeerInfo::new(
                    self.peer_id,
                    self.advertise,
                    self.config.swarm.origin,
                    complete,
                );
                let request = AnnounceRequest::new(digest, namespace, peer);
                let tracker = Arc::clone(&self.tracker);
                let events = self.events_tx.clone();
                self.spawn_task(async move {
                    let result = tracker.announce(info_hash, request).await;
                    let _ = events
                        .send(ActorEvent::Announced { info_hash, result })
                        .await;
                });
            }
            Action::Resolve {
                conn,
                info_hash,
                digest,
            } => {
                let store = self.store.clone();
                self.spawn_blocking(
                    self.torrent_span(&info_hash),
                    move || resolve(&store, &digest, &info_hash),
                    move |found| ActorEvent::Resolved { conn, found },
                );
            }
            Action::Finish { info_hash } => {
                let Some(download) = self.partial_download(&info_hash) else {
                    return;
                };
                let drop_behind = self.config.drop_behind;
                self.spawn_blocking(
                    self.torrent_span(&info_hash),
                    move || {
                        let finished = download.finish();
                        if finished.is_ok() && drop_behind {
                            // All of it is durable now: what the last write-back left goes
                            // too, but the newest bytes.
                            super::writes::drop_behind(&download, download.meta().length());
                        }
                        finished.map_err(|e| match e {
                            kraken_core::Error::DigestMismatch { .. } => {
                                FinishError::DigestMismatch
                            }
                            e => {
                                tracing::error!(error = %e, "finishing a download failed");
                                FinishError::Storage
                            }
                        })
                    },
                    move |result| ActorEvent::Finished { info_hash, result },
                );
            }
        }
    }

    fn send(&mut self, now: Instant, conn: ConnId, item: Outgoing) {
        let Some(handle) = self.conns.get(&conn) else {
            return;
        };
        if handle.outgoing.try_send(item).is_err() {
            tracing::debug!(%conn, "peer is not reading; closing");
            if let Some(handle) = self.conns.remove(&conn) {
                handle.cancel.cancel();
            }
            self.swarm.handle_closed(now, conn, ConnClosed::Normal);
        }
    }

    fn on_swarm_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Progress {
                info_hash,
                have,
                total,
            } => {
                let peers = self
                    .swarm
                    .torrent_stats(&info_hash)
                    .map_or(0, |stats| stats.conns);
                if let Some(torrent) = self.torrents.get_mut(&info_hash) {
                    torrent.recheck.progressed(now);
                    let bytes = verified_bytes(&torrent.meta, have);
                    let (from, initial) = torrent.rate_from;
                    let elapsed = now.saturating_duration_since(from).as_secs_f64();
                    let rate = if elapsed > 0.0 {
                        (bytes.saturating_sub(initial) as f64 / elapsed) as u64
                    } else {
                        0
                    };
                    torrent.recheck.progressed(now);
                    for watcher in &torrent.progress {
                        watcher.send_modify(|p| {
                            p.have = have;
                            p.total = total;
                            p.bytes = bytes;
                            p.peers = peers;
                            p.bytes_per_sec = rate;
                            p.stage = crate::node::Stage::Downloading;
                        });
                    }
                }
            }
            Event::Completed { info_hash } => {
                if let Some(torrent) = self.torrents.get_mut(&info_hash)
                    && let PieceSource::Blob(blob) = &torrent.source
                {
                    tracing::info!(torrent = %info_hash.fmt_short(), digest = %torrent.meta.digest().fmt_short(), "download complete");
                    if let Some(started) = torrent.started.take() {
                        self.counters.download(true, started);
                    }
                    for watcher in torrent.progress.drain(..) {
                        set_progress(&watcher, done_progress(&torrent.meta));
                    }
                    for waiter in torrent.waiters.drain(..) {
                        let _ = waiter.send(Ok(blob.clone()));
                    }
                }
            }
            Event::Failed { info_hash, reason } => {
                if let Some(torrent) = self.torrents.remove(&info_hash) {
                    self.by_digest.remove(torrent.meta.digest());
                    if let Some(started) = torrent.started {
                        self.counters.download(false, started);
                    }
                    for waiter in torrent.waiters {
                        let _ = waiter.send(Err(Error::DownloadFailed {
                            digest: *torrent.meta.digest(),
                            reason,
                        }));
                    }
                }
            }
            Event::Removed { info_hash } => {
                let Some(torrent) = self.torrents.remove(&info_hash) else {
                    return;
                };
                // Pinned torrents (seeded on purpose) are never removed: the swarm keeps them.
                self.by_digest.remove(torrent.meta.digest());
            }
        }
    }

    /// Stops the download of `digest` (waiting for metainfo, or in the swarm) and fails its
    /// waiters with [`Error::Cancelled`]; with `only_if_unwatched`, only when every waiter
    /// and progress receiver is gone. A complete blob is left alone.
    pub(super) fn cancel(&mut self, digest: &Digest, only_if_unwatched: bool) {
        if let Some((waiters, watchers, _)) = self.preparing.get(digest) {
            let unwatched =
                waiters.iter().all(|w| w.is_closed()) && watchers.iter().all(|w| w.is_closed());
            if only_if_unwatched && !unwatched {
                return;
            }
            let (waiters, _, _) = self.preparing.remove(digest).expect("checked above");
            for waiter in waiters {
                let _ = waiter.send(Err(Error::Cancelled(*digest)));
            }
            tracing::debug!(digest = %digest.fmt_short(), "download cancelled before it started");
            return;
        }
        let Some(info_hash) = self.by_digest.get(digest).copied() else {
            return;
        };
        let Some(torrent) = self.torrents.get(&info_hash) else {
            return;
        };
        if matches!(torrent.source, PieceSource::Blob(_)) {
            return;
        }
        let unwatched = torrent.waiters.iter().all(|w| w.is_closed())
            && torrent.progress.iter().all(|w| w.is_closed());
        if only_if_unwatched && !unwatched {
            return;
        }
        let torrent = self.torrents.remove(&info_hash).expect("checked above");
        self.by_digest.remove(digest);
        self.swarm.remove_torrent(&info_hash);
        for waiter in torrent.waiters {
            let _ = waiter.send(Err(Error::Cancelled(*digest)));
        }
        tracing::info!(digest = %digest.fmt_short(), "download cancelled");
    }
}
