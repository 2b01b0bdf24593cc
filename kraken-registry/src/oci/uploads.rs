//! Blob uploads in progress: one file per session under the configured directory, hashed as
//! it is written so that finishing an upload needs no second read.
//!
//! Chunks must arrive in order (the spec's rule), which is what lets one running
//! [`Hasher`] per session stand for the whole file. A session's state — file, size, hasher
//! — changes only under its own lock, and a request that fails half-way (a body cut short,
//! a limit hit) truncates the file and restores the hasher, so the session is as it was
//! before that request. Sessions live in memory: the directory is emptied when the handler
//! starts, and sessions idle for longer than the TTL are removed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::http::StatusCode;
use kraken_core::{Digest, Hasher};

use super::error::{ApiError, ErrorCode};
use super::name::RepoName;

/// The request body type the upload endpoints read.
pub(crate) type RequestBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Bytes gathered from the body before a write to disk.
const WRITE_CHUNK: usize = 1 << 20;

/// Upload ids are 32 lowercase hex digits (128 random bits).
const ID_LEN: usize = 32;

/// Limits on uploads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UploadLimits {
    /// Largest blob.
    pub(crate) max_size: u64,
    /// Most sessions open at once.
    pub(crate) max_sessions: usize,
    /// Idle time after which a session is removed.
    pub(crate) ttl: Duration,
}

/// The open upload sessions.
#[derive(Debug)]
pub(crate) struct UploadSessions {
    dir: PathBuf,
    limits: UploadLimits,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
    /// Single-request uploads in progress: they count against `max_sessions` too.
    detached: Arc<AtomicUsize>,
}

/// A single-request upload's place among the sessions in progress; dropping it frees it.
#[derive(Debug)]
pub(crate) struct DetachedSlot(Arc<AtomicUsize>);

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One upload: its repository, file, size so far and the hash of those bytes.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) repo: RepoName,
    pub(crate) id: String,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    hasher: Hasher,
    touched: Instant,
    /// Set when the session was finished or cancelled while a request waited for its lock.
    closed: bool,
}

impl UploadSessions {
    /// Opens `dir`, removing what earlier runs left there.
    pub(crate) fn open(dir: &Path, limits: UploadLimits) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            limits,
            sessions: Mutex::new(HashMap::new()),
            detached: Arc::default(),
        })
    }

    pub(crate) fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    /// Starts a session in `repo`; `TOOMANYREQUESTS` when the limit of uploads in progress
    /// (sessions and single-request uploads) is reached even after stale ones are removed.
    pub(crate) fn create(&self, repo: &RepoName) -> Result<String, ApiError> {
        self.sweep(Instant::now());
        let session = self.new_session(repo)?;
        let id = session.id.clone();
        let mut sessions = self.lock();
        if sessions.len() + self.detached.load(Ordering::SeqCst) >= self.limits.max_sessions {
            drop(sessions);
            session.discard();
            return Err(self.too_many());
        }
        sessions.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
        Ok(id)
    }

    /// A session outside the table, for a single-request upload, with its place among the
    /// uploads in progress (the same limit as [`create`](Self::create)); the caller discards
    /// the session and drops the slot.
    pub(crate) fn create_detached(
        &self,
        repo: &RepoName,
    ) -> Result<(Session, DetachedSlot), ApiError> {
        self.sweep(Instant::now());
        let slot = {
            let sessions = self.lock();
            if sessions.len() + self.detached.load(Ordering::SeqCst) >= self.limits.max_sessions {
                return Err(self.too_many());
            }
            self.detached.fetch_add(1, Ordering::SeqCst);
            DetachedSlot(Arc::clone(&self.detached))
        };
        Ok((self.new_session(repo)?, slot))
    }

    fn too_many(&self) -> ApiError {
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{} uploads are in progress; retry later",
                self.limits.max_sessions
            ),
        )
    }

    /// Session `id` of `repo`, or `BLOB_UPLOAD_UNKNOWN`.
    pub(crate) fn get(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Session>>, ApiError> {
        let session = self.lock().get(id).cloned();
        // The repository is checked under the session's lock by `check`; an id of another
        // repository is as unknown as a missing one.
        session.ok_or_else(|| unknown_upload(id, repo))
    }

    /// Removes session `id` from the table (its holder discards the file).
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Removes sessions idle for longer than the TTL. Sessions in use are never stale.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut stale = Vec::new();
        self.lock().retain(|_, session| match session.try_lock() {
            Ok(mut s) if now.saturating_duration_since(s.touched) > self.limits.ttl => {
                s.closed = true;
                stale.push((s.path.clone(), s.id.clone()));
                false
            }
            _ => true,
        });
        for (path, id) in &stale {
            tracing::debug!(upload = %id, "removing a stale upload");
            let _ = fs::remove_file(path);
        }
        stale.len()
    }

    fn new_session(&self, repo: &RepoName) -> Result<Session, ApiError> {
        let id = format!("{:032x}", rand::random::<u128>());
        let path = self.dir.join(&id);
        let file = File::create(&path).map_err(|e| {
            tracing::warn!(error = %e, path = %path.display(), "cannot create an upload file");
            ApiError::new(ErrorCode::Unknown, "cannot create the upload file")
        })?;
        Ok(Session {
            repo: repo.clone(),
            id,
            path,
            file: Arc::new(file),
            size: 0,
            hasher: Hasher::new(),
            touched: Instant::now(),
            closed: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Session>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Session {
    /// Checks that the session is still open and belongs to `repo`.
    pub(crate) fn check(&self, repo: &RepoName) -> Result<(), ApiError> {
        if self.closed || &self.repo != repo {
            return Err(unknown_upload(&self.id, repo));
        }
        Ok(())
    }

    /// Bytes received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Where the bytes are.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The digest of the bytes received so far.
    pub(crate) fn digest(&self) -> Digest {
        self.hasher.clone().finalize()
    }

    /// Marks the session closed and deletes its file.
    pub(crate) fn discard(mut self) {
        self.close();
    }

    /// Marks the session closed and deletes its file, for a holder of the lock.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        let _ = fs::remove_file(&self.path);
    }
}

/// A session dropped without being closed (its request was cancelled: the client went
/// away mid-upload) takes its file with it, so aborted uploads cannot fill the disk.
impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Session {
    /// Appends `body`, which must be `expected` bytes long when given. On any error the
    /// session is left as it was before.
    pub(crate) async fn append(
        &mut self,
        mut body: RequestBody,
        expected: Option<u64>,
        max_size: u64,
    ) -> Result<(), ApiError> {
        let (start_size, start_hasher) = (self.size, self.hasher.clone());
        let result = async {
            if let Some(expected) = expected
                && self.size.saturating_add(expected) > max_size
            {
                return Err(too_large(max_size));
            }
            let mut pending = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(body_unreadable)?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                let received = self.size + (pending.len() + data.len()) as u64 - start_size;
                if expected.is_some_and(|expected| received > expected) {
                    return Err(length_mismatch());
                }
                if self.size + (pending.len() + data.len()) as u64 > max_size {
                    return Err(too_large(max_size));
                }
                pending.extend_from_slice(&data);
                if pending.len() >= WRITE_CHUNK {
                    self.write(pending.split().freeze()).await?;
                }
            }
            if !pending.is_empty() {
                self.write(pending.freeze()).await?;
            }
            if expected.is_some_and(|expected| self.size - start_size != expected) {
                return Err(length_mismatch());
            }
            Ok(())
        }
        .await;
        self.touched = Instant::now();
        if result.is_err() {
            self.size = start_size;
            self.hasher = start_hasher;
            let _ = self.file.set_len(start_size);
        }
        result
    }

    async fn write(&mut self, data: Bytes) -> Result<(), ApiError> {
        let file = Arc::clone(&self.file);
        let offset = self.size;
        let mut hasher = std::mem::take(&mut self.hasher);
        let written = tokio::task::spawn_blocking(move || {
            file.write_all_at(&data, offset)?;
            hasher.update(&data);
            Ok::<_, std::io::Error>((hasher, data.len() as u64))
        })
        .await;
        match written {
            Ok(Ok((hasher, n))) => {
                self.hasher = hasher;
                self.size += n;
                Ok(())
            }
            // The caller restores the hasher and size it saved.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, path = %self.path.display(), "upload write failed");
                Err(ApiError::new(
                    ErrorCode::Unknown,
                    "writing the upload failed",
                ))
            }
            Err(_) => Err(ApiError::new(
                ErrorCode::Unknown,
                "upload write task failed",
            )),
        }
    }
}

/// `BLOB_UPLOAD_UNKNOWN` for `id` in `repo`.
fn unknown_upload(id: &str, repo: &RepoName) -> ApiError {
    let shown: String = id.chars().take(ID_LEN).collect();
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {shown:?} is unknown to repository {repo}"),
    )
}

pub(super) fn too_large(max_size: u64) -> ApiError {
    ApiError::new(
        ErrorCode::SizeInvalid,
        format!("blob larger than the registry's limit of {max_size} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// `BLOB_UPLOAD_INVALID`: the request body broke off or could not be read.
pub(super) fn body_unreadable(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadInvalid,
        format!("reading the request body failed: {error}"),
    )
}

pub(super) fn length_mismatch() -> ApiError {
    ApiError::new(
        ErrorCode::SizeInvalid,
        "the body's length does not match its Content-Range or Content-Length",
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    fn body(data: &'static [u8]) -> RequestBody {
        Full::new(Bytes::from_static(data))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn limits() -> UploadLimits {
        UploadLimits {
            max_size: 10,
            max_sessions: 2,
            ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn sessions_hash_what_they_store_and_roll_back_failed_appends() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("leftover"), b"x").unwrap();
        let uploads = UploadSessions::open(dir.path(), limits()).unwrap();
        assert!(!dir.path().join("leftover").exists());
        let repo: RepoName = "a/b".parse().unwrap();
        let id = uploads.create(&repo).unwrap();
        let session = uploads.get(&repo, &id).unwrap();
        let mut s = session.lock().await;
        s.check(&repo).unwrap();
        assert!(s.check(&"other".parse().unwrap()).is_err());
        s.append(body(b"hello"), Some(5), 10).await.unwrap();
        // Too long for its declared length, then past the size limit: both undone.
        let e = s.append(body(b"abc"), Some(2), 10).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::SizeInvalid);
        let e = s.append(body(b"world!"), None, 10).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        s.append(body(b"world"), None, 10).await.unwrap();
        assert_eq!(s.size(), 10);
        assert_eq!(s.digest(), Digest::sha256_of(b"helloworld"));
        assert_eq!(fs::read(s.path()).unwrap(), b"helloworld");
    }

    #[tokio::test]
    async fn session_count_is_bounded_and_stale_sessions_expire() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = UploadSessions::open(dir.path(), limits()).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let first = uploads.create(&repo).unwrap();
        uploads.create(&repo).unwrap();
        let e = uploads.create(&repo).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooManyRequests);
        // A single-request upload is an upload in progress too.
        let e = uploads.create_detached(&repo).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooManyRequests);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        // A session in use is not stale.
        let held = uploads.get(&repo, &first).unwrap();
        let guard = held.lock().await;
        let later = Instant::now() + Duration::from_secs(120);
        assert_eq!(uploads.sweep(later), 1);
        drop(guard);
        assert_eq!(uploads.sweep(later), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(
            uploads.get(&repo, &first).unwrap_err().code(),
            ErrorCode::BlobUploadUnknown
        );
        assert!(
            held.lock().await.check(&repo).is_err(),
            "closed by the sweep"
        );
    }

    #[tokio::test]
    async fn single_request_uploads_hold_a_place_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = UploadSessions::open(dir.path(), limits()).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let (first, first_slot) = uploads.create_detached(&repo).unwrap();
        let (_second, _second_slot) = uploads.create_detached(&repo).unwrap();
        assert_eq!(
            uploads.create_detached(&repo).unwrap_err().code(),
            ErrorCode::TooManyRequests
        );
        assert_eq!(
            uploads.create(&repo).unwrap_err().code(),
            ErrorCode::TooManyRequests
        );
        first.discard();
        drop(first_slot);
        uploads.create(&repo).unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_single_request_upload_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = UploadSessions::open(dir.path(), limits()).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let (mut session, slot) = uploads.create_detached(&repo).unwrap();
        session.append(body(b"hello"), None, 10).await.unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // The handler's future is dropped: no discard() runs.
        drop(session);
        drop(slot);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
