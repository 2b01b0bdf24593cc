//! Preparing a download: the blob may already be cached; otherwise its metainfo is fetched
//! from the tracker (waiting for it to be published) and the store opens or resumes the
//! download before the torrent joins the swarm.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kraken_core::{Blob, BlobStatus, BlobStore, Digest, Download, MetaInfo};
use tokio::sync::watch;

use super::recheck::Recheck;
use super::{Actor, ActorEvent, Preparing, Torrent, Waiter, done_progress, set_progress};
use crate::error::{Error, Result};
use crate::node::Progress;
use crate::node::conn::PieceSource;
use crate::tracker::Tracker;

/// The outcome of preparing a download: the blob is already here, or it can start.
#[derive(Debug)]
pub(crate) enum Prepared {
    Cached(Blob, Progress),
    Started(Arc<MetaInfo>, Download),
}

impl Actor {
    pub(super) fn start_download(
        &mut self,
        digest: Digest,
        namespace: String,
        dest: Option<PathBuf>,
        reply: Waiter,
        progress: watch::Sender<Progress>,
    ) {
        if let Some(torrent) = self
            .by_digest
            .get(&digest)
            .and_then(|h| self.torrents.get_mut(h))
        {
            if let PieceSource::Blob(blob) = &torrent.source {
                set_progress(&progress, done_progress(&torrent.meta));
                let _ = reply.send(Ok(blob.clone()));
            } else {
                torrent.waiters.push(reply);
                torrent.progress.push(progress);
            }
            return;
        }
        if let Some((waiters, watchers, _)) = self.preparing.get_mut(&digest) {
            waiters.push(reply);
            watchers.push(progress);
            return;
        }
        self.preparing
            .insert(digest, (vec![reply], vec![progress], Instant::now()));
        let namespace = if namespace.is_empty() {
            self.config.namespace.clone()
        } else {
            namespace
        };
        let store = self.store.clone();
        let tracker = Arc::clone(&self.tracker);
        let limits = (
            self.config.metainfo_timeout,
            self.config.max_blob_size.bytes(),
        );
        self.spawn_preparation(digest, namespace, move |namespace| async move {
            prepare_download(store, tracker, &namespace, digest, dest, limits).await
        });
    }

    /// Runs `prepare` (which readies a download of `digest`) as a task, and hands its
    /// outcome back to the actor as [`ActorEvent::DownloadReady`].
    pub(super) fn spawn_preparation<F, Fut>(&self, digest: Digest, namespace: String, prepare: F)
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Prepared>> + Send,
    {
        let events = self.events_tx.clone();
        self.spawn_task(async move {
            let result = prepare(namespace.clone()).await;
            let _ = events
                .send(ActorEvent::DownloadReady {
                    digest,
                    namespace,
                    result,
                })
                .await;
        });
    }

    pub(super) fn on_download_ready(
        &mut self,
        now: Instant,
        digest: Digest,
        namespace: String,
        result: Result<Prepared>,
    ) {
        let Some(preparing) = self.preparing.remove(&digest) else {
            return;
        };
        match result {
            Ok(Prepared::Cached(blob, progress)) => {
                let (waiters, watchers, _) = preparing;
                for watcher in &watchers {
                    watcher.send_replace(progress);
                }
                for waiter in waiters {
                    let _ = waiter.send(Ok(blob.clone()));
                }
            }
            Ok(Prepared::Started(meta, download)) => {
                self.start_torrent(now, meta, download, namespace, preparing);
            }
            Err(e) => {
                let (waiters, _, started) = preparing;
                self.counters.download(false, started);
                // Every waiter learns why, not only the first.
                let count = waiters.len();
                for (waiter, error) in waiters.into_iter().zip(e.for_waiters(count)) {
                    let _ = waiter.send(Err(error));
                }
            }
        }
    }

    /// Adds an opened download to the swarm, with the waiters and watchers of its blob.
    pub(super) fn start_torrent(
        &mut self,
        now: Instant,
        meta: Arc<MetaInfo>,
        download: Download,
        namespace: String,
        (waiters, watchers, started): Preparing,
    ) {
        let digest = *meta.digest();
        let info_hash = meta.info_hash();
        let have = download.bitfield();
        let bytes = super::verified_bytes(&meta, have.count_ones());
        let progress = Progress {
            have: have.count_ones(),
            total: have.len(),
            length: meta.length(),
            bytes,
            stage: crate::node::Stage::Downloading,
            ..Progress::default()
        };
        for watcher in &watchers {
            set_progress(watcher, progress);
        }
        self.by_digest.insert(digest, info_hash);
        self.torrents.insert(
            info_hash,
            Torrent {
                meta: Arc::clone(&meta),
                namespace: namespace.clone(),
                source: PieceSource::Partial(download),
                waiters,
                progress: watchers,
                unsynced: 0,
                writing_back: false,
                recheck: Recheck::new(now),
                started: Some(started),
                rate_from: (now, bytes),
            },
        );
        if let Err(e) = self.swarm.add_torrent(now, meta, have, namespace) {
            tracing::error!(error = %e, "could not add torrent");
        }
    }
}

/// Finds the blob in the store, or fetches its metainfo and opens (or resumes) a download
/// (to `dest`, see [`open_download`]). `limits` are the time to wait for the metainfo and the
/// largest blob length believed.
async fn prepare_download(
    store: BlobStore,
    tracker: Arc<dyn Tracker>,
    namespace: &str,
    digest: Digest,
    dest: Option<PathBuf>,
    limits: (std::time::Duration, u64),
) -> Result<Prepared> {
    let (timeout, max_blob) = limits;
    let cached = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || match store.status(&digest) {
            BlobStatus::Cached { .. } => match store.open_blob(&digest) {
                Ok(blob) => {
                    let progress = cached_progress(&store, &blob);
                    Ok(Some(Prepared::Cached(blob, progress)))
                }
                // A blob kept by reference whose file changed or went: the store forgot
                // it, so download it again.
                Err(kraken_core::Error::ReferenceChanged { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            _ => Ok(None),
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))??
    };
    if let Some(cached) = cached {
        return Ok(cached);
    }
    let mut meta = fetch_metainfo(&*tracker, namespace, &digest, timeout).await?;
    if meta.length() > max_blob {
        // The file would be allocated at this length before a byte is checked: ask the
        // blob's owners instead of whoever the tracker heard from.
        meta = tracker
            .refresh_metainfo(namespace, &digest)
            .await?
            .ok_or(Error::MetaInfoNotFound(digest))?;
        if meta.length() > max_blob {
            return Err(Error::BlobTooLarge {
                digest,
                length: meta.length(),
                max: max_blob,
            });
        }
    }
    if meta.length() == 0 {
        // An empty blob has no piece to fetch, so no swarm would ever complete it: its
        // digest says all there is (import checks it).
        return tokio::task::spawn_blocking(move || {
            store.import(std::io::empty(), meta.piece_length(), Some(&digest))?;
            let blob = store.open_blob(&digest)?;
            let progress = cached_progress(&store, &blob);
            Ok::<_, kraken_core::Error>(Prepared::Cached(blob, progress))
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))?
        .map_err(Error::from);
    }
    open_download(store, Arc::new(meta), dest).await
}

/// Opens (or resumes) the download of `meta` in the store, or finds the blob complete.
/// With `dest`, a new download whose destination is on another file system than the store
/// is written beside it ([`BlobStore::begin_download_to`]), so its bytes are written once.
/// Another metainfo's download of the same blob may still be open for a moment (its last
/// piece writes finishing after it was dropped); that is waited out, briefly.
pub(super) async fn open_download(
    store: BlobStore,
    meta: Arc<MetaInfo>,
    dest: Option<PathBuf>,
) -> Result<Prepared> {
    let digest = *meta.digest();
    let mut attempts = 0;
    loop {
        let opened = {
            let (store, meta, dest) = (store.clone(), Arc::clone(&meta), dest.clone());
            let begun = move |store: &BlobStore| match &dest {
                Some(dest) => store.begin_download_to(&meta, dest).map(|d| (meta, d)),
                None => store.begin_download(&meta).map(|d| (meta, d)),
            };
            tokio::task::spawn_blocking(move || match begun(&store) {
                Ok((meta, download)) => Ok(Prepared::Started(meta, download)),
                Err(kraken_core::Error::AlreadyComplete(_)) => {
                    store.open_blob(&digest).map(|blob| {
                        let progress = cached_progress(&store, &blob);
                        Prepared::Cached(blob, progress)
                    })
                }
                Err(e) => Err(e),
            })
            .await
            .map_err(|_| Error::Internal("store task failed"))?
        };
        match opened {
            Err(kraken_core::Error::MetaInfoConflict(_)) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// The progress of a blob found complete in the store: its real piece count and length.
fn cached_progress(store: &BlobStore, blob: &Blob) -> Progress {
    match store.metainfo(blob.digest()) {
        Ok(meta) => super::done_progress(&meta),
        Err(_) => Progress {
            length: blob.len(),
            bytes: blob.len(),
            stage: crate::node::Stage::Done,
            done: true,
            ..Progress::default()
        },
    }
}

/// Polls the tracker until the metainfo is published or `timeout` passes.
async fn fetch_metainfo(
    tracker: &dyn Tracker,
    namespace: &str,
    digest: &Digest,
    timeout: std::time::Duration,
) -> Result<MetaInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let last_error = match tracker.metainfo(namespace, digest).await {
            Ok(Some(meta)) => return Ok(meta),
            Ok(None) => Error::MetaInfoNotFound(*digest),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + delay > deadline {
            return Err(last_error);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(2));
    }
}
