//! Replication to remote clusters: each task puts one tag on one remote build-index after
//! the remote cluster's origins hold every blob of the image.
//!
//! A task is done when the remote tag already points at the digest. Otherwise the remote
//! build-index names its origins (`GET /origin`); each blob of the image (the manifest, child
//! manifests, configs, layers) that the remote origins lack is downloaded from the local
//! origins into a file and uploaded to its first owner there (which copies it to the other
//! owners and writes it back); then the tag is put on the remote with `?replicate=true`, so
//! replication chains on through the remote's own remotes. A delete task deletes the tag on
//! the remote with `?replicate=true`, which chains the same way. Failures are retried with
//! backoff; the queue is durable, so a restart resumes it.

use std::sync::Arc;

use kraken_core::Digest;

use super::state::BuildIndexState;
use super::store::ReplicationTask;
use super::tag::TagName;
use crate::durable::{Outcome, drain};
use crate::error::{Error, Result};
use crate::origin::CommitKind;

/// Directory under the data directory where blobs wait between download and upload.
pub(crate) const SPOOL_DIR: &str = "replication-spool";

pub(crate) async fn replication_loop(state: Arc<BuildIndexState>) {
    let config = state.config.replication.clone();
    drain(
        "tag replication",
        &state.replications,
        &config,
        &state.shutdown,
        |task| {
            let state = Arc::clone(&state);
            async move { replicate(&state, &task).await }
        },
        |_| {},
    )
    .await;
}

async fn replicate(state: &BuildIndexState, task: &ReplicationTask) -> Result<Outcome> {
    let tag: TagName = match task.tag.parse() {
        Ok(tag) => tag,
        Err(e) => return Ok(Outcome::Dropped(e.to_string())),
    };
    let remote = state.peers.at(&task.remote);
    let Some(digest) = task.digest else {
        // A delete: chained on through the remote's own remotes, as puts are. A remote
        // without the tag has nothing to delete (and had nothing to pass on).
        remote.delete_tag_with(&tag, true).await?;
        tracing::info!(tag = %tag, remote = %task.remote, "replicated a tag delete");
        return Ok(Outcome::Done);
    };
    if remote.get_tag(&tag).await? == Some(digest) {
        return Ok(Outcome::Done);
    }
    let remote_origins = remote.origin().await?;
    if remote_origins.is_empty() {
        return Err(Error::BuildIndex {
            address: task.remote.clone(),
            reason: "names no origins".into(),
        });
    }
    let limits = &state.config.limits;
    let namespace = tag.repository();
    let blobs = state
        .origins
        .dependencies(
            namespace,
            &digest,
            limits.max_manifest_size.bytes(),
            limits.max_manifests,
        )
        .await?;
    for digest in &blobs {
        push_blob(state, &remote_origins, namespace, digest).await?;
    }
    remote.put_tag(&tag, &digest, true).await?;
    tracing::info!(tag = %tag, remote = %task.remote, blobs = blobs.len(), "replicated tag");
    Ok(Outcome::Done)
}

/// Copies one blob to the remote origin cluster unless one of its owners there has it.
async fn push_blob(
    state: &BuildIndexState,
    remote_origins: &[String],
    namespace: &str,
    digest: &Digest,
) -> Result<()> {
    let client = state.origins.client();
    let mut owners = None;
    let mut failures = Vec::new();
    for origin in remote_origins {
        match client.locations(origin, digest).await {
            Ok(found) if !found.is_empty() => {
                owners = Some(found);
                break;
            }
            Ok(_) => failures.push(format!("{origin}: no owners")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let owners = owners.ok_or_else(|| Error::Origin {
        origin: remote_origins.join(","),
        reason: failures.join("; "),
    })?;
    for owner in &owners {
        if client
            .stat(owner, namespace, digest, false)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    let spool = state.config.data_dir.join(SPOOL_DIR);
    tokio::fs::create_dir_all(&spool).await?;
    let path = spool.join(format!("{}-{:016x}", digest.hex(), rand::random::<u64>()));
    let copied = async {
        state
            .origins
            .download_to_file(
                namespace,
                digest,
                &path,
                state.config.limits.max_blob_size.bytes(),
            )
            .await?;
        client
            .upload_file(&owners[0], namespace, digest, &path, CommitKind::Primary)
            .await
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    copied
}
