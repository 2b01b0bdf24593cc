//! The write-back loop: drains the durable queue into the backend (retrying with exponential
//! backoff while the backend is down, see [`drain`]) and unpins each blob once it is there.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kraken_backends::UploadBody;
use tokio_util::io::ReaderStream;

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

/// One attempt: nothing to do if the backend has the blob, else upload it from the store.
async fn write_back(state: &OriginState, task: &WriteBackTask) -> Result<Outcome> {
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
    let blob = match state.store.open_blob(&task.digest) {
        Ok(blob) => blob,
        Err(kraken_core::Error::NotFound(_)) => {
            return Ok(Outcome::Dropped("the blob is no longer on disk".into()));
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
    Ok(Outcome::Done)
}
