//! A backend on the local filesystem (or anything mounted there: NFS, a FUSE bucket).

use std::io::{self, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::error::{Error, Result};
// The upload directory is inside the root, so on the same filesystem: the rename is atomic.
use crate::layout::{NameLayout, UPLOAD_DIR, temp_upload_path};
use crate::listing::paginate_paths;

/// Read buffer of downloads.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes of an upload written between two syncs, after each of which they leave the page
/// cache: the memory an upload holds at once.
const DROP_BEHIND_EVERY: u64 = 16 << 20;
/// Chunks of an upload handed to its writing thread ahead of the write.
const WRITE_AHEAD: usize = 4;
/// Deepest directory nesting a listing descends into; deeper trees are not blobs we wrote.
const MAX_LIST_DEPTH: usize = 64;

/// Configuration of a [`FsBackend`].
///
/// ```toml
/// type = "fs"
/// root = "/var/lib/kraken/backend"
/// layout = "identity"   # default
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// Directory that holds the blobs; created if missing. Required.
    pub root: PathBuf,
    /// How names map to paths below the root. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
}

impl FsConfig {
    /// Blobs under `root`, named by the identity layout.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            layout: NameLayout::default(),
        }
    }
}

/// Blobs as files below a root directory. Uploads are written to a temporary file and
/// renamed into place, so readers never see a partial blob; names never leave the root.
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
    layout: NameLayout,
}

impl FsBackend {
    /// Opens the root directory, creating it if needed. A root that cannot be created now
    /// (a network mount that is down, say) is not an error: it is created on the first
    /// upload, and until then reads answer with the file system's errors. A role then starts
    /// and serves what it holds while its backend is away.
    pub fn new(config: FsConfig) -> Result<Self> {
        if config.root.as_os_str().is_empty() {
            return Err(Error::Config("fs backend: `root` is empty".into()));
        }
        if let Err(e) = std::fs::create_dir_all(config.root.join(UPLOAD_DIR)) {
            tracing::warn!(
                root = %config.root.display(),
                error = %e,
                "fs backend: cannot create the root now; trying again at the first upload"
            );
        }
        Ok(Self {
            root: config.root,
            layout: config.layout,
        })
    }

    fn blob_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.root.join(self.layout.path_outside_uploads(name)?))
    }

    /// Size of a regular file, with a missing file or a directory reported as not found.
    async fn file_size(&self, path: &Path, namespace: &str, name: &str) -> Result<u64> {
        Ok(self.file_info(path, namespace, name).await?.size)
    }

    /// Size and mtime of a regular file, with a missing file or a directory reported as not
    /// found.
    async fn file_info(&self, path: &Path, namespace: &str, name: &str) -> Result<BlobInfo> {
        match tokio::fs::metadata(path).await {
            Ok(meta) if meta.is_file() => {
                let info = BlobInfo::new(meta.len());
                Ok(match meta.modified() {
                    Ok(modified) => info.with_modified(modified),
                    Err(_) => info,
                })
            }
            Ok(_) => Err(Error::not_found(namespace, name)),
            Err(error) => Err(not_found_or_io(error, namespace, name)),
        }
    }
}

#[async_trait]
impl Backend for FsBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        let path = self.blob_path(name)?;
        self.file_info(&path, namespace, name).await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let path = self.blob_path(name)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|error| not_found_or_io(error, namespace, name))?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(Error::not_found(namespace, name));
        }
        let (offset, length) = match range {
            Some(range) => (range.offset(), range.clamp_to(meta.len())?),
            None => (0, meta.len()),
        };
        file.seek(SeekFrom::Start(offset)).await?;
        let reader = file.take(length);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK);
        Ok(stream.map_err(Error::from).boxed())
    }

    async fn upload(&self, _namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let target = self.blob_path(name)?;
        let temp = self.root.join(temp_upload_path());
        let upload_dir = self.root.join(UPLOAD_DIR);
        // Written on a thread in the idle scheduling class: an upload to a backend is an
        // origin's write-back, whose copy must not slow the pulls of the blob that come at
        // the same time.
        let (chunks, received) = mpsc::channel(WRITE_AHEAD);
        let (done, written) = oneshot::channel();
        kraken_core::store::spawn_background("kraken-fs-upload", move || {
            let written = write_upload(&temp, &upload_dir, &target, received, || done.is_closed());
            let _ = done.send(written);
        })?;
        let mut stream = body.into_stream();
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    if chunks.send(Chunk::Data(chunk)).await.is_err() {
                        break; // The thread failed: its error is below.
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            // Fails only if the thread has ended already, with its error below.
            let _ = chunks.send(Chunk::End).await;
        }
        // Without `End` the thread removes the temporary file; it is gone when this returns.
        drop(chunks);
        let outcome = written
            .await
            .map_err(|_| Error::Io(io::Error::other("the fs upload thread failed")))?;
        match failed {
            Some(e) => Err(e),
            None => outcome,
        }
    }

    async fn list(
        &self,
        _namespace: &str,
        prefix: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        let root = self.root.clone();
        let layout = self.layout;
        let dir = layout.list_dir(prefix);
        let relative_paths = tokio::task::spawn_blocking(move || walk_files(&root, &dir))
            .await
            .map_err(|_| Error::Internal("filesystem listing task panicked"))??;
        Ok(paginate_paths(layout, &relative_paths, prefix, options))
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let path = self.blob_path(name)?;
        self.file_size(&path, namespace, name).await?;
        tokio::fs::remove_file(&path)
            .await
            .map_err(|error| not_found_or_io(error, namespace, name))
    }
}

/// What [`FsBackend::upload`] hands its writing thread.
enum Chunk {
    Data(Bytes),
    /// The body ended well: the file can take its name.
    End,
}

/// The writing thread of [`FsBackend::upload`]: the chunks it `received` into a temporary
/// file, which after [`Chunk::End`] is made durable and renamed to `target` — unless the
/// upload was `abandoned` meanwhile (its future dropped: a cancelled write-back, a shutdown).
/// The thread may run long after the body ended (it waits for idle cores); a late rename
/// would put back an old value of a name written since, a tag's, say. Dropped from
/// the page cache as it goes, once durable: nothing reads a blob from its backend soon after
/// writing it (an origin holds its own copy), and a 1 GiB write-back into fresh page cache
/// took a core for seconds, slowing the pulls meanwhile.
fn write_upload(
    temp: &Path,
    upload_dir: &Path,
    target: &Path,
    mut received: mpsc::Receiver<Chunk>,
    abandoned: impl Fn() -> bool,
) -> Result<()> {
    let temp = TempFile::new(temp.to_owned());
    let mut file = match std::fs::File::create(&temp.path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The root could not be created at start-up, or was removed since.
            std::fs::create_dir_all(upload_dir)?;
            std::fs::File::create(&temp.path)?
        }
        file => file?,
    };
    let (mut written, mut durable) = (0u64, 0u64);
    loop {
        match received.blocking_recv() {
            Some(Chunk::Data(chunk)) => {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
                if written - durable >= DROP_BEHIND_EVERY {
                    file.sync_data()?;
                    kraken_core::store::drop_cached(&file, durable..written);
                    durable = written;
                }
            }
            Some(Chunk::End) => break,
            None => {
                return Err(Error::Io(io::Error::other(
                    "the upload's body failed before its end",
                )));
            }
        }
    }
    file.sync_all()?;
    kraken_core::store::drop_cached(&file, durable..written);
    drop(file);
    if abandoned() {
        return Err(Error::Io(io::Error::other(
            "the upload was abandoned before its file took its name",
        )));
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    std::fs::rename(&temp.path, target)?;
    temp.keep();
    // The new name is durable too before the upload returns: the origin unpins its own copy
    // then.
    kraken_core::store::sync_dir(parent)?;
    Ok(())
}

/// A temporary upload file, removed on drop unless [`TempFile::keep`] says it was renamed.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover only wastes space in _uploads, it is never listed.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn not_found_or_io(error: io::Error, namespace: &str, name: &str) -> Error {
    if error.kind() == io::ErrorKind::NotFound {
        Error::not_found(namespace, name)
    } else {
        Error::Io(error)
    }
}

/// Relative paths (with `/` separators) of the regular files below `root/dir`, not following
/// symlinks. Files whose names are not UTF-8 are skipped: no blob name maps to them.
fn walk_files(root: &Path, dir: &str) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut pending = vec![(dir.trim_end_matches('/').to_owned(), 0usize)];
    while let Some((relative, depth)) = pending.pop() {
        let entries = match std::fs::read_dir(root.join(&relative)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            let child = if relative.is_empty() {
                file_name
            } else {
                format!("{relative}/{file_name}")
            };
            let kind = entry.file_type()?;
            if kind.is_file() {
                files.push(child);
            } else if kind.is_dir() && depth < MAX_LIST_DEPTH {
                pending.push((child, depth + 1));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`write_upload`] on `chunks` (ended with [`Chunk::End`]) into `dir`.
    fn write(dir: &Path, chunks: &[&[u8]], abandoned: bool) -> Result<()> {
        let (sender, received) = mpsc::channel(chunks.len() + 1);
        for chunk in chunks {
            sender
                .try_send(Chunk::Data(Bytes::copy_from_slice(chunk)))
                .unwrap();
        }
        sender.try_send(Chunk::End).unwrap();
        let uploads = dir.join(UPLOAD_DIR);
        let temp = uploads.join("upload");
        write_upload(&temp, &uploads, &dir.join("blob"), received, || abandoned)
    }

    #[test]
    fn a_finished_upload_takes_its_name_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[b"one", b" two"], false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("blob")).unwrap(), b"one two");

        // Abandoned after its whole body came: the name keeps what it held, and the
        // temporary file is gone.
        let error = write(dir.path(), &[b"late"], true).unwrap_err();
        assert!(format!("{error:?}").contains("abandoned"), "{error:?}");
        assert_eq!(std::fs::read(dir.path().join("blob")).unwrap(), b"one two");
        let leftovers = std::fs::read_dir(dir.path().join(UPLOAD_DIR))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }
}
