//! Downloads that stall on metainfo nobody's bytes match: asking the origins again and
//! starting over with theirs.
//!
//! A torrent is named by its metainfo's hash, so a download built on forged or stale
//! metainfo is a torrent of its own: no honest peer or origin holds it, and a piece that
//! does arrive fails its check. Either way no piece is verified. A download that verifies
//! nothing for [`NodeConfig::metainfo_recheck_after`](crate::node::NodeConfig) asks the
//! tracker for the metainfo afresh from the origins; if it differs, the stuck download is
//! dropped and the blob's waiters move to a download of the origins' metainfo, without a
//! restart. Another stall waits twice as long before asking again (up to five minutes), so
//! a download that is merely slow to find peers costs the origins little.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{InfoHash, MetaInfo};

use super::prepare::open_download;
use super::{Actor, ActorEvent};
use crate::error::Result;
use crate::node::conn::PieceSource;

/// The longest wait between two rechecks of one stalled download.
const MAX_RECHECK_WAIT: Duration = Duration::from_secs(300);

/// A download's watch for stalls.
#[derive(Debug)]
pub(crate) struct Recheck {
    /// When a piece was last verified (or the download started, or was last rechecked).
    since: Instant,
    /// Rechecks since the last verified piece.
    stalls: u32,
    /// Whether a recheck is being asked.
    asking: bool,
}

impl Recheck {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            since: now,
            stalls: 0,
            asking: false,
        }
    }

    /// A piece was verified.
    pub(crate) fn progressed(&mut self, now: Instant) {
        self.since = now;
        self.stalls = 0;
    }

    fn due(&self, now: Instant, after: Duration) -> bool {
        let wait = after
            .saturating_mul(1 << self.stalls.min(16))
            .min(MAX_RECHECK_WAIT.max(after));
        !self.asking && now.saturating_duration_since(self.since) >= wait
    }
}

impl Actor {
    /// Asks the tracker afresh for the metainfo of every download that verified no piece
    /// for its wait.
    pub(super) fn recheck_stalled(&mut self, now: Instant) {
        let after = self.config.metainfo_recheck_after;
        let due: Vec<(InfoHash, String, kraken_core::Digest)> = self
            .torrents
            .iter_mut()
            .filter(|(_, t)| matches!(t.source, PieceSource::Partial(_)))
            .filter(|(_, t)| t.recheck.due(now, after))
            .map(|(info_hash, t)| {
                t.recheck.asking = true;
                (*info_hash, t.namespace.clone(), *t.meta.digest())
            })
            .collect();
        for (info_hash, namespace, digest) in due {
            tracing::info!(torrent = %info_hash.fmt_short(), digest = %digest.fmt_short(), "download stalled; asking for the origins' metainfo");
            let tracker = Arc::clone(&self.tracker);
            let events = self.events_tx.clone();
            self.spawn_task(async move {
                let result = tracker.refresh_metainfo(&namespace, &digest).await;
                let _ = events
                    .send(ActorEvent::Rechecked { info_hash, result })
                    .await;
            });
        }
    }

    /// The origins' metainfo for a stalled download arrived (or could not be had).
    pub(super) fn on_rechecked(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        result: Result<Option<MetaInfo>>,
    ) {
        let Some(torrent) = self.torrents.get_mut(&info_hash) else {
            return;
        };
        torrent.recheck.asking = false;
        torrent.recheck.stalls = torrent.recheck.stalls.saturating_add(1);
        torrent.recheck.since = now;
        let meta = match result {
            Ok(Some(meta))
                if meta.info_hash() != info_hash && meta.digest() == torrent.meta.digest() =>
            {
                meta
            }
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(torrent = %info_hash.fmt_short(), error = %e, "could not recheck metainfo");
                return;
            }
        };
        if meta.length() > self.config.max_blob_size.bytes() {
            tracing::warn!(digest = %meta.digest().fmt_short(), length = meta.length(), "the origins' metainfo is longer than max_blob_size; keeping the download");
            return;
        }
        let Some(stuck) = self.torrents.remove(&info_hash) else {
            return;
        };
        let digest = *stuck.meta.digest();
        tracing::warn!(
            digest = %digest.fmt_short(),
            stuck = %info_hash.fmt_short(),
            origins = %meta.info_hash().fmt_short(),
            "the download's metainfo is not the origins'; starting over with theirs"
        );
        self.swarm.remove_torrent(&info_hash);
        self.by_digest.remove(&digest);
        // The new download goes where the stuck one was going (a caller's path on another
        // file system, see `BlobStore::begin_download_to`).
        let dest = match &stuck.source {
            PieceSource::Partial(download) => download.destination().map(ToOwned::to_owned),
            PieceSource::Blob(_) => None,
        };
        // The stuck download's file is closed with its last handle; the new one replaces it.
        drop(stuck.source);
        // Readers of the stuck download learn it was replaced (and let go of its file).
        for watcher in &stuck.progress {
            watcher.send_modify(|p| p.restarts += 1);
        }
        let started = stuck.started.unwrap_or(now);
        let entry = self
            .preparing
            .entry(digest)
            .or_insert_with(|| (Vec::new(), Vec::new(), started));
        entry.0.extend(stuck.waiters);
        entry.1.extend(stuck.progress);
        let store = self.store.clone();
        self.spawn_preparation(digest, stuck.namespace, move |_| async move {
            open_download(store, Arc::new(meta), dest).await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rechecks_back_off_and_reset_on_progress() {
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let mut recheck = Recheck::new(t0);
        assert!(!recheck.due(t0 + Duration::from_secs(9), after));
        assert!(recheck.due(t0 + after, after));
        recheck.asking = true;
        assert!(!recheck.due(t0 + after, after));
        recheck.asking = false;
        recheck.stalls = 3;
        assert!(!recheck.due(t0 + Duration::from_secs(79), after));
        assert!(recheck.due(t0 + Duration::from_secs(80), after));
        recheck.stalls = 30;
        assert!(recheck.due(t0 + MAX_RECHECK_WAIT, after));
        recheck.progressed(t0 + Duration::from_secs(1));
        assert_eq!(recheck.stalls, 0);
        assert!(!recheck.due(t0 + Duration::from_secs(10), after));
    }
}
