//! The write-back loop: drains the durable queue into the backend (retrying with exponential
//! backoff while the backend is down, see [`drain`]) and unpins each blob once it is there.

use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kraken_backends::UploadBody;
use kraken_core::{Digest, Hasher};
use tokio::sync::mpsc;

use super::integrity;
use super::queue::WriteBackTask;
use super::state::OriginState;
use crate::durable::{Outcome, drain};
use crate::error::Result;

pub(crate) async fn write_back_loop(state: Arc<OriginState>) {
    let config = state.config.write_back.clone();
    drain(
        "write-back",
        &state.queue,
        &config,
        &state.shutdown,
        |task| {
            let state = Arc::clone(&state);
            async move { write_back(&state, &task).await }
        },
        |task| state.unpin_if_written_back(&task.digest),
    )
    .await;
}

/// One attempt: nothing to do if the backend has the blob, else upload it from the store,
/// hashing what is sent: a copy that does not hash to its digest (it rotted on disk) fails
/// the upload before it completes, so the backend never stores wrong bytes, and is reported
/// to the integrity check, which repairs it from a replica; the write-back then retries.
async fn write_back(state: &Arc<OriginState>, task: &WriteBackTask) -> Result<Outcome> {
    let name = task.digest.to_string();
    let backend = &state.backend;
    match backend.stat(&task.namespace, &name).await {
        Ok(_) => return Ok(Outcome::Done),
        Err(kraken_backends::Error::NoRoute { .. }) => {
            return Ok(Outcome::Dropped(format!(
                "no backend serves namespace {:?}",
                task.namespace
            )));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    // A blob awaiting write-back is pinned and never evicted: when it is missing, the
    // integrity check is repairing a bad copy. Retry until it is back; dropping the task
    // would lose an acknowledged write.
    let blob = state.store.open_blob(&task.digest)?;
    let path = blob.path().to_owned();
    let expected = task.digest;
    let mismatch = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&mismatch);
    let body = UploadBody::replayable(Some(blob.len()), move || {
        verified_file(path.clone(), expected, Arc::clone(&seen))
            .map_err(kraken_backends::Error::from)
            .boxed()
    });
    let uploaded = backend.upload(&task.namespace, &name, body).await;
    if mismatch.load(Ordering::SeqCst) {
        integrity::report(state, &task.digest);
    }
    uploaded?;
    Ok(Outcome::Done)
}

/// Chunks of the file read ahead of the upload.
const READ_AHEAD: usize = 4;
/// Bytes per chunk.
const CHUNK: usize = 1 << 20;

/// The chunks of the blob file at `path`, read and hashed on a background thread
/// ([`spawn_background`](kraken_core::store::spawn_background): the re-hash is most of a
/// core-second per GiB, and the first pulls of a blob come while its write-back runs), and
/// passed on as [`verified`] does.
fn verified_file(
    path: PathBuf,
    expected: Digest,
    mismatch: Arc<AtomicBool>,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    // Set once the thread has sent its last item: a channel that closes before (a panic)
    // ends the stream with an error, never early and clean, which would upload a short blob.
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let started = kraken_core::store::spawn_background("kraken-write-back", move || {
        let chunks: Box<dyn Iterator<Item = std::io::Result<Bytes>>> = match File::open(&path) {
            Ok(file) => Box::new(file_chunks(file)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        for item in verified(chunks, expected, &mismatch) {
            if tx.blocking_send(item).is_err() {
                return; // The upload stopped reading.
            }
        }
        done.store(true, Ordering::SeqCst);
    });
    if let Err(e) = started {
        return futures::stream::once(async move { Err(e) }).boxed();
    }
    futures::stream::unfold(Some(rx), move |rx| {
        let finished = Arc::clone(&finished);
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
                None if finished.load(Ordering::SeqCst) => None,
                None => Some((
                    Err(std::io::Error::other(
                        "the write-back's read thread stopped",
                    )),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// `file`'s bytes in chunks of at most [`CHUNK`]; ends after the first error.
fn file_chunks(mut file: File) -> impl Iterator<Item = std::io::Result<Bytes>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(Bytes::from(buf)))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// The chunks of a blob, each passed on only once the next has been read, and the last only
/// once the whole blob hashes to `expected`: a backend that stops reading at the declared
/// length (an HTTP `PUT` with `Content-Length`) never receives a complete wrong blob. On a
/// mismatch the chunks end with an error instead of the last chunk, and `mismatch` is set;
/// the first error of `chunks` ends them too.
fn verified<'a>(
    mut chunks: impl Iterator<Item = std::io::Result<Bytes>> + 'a,
    expected: Digest,
    mismatch: &'a AtomicBool,
) -> impl Iterator<Item = std::io::Result<Bytes>> + 'a {
    let mut held: Option<Bytes> = None;
    let mut hasher = Some(Hasher::new());
    std::iter::from_fn(move || {
        let running = hasher.as_mut()?;
        loop {
            match chunks.next() {
                Some(Ok(chunk)) => {
                    running.update(&chunk);
                    if let Some(previous) = held.replace(chunk) {
                        return Some(Ok(previous));
                    }
                }
                Some(Err(e)) => {
                    hasher = None;
                    return Some(Err(e));
                }
                None => {
                    let actual = hasher.take().map(Hasher::finalize);
                    if actual == Some(expected) {
                        return held.take().map(Ok);
                    }
                    mismatch.store(true, Ordering::SeqCst);
                    return Some(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the cached copy of {expected} does not hash to its digest"),
                    )));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader that stops at the declared length (hyper writing a body with
    /// `Content-Length`) receives of the blob file holding `data` before the stream ends or
    /// fails.
    async fn received(data: &[u8], digest: Digest) -> (usize, bool, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, data).unwrap();
        let mismatch = Arc::new(AtomicBool::new(false));
        let mut stream = verified_file(path, digest, Arc::clone(&mismatch));
        let mut bytes = 0;
        let mut failed = false;
        while bytes < data.len() {
            match stream.next().await {
                Some(Ok(chunk)) => bytes += chunk.len(),
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        (bytes, failed, mismatch.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_blob_that_does_not_hash_to_its_digest_never_reaches_its_full_length() {
        // Two and a half chunks, so that the held-back last chunk is not the only one.
        let data: Vec<u8> = (0..(5 * CHUNK / 2) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = Digest::sha256_of(&data);
        assert_eq!(received(&data, digest).await, (data.len(), false, false));

        let mut rotten = data.clone();
        rotten[CHUNK + 5_000] ^= 1;
        let (bytes, failed, mismatch) = received(&rotten, digest).await;
        assert!(bytes < data.len(), "the last chunk is held back: {bytes}");
        assert!(failed && mismatch);
        assert_eq!(
            received(&[], Digest::sha256_of(b"")).await,
            (0, false, false)
        );
    }

    #[tokio::test]
    async fn a_blob_file_that_cannot_be_read_is_an_error_not_an_empty_blob() {
        let dir = tempfile::tempdir().unwrap();
        let mismatch = Arc::new(AtomicBool::new(false));
        let mut stream = verified_file(
            dir.path().join("gone"),
            Digest::sha256_of(b""),
            Arc::clone(&mismatch),
        );
        let first = stream.next().await.expect("an item, not the end");
        assert_eq!(first.unwrap_err().kind(), std::io::ErrorKind::NotFound);
        assert!(stream.next().await.is_none());
        assert!(
            !mismatch.load(Ordering::SeqCst),
            "a missing file is not a rotten one"
        );
    }
}
