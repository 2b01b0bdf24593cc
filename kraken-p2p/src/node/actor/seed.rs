//! Seeding: opening a blob (imported from a file, already in the store, or asked for by an
//! inbound handshake), publishing its metainfo and adding it to the swarm complete.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kraken_core::{Bitfield, Blob, BlobStatus, BlobStore, Digest, InfoHash, MetaInfo};
use tokio::sync::oneshot;

use super::{Actor, ActorEvent, Torrent};
use crate::error::{Error, Result};
use crate::node::conn::PieceSource;
use crate::tracker::Tracker;

impl Actor {
    /// Runs `prepare` (which opens a blob and publishes its metainfo) as a task, and hands
    /// its outcome back to the actor as [`ActorEvent::Seeded`].
    pub(super) fn spawn_seeding<F, Fut>(
        &self,
        namespace: String,
        pin: bool,
        reply: oneshot::Sender<Result<MetaInfo>>,
        prepare: F,
    ) where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(MetaInfo, Blob)>> + Send,
    {
        let events = self.events_tx.clone();
        self.spawn_task(async move {
            let result = prepare(namespace.clone()).await;
            let _ = events
                .send(ActorEvent::Seeded {
                    result,
                    namespace,
                    pin,
                    reply,
                })
                .await;
        });
    }

    pub(super) fn add_seed(
        &mut self,
        now: Instant,
        meta: Arc<MetaInfo>,
        blob: Blob,
        namespace: String,
        keep: bool,
    ) {
        let info_hash = meta.info_hash();
        self.by_digest.insert(*meta.digest(), info_hash);
        self.torrents.entry(info_hash).or_insert_with(|| Torrent {
            meta: Arc::clone(&meta),
            namespace: namespace.clone(),
            source: PieceSource::Blob(blob),
            waiters: Vec::new(),
            progress: Vec::new(),
            unsynced: 0,
            writing_back: false,
            rate_from: (now, meta.length()),
            started: None,
            recheck: super::recheck::Recheck::new(now),
        });
        let full = Bitfield::full(meta.piece_count());
        if let Err(e) = self.swarm.add_torrent(now, meta, full, namespace) {
            tracing::error!(error = %e, "could not add torrent");
        }
        if keep {
            self.swarm.pin(&info_hash);
        }
    }
}

/// Finds a complete blob for an inbound handshake.
pub(super) fn resolve(
    store: &BlobStore,
    digest: &Digest,
    info_hash: &InfoHash,
) -> Option<(Arc<MetaInfo>, Blob)> {
    if !matches!(store.status(digest), BlobStatus::Cached { .. }) {
        return None;
    }
    let meta = store.metainfo(digest).ok()?;
    if meta.info_hash() != *info_hash {
        return None;
    }
    let blob = store.open_blob(digest).ok()?;
    Some((Arc::new(meta), blob))
}

/// Opens a blob already cached in the store and publishes its metainfo.
pub(super) async fn seed_stored(
    store: BlobStore,
    tracker: Arc<dyn Tracker>,
    namespace: &str,
    digest: Digest,
) -> Result<(MetaInfo, Blob)> {
    let (meta, blob) = tokio::task::spawn_blocking(move || {
        let meta = store.metainfo(&digest)?;
        let blob = store.open_blob(&digest)?;
        Ok::<_, kraken_core::Error>((meta, blob))
    })
    .await
    .map_err(|_| Error::Internal("store task failed"))??;
    tracker.publish_metainfo(namespace, &meta).await?;
    Ok((meta, blob))
}

pub(super) async fn seed_file(
    path: PathBuf,
    store: BlobStore,
    policy: kraken_core::PieceLengthPolicy,
    tracker: Arc<dyn Tracker>,
    namespace: &str,
) -> Result<(MetaInfo, Blob)> {
    let (meta, blob) = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|source| kraken_core::Error::Io {
            path: path.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| kraken_core::Error::Io {
                path: path.clone(),
                source,
            })?
            .len();
        let meta = store.import(file, policy.piece_length_for(size), None)?;
        let blob = store.open_blob(meta.digest())?;
        Ok::<_, kraken_core::Error>((meta, blob))
    })
    .await
    .map_err(|_| Error::Internal("store task failed"))??;
    tracker.publish_metainfo(namespace, &meta).await?;
    Ok((meta, blob))
}
