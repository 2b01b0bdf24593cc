//! Writing tags to the backend: the tag's newest record in the cluster, whatever version the
//! task was queued for, so that a late task never puts an older digest over a newer one —
//! also when this build-index was down while another took a newer write (then that one
//! writes it back, and this task is dropped). A deleted tag is deleted from the backend. The
//! value is Go Kraken's: the text `sha256:<hex>`.

use std::sync::Arc;

use kraken_backends::UploadBody;

use super::state::BuildIndexState;
use super::store::WriteBackTask;
use super::tag::TagName;
use crate::durable::{Outcome, drain};
use crate::error::Result;

pub(crate) async fn write_back_loop(state: Arc<BuildIndexState>) {
    let config = state.config.write_back.clone();
    drain(
        "tag write-back",
        &state.write_backs,
        &config,
        &state.shutdown,
        |task| {
            let state = Arc::clone(&state);
            async move { write_back(&state, &task).await }
        },
        |_| {},
    )
    .await;
}

async fn write_back(state: &Arc<BuildIndexState>, task: &WriteBackTask) -> Result<Outcome> {
    let newest = match task.tag.parse::<TagName>() {
        Ok(tag) => state.newest_in_cluster(&tag).await,
        Err(_) => state.tags.get(&task.tag),
    };
    let Some(record) = newest else {
        return Ok(Outcome::Dropped("the tag is not in the store".into()));
    };
    if record.writer != state.name {
        return Ok(Outcome::Dropped(format!(
            "superseded by a newer write through {}, which writes it back",
            record.writer
        )));
    }
    let name = record.tag.as_str();
    let written = match record.digest {
        Some(digest) => {
            state
                .backend
                .upload(name, name, UploadBody::from_bytes(digest.to_string()))
                .await
        }
        None => match state.backend.delete(name, name).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        },
    };
    match written {
        Ok(()) => Ok(Outcome::Done),
        Err(kraken_backends::Error::NoRoute { .. }) => {
            Ok(Outcome::Dropped(format!("no backend serves tag {name:?}")))
        }
        // A read-only backend (a `registry` one, for pull-through from an existing
        // registry) can never take the write: retrying would keep the task forever. The tag
        // stays on the build-indexes.
        Err(kraken_backends::Error::Unsupported { .. }) => Ok(Outcome::Dropped(format!(
            "the backend of tag {name:?} is read-only"
        ))),
        Err(e) => Err(e.into()),
    }
}
