//! Writing tags to the backend: the tag's current record, whatever version the task was
//! queued for, so that a late task never puts an older digest over a newer one. A deleted
//! tag is deleted from the backend. The value is Go Kraken's: the text `sha256:<hex>`.

use std::sync::Arc;

use kraken_backends::UploadBody;

use super::state::BuildIndexState;
use super::store::WriteBackTask;
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

async fn write_back(state: &BuildIndexState, task: &WriteBackTask) -> Result<Outcome> {
    let Some(record) = state.tags.get(&task.tag) else {
        return Ok(Outcome::Dropped("the tag is not in the store".into()));
    };
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
        Err(e) => Err(e.into()),
    }
}
