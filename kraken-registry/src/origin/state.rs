//! What every part of a running origin shares, and the steps every new blob goes through.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kraken_backends::{Backend, Router};
use kraken_core::{BlobStatus, BlobStore, Digest, MetaInfo};
use kraken_p2p::node::Node;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{CommitKind, OriginClient};
use super::config::OriginConfig;
use super::fetch::Fetcher;
use super::integrity::Checks;
use super::membership::Membership;
use super::namespaces::NamespaceIndex;
use super::queue::{WriteBackQueue, WriteBackTask};
use super::recent::RecentSet;
use super::replicate;
use super::tombstones::Tombstones;
use super::uploads::{Claim, Uploads};
use crate::durable::Entry;
use crate::error::{Error, Result, error_chain};
use crate::fault::{self, Fault};

#[derive(Debug)]
pub(crate) struct OriginState {
    pub(crate) config: OriginConfig,
    /// This origin's name in the ring.
    pub(crate) name: String,
    pub(crate) store: BlobStore,
    pub(crate) queue: WriteBackQueue,
    pub(crate) namespaces: NamespaceIndex,
    pub(crate) uploads: Uploads,
    pub(crate) backend: Arc<dyn Backend>,
    /// The router `backend` is, when built from the configuration (to refuse uploads to
    /// namespaces no backend serves); `None` for a backend given by the embedder.
    pub(crate) router: Option<Arc<Router>>,
    pub(crate) fetcher: Arc<Fetcher>,
    pub(crate) membership: Membership,
    pub(crate) client: OriginClient,
    pub(crate) node: Option<Node>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// The registry every listener of the origin serves at `/metrics`.
    pub(crate) metrics: kraken_p2p::metrics::Metrics,
    /// The origin's cache, fetch, replication and repair counters in it.
    pub(crate) counters: crate::metrics::OriginMetrics,
    /// The store's eviction counters in it.
    pub(crate) store_metrics: crate::metrics::StoreMetrics,
    /// Re-hashes of cached blobs in progress and recently done.
    pub(crate) checks: Checks,
    /// The blobs kept in the P2P swarm: the most recently wanted.
    pub(crate) recent: RecentSet,
    /// Small blobs served from memory (`[cache]`).
    pub(crate) small: Arc<crate::small_blobs::SmallBlobs>,
    /// Blobs deleted lately, whose replicas are refused for a while.
    pub(crate) tombstones: Tombstones,
}

impl OriginState {
    /// Whether a backend serves `namespace` (an origin built with one backend for every
    /// namespace serves all): a blob no backend serves could never be written back, so its
    /// upload is refused.
    pub(crate) fn routes(&self, namespace: &str) -> bool {
        self.router
            .as_ref()
            .is_none_or(|router| router.backend_for(namespace).is_ok())
    }

    /// Imports a file into the store (a repair's download), verified against `digest`;
    /// nothing is stored on a mismatch.
    pub(crate) async fn import_upload(&self, upload: &Path, digest: &Digest) -> Result<MetaInfo> {
        let store = self.store.clone();
        let upload = upload.to_owned();
        let pieces = self.config_piece_lengths();
        let expected = *digest;
        tokio::task::spawn_blocking(move || {
            let size = std::fs::metadata(&upload)?.len();
            // Moved into the store, not copied: the upload is on the same disk.
            let imported =
                store.import_file(&upload, pieces.piece_length_for(size), Some(&expected));
            let _ = std::fs::remove_file(&upload);
            match imported {
                Ok(meta) => Ok(meta),
                Err(kraken_core::Error::DigestMismatch { expected, actual }) => {
                    Err(Error::DigestMismatch { expected, actual })
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(|_| Error::Internal("import task failed"))?
    }

    /// Commits a claimed upload: verifies it against `digest` and installs it, then queues
    /// its write-back — all durable before this returns, and so before the client hears
    /// `201`. Then the blob is seeded and, for a client's upload, replicated.
    ///
    /// The order makes every crash recoverable: the namespace is recorded first; the blob
    /// appears in the cache already pinned; a pinned blob with no write-back record (a
    /// crash just after the install) is queued again at start-up from its recorded
    /// namespace ([`OriginState::reconcile_pins`]), and by a retried upload's `409`
    /// ([`OriginState::ensure_write_back`]). Nothing is stored on a digest mismatch.
    pub(crate) async fn commit_upload(
        self: &Arc<Self>,
        upload: &Claim<'_>,
        namespace: &str,
        digest: &Digest,
        kind: CommitKind,
    ) -> Result<()> {
        let this = Arc::clone(self);
        let hashed = self.uploads.take_hashed(
            upload.id(),
            std::fs::metadata(upload.path()).map_or(u64::MAX, |m| m.len()),
        );
        let upload = upload.path().to_owned();
        let task = self.write_back_task(namespace, digest, kind);
        let pieces = self.config_piece_lengths();
        tokio::task::spawn_blocking(move || {
            let size = std::fs::metadata(&upload)?.len();
            this.namespaces.set(&task.digest, &task.namespace)?;
            // Moved into the store, not copied: the upload is on the same disk. Hashed as
            // it was written when its chunks came in order, else now.
            let imported = match &hashed {
                Some(meta) => this
                    .store
                    .import_hashed_file_pinned(&upload, meta, &task.digest),
                None => this.store.import_file_pinned(
                    &upload,
                    pieces.piece_length_for(size),
                    Some(&task.digest),
                ),
            };
            let _ = std::fs::remove_file(&upload);
            if imported.is_err() && this.store.status(&task.digest) == BlobStatus::Absent {
                this.namespaces.remove(&task.digest);
            }
            match imported {
                Ok(_) => {}
                Err(kraken_core::Error::DigestMismatch { expected, actual }) => {
                    return Err(Error::DigestMismatch { expected, actual });
                }
                Err(e) => return Err(e.into()),
            }
            fault::crash_point(Fault::AfterInstall);
            // Queued before pinned, as in `ensure_write_back`: a blob cached meanwhile by
            // another route keeps its own pin state, and the write-back loop unpins only when
            // no task of the digest is left, so a write-back finishing between the two steps
            // cannot leave this task's blob unpinned.
            this.queue_pinned(task, || fault::crash_point(Fault::AfterQueue))
        })
        .await
        .map_err(|_| Error::Internal("commit task failed"))??;
        self.seed(namespace, digest);
        if kind == CommitKind::Primary {
            self.spawn_replication(namespace, digest);
        }
        Ok(())
    }

    /// For a blob already cached that a client uploads (again) to `namespace`: makes sure
    /// its write-back to `namespace` is pending or done before the client hears `409`, which
    /// clients count as success. A task for a blob the backend already has finishes after
    /// one `stat`.
    pub(crate) async fn ensure_write_back(
        self: &Arc<Self>,
        namespace: &str,
        digest: &Digest,
        kind: CommitKind,
    ) -> Result<()> {
        let task = self.write_back_task(namespace, digest, kind);
        if self.queue.contains(&task.key()) {
            return Ok(());
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.queue_pinned(task, || {}))
            .await
            .map_err(|_| Error::Internal("write-back task failed"))?
    }

    /// Queues `task` and pins its blob, in that order: the write-back loop unpins only when
    /// no task of the digest is left, so another namespace's write-back finishing meanwhile
    /// cannot unpin it; and if this very task was written back between the two steps (its
    /// unpin came before our pin), the pin is taken back. `after_queue` runs between them (a
    /// fault point). A blob evicted meanwhile has nothing to write back: its task is removed.
    fn queue_pinned(&self, task: WriteBackTask, after_queue: impl FnOnce()) -> Result<()> {
        let key = task.key();
        self.queue.insert(task)?;
        after_queue();
        if let Err(e) = self.store.pin(&key.1) {
            self.queue.remove(&key)?;
            return Err(e.into());
        }
        if !self.queue.contains(&key) {
            self.unpin_if_written_back(&key.1);
        }
        Ok(())
    }

    /// Unpins a written-back blob unless another namespace's write-back of it is pending.
    pub(crate) fn unpin_if_written_back(&self, digest: &Digest) {
        // Under the journal's lock: an insertion ([`ensure_write_back`]) cannot slip in.
        let result = self.queue.scan(|tasks| {
            if tasks.keys().any(|(_, d)| d == digest) {
                Ok(())
            } else {
                self.store.unpin(digest)
            }
        });
        if let Err(e) = result {
            tracing::error!(digest = %digest.fmt_short(), error = %e, "could not unpin a written-back blob");
        }
    }

    /// Pins every blob with a pending write-back, and queues again the write-back of a
    /// pinned blob that has none (pins are the origin's and mean "not yet in the backend":
    /// a crash came between its install and its queue record). Runs at start-up.
    pub(crate) fn reconcile_pins(
        store: &BlobStore,
        queue: &WriteBackQueue,
        namespaces: &NamespaceIndex,
    ) -> Result<()> {
        for task in queue.entries() {
            match store.pin(&task.digest) {
                Ok(()) => {}
                Err(kraken_core::Error::NotFound(_)) => {
                    tracing::error!(digest = %task.digest, "a blob waiting for write-back is missing from disk");
                    queue.remove(&task.key())?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for digest in store.cached() {
            if !store.is_pinned(&digest)
                || queue.scan(|tasks| tasks.keys().any(|(_, d)| *d == digest))
            {
                continue;
            }
            match namespaces.get(&digest) {
                Some(namespace) => {
                    tracing::warn!(%digest, %namespace, "queueing the write-back of a blob committed just before a crash");
                    queue.insert(WriteBackTask {
                        namespace,
                        digest,
                        not_before: SystemTime::now(),
                    })?;
                }
                None => {
                    tracing::error!(%digest, "a pinned blob has no recorded namespace; unpinning it");
                    store.unpin(&digest)?;
                }
            }
        }
        Ok(())
    }

    fn write_back_task(&self, namespace: &str, digest: &Digest, kind: CommitKind) -> WriteBackTask {
        let not_before = match kind {
            CommitKind::Replica | CommitKind::Repair => {
                SystemTime::now() + self.config.cluster.replica_write_back_delay
            }
            _ => SystemTime::now(),
        };
        WriteBackTask {
            namespace: namespace.to_owned(),
            digest: *digest,
            not_before,
        }
    }

    /// After a fetch from the backend: remember the namespace, seed, and give the other
    /// owners a copy (Go Kraken's "local replication" after a refresh).
    pub(crate) fn fetched(self: &Arc<Self>, namespace: &str, meta: &MetaInfo) {
        if let Err(e) = self.namespaces.set(meta.digest(), namespace) {
            tracing::warn!(error = %error_chain(&e), "could not record a blob's namespace");
        }
        self.seed(namespace, meta.digest());
        self.spawn_replication(namespace, meta.digest());
    }

    /// Forgets a blob leaving the store (evicted, purged, swept): its namespace, its place in
    /// the swarm (the seeding torrent holds the file open; closing it frees the space) and
    /// among the recently wanted, and its copy in memory.
    pub(crate) fn forget(&self, digest: &Digest) {
        self.namespaces.remove(digest);
        if let Some(node) = &self.node {
            node.unseed(digest);
        }
        self.recent.remove(digest);
        self.small.remove(digest);
    }

    /// The blob is wanted: keeps it in the P2P swarm, announced and its metainfo published
    /// (if this origin has a tracker), as one of the most recently wanted blobs; the least
    /// recently wanted one beyond [`OriginConfig::max_announced_blobs`] leaves the swarm
    /// when idle (see `recent.rs`).
    pub(crate) fn seed(&self, namespace: &str, digest: &Digest) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if let Some(old) = self.recent.touch(digest) {
            node.retire(&old);
        }
        let namespace = namespace.to_owned();
        let digest = *digest;
        self.tasks.spawn(async move {
            if let Err(e) = node.offer(&namespace, &digest).await {
                tracing::warn!(digest = %digest.fmt_short(), error = %error_chain(&e), "could not seed blob");
            }
        });
    }

    fn spawn_replication(self: &Arc<Self>, namespace: &str, digest: &Digest) {
        let this = Arc::clone(self);
        let namespace = namespace.to_owned();
        let digest = *digest;
        let shutdown = self.shutdown.clone();
        // A push of a large blob may take long: shutdown does not wait for it.
        self.tasks.spawn(async move {
            shutdown
                .run_until_cancelled(replicate::replicate(
                    &this,
                    &namespace,
                    &digest,
                    CommitKind::Replica,
                ))
                .await;
        });
    }

    pub(crate) fn config_piece_lengths(&self) -> kraken_core::PieceLengthPolicy {
        kraken_core::PieceLengthPolicy::default()
    }
}
