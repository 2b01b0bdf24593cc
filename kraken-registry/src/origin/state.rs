//! What every part of a running origin shares, and the steps every new blob goes through.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kraken_backends::Backend;
use kraken_core::{BlobStore, Digest, MetaInfo};
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
use super::replicate;
use super::uploads::Uploads;
use crate::error::{Error, Result, error_chain};

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
    pub(crate) fetcher: Arc<Fetcher>,
    pub(crate) membership: Membership,
    pub(crate) client: OriginClient,
    pub(crate) node: Option<Node>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Re-hashes of cached blobs in progress and recently done.
    pub(crate) checks: Checks,
}

impl OriginState {
    /// Imports a committed upload into the store, verified against `digest`; nothing is
    /// stored on a mismatch.
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

    /// Makes a blob just committed durable and schedules its write-back: its directory entry
    /// is synced, its namespace recorded, it is pinned against cleanup, and the write-back
    /// task is in the journal on disk — all before this returns, and so before the client
    /// hears `201`. Then it is seeded and, for a client's upload, replicated.
    pub(crate) async fn accept(
        self: &Arc<Self>,
        namespace: &str,
        digest: &Digest,
        kind: CommitKind,
    ) -> Result<()> {
        let not_before = match kind {
            CommitKind::Replica => SystemTime::now() + self.config.cluster.replica_write_back_delay,
            _ => SystemTime::now(),
        };
        let this = Arc::clone(self);
        let task = WriteBackTask {
            namespace: namespace.to_owned(),
            digest: *digest,
            not_before,
        };
        tokio::task::spawn_blocking(move || {
            let blob = this.store.open_blob(&task.digest)?;
            sync_parent_dirs(blob.path())?;
            this.namespaces.set(&task.digest, &task.namespace)?;
            this.store.pin(&task.digest)?;
            this.queue.insert(task).map(drop)
        })
        .await
        .map_err(|_| Error::Internal("commit task failed"))??;
        self.seed(namespace, digest);
        if kind == CommitKind::Primary {
            self.spawn_replication(namespace, digest);
        }
        Ok(())
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

    /// Announces the blob over P2P (if this origin has a tracker).
    pub(crate) fn seed(&self, namespace: &str, digest: &Digest) {
        let Some(node) = self.node.clone() else {
            return;
        };
        let namespace = namespace.to_owned();
        let digest = *digest;
        self.tasks.spawn(async move {
            if let Err(e) = node.seed(&namespace, &digest).await {
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
                .run_until_cancelled(replicate::replicate(&this, &namespace, &digest))
                .await;
        });
    }

    pub(crate) fn config_piece_lengths(&self) -> kraken_core::PieceLengthPolicy {
        kraken_core::PieceLengthPolicy::default()
    }
}

/// `fsync`s the directories above a cached blob's data file, so that the rename that put it
/// in the cache survives a power failure.
fn sync_parent_dirs(data: &Path) -> std::io::Result<()> {
    let mut dir = data.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        std::fs::File::open(d)?.sync_all()?;
        dir = d.parent();
    }
    Ok(())
}
