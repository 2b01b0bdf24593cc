//! Uploads in progress: one file per upload under `uploads/`, written chunk by chunk at the
//! offsets the client gives, until the commit imports it into the blob store.
//!
//! A chunk write and a commit each [claim](Uploads::claim) the upload for as long as they
//! run; a second claim is refused. So no chunk can land in the file while a commit hashes
//! it, and what the store installs is exactly what was hashed.
//!
//! An upload whose length was announced at its start (the `Upload-Length` header, which
//! the proxy sends) is hashed as its chunks are written, while they come in order: its
//! commit then installs it without reading it again. Chunks out of order, or a chunk that
//! fails, leave the hashing to the commit.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Body;
use kraken_core::{MetaInfo, MetaInfoGenerator};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Upload ids are 32 lowercase hex digits (128 random bits).
const ID_LEN: usize = 32;

/// Bytes of a chunk's body gathered before they are written: with the limit on chunks
/// written at once, what uploads hold in memory is bounded whatever the chunk size.
const WRITE_BATCH: usize = 1 << 20;
/// Body frames gathered into one batch at most: one `pwritev` takes them as they are.
const BATCH_FRAMES: usize = 256;
const _: () = assert!(BATCH_FRAMES <= kraken_core::store::MAX_PARTS);

#[derive(Debug)]
pub(crate) struct Uploads {
    dir: PathBuf,
    /// Chunk bodies being written at once (`limits.max_concurrent_chunks`).
    writers: Arc<Semaphore>,
    /// Uploads a chunk write or a commit is working on.
    claimed: Mutex<HashSet<String>>,
    /// Uploads hashed as their chunks come in order, by id (taken out while a chunk or the
    /// commit works on them).
    hashing: Mutex<HashMap<String, InOrder>>,
}

/// The hash of an upload's first bytes, fed as its chunks arrive in order.
#[derive(Debug)]
struct InOrder {
    generator: MetaInfoGenerator,
    /// Bytes hashed: the next chunk is hashed too if it starts here.
    hashed: u64,
}

/// How often, in bytes written, an upload's file is flushed to disk in the background, so
/// that the commit's `fdatasync` waits for the last of them only.
const WRITE_BACK_EVERY: u64 = 64 << 20;

/// Why an upload could not be claimed.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum ClaimError {
    /// No such upload (never started, committed, or swept).
    Unknown,
    /// A commit or another chunk write holds it.
    Busy,
}

/// An upload held by one chunk write or commit, released on drop.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    uploads: &'a Uploads,
    id: String,
    path: PathBuf,
}

impl Claim<'_> {
    /// The upload's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The upload's file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.uploads.lock().remove(&self.id);
    }
}

/// Why a chunk was not written.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// As many chunks as allowed are being written: retry later.
    Busy,
    /// The upload is unknown, or a commit or another chunk holds it.
    Claimed(ClaimError),
    /// The body is longer or shorter than its `Content-Range` says, or it broke off.
    Body(&'static str),
    /// Writing it failed.
    Write(Error),
}

impl Uploads {
    /// Opens `dir`; at most `max_concurrent_chunks` chunk bodies are written at once.
    pub(crate) fn open(dir: &Path, max_concurrent_chunks: usize) -> Result<Self> {
        crate::durable::create_dir_all_synced(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            writers: Arc::new(Semaphore::new(max_concurrent_chunks.max(1))),
            claimed: Mutex::new(HashSet::new()),
            hashing: Mutex::new(HashMap::new()),
        })
    }

    /// Claims upload `id` for one chunk write or commit.
    pub(crate) fn claim(&self, id: &str) -> std::result::Result<Claim<'_>, ClaimError> {
        let path = self.path(id).ok_or(ClaimError::Unknown)?;
        if !self.lock().insert(id.to_owned()) {
            return Err(ClaimError::Busy);
        }
        // Committed (and so removed) between the look-up and the claim.
        if !path.is_file() {
            self.lock().remove(id);
            return Err(ClaimError::Unknown);
        }
        Ok(Claim {
            uploads: self,
            id: id.to_owned(),
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.claimed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `body`, which must be exactly `length` bytes, at `offset` of the upload file
    /// `path`, [`WRITE_BATCH`] bytes at a time as they arrive.
    pub(crate) async fn write_chunk<B>(
        &self,
        id: &str,
        offset: u64,
        length: u64,
        mut body: B,
    ) -> std::result::Result<(), ChunkError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let Ok(_permit) = Arc::clone(&self.writers).try_acquire_owned() else {
            return Err(ChunkError::Busy);
        };
        // Held while the chunk is written: a commit cannot hash the file meanwhile.
        let claim = self.claim(id).map_err(ChunkError::Claimed)?;
        let file = OpenOptions::new()
            .write(true)
            .open(claim.path())
            .map_err(|e| ChunkError::Write(e.into()))?;
        let file = Arc::new(file);
        // Hashed with the chunk if it continues what was hashed; otherwise never again.
        let mut in_order = self.hashing().remove(id).filter(|h| h.hashed == offset);
        let result = self
            .write_body(&file, offset, length, &mut body, &mut in_order)
            .await;
        if result.is_ok()
            && let Some(hashing) = in_order
        {
            self.hashing().insert(id.to_owned(), hashing);
        }
        if result.is_ok() && (offset + length) / WRITE_BACK_EVERY > offset / WRITE_BACK_EVERY {
            // Flushed in the background while the next chunks come; errors surface at the
            // commit's own sync.
            let file = Arc::clone(&file);
            tokio::task::spawn_blocking(move || file.sync_data());
        }
        result
    }

    /// Writes `body` (`length` bytes) at `offset`, feeding `in_order` as it goes.
    async fn write_body<B>(
        &self,
        file: &Arc<File>,
        offset: u64,
        length: u64,
        body: &mut B,
        in_order: &mut Option<InOrder>,
    ) -> std::result::Result<(), ChunkError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let mut written = 0u64;
        // The frames as they arrived, not copied into one buffer: written with one
        // `pwritev`.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0u64;
        // One batch is written and hashed on the blocking pool while the next is read.
        let mut pending: Option<PendingWrite> = None;
        loop {
            let frame = match body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(_)) => return Err(ChunkError::Body("body unreadable or stalled")),
                None => break,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if written + batch_len + data.len() as u64 > length {
                return Err(ChunkError::Body("body longer than its Content-Range"));
            }
            batch_len += data.len() as u64;
            batch.push(data);
            if batch_len >= WRITE_BATCH as u64 || batch.len() >= BATCH_FRAMES {
                if let Some(previous) = pending.take() {
                    *in_order = previous.finish().await?;
                }
                let data = std::mem::take(&mut batch);
                pending = Some(PendingWrite::start(file, offset + written, data, in_order));
                written += std::mem::take(&mut batch_len);
            }
        }
        if let Some(previous) = pending.take() {
            *in_order = previous.finish().await?;
        }
        if written + batch_len != length {
            return Err(ChunkError::Body("body shorter than its Content-Range"));
        }
        if batch.is_empty() {
            return Ok(());
        }
        *in_order = PendingWrite::start(file, offset + written, batch, in_order)
            .finish()
            .await?;
        Ok(())
    }

    fn hashing(&self) -> std::sync::MutexGuard<'_, HashMap<String, InOrder>> {
        self.hashing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metainfo of upload `id` if all of it, `length` bytes, was hashed as it was
    /// written; forgets its hashing either way.
    pub(crate) fn take_hashed(&self, id: &str, length: u64) -> Option<MetaInfo> {
        let hashing = self.hashing().remove(id)?;
        if hashing.hashed != length {
            return None;
        }
        hashing.generator.finish().ok()
    }

    /// Starts an upload; returns its id. With `announced` (the blob's length and the piece
    /// length its metainfo will have), its chunks are hashed as they come in order.
    pub(crate) fn create(&self, announced: Option<(u64, u64)>) -> Result<String> {
        let id = format!("{:032x}", rand::random::<u128>());
        File::create(self.dir.join(&id))?;
        if let Some((_, piece_length)) = announced
            && let Ok(generator) = MetaInfoGenerator::new(piece_length)
        {
            let hashing = InOrder {
                generator,
                hashed: 0,
            };
            self.hashing().insert(id.clone(), hashing);
        }
        Ok(id)
    }

    /// The file of upload `id`, if it exists (and `id` is well formed).
    pub(crate) fn path(&self, id: &str) -> Option<PathBuf> {
        let valid = id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self.dir.join(id);
        (valid && path.is_file()).then_some(path)
    }

    /// Deletes uploads not written for longer than `ttl`.
    pub(crate) fn sweep(&self, now: SystemTime, ttl: Duration) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() > ttl);
            if stale && fs::remove_file(entry.path()).is_ok() {
                if let Some(id) = entry.file_name().to_str() {
                    self.hashing().remove(id);
                }
                removed += 1;
            }
        }
        removed
    }
}

/// A batch being written at an offset of an upload's file on the blocking pool and, when it
/// continues what was hashed, hashed there at the same time on another thread: the write
/// (a page-cache copy) and the hash each take one core instead of following each other.
struct PendingWrite {
    write: tokio::task::JoinHandle<std::io::Result<()>>,
    hash: Option<tokio::task::JoinHandle<InOrder>>,
}

impl PendingWrite {
    /// Starts writing `data` (frames, in order) at `offset` of `file`, and hashing it with
    /// `in_order` if it continues that.
    fn start(
        file: &Arc<File>,
        offset: u64,
        data: Vec<Bytes>,
        in_order: &mut Option<InOrder>,
    ) -> Self {
        let hash = in_order.take().filter(|h| h.hashed == offset).map(|mut h| {
            let data = data.clone();
            tokio::task::spawn_blocking(move || {
                for part in &data {
                    h.generator.update(part);
                    h.hashed += part.len() as u64;
                }
                h
            })
        });
        let file = Arc::clone(file);
        let write = tokio::task::spawn_blocking(move || {
            kraken_core::store::write_all_vectored_at(&file, &data, offset)
        });
        Self { write, hash }
    }

    /// Waits for the write and the hash; the hashing, carried on. A failed write drops the
    /// hashing (the commit hashes the file then).
    async fn finish(self) -> std::result::Result<Option<InOrder>, ChunkError> {
        let failed = || ChunkError::Write(Error::Internal("upload write task failed"));
        let hashing = match self.hash {
            Some(hash) => Some(hash.await.map_err(|_| failed())?),
            None => None,
        };
        match self.write.await {
            Ok(Ok(())) => Ok(hashing),
            Ok(Err(e)) => Err(ChunkError::Write(e.into())),
            Err(_) => Err(failed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `frames`, as a client sends it.
    fn body(frames: &[&'static [u8]]) -> impl Body<Data = Bytes> + Unpin {
        let frames = frames
            .iter()
            .map(|f| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(f))))
            .collect::<Vec<_>>();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn chunks_land_at_their_offsets_and_stale_uploads_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), 4).unwrap();
        let id = uploads.create(None).unwrap();
        let path = uploads.path(&id).unwrap();
        uploads
            .write_chunk(&id, 5, 5, body(&[b"wor", b"ld"]))
            .await
            .unwrap();
        uploads
            .write_chunk(&id, 0, 5, body(&[b"hello"]))
            .await
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"helloworld");
        for (frames, length) in [(&[&b"hello!"[..]][..], 5), (&[&b"hell"[..]][..], 5)] {
            let refused = uploads.write_chunk(&id, 0, length, body(frames)).await;
            assert!(matches!(refused, Err(ChunkError::Body(_))), "{refused:?}");
        }
        assert!(uploads.path("../escape").is_none());
        assert!(uploads.path(&"0".repeat(ID_LEN)).is_none());
        assert_eq!(uploads.sweep(SystemTime::now(), Duration::from_secs(60)), 0);
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(uploads.sweep(later, Duration::from_secs(60)), 1);
        assert!(uploads.path(&id).is_none());
    }

    #[tokio::test]
    async fn chunk_writes_at_once_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), 1).unwrap();
        let id = uploads.create(None).unwrap();
        // A body that never ends holds the only writer.
        let stalled = http_body_util::StreamBody::new(futures::stream::pending::<
            std::io::Result<hyper::body::Frame<Bytes>>,
        >());
        let held = uploads.write_chunk(&id, 0, 10, stalled);
        tokio::pin!(held);
        assert!(futures::poll!(held.as_mut()).is_pending());
        let busy = uploads.write_chunk(&id, 0, 5, body(&[b"hello"])).await;
        assert!(matches!(busy, Err(ChunkError::Busy)), "{busy:?}");
    }

    #[tokio::test]
    async fn an_announced_upload_is_hashed_as_its_chunks_come_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), 4).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 100).map(|i: u32| (i % 251) as u8).collect();
        let piece = 1 << 20;
        let whole = kraken_core::MetaInfo::from_bytes(&data, piece).unwrap();
        let chunk = |range: std::ops::Range<usize>| {
            let bytes = Bytes::copy_from_slice(&data[range]);
            http_body_util::Full::new(bytes)
        };
        let length = data.len() as u64;
        // In order, in chunks that are not multiples of the batch or the piece: hashed.
        let id = uploads.create(Some((length, piece))).unwrap();
        let cut = 1_500_000;
        uploads
            .write_chunk(&id, 0, cut as u64, chunk(0..cut))
            .await
            .unwrap();
        let rest = data.len() - cut;
        uploads
            .write_chunk(&id, cut as u64, rest as u64, chunk(cut..data.len()))
            .await
            .unwrap();
        assert_eq!(uploads.take_hashed(&id, length), Some(whole));
        assert_eq!(fs::read(uploads.path(&id).unwrap()).unwrap(), data);
        // Out of order: left to the commit.
        let id = uploads.create(Some((length, piece))).unwrap();
        uploads
            .write_chunk(&id, cut as u64, rest as u64, chunk(cut..data.len()))
            .await
            .unwrap();
        uploads
            .write_chunk(&id, 0, cut as u64, chunk(0..cut))
            .await
            .unwrap();
        assert_eq!(uploads.take_hashed(&id, length), None);
        // Not announced: nothing hashed.
        let id = uploads.create(None).unwrap();
        uploads
            .write_chunk(&id, 0, length, chunk(0..data.len()))
            .await
            .unwrap();
        assert_eq!(uploads.take_hashed(&id, length), None);
    }

    #[test]
    fn a_claimed_upload_cannot_be_claimed_again_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), 4).unwrap();
        let id = uploads.create(None).unwrap();
        let commit = uploads.claim(&id).unwrap();
        // A chunk arriving while the commit hashes the file is refused.
        assert_eq!(uploads.claim(&id).unwrap_err(), ClaimError::Busy);
        fs::remove_file(commit.path()).unwrap();
        drop(commit);
        assert_eq!(uploads.claim(&id).unwrap_err(), ClaimError::Unknown);
        assert_eq!(
            uploads.claim(&"a".repeat(ID_LEN)).unwrap_err(),
            ClaimError::Unknown
        );
    }
}
