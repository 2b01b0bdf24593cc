//! `GET /preload/tags/{repo:tag}`: pulls an image into the local cache over P2P.

use std::collections::{BTreeSet, HashSet};

use futures::{StreamExt, TryStreamExt};
use kraken_core::Digest;
use serde::Serialize;

use super::storage::AgentStorage;
use crate::build_index::TagName;
use crate::oci::{StorageError, StorageResult};

/// What a preload fetched.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PreloadReport {
    /// The tag.
    pub(crate) tag: String,
    /// The digest it points at.
    pub(crate) digest: String,
    /// Manifests read: the tagged one and, for an index, its children.
    pub(crate) manifests: usize,
    /// Blobs (configs and layers) now in the local cache.
    pub(crate) blobs: usize,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// The container runtime that then pulled the image through the agent (`?runtime=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<&'static str>,
}

impl PreloadReport {
    /// The report of a preload that `runtime` then pulled.
    pub(crate) fn pulled_by(self, runtime: &'static str) -> Self {
        Self {
            runtime: Some(runtime),
            ..self
        }
    }
}

/// Pulls `tag` — its manifest, every child manifest of an index (recursively), every config
/// and layer but non-distributable ones — into the node's cache. `Ok(None)` when the tag is
/// unknown.
pub(crate) async fn preload(
    storage: &AgentStorage,
    tag: &TagName,
    max_manifests: usize,
    concurrency: usize,
) -> StorageResult<Option<PreloadReport>> {
    let Some(root) = storage.resolve_tag(tag).await? else {
        return Ok(None);
    };
    let namespace = tag.repository();
    let mut pending = vec![root];
    let mut seen = HashSet::from([root]);
    let mut blobs = BTreeSet::new();
    while let Some(digest) = pending.pop() {
        if seen.len() > max_manifests {
            return Err(StorageError::failed(format!(
                "{tag} has more than {max_manifests} manifests"
            )));
        }
        let (_, manifest) = storage.manifest_blob(namespace, &digest).await?;
        for child in manifest.manifests() {
            if seen.insert(child.digest) {
                pending.push(child.digest);
            }
        }
        blobs.extend(
            manifest
                .blobs()
                .filter(|d| !d.is_non_distributable())
                .map(|d| d.digest),
        );
    }
    let node = storage.node();
    let bytes: Vec<u64> = futures::stream::iter(blobs.iter().copied())
        .map(|digest: Digest| async move {
            let blob = node
                .download_in(namespace, &digest)
                .await
                .map_err(|e| match e {
                    kraken_p2p::Error::MetaInfoNotFound(d) => StorageError::BlobUnknown(d),
                    e => StorageError::failed(e),
                })?;
            Ok::<_, StorageError>(blob.len())
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(Some(PreloadReport {
        tag: tag.as_str().to_owned(),
        digest: root.to_string(),
        manifests: seen.len(),
        blobs: blobs.len(),
        bytes: bytes.iter().sum(),
        runtime: None,
    }))
}
