//! The write-back loop: drains the durable queue into the backend (retrying with exponential
//! backoff while the backend is down, see [`drain`]) and unpins each blob once it is there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kraken_backends::UploadBody;
use kraken_core::{Digest, Hasher};
use tokio_util::io::ReaderStream;

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
        let path = path.clone();
        let chunks = futures::stream::once(async move { tokio::fs::File::open(path).await })
            .map_ok(|file| ReaderStream::with_capacity(file, 1 << 20))
            .try_flatten()
            .boxed();
        verified(chunks, expected, Arc::clone(&seen))
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

/// The chunks of a blob, each passed on only once the next has been read, and the last only
/// once the whole blob hashes to `expected`: a backend that stops reading at the declared
/// length (an HTTP `PUT` with `Content-Length`) never receives a complete wrong blob. On a
/// mismatch the stream ends with an error instead of the last chunk, and `mismatch` is set.
fn verified(
    chunks: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    expected: Digest,
    mismatch: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct State {
        chunks: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
        held: Option<Bytes>,
        hasher: Option<Hasher>,
    }
    let state = State {
        chunks,
        held: None,
        hasher: Some(Hasher::new()),
    };
    futures::stream::unfold(state, move |mut state| {
        let mismatch = Arc::clone(&mismatch);
        async move {
            let hasher = state.hasher.as_mut()?;
            loop {
                match state.chunks.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        if let Some(previous) = state.held.replace(chunk) {
                            return Some((Ok(previous), state));
                        }
                    }
                    Some(Err(e)) => {
                        state.hasher = None;
                        return Some((Err(e), state));
                    }
                    None => {
                        let actual = state.hasher.take().map(Hasher::finalize);
                        if actual == Some(expected) {
                            let last = state.held.take()?;
                            return Some((Ok(last), state));
                        }
                        mismatch.store(true, Ordering::SeqCst);
                        let error = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the cached copy of {expected} does not hash to its digest"),
                        );
                        return Some((Err(error), state));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader that stops at the declared length (hyper writing a body with
    /// `Content-Length`) receives before the stream ends or fails.
    async fn received(data: &[u8], digest: Digest) -> (usize, bool, bool) {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mismatch = Arc::new(AtomicBool::new(false));
        let mut stream = Box::pin(verified(
            futures::stream::iter(chunks).boxed(),
            digest,
            Arc::clone(&mismatch),
        ));
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
        let data: Vec<u8> = (0..10_500u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&data);
        assert_eq!(received(&data, digest).await, (data.len(), false, false));

        let mut rotten = data.clone();
        rotten[5_000] ^= 1;
        let (bytes, failed, mismatch) = received(&rotten, digest).await;
        assert!(bytes < data.len(), "the last chunk is held back: {bytes}");
        assert!(failed && mismatch);
        assert_eq!(
            received(&[], Digest::sha256_of(b"")).await,
            (0, false, false)
        );
    }
}
