//! The write-back loop: drains the durable queue into the backend, retrying with
//! exponential backoff while the backend is down, and unpinning each blob once it is there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use kraken_backends::UploadBody;
use kraken_core::Digest;
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

use super::queue::WriteBackTask;
use super::state::OriginState;
use crate::error::{Result, error_chain};

/// Longest sleep between looks at the queue when nothing wakes the loop.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// What one attempt achieved.
enum Attempt {
    /// The backend has the blob.
    Written,
    /// The task cannot succeed (no backend route, blob gone): it is dropped.
    Dropped(String),
}

/// Retry bookkeeping of one task, in memory (a restart retries at once).
#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    next: SystemTime,
}

pub(crate) async fn write_back_loop(state: Arc<OriginState>) {
    let limit = state.config.write_back.concurrency.max(1);
    let mut retries: HashMap<Digest, Retry> = HashMap::new();
    let mut running: JoinSet<(Digest, Result<Attempt>)> = JoinSet::new();
    let mut in_flight: Vec<Digest> = Vec::new();
    loop {
        let now = SystemTime::now();
        let mut next_due = now + IDLE_POLL;
        for task in state.queue.pending() {
            let due = retries
                .get(&task.digest)
                .map_or(task.not_before, |r| r.next.max(task.not_before));
            if in_flight.contains(&task.digest) {
                continue;
            }
            if due > now {
                next_due = next_due.min(due);
                continue;
            }
            if in_flight.len() >= limit {
                break;
            }
            in_flight.push(task.digest);
            let state = Arc::clone(&state);
            running.spawn(async move { (task.digest, write_back(&state, &task).await) });
        }
        let sleep = next_due.duration_since(now).unwrap_or_default();
        tokio::select! {
            () = state.shutdown.cancelled() => {
                running.abort_all();
                return;
            }
            () = state.write_back_queued.notified() => {}
            () = tokio::time::sleep(sleep) => {}
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((digest, result)) = joined else { continue };
                in_flight.retain(|d| *d != digest);
                finish(&state, &mut retries, digest, result);
            }
        }
    }
}

fn finish(
    state: &OriginState,
    retries: &mut HashMap<Digest, Retry>,
    digest: Digest,
    result: Result<Attempt>,
) {
    let done = match result {
        Ok(Attempt::Written) => {
            tracing::info!(digest = %digest.fmt_short(), "written back");
            true
        }
        Ok(Attempt::Dropped(reason)) => {
            tracing::error!(digest = %digest.fmt_short(), %reason, "write-back dropped");
            true
        }
        Err(e) => {
            let config = &state.config.write_back;
            let retry = retries.entry(digest).or_insert(Retry {
                failures: 0,
                next: SystemTime::now(),
            });
            retry.failures += 1;
            let backoff = config
                .initial_backoff
                .saturating_mul(1 << (retry.failures - 1).min(20))
                .min(config.max_backoff);
            retry.next = SystemTime::now() + backoff;
            tracing::warn!(digest = %digest.fmt_short(), failures = retry.failures, ?backoff, error = %error_chain(&e), "write-back failed; will retry");
            false
        }
    };
    if done {
        retries.remove(&digest);
        let completed = state
            .queue
            .complete(&digest)
            .and_then(|()| Ok(state.store.unpin(&digest)?));
        if let Err(e) = completed {
            tracing::error!(digest = %digest.fmt_short(), error = %error_chain(&e), "could not finish a write-back task");
        }
    }
}

/// One attempt: nothing to do if the backend has the blob, else upload it from the store.
async fn write_back(state: &OriginState, task: &WriteBackTask) -> Result<Attempt> {
    let name = task.digest.to_string();
    let backend = &state.backend;
    match backend.stat(&task.namespace, &name).await {
        Ok(_) => return Ok(Attempt::Written),
        Err(kraken_backends::Error::NoRoute { .. }) => {
            return Ok(Attempt::Dropped(format!(
                "no backend serves namespace {:?}",
                task.namespace
            )));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let blob = match state.store.open_blob(&task.digest) {
        Ok(blob) => blob,
        Err(kraken_core::Error::NotFound(_)) => {
            return Ok(Attempt::Dropped("the blob is no longer on disk".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let path = blob.path().to_owned();
    let body = UploadBody::replayable(Some(blob.len()), move || {
        let path = path.clone();
        futures::stream::once(async move { tokio::fs::File::open(path).await })
            .map_ok(|file| ReaderStream::with_capacity(file, 1 << 20))
            .try_flatten()
            .map_err(kraken_backends::Error::from)
            .boxed()
    });
    backend.upload(&task.namespace, &name, body).await?;
    Ok(Attempt::Written)
}
