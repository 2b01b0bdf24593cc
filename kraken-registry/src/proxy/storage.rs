//! [`ProxyStorage`]: the `/v2/` content of a proxy — blobs and manifests in the origin
//! cluster, tags and referrers indexes in the build-index.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kraken_core::Digest;

use crate::build_index::{BuildIndexClient, PageOptions, TagName};
use crate::error::Error;
use crate::oci::manifest::media_type;
use crate::oci::{
    ByteStream, Descriptor, Manifest, Operation, Page, Reference, RegistryStorage, RepoName,
    StorageError, StorageResult, StoredManifest, Tag,
};
use crate::origin::OriginCluster;

/// A lock per (repository, subject) whose referrers index is being updated.
type ReferrerLocks = HashMap<(RepoName, Digest), Arc<tokio::sync::Mutex<()>>>;

/// Pages of a repository's tags read when a manifest is deleted, at most.
const MAX_TAG_PAGES: usize = 10_000;

/// Rounds of read, merge, write and read back of a referrers index before giving up.
const REFERRERS_ROUNDS: usize = 5;

/// The storage of a proxy, a [`RegistryStorage`] over the origin cluster and the
/// build-index (see `docs/proxy.md`):
///
/// | what | where |
/// |---|---|
/// | blobs | origins, namespace = repository, uploaded to the first healthy owner |
/// | manifests | origins, as blobs, namespace = repository |
/// | tags | build-index, `repository:tag` → manifest digest |
/// | referrers of a subject | an OCI image index in the origins, tagged `repository:sha256-<hex>` |
///
/// Reads go to a blob's owners first and then to the other origins; a tag is read from the
/// build-index on every request (no cache), so a re-pointed tag is seen at once.
#[derive(Debug)]
pub struct ProxyStorage {
    origins: OriginCluster,
    build_index: BuildIndexClient,
    replicate: bool,
    delete_tags: bool,
    delete: bool,
    max_manifest: u64,
    max_catalog_scan: usize,
    /// One lock per (repository, subject) whose referrers index is being updated here.
    referrer_locks: std::sync::Mutex<ReferrerLocks>,
}

/// How a [`ProxyStorage`] behaves, from [`ProxyConfig`](super::ProxyConfig).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StorageOptions {
    pub(crate) replicate: bool,
    /// Tag deletes (`delete_tags`, or `[delete] enabled`).
    pub(crate) delete_tags: bool,
    /// Manifest (by digest) and blob deletes (`[delete] enabled`).
    pub(crate) delete: bool,
    pub(crate) max_manifest: u64,
    pub(crate) max_catalog_scan: usize,
}

impl ProxyStorage {
    pub(crate) fn new(
        origins: OriginCluster,
        build_index: BuildIndexClient,
        options: StorageOptions,
    ) -> Self {
        Self {
            origins,
            build_index,
            replicate: options.replicate,
            delete_tags: options.delete_tags,
            delete: options.delete,
            max_manifest: options.max_manifest,
            max_catalog_scan: options.max_catalog_scan,
            referrer_locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The origin cluster behind the API.
    pub(crate) fn origins(&self) -> &OriginCluster {
        &self.origins
    }

    /// The build-index behind the API.
    pub(crate) fn build_index(&self) -> &BuildIndexClient {
        &self.build_index
    }

    /// Ready when an origin passes its health checks.
    pub(crate) async fn origins_ready(&self) -> std::result::Result<(), String> {
        self.origins.check_ready().await
    }

    /// Ready when a build-index answers `/health`.
    pub(crate) async fn build_index_ready(&self) -> std::result::Result<(), String> {
        self.build_index.check_ready().await
    }

    /// The manifest `digest` from the origins, parsed; `None` when no origin has it or it
    /// is not a manifest (a layer asked for as a manifest).
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<(Bytes, Manifest)>> {
        let bytes = match self
            .origins
            .download_any(repo.as_str(), digest, self.max_manifest)
            .await
        {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            // Bigger than any manifest may be: a blob, not a manifest.
            Err(Error::Origin { reason, .. }) if reason.contains("larger than the limit") => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        match Manifest::parse(&bytes, None) {
            Ok(manifest) => Ok(Some((bytes, manifest))),
            Err(e) => {
                tracing::debug!(%digest, error = %e, "asked for a manifest that is not one");
                Ok(None)
            }
        }
    }

    /// The descriptors in the referrers index of `subject`; empty when there is none.
    async fn referrers_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> StorageResult<Vec<Descriptor>> {
        crate::referrers::read_index(&self.build_index, repo, subject, |digest| async move {
            Ok(self
                .fetch_manifest(repo, &digest)
                .await?
                .map(|(_, index)| index))
        })
        .await
    }

    /// Adds `manifest` to its subject's referrers index: read the index the tag points at,
    /// add the descriptor, store the new index, point the tag at it, and read the tag back
    /// until the index it points at lists the descriptor (another proxy may have written a
    /// version without it meanwhile). Updates of one subject are serialised in-process.
    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        manifest: &Manifest,
    ) -> StorageResult<()> {
        let key = (repo.clone(), *subject);
        let lock = Arc::clone(self.lock_referrers().entry(key.clone()).or_default());
        let result = {
            let _guard = lock.lock().await;
            self.merge_referrer(repo, subject, manifest.descriptor())
                .await
        };
        // Forget the lock when no one else holds or waits for it.
        let mut locks = self.lock_referrers();
        drop(lock);
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
        result
    }

    async fn merge_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        ours: Descriptor,
    ) -> StorageResult<()> {
        let tag = crate::referrers::index_tag(repo, subject)?;
        for round in 0..=REFERRERS_ROUNDS {
            let mut descriptors = self.referrers_index(repo, subject).await?;
            if descriptors.iter().any(|d| d.digest == ours.digest) {
                return Ok(());
            }
            if round == REFERRERS_ROUNDS {
                break;
            }
            descriptors.push(ours.clone());
            descriptors.sort_by_key(|d| d.digest);
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_INDEX,
                "manifests": descriptors,
            }))
            .map_err(StorageError::failed)?;
            let digest = Digest::sha256_of(&index);
            self.origins
                .upload_bytes(repo.as_str(), &digest, index.into())
                .await?;
            self.build_index
                .put_tag(&tag, &digest, self.replicate)
                .await?;
        }
        Err(StorageError::failed(format!(
            "the referrers index {tag} changed under every one of {REFERRERS_ROUNDS} updates"
        )))
    }

    /// Deletes every tag of `repo` that points at the manifest `digest`, then the manifest
    /// itself from the origins and their backends. `MANIFEST_UNKNOWN` when no origin has a
    /// manifest by that digest.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        if self.fetch_manifest(repo, digest).await?.is_none() {
            return Err(StorageError::ManifestUnknown(digest.to_string()));
        }
        // Tags first: a tag must never be left pointing at a manifest that is gone.
        let mut options = PageOptions::default();
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let page = self
                .build_index
                .list_repo_tags(repo.as_str(), &options)
                .await?;
            tags.extend(page.names);
            match page.next {
                Some(next) => options.offset = Some(next),
                None => break,
            }
        }
        for tag in tags {
            let name = tag_name(repo, &tag)?;
            if self.build_index.get_tag(&name).await? == Some(*digest) {
                self.build_index
                    .delete_tag_with(&name, self.replicate)
                    .await?;
            }
        }
        self.origins.purge(repo.as_str(), digest).await?;
        Ok(())
    }

    fn lock_referrers(&self) -> std::sync::MutexGuard<'_, ReferrerLocks> {
        // The map holds no invariant a panic could break.
        self.referrer_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl RegistryStorage for ProxyStorage {
    fn allows(&self, operation: Operation) -> StorageResult<()> {
        let allowed = match operation {
            Operation::DeleteBlob => self.delete,
            Operation::DeleteManifest => self.delete || self.delete_tags,
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(StorageError::Unsupported(operation))
        }
    }

    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64> {
        self.origins
            .stat(repo.as_str(), digest)
            .await?
            .ok_or(StorageError::BlobUnknown(*digest))
    }

    async fn blob_read(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        self.origins
            .read(repo.as_str(), digest, range)
            .await?
            .ok_or(StorageError::BlobUnknown(*digest))
    }

    async fn blob_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        file: &Path,
        _size: u64,
    ) -> StorageResult<()> {
        Ok(self
            .origins
            .upload_file(repo.as_str(), digest, file)
            .await?)
    }

    /// A push's bytes go straight on to an owning origin, which hashes, stores and writes
    /// them back: the proxy writes nothing to its disk, and does not hash the bytes.
    fn streams_blob_puts(&self) -> bool {
        true
    }

    /// The origin verifies the digest: it hashes the upload as its chunks arrive, and its
    /// commit stores nothing (and replicates nothing) unless the bytes hash to `digest`,
    /// answering a mismatch with the digest they have, which becomes
    /// [`StorageError::DigestInvalid`].
    async fn blob_put_stream(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        chunks: ByteStream,
    ) -> StorageResult<()> {
        match self
            .origins
            .upload_stream(repo.as_str(), digest, size, chunks)
            .await
        {
            Ok(()) => Ok(()),
            Err(Error::DigestMismatch { expected, actual }) => {
                Err(StorageError::DigestInvalid { expected, actual })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A blob anywhere in the origin cluster is mountable into any repository: the origins
    /// are one content-addressed store. It is looked up under the source repository's
    /// namespace (the target's when there is none), whose backend it was written to.
    async fn blob_mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> StorageResult<u64> {
        let namespace = from.unwrap_or(repo);
        self.origins
            .stat(namespace.as_str(), digest)
            .await?
            .ok_or(StorageError::BlobUnknown(*digest))
    }

    /// Removes the blob from every origin and its backend: the origins are one
    /// content-addressed store, so it is gone for every repository (`docs/proxy.md`).
    async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        self.allows(Operation::DeleteBlob)?;
        if self.origins.stat(repo.as_str(), digest).await?.is_none() {
            return Err(StorageError::BlobUnknown(*digest));
        }
        self.origins.purge(repo.as_str(), digest).await?;
        Ok(())
    }

    async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<StoredManifest> {
        let unknown = || StorageError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            Reference::Digest(digest) => *digest,
            Reference::Tag(tag) => {
                let name = tag_name(repo, tag.as_str())?;
                self.build_index.get_tag(&name).await?.ok_or_else(unknown)?
            }
        };
        let (bytes, manifest) = self
            .fetch_manifest(repo, &digest)
            .await?
            .ok_or_else(unknown)?;
        Ok(StoredManifest::new(bytes, manifest.media_type(), digest))
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        bytes: Bytes,
        tags: &[Tag],
    ) -> StorageResult<()> {
        let digest = manifest.digest();
        self.origins
            .upload_bytes(repo.as_str(), digest, bytes)
            .await?;
        for tag in tags {
            let name = tag_name(repo, tag.as_str())?;
            self.build_index
                .put_tag(&name, digest, self.replicate)
                .await?;
        }
        if let Some(subject) = manifest.subject() {
            self.add_referrer(repo, &subject.digest, manifest).await?;
        }
        Ok(())
    }

    async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> StorageResult<()> {
        match reference {
            Reference::Tag(tag) if self.delete_tags => {
                let name = tag_name(repo, tag.as_str())?;
                if self
                    .build_index
                    .delete_tag_with(&name, self.replicate)
                    .await?
                {
                    Ok(())
                } else {
                    Err(StorageError::ManifestUnknown(reference.to_string()))
                }
            }
            Reference::Digest(digest) if self.delete => self.delete_manifest(repo, digest).await,
            _ => Err(StorageError::Unsupported(Operation::DeleteManifest)),
        }
    }

    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> StorageResult<Vec<Tag>> {
        let mut tags = Vec::new();
        // The build-index's offsets are full names (`repo:tag`), its pages capped: ask until
        // the page is full or the listing ends.
        let mut offset = page.last.map(|last| format!("{repo}:{last}"));
        loop {
            let options = PageOptions {
                limit: Some(page.limit - tags.len()),
                offset,
            };
            let found = self
                .build_index
                .list_repo_tags(repo.as_str(), &options)
                .await?;
            tags.extend(
                found
                    .names
                    .iter()
                    .filter_map(|name| name.parse::<Tag>().ok()),
            );
            match found.next {
                Some(next) if tags.len() < page.limit => offset = Some(next),
                _ => break,
            }
        }
        if tags.is_empty() && page.last.is_none() {
            return Err(StorageError::NameUnknown(repo.clone()));
        }
        Ok(tags)
    }

    /// Every tag of the build-index (at most `limits.max_catalog_scan`), reduced to the
    /// repositories they are in, as Go Kraken's catalog does: full names sort differently
    /// from repository names (`a-b:x` < `a/b:x` < `a:x`), so the whole list is read.
    async fn catalog(&self, page: Page<'_>) -> StorageResult<Vec<RepoName>> {
        let mut repos = BTreeSet::new();
        let mut options = PageOptions::default();
        let mut scanned = 0;
        loop {
            let found = self.build_index.list("", &options).await?;
            scanned += found.names.len();
            for name in &found.names {
                if let Some((repo, _)) = name.rsplit_once(':') {
                    repos.insert(repo.to_owned());
                }
            }
            match found.next {
                Some(_) if scanned >= self.max_catalog_scan => {
                    tracing::warn!(
                        scanned,
                        "the catalog stopped reading tags at limits.max_catalog_scan"
                    );
                    break;
                }
                Some(next) => options.offset = Some(next),
                None => break,
            }
        }
        Ok(repos
            .iter()
            .filter(|repo| page.last.is_none_or(|last| repo.as_str() > last))
            .filter_map(|repo| repo.parse::<RepoName>().ok())
            .take(page.limit)
            .collect())
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Descriptor>> {
        self.referrers_index(repo, subject).await
    }
}

/// `repo:tag` for the build-index.
fn tag_name(repo: &RepoName, tag: &str) -> StorageResult<TagName> {
    TagName::new(repo.as_str(), tag).map_err(StorageError::failed)
}
