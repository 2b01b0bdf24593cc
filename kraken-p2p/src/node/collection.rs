//! Directories and caller-chosen destinations: [`Node::seed_file_in_place`],
//! [`Node::seed_dir`], [`Node::download_to`] and [`Node::fetch_dir`].
//!
//! A directory travels as a [`Collection`] blob naming every file's blob. Seeding a
//! directory records each file **in place** (the store keeps only its metainfo, see
//! [`BlobStore::import_reference`]); fetching one downloads each distinct blob once,
//! several at a time, to its path under the destination: moved out of the store
//! ([`BlobStore::export`]) on the store's file system, written there directly on another
//! ([`BlobStore::begin_download_to`]). Each file is written once, and stays seedable from
//! there.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::StreamExt as _;
use kraken_core::collection::{self, Collection, CollectionEntry, CollectionError};
use kraken_core::{Blob, Digest, MetaInfo};
use tokio::sync::watch;

use super::{Node, Progress};
use crate::error::{Error, Result};

/// Blobs of one directory fetched at once.
const FETCH_CONCURRENCY: usize = 8;
/// Files of one directory hashed at once when seeding.
const SEED_CONCURRENCY: usize = 2;

/// Where a [`DirFetch`] stands, in total and per file.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct DirProgress {
    /// Whether the collection itself has been fetched (`files` is empty until then).
    pub listed: bool,
    /// Every file of the collection, sorted by path.
    pub files: Vec<FileProgress>,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// Bytes verified so far, over all files.
    pub done_bytes: u64,
    /// Files complete at their destination.
    pub files_done: usize,
    /// Whether every file is in place.
    pub done: bool,
}

/// Where one file of a [`DirFetch`] stands.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct FileProgress {
    /// Path relative to the destination.
    pub path: String,
    /// The file's length.
    pub size: u64,
    /// Bytes verified so far.
    pub done_bytes: u64,
    /// Whether the file is complete at its destination.
    pub done: bool,
}

/// A directory download in progress: await it for the [`Collection`] it laid out.
///
/// Dropping it (or the future awaiting it) stops the directory fetch; its blob downloads are
/// then cancelled as any dropped download is ([`NodeConfig::cancel_on_drop`](super::NodeConfig::cancel_on_drop)),
/// and files already in place stay.
#[derive(Debug)]
#[must_use = "a directory fetch stops when its DirFetch is dropped"]
pub struct DirFetch {
    task: AbortOnDrop,
    progress: watch::Receiver<DirProgress>,
}

/// Aborts the directory fetch's task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<Result<Collection>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DirFetch {
    /// Progress updates (latest value wins).
    pub fn progress(&self) -> watch::Receiver<DirProgress> {
        self.progress.clone()
    }
}

impl IntoFuture for DirFetch {
    type Output = Result<Collection>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Collection>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut task = self.task;
            (&mut task.0)
                .await
                .map_err(|_| Error::Internal("directory fetch task failed"))?
        })
    }
}

/// Bytes of a file that `progress` reports verified.
fn verified_bytes(progress: &Progress) -> u64 {
    if progress.done {
        return progress.length;
    }
    if progress.total == 0 {
        return 0;
    }
    progress.length / u64::from(progress.total) * u64::from(progress.have)
}

impl Node {
    /// Seeds the file at `path` **in place**: hashes it and records it in the store by
    /// reference (no bytes are copied), publishes its metainfo in the node's namespace and
    /// seeds it until shutdown. The file must not change while it is seeded; if it does,
    /// the store refuses to serve it (see [`kraken_core::BlobStore::import_reference`]).
    pub async fn seed_file_in_place(&self, path: &Path) -> Result<MetaInfo> {
        let store = self.inner.store.clone();
        let policy = self.inner.piece_lengths.clone();
        let path = path.to_owned();
        let meta = tokio::task::spawn_blocking(move || {
            let size = std::fs::metadata(&path)
                .map_err(|source| kraken_core::Error::Io {
                    path: path.clone(),
                    source,
                })?
                .len();
            store.import_reference(&path, policy.piece_length_for(size))
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))??;
        self.seed(&self.inner.namespace, meta.digest()).await
    }

    /// Seeds every regular file under `dir` in place and a [`Collection`] listing them,
    /// and returns the collection's digest: [`fetch_dir`](Self::fetch_dir) of that digest
    /// recreates the tree elsewhere.
    ///
    /// Symbolic links to files inside `dir` are seeded as the files they point to; links
    /// out of the tree, links to directories, and special files are refused, as are
    /// paths that are not UTF-8 or not safe ([`collection::validate_path`]). Empty
    /// directories are not recorded.
    pub async fn seed_dir(&self, dir: &Path) -> Result<Digest> {
        let root = dir.to_owned();
        let files = tokio::task::spawn_blocking(move || collection::list_tree(&root))
            .await
            .map_err(|_| Error::Internal("directory walk failed"))??;
        let entries: Vec<CollectionEntry> = futures::stream::iter(files)
            .map(|file| async move {
                let meta = self.seed_file_in_place(&file.source).await?;
                Ok::<_, Error>(CollectionEntry {
                    path: file.path,
                    size: meta.length(),
                    mode: file.mode,
                    digest: *meta.digest(),
                })
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let collection = Collection::new(entries).map_err(kraken_core::Error::from)?;
        let encoded = collection.encode();
        let store = self.inner.store.clone();
        let policy = self.inner.piece_lengths.clone();
        let meta = tokio::task::spawn_blocking(move || {
            store.import(
                &encoded[..],
                policy.piece_length_for(encoded.len() as u64),
                None,
            )
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))??;
        self.seed(&self.inner.namespace, meta.digest()).await?;
        Ok(*meta.digest())
    }

    /// Downloads a blob (or finds it cached) and leaves it at `path`, replacing a regular
    /// file there, with each of its bytes written once wherever `path` is: on the store's
    /// file system the download is moved out of the store with a rename; on another one it
    /// is written piece by piece (each verified) to a temporary file beside `path`,
    /// `.NAME.kraken-partial-…`, renamed into place once the whole blob checks out
    /// ([`kraken_core::BlobStore::begin_download_to`]). If the download fails or is
    /// cancelled, that temporary file is removed; it is not resumed after a restart.
    ///
    /// The store keeps only the metainfo and a reference to `path`, from where the node goes
    /// on seeding the blob; the file must then not change (see
    /// [`kraken_core::BlobStore::export`]). A blob already cached (or a download of it
    /// already under way into the store) is moved out, or copied across file systems.
    /// Returns the blob as found at `path`.
    pub async fn download_to(&self, digest: &Digest, path: &Path) -> Result<Blob> {
        self.fetch("", digest, Some(path.to_owned())).await?;
        match self.export(digest, path).await {
            Err(e) if is_stale(&e) => {
                // The copy this node held was a file that changed or went since: stop serving
                // it and fetch the blob again.
                self.unseed(digest);
                self.fetch("", digest, Some(path.to_owned())).await?;
                self.export(digest, path).await
            }
            other => other,
        }
    }

    async fn export(&self, digest: &Digest, path: &Path) -> Result<Blob> {
        let store = self.inner.store.clone();
        let (digest, path) = (*digest, path.to_owned());
        tokio::task::spawn_blocking(move || {
            store.export(&digest, &path)?;
            store.open_blob(&digest)
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))?
        .map_err(Error::from)
    }

    /// Fetches the [`Collection`] `digest` names and lays out its files under `dest`
    /// (created if missing): several files at once, each written to a temporary name in
    /// its directory and renamed into place once verified, with its mode set. Files already
    /// at `dest` with the same names are replaced; nothing else there is touched. Watch the
    /// returned [`DirFetch`]'s progress, and await it for the collection.
    ///
    /// Fails if the blob is not a valid collection, if a path of it would leave `dest`
    /// (see [`collection::validate_path`]), or if a directory on the way is a symbolic link.
    pub fn fetch_dir(&self, digest: &Digest, dest: &Path) -> DirFetch {
        let (progress_tx, progress) = watch::channel(DirProgress::default());
        let node = self.clone();
        let (digest, dest) = (*digest, dest.to_owned());
        let task =
            tokio::spawn(async move { node.fetch_dir_task(digest, dest, progress_tx).await });
        DirFetch {
            task: AbortOnDrop(task),
            progress,
        }
    }

    async fn fetch_dir_task(
        &self,
        digest: Digest,
        dest: PathBuf,
        progress: watch::Sender<DirProgress>,
    ) -> Result<Collection> {
        let blob = self.download(&digest).await?;
        if blob.len() > collection::MAX_COLLECTION_LEN as u64 {
            return Err(kraken_core::Error::from(CollectionError::TooLong(
                usize::try_from(blob.len()).unwrap_or(usize::MAX),
            ))
            .into());
        }
        let collection = tokio::task::spawn_blocking(move || {
            let mut bytes = vec![0; blob.len() as usize];
            blob.read_exact_at(0, &mut bytes)?;
            Ok::<_, kraken_core::Error>(Collection::decode(&bytes)?)
        })
        .await
        .map_err(|_| Error::Internal("store task failed"))??;
        progress.send_replace(DirProgress {
            listed: true,
            files: collection
                .entries()
                .iter()
                .map(|e| FileProgress {
                    path: e.path.clone(),
                    size: e.size,
                    done_bytes: 0,
                    done: false,
                })
                .collect(),
            total_bytes: collection.total_size(),
            ..DirProgress::default()
        });
        // One task per distinct blob: a blob is downloaded once and exported to each of its
        // paths in turn (the first export moves it, the others copy from there).
        let mut by_digest: BTreeMap<Digest, Vec<usize>> = BTreeMap::new();
        for (index, entry) in collection.entries().iter().enumerate() {
            by_digest.entry(entry.digest).or_default().push(index);
        }
        let dest_ref = &dest;
        let collection_ref = &collection;
        let progress_ref = &progress;
        let results: Vec<Result<()>> = futures::stream::iter(by_digest)
            .map(|(digest, indices)| async move {
                self.fetch_one(digest, &indices, collection_ref, dest_ref, progress_ref)
                    .await
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        progress.send_modify(|p| p.done = true);
        Ok(collection)
    }

    /// Fetches one blob and puts it at the paths `indices` name.
    async fn fetch_one(
        &self,
        digest: Digest,
        indices: &[usize],
        collection: &Collection,
        dest: &Path,
        progress: &watch::Sender<DirProgress>,
    ) -> Result<()> {
        let entries = collection.entries();
        let size = entries[indices[0]].size;
        let update = |done_bytes: u64| {
            progress.send_modify(|p| {
                for &i in indices {
                    let file = &mut p.files[i];
                    p.done_bytes = p.done_bytes - file.done_bytes + done_bytes;
                    file.done_bytes = done_bytes;
                }
            });
        };
        if size == 0 {
            // An empty blob has no pieces to fetch: its digest says all there is.
            if digest != Digest::sha256_of(b"") {
                return Err(kraken_core::Error::DigestMismatch {
                    expected: digest,
                    actual: Digest::sha256_of(b""),
                }
                .into());
            }
        } else {
            // Written straight to its first path when that is on another file system than
            // the store (see `download_to`); the export below then finds it there.
            let first = prepare_parent(dest, &entries[indices[0]].path).await?;
            let fetch = self.fetch("", &digest, Some(first));
            let mut watcher = fetch.progress();
            let forward = async {
                while watcher.changed().await.is_ok() {
                    let now = *watcher.borrow_and_update();
                    update(verified_bytes(&now));
                }
                // The watcher may close before the result arrives: wait for the result.
                std::future::pending::<()>().await;
            };
            let blob = tokio::select! {
                result = fetch.into_future() => result?,
                () = forward => unreachable!("pending forever"),
            };
            if blob.len() != size {
                return Err(Error::Internal(
                    "a collection's size disagrees with its blob",
                ));
            }
            update(size);
        }
        for &i in indices {
            let entry = &entries[i];
            let target = prepare_parent(dest, &entry.path).await?;
            if size == 0 {
                write_empty(&target).await?;
            } else {
                match self.export(&digest, &target).await {
                    Err(e) if is_stale(&e) => {
                        self.download_to(&digest, &target).await?;
                    }
                    other => {
                        other?;
                    }
                }
            }
            let mode = entry.mode;
            let path = target.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|source| kraken_core::Error::Io { path, source })
            })
            .await
            .map_err(|_| Error::Internal("store task failed"))??;
            progress.send_modify(|p| {
                p.files[i].done = true;
                p.files_done += 1;
            });
        }
        Ok(())
    }
}

/// Whether an export failed because the store no longer holds the blob (a file kept by
/// reference changed or went, or eviction removed it): fetching it again helps.
fn is_stale(error: &Error) -> bool {
    matches!(
        error,
        Error::Core(kraken_core::Error::ReferenceChanged { .. } | kraken_core::Error::NotFound(_))
    )
}

/// Creates the directories of `relative` under `dest` (see
/// [`collection::prepare_path`]) on the blocking pool.
async fn prepare_parent(dest: &Path, relative: &str) -> Result<PathBuf> {
    let (dest, relative) = (dest.to_owned(), relative.to_owned());
    tokio::task::spawn_blocking(move || collection::prepare_path(&dest, &relative))
        .await
        .map_err(|_| Error::Internal("directory task failed"))?
        .map_err(Error::from)
}

async fn write_empty(target: &Path) -> Result<()> {
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || {
        let tmp = target.with_extension("kraken-partial");
        std::fs::write(&tmp, b"")
            .and_then(|()| std::fs::rename(&tmp, &target))
            .map_err(|source| kraken_core::Error::Io {
                path: target,
                source,
            })
    })
    .await
    .map_err(|_| Error::Internal("directory task failed"))?
    .map_err(Error::from)
}
