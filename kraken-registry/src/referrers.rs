//! The referrers of a subject in a cluster, kept under the distribution spec's referrers tag
//! schema: an OCI image index stored like any manifest (a blob in the origins, namespace =
//! repository) and tagged `repository:sha256-<hex>` in the build-index. The proxy writes these
//! indexes when it stores a manifest with a `subject`; the proxy and the agents read them.

use std::future::Future;

use kraken_core::Digest;

use crate::build_index::{BuildIndexClient, TagName};
use crate::oci::{Descriptor, Manifest, RepoName, StorageError, StorageResult};

/// The tag of `subject`'s referrers index: `repo:sha256-<hex>`.
pub(crate) fn index_tag(repo: &RepoName, subject: &Digest) -> StorageResult<TagName> {
    TagName::new(repo.as_str(), &format!("sha256-{}", subject.hex())).map_err(StorageError::failed)
}

/// The descriptors the referrers index of `subject` lists, empty when there is none: its tag
/// resolved through `build_index` (fresh, so a referrer pushed a moment ago is listed), the
/// index it points at read with `fetch` (from the origins on a proxy, over P2P on an agent;
/// `None` when the cluster lacks it or it is no manifest).
pub(crate) async fn read_index<F, Fut>(
    build_index: &BuildIndexClient,
    repo: &RepoName,
    subject: &Digest,
    fetch: F,
) -> StorageResult<Vec<Descriptor>>
where
    F: FnOnce(Digest) -> Fut,
    Fut: Future<Output = StorageResult<Option<Manifest>>>,
{
    let tag = index_tag(repo, subject)?;
    let Some(digest) = build_index.get_tag(&tag).await? else {
        return Ok(Vec::new());
    };
    match fetch(digest).await? {
        Some(index) if index.kind().is_index() => Ok(index.manifests().to_vec()),
        _ => Err(StorageError::failed(format!(
            "the referrers tag {tag} points at {digest}, which is no image index in the origins"
        ))),
    }
}
