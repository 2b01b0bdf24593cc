//! [`AgentStorage`]: the read-only registry storage of the agent — tags from the
//! build-index, manifests and blobs over P2P.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use kraken_core::{BlobStatus, Digest};
use kraken_p2p::node::Node;
use kraken_p2p::tracker::Tracker;

use crate::build_index::{BuildIndexClient, PageOptions, TagName};
use crate::metrics::AgentMetrics;
use crate::oci::{
    ByteStream, Descriptor, Manifest, Operation, Page, Reference, RegistryStorage, RepoName,
    StorageError, StorageResult, StoredManifest, Tag,
};
use crate::small_blobs::SmallBlobs;

/// The agent's view of the cluster as a read-only [`RegistryStorage`].
///
/// - A manifest by tag: the tag is resolved through the build-index on every request (no
///   cache, so a re-pointed tag is served at once), then the manifest is read as a blob over
///   P2P, the repository name being the P2P namespace.
/// - A manifest by digest and a blob: over P2P.
/// - A blob's size ([`blob_stat`](RegistryStorage::blob_stat), `HEAD`): from the local cache,
///   or else from the blob's metainfo at the tracker — nothing is downloaded.
/// - A blob's bytes: streamed from the node as its pieces arrive
///   ([`Node::read_in`]); a range waits only for the pieces it covers.
/// - Tags: listed through the build-index.
/// - Referrers: the index the proxy keeps under the referrers tag schema, its tag resolved
///   through the build-index and the index read over P2P.
/// - Pushes, mounts, deletes and the catalog: [`StorageError::Unsupported`] (the trait's
///   defaults), refused by [`allows`](RegistryStorage::allows) before a body is read.
#[derive(Clone, Debug)]
pub struct AgentStorage {
    node: Node,
    tracker: Arc<dyn Tracker>,
    build_index: BuildIndexClient,
    max_manifest: u64,
    metainfo_timeout: Duration,
    /// Where pulls' time to first byte is recorded (the agent's metrics).
    pulls: Option<AgentMetrics>,
    /// Small blobs served from memory (`[cache]`).
    small: Option<Arc<SmallBlobs>>,
    /// Whether blob responses are streamed as memory maps of cached blobs, which only a
    /// plain TCP listener may write (see [`Node::read_mapped_in`]).
    mapped_responses: bool,
}

impl AgentStorage {
    /// A storage downloading through `node`, asking `tracker` for blob sizes (the node's own
    /// tracker, typically) and `build_index` for tags. Manifests up to 4 MiB are served; a
    /// `HEAD` of a blob its origin is still fetching waits up to 60 s for the metainfo.
    pub fn new(node: Node, tracker: Arc<dyn Tracker>, build_index: BuildIndexClient) -> Self {
        Self {
            node,
            tracker,
            build_index,
            max_manifest: crate::oci::manifest::MAX_MANIFEST_SIZE as u64,
            metainfo_timeout: Duration::from_secs(60),
            pulls: None,
            small: None,
            mapped_responses: false,
        }
    }

    /// Streams the blobs of responses as memory maps of the cached blobs' files, which the
    /// kernel copies straight from the page cache into the socket: only for a listener
    /// without TLS, which never reads a response's bytes in user space (see
    /// [`Node::read_mapped_in`]).
    pub(crate) fn with_mapped_responses(mut self, mapped: bool) -> Self {
        self.mapped_responses = mapped;
        self
    }

    /// Serves small blobs complete in the node's store from `cache` (filled from verified
    /// reads of the store).
    pub(crate) fn with_small_blobs(mut self, cache: Arc<SmallBlobs>) -> Self {
        self.small = Some(cache);
        self
    }

    /// Records each blob stream's time to first byte in `metrics`.
    pub(crate) fn with_pull_metrics(mut self, metrics: AgentMetrics) -> Self {
        self.pulls = Some(metrics);
        self
    }

    /// Serves manifests up to `bytes` long (at most 4 MiB, the parser's bound).
    pub fn with_max_manifest(mut self, bytes: u64) -> Self {
        self.max_manifest = bytes.min(crate::oci::manifest::MAX_MANIFEST_SIZE as u64);
        self
    }

    /// How long a `HEAD` of a blob waits while an origin fetches it from its backend.
    pub fn with_metainfo_timeout(mut self, timeout: Duration) -> Self {
        self.metainfo_timeout = timeout;
        self
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The build-index client.
    pub fn build_index(&self) -> &BuildIndexClient {
        &self.build_index
    }

    /// The size of blob `digest` of `namespace`, without downloading it: from the local
    /// cache, or from its metainfo at the tracker. [`StorageError::BlobUnknown`] when the
    /// cluster does not have it.
    pub async fn blob_size(&self, namespace: &str, digest: &Digest) -> StorageResult<u64> {
        if let BlobStatus::Cached { length } = self.node.store().status(digest) {
            return Ok(length);
        }
        let deadline = tokio::time::Instant::now() + self.metainfo_timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.tracker.metainfo(namespace, digest).await {
                Ok(Some(meta)) => return Ok(meta.length()),
                Ok(None) => return Err(StorageError::BlobUnknown(*digest)),
                // An origin is still fetching the blob from its backend: ask again.
                Err(kraken_p2p::Error::Tracker { status: 202, .. })
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(StorageError::failed(e)),
            }
        }
    }

    /// Bytes `range` of blob `digest` of `namespace` (all of it when `None`), as they arrive
    /// over P2P.
    pub async fn blob_stream(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        self.stream(namespace, digest, range, false).await
    }

    /// [`blob_stream`](Self::blob_stream) for the body of a response: memory maps where
    /// [`with_mapped_responses`](Self::with_mapped_responses) allows them.
    pub(crate) async fn blob_response(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        self.stream(namespace, digest, range, self.mapped_responses)
            .await
    }

    async fn stream(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
        mapped: bool,
    ) -> StorageResult<ByteStream> {
        let started = Instant::now();
        if let Some(small) = &self.small
            && let Some(bytes) = small.read(self.node.store(), digest).await
        {
            if let Some(pulls) = &self.pulls {
                pulls.first_byte(started);
            }
            let bytes = crate::small_blobs::slice(&bytes, range);
            return Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })));
        }
        let stream = if mapped {
            #[allow(unsafe_code, reason = "maps only for response bodies on plain TCP")]
            // SAFETY: `mapped` comes from `blob_response`, whose streams become response
            // bodies only (the OCI handler's and Go Kraken's blob `GET`), and only when
            // `with_mapped_responses` was set, which the agent does for a listener without
            // TLS: hyper writes such a body with `writev`, so only the kernel reads it.
            unsafe {
                self.node.read_mapped_in(namespace, digest, range).await
            }
        } else {
            self.node.read_in(namespace, digest, range).await
        };
        let stream = stream.map_err(|e| match e {
            kraken_p2p::Error::MetaInfoNotFound(d) => StorageError::BlobUnknown(d),
            e => StorageError::failed(e),
        })?;
        let mut first = self.pulls.clone();
        let stream = stream.inspect_ok(move |_| {
            if let Some(pulls) = first.take() {
                pulls.first_byte(started);
            }
        });
        Ok(Box::pin(stream.map_err(std::io::Error::other)))
    }

    /// The manifest with digest `digest` of `namespace`, read over P2P and parsed.
    /// [`StorageError::ManifestUnknown`] when the cluster lacks the blob or it is not a
    /// manifest.
    pub(crate) async fn manifest_blob(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> StorageResult<(Bytes, Manifest)> {
        let unknown = || StorageError::ManifestUnknown(digest.to_string());
        let size = self
            .blob_size(namespace, digest)
            .await
            .map_err(|e| if e.is_not_found() { unknown() } else { e })?;
        if size > self.max_manifest {
            return Err(StorageError::failed(format!(
                "manifest {digest} has {size} bytes, more than the limit of {}",
                self.max_manifest
            )));
        }
        let mut stream = self
            .blob_stream(namespace, digest, None)
            .await
            .map_err(|e| if e.is_not_found() { unknown() } else { e })?;
        let mut bytes = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > self.max_manifest {
                return Err(StorageError::failed(format!(
                    "manifest {digest} is longer than its metainfo says"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = bytes.freeze();
        let manifest = Manifest::parse(&bytes, None).map_err(|e| {
            tracing::debug!(%digest, error = %e, "blob asked for as a manifest is not one");
            unknown()
        })?;
        Ok((bytes, manifest))
    }

    /// The digest `tag` of `repo` points at, fresh from the build-index.
    pub(crate) async fn resolve_tag(&self, tag: &TagName) -> StorageResult<Option<Digest>> {
        self.build_index
            .get_tag(tag)
            .await
            .map_err(StorageError::failed)
    }
}

#[async_trait::async_trait]
impl RegistryStorage for AgentStorage {
    fn allows(&self, operation: Operation) -> StorageResult<()> {
        match operation {
            Operation::ReadBlob
            | Operation::ReadManifest
            | Operation::ListTags
            | Operation::Referrers => Ok(()),
            // Pushes and deletes go to the proxy: the agent is a pull cache, and answers them
            // as the proxy answers an operation it does not offer (405 `UNSUPPORTED`).
            _ => Err(StorageError::Unsupported(operation)),
        }
    }

    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64> {
        self.blob_size(repo.as_str(), digest).await
    }

    async fn blob_read(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        self.blob_response(repo.as_str(), digest, range).await
    }

    async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<StoredManifest> {
        let digest = match reference {
            Reference::Digest(digest) => *digest,
            Reference::Tag(tag) => {
                let name = TagName::new(repo.as_str(), tag.as_str())
                    .map_err(|_| StorageError::ManifestUnknown(reference.to_string()))?;
                self.resolve_tag(&name)
                    .await?
                    .ok_or_else(|| StorageError::ManifestUnknown(reference.to_string()))?
            }
        };
        let (bytes, manifest) = self.manifest_blob(repo.as_str(), &digest).await?;
        Ok(StoredManifest::new(bytes, manifest.media_type(), digest))
    }

    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> StorageResult<Vec<Tag>> {
        // The build-index pages by full name (`repo:tag`) in order, which is tag order
        // within one repository.
        let options = PageOptions {
            limit: Some(page.limit),
            offset: page.last.map(|last| format!("{repo}:{last}")),
        };
        let listed = self
            .build_index
            .list_repo_tags(repo.as_str(), &options)
            .await
            .map_err(StorageError::failed)?;
        if listed.names.is_empty() && page.last.is_none() {
            return Err(StorageError::NameUnknown(repo.clone()));
        }
        let mut tags: Vec<Tag> = listed
            .names
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        tags.sort();
        Ok(tags)
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Descriptor>> {
        crate::referrers::read_index(&self.build_index, repo, subject, |digest| async move {
            match self.manifest_blob(repo.as_str(), &digest).await {
                Ok((_, index)) => Ok(Some(index)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }
}
