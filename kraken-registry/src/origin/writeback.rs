//! The write-back loop: drains the durable queue into the backend (retrying with exponential
//! backoff while the backend is down, see [`drain`]) and unpins each blob once it is there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use kraken_backends::UploadBody;
use kraken_core::Hasher;
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
        let hasher = Arc::new(Mutex::new(Some(Hasher::new())));
        let feed = Arc::clone(&hasher);
        let seen = Arc::clone(&seen);
        let data = futures::stream::once(async move { tokio::fs::File::open(path).await })
            .map_ok(|file| ReaderStream::with_capacity(file, 1 << 20))
            .try_flatten()
            .map_ok(move |chunk| {
                if let Some(hasher) = feed.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    hasher.update(&chunk);
                }
                chunk
            });
        let verdict = futures::stream::once(async move {
            let hasher = hasher.lock().unwrap_or_else(|e| e.into_inner()).take();
            let actual = hasher.map(Hasher::finalize);
            if actual == Some(expected) {
                return None;
            }
            seen.store(true, Ordering::SeqCst);
            Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the cached copy of {expected} does not hash to its digest"),
            )))
        })
        .filter_map(std::future::ready);
        data.chain(verdict)
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
