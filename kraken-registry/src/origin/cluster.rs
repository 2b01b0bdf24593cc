//! The way to an origin cluster for the services in front of it (build-index, proxy): stat,
//! read, download and upload blobs on their owners on the ring, and walk a manifest's
//! dependencies.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kraken_core::Digest;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::ChunkSource;
use super::{ClusterConfig, CommitKind, MembersConfig, Membership, OriginClient};
use crate::error::{Error, Result, error_chain};
use crate::oci::manifest::manifest_dependencies;

/// Blobs checked at once in a dependency check.
const STAT_CONCURRENCY: usize = 8;
/// Chunks of a blob read from an origin ahead of the consumer.
const READ_AHEAD: usize = 4;

/// A blob's bytes as they arrive from an origin; an error ends the stream (a whole blob
/// whose bytes do not hash to its digest ends with one).
pub(crate) type BlobStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// An origin cluster seen through its health-checked ring.
#[derive(Debug)]
pub(crate) struct OriginCluster {
    membership: Membership,
    members: MembersConfig,
    client: OriginClient,
}

impl OriginCluster {
    /// Watches the ring of `config` (resolving, health-checking) on `tasks` until
    /// `shutdown`, and reaches its members with `client`.
    pub(crate) async fn start(
        config: &ClusterConfig,
        client: OriginClient,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let membership =
            Membership::start(config.clone(), None, client.clone(), tasks, shutdown).await?;
        Ok(Self {
            membership,
            members: config.members.clone(),
            client,
        })
    }

    /// The client used to reach origins (this cluster's and remote ones).
    pub(crate) fn client(&self) -> &OriginClient {
        &self.client
    }

    /// Ready when at least one origin passes its health checks.
    pub(crate) async fn check_ready(&self) -> std::result::Result<(), String> {
        if self.membership.view().healthy().is_empty() {
            Err("no origin passes its health check".into())
        } else {
            Ok(())
        }
    }

    /// How a remote build-index reaches these origins: the DNS name, or the listed members
    /// joined by commas.
    pub(crate) fn address(&self) -> String {
        match &self.members {
            MembersConfig::Dns(name) => name.clone(),
            _ => self.membership.view().listed().join(","),
        }
    }

    /// Whether the cluster has the blob: true if any owner (or its backend) has it, false
    /// if every owner said no, an error if none could say.
    pub(crate) async fn has(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let owners = self.membership.view().owners(digest);
        let found = first_found(owners, |origin| async move {
            self.client.stat(&origin, namespace, digest, false).await
        })
        .await?;
        Ok(found.is_some())
    }

    /// Purges a blob from every healthy origin and from the backend of `namespace`
    /// (`DELETE /internal/namespace/{ns}/blobs/{d}` on each); whether any had it. An
    /// origin that is not healthy keeps its copy (logged): the repair pass may bring the
    /// blob back from it, and the garbage collector removes it again if nothing refers to it.
    pub(crate) async fn purge(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let view = self.membership.view();
        let healthy = view.healthy();
        for member in view.listed() {
            if !healthy.contains(member) {
                tracing::warn!(origin = %member, %digest, "an origin that is down keeps its copy of a deleted blob");
            }
        }
        // With none healthy, the ring uses the listed members; so does a purge.
        let targets = if healthy.is_empty() {
            view.listed().to_vec()
        } else {
            healthy
        };
        let mut found = false;
        let mut failures = Vec::new();
        for origin in &targets {
            match self.client.delete(origin, namespace, digest).await {
                Ok(had) => found |= had,
                Err(e) => failures.push(format!("{origin}: {}", error_chain(&e))),
            }
        }
        if !failures.is_empty() {
            return Err(no_origin(failures));
        }
        Ok(found)
    }

    /// A blob of at most `max_len` bytes, verified, from the first owner that has it.
    pub(crate) async fn download(
        &self,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
    ) -> Result<Bytes> {
        let owners = self.membership.view().owners(digest);
        self.download_among(owners, namespace, digest, max_len)
            .await
    }

    async fn download_among(
        &self,
        origins: Vec<String>,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
    ) -> Result<Bytes> {
        let mut failures = Vec::new();
        let mut not_found = false;
        for origin in origins {
            match self
                .client
                .download(&origin, namespace, digest, max_len)
                .await
            {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.is_not_found() => not_found = true,
                Err(e) => {
                    if matches!(e, Error::DigestMismatch { .. }) {
                        self.client.report_corrupt(&origin, namespace, digest).await;
                    }
                    failures.push(format!("{origin}: {}", error_chain(&e)));
                }
            }
        }
        if not_found {
            return Err(Error::NotFound(*digest));
        }
        Err(no_origin(failures))
    }

    /// [`OriginCluster::download`] into a file.
    pub(crate) async fn download_to_file(
        &self,
        namespace: &str,
        digest: &Digest,
        path: &Path,
        max_len: u64,
    ) -> Result<u64> {
        let mut failures = Vec::new();
        for origin in self.membership.view().owners(digest) {
            match self
                .client
                .download_to_file(&origin, namespace, digest, path, max_len)
                .await
            {
                Ok(size) => return Ok(size),
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        Err(no_origin(failures))
    }

    /// The origins to ask about `digest`, best first: its owners, then the other healthy
    /// members, then the members listed but not healthy (an owner may have lost a blob
    /// that a former owner still holds after a membership change).
    pub(crate) fn candidates(&self, digest: &Digest) -> Vec<String> {
        let view = self.membership.view();
        let mut all = view.owners(digest);
        for member in view
            .healthy()
            .into_iter()
            .chain(view.listed().iter().cloned())
        {
            if !all.contains(&member) {
                all.push(member);
            }
        }
        all
    }

    /// The blob's size, from the first of its [`candidates`](Self::candidates) that has it
    /// (on disk or in its backend under `namespace`); `None` if every origin asked said no,
    /// an error if none could say.
    pub(crate) async fn stat(&self, namespace: &str, digest: &Digest) -> Result<Option<u64>> {
        first_found(self.candidates(digest), |origin| async move {
            self.client.stat(&origin, namespace, digest, false).await
        })
        .await
    }

    /// Bytes `range` of a blob (all of it when `None`) from the first of its
    /// [`candidates`](Self::candidates) that has it, as a stream read a few chunks ahead of
    /// the consumer. `None` if no origin has it.
    ///
    /// A whole blob is verified as it streams, and its last chunk is held back until the
    /// bytes hash to `digest`: a stream of bytes that do not ends with an error instead, so
    /// a consumer never completes a wrong blob (a server aborts the response). When the
    /// first chunk has not come yet — a mismatch in a blob of one chunk, an error before
    /// any byte — the next origin is tried. An origin whose bytes fail is told so
    /// ([`OriginClient::report_corrupt`]) and checks its copy.
    pub(crate) async fn read(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<BlobStream>> {
        first_found(self.candidates(digest), |origin| {
            let range = range.clone();
            async move {
                let verify = range.is_none().then(|| Verify {
                    client: self.client.clone(),
                    namespace: namespace.to_owned(),
                    digest: *digest,
                });
                let Some((response, length)) =
                    self.client.read(&origin, namespace, digest, range).await?
                else {
                    return Ok(None);
                };
                let mut stream = stream_body(origin.clone(), response, length, verify);
                // Nothing has reached the consumer yet: a failure here moves on.
                match stream.next().await {
                    Some(Ok(first)) => {
                        let first = futures::stream::once(std::future::ready(Ok(first)));
                        Ok(Some(Box::pin(first.chain(stream)) as BlobStream))
                    }
                    Some(Err(e)) => Err(Error::Origin {
                        origin,
                        reason: e.to_string(),
                    }),
                    None => Ok(Some(Box::pin(futures::stream::empty()) as BlobStream)),
                }
            }
        })
        .await
    }

    /// [`download`](Self::download) from any of the blob's
    /// [`candidates`](Self::candidates), owners first.
    pub(crate) async fn download_any(
        &self,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
    ) -> Result<Bytes> {
        self.download_among(self.candidates(digest), namespace, digest, max_len)
            .await
    }

    /// Uploads a blob from `file` (verified by the caller) to the first of its owners that
    /// takes it; that origin writes it back to the backend of `namespace` and replicates it
    /// to the other owners.
    pub(crate) async fn upload_file(
        &self,
        namespace: &str,
        digest: &Digest,
        file: &Path,
    ) -> Result<()> {
        let owners = self.membership.view().owners(digest);
        first_ok(owners, |origin| async move {
            self.client
                .upload_file(&origin, namespace, digest, file, CommitKind::Primary)
                .await
        })
        .await
    }

    /// Uploads a blob of `length` bytes from `chunks` as they arrive, unverified (see
    /// [`RegistryStorage::blob_put_stream`](crate::oci::RegistryStorage::blob_put_stream)),
    /// to the first of its owners that starts an upload; that origin verifies the digest at
    /// its commit ([`Error::DigestMismatch`] when the bytes hash to another), then writes it
    /// back and replicates it. The bytes pass once: an owner that fails once they flow fails
    /// the upload (the client pushes again).
    pub(crate) async fn upload_stream(
        &self,
        namespace: &str,
        digest: &Digest,
        length: u64,
        chunks: crate::oci::ByteStream,
    ) -> Result<()> {
        let mut failures = Vec::new();
        for origin in self.membership.view().owners(digest) {
            match self
                .client
                .start_upload(&origin, namespace, digest, Some(length))
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(id)) => {
                    let source = ChunkSource::stream(chunks);
                    return self
                        .client
                        .send_upload(
                            &origin,
                            namespace,
                            digest,
                            &id,
                            length,
                            CommitKind::Primary,
                            &source,
                        )
                        .await;
                }
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        Err(no_origin(failures))
    }

    /// [`upload_file`](Self::upload_file) for a blob in memory (a manifest).
    pub(crate) async fn upload_bytes(
        &self,
        namespace: &str,
        digest: &Digest,
        data: Bytes,
    ) -> Result<()> {
        let owners = self.membership.view().owners(digest);
        first_ok(owners, |origin| {
            let data = data.clone();
            async move {
                self.client
                    .upload_bytes(&origin, namespace, digest, data, CommitKind::Primary)
                    .await
            }
        })
        .await
    }

    /// Asks the blob's owners, first to answer decides, to fetch it from their backend if
    /// they do not hold it (`POST …/prefetch`; a busy owner is waited out): `true` if held,
    /// `false` if being fetched; [`Error::NotFound`] if the backend lacks it. The owner that
    /// fetches it replicates it to the others.
    pub(crate) async fn trigger(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let owners = self.membership.view().owners(digest);
        let held = first_found(owners, |origin| async move {
            match self.client.prefetch(&origin, namespace, digest).await {
                Ok(held) => Ok(Some(held)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        held.ok_or(Error::NotFound(*digest))
    }

    /// Makes sure the blob is on its owners: asks them for its metainfo (which starts a
    /// fetch from the backend on a miss) until one has it, waiting while it is fetched or
    /// the owner is busy, for at most `patience`. [`Error::NotFound`] if the backend lacks
    /// it. The owner that fetches it replicates it to the others.
    pub(crate) async fn warm(
        &self,
        namespace: &str,
        digest: &Digest,
        patience: std::time::Duration,
    ) -> Result<()> {
        use kraken_p2p::tracker::MetaInfoLookup;
        let deadline = tokio::time::Instant::now() + patience;
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            let mut failures = Vec::new();
            let mut pending = false;
            for origin in self.membership.view().owners(digest) {
                match self.client.metainfo(&origin, namespace, digest).await {
                    Ok(MetaInfoLookup::Found(_)) => return Ok(()),
                    Ok(MetaInfoLookup::NotFound) => return Err(Error::NotFound(*digest)),
                    Ok(_) => {
                        pending = true;
                        break;
                    }
                    Err(e) => failures.push(error_chain(&e)),
                }
            }
            if !pending {
                return Err(no_origin(failures));
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(Error::Origin {
                    origin: "owners".into(),
                    reason: format!("{digest} still being fetched after {patience:?}"),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(2));
        }
    }

    /// Every blob the image `root` consists of — `root` itself, the manifests below it if it
    /// is an index, their configs and layers — after checking that the cluster has each:
    /// [`Error::MissingDependency`] names the first one missing. A `root` that is no
    /// manifest is its own only dependency. Reads at most `max_manifests` manifests of at
    /// most `max_manifest` bytes each.
    pub(crate) async fn dependencies(
        &self,
        namespace: &str,
        root: &Digest,
        max_manifest: u64,
        max_manifests: usize,
    ) -> Result<Vec<Digest>> {
        let image = self
            .walk(namespace, root, max_manifest, max_manifests)
            .await?;
        let blobs: Vec<Digest> = image.blobs.iter().map(|(digest, _)| *digest).collect();
        futures::stream::iter(blobs)
            .map(|digest| async move {
                match self.has(namespace, &digest).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Error::MissingDependency(digest)),
                    Err(e) => Err(e),
                }
            })
            .buffered(STAT_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(image.all)
    }

    /// The image `root` read from the cluster: its manifests (recursively through indexes)
    /// and the blobs they name, each once. A manifest the cluster lacks is
    /// [`Error::MissingDependency`]; the blobs are not looked for. A `root` that is no
    /// manifest is its own only part. Reads at most `max_manifests` manifests of at most
    /// `max_manifest` bytes each.
    pub(crate) async fn walk(
        &self,
        namespace: &str,
        root: &Digest,
        max_manifest: u64,
        max_manifests: usize,
    ) -> Result<ImageParts> {
        self.walk_image(namespace, root, max_manifest, max_manifests, false)
            .await
    }

    /// Every blob the image `root` refers to, as [`walk`](Self::walk) finds them, except
    /// that a manifest no origin has is skipped (with what it would refer to), as is a
    /// child of an index that is no manifest. The garbage collector marks with it; any other
    /// error (an origin that cannot answer) fails the walk, so that nothing is swept on a
    /// partial mark.
    pub(crate) async fn reachable(
        &self,
        namespace: &str,
        root: &Digest,
        max_manifest: u64,
        max_manifests: usize,
    ) -> Result<Vec<Digest>> {
        let image = self
            .walk_image(namespace, root, max_manifest, max_manifests, true)
            .await?;
        Ok(image.all)
    }

    /// [`walk`](Self::walk), or with `skip_missing` [`reachable`](Self::reachable)'s walk.
    async fn walk_image(
        &self,
        namespace: &str,
        root: &Digest,
        max_manifest: u64,
        max_manifests: usize,
        skip_missing: bool,
    ) -> Result<ImageParts> {
        let mut image = ImageParts {
            all: vec![*root],
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        let mut seen: BTreeSet<Digest> = image.all.iter().copied().collect();
        let mut manifests = vec![*root];
        while let Some(manifest) = manifests.pop() {
            if image.manifests.len() >= max_manifests {
                return Err(Error::InvalidManifest {
                    digest: *root,
                    reason: format!("refers to more than {max_manifests} manifests"),
                });
            }
            let bytes = match self.download(namespace, &manifest, max_manifest).await {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() && skip_missing => continue,
                Err(e) if e.is_not_found() => return Err(Error::MissingDependency(manifest)),
                // A blob bigger than a manifest can be is not a manifest: it is a plain blob
                // (only the root may be one; children must be manifests).
                Err(Error::Origin { reason, .. })
                    if manifest == *root && reason.contains("larger than the limit") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let deps = manifest_dependencies(&bytes).map_err(|reason| Error::InvalidManifest {
                digest: manifest,
                reason,
            })?;
            let Some(deps) = deps else {
                if manifest != *root && !skip_missing {
                    return Err(Error::InvalidManifest {
                        digest: manifest,
                        reason: "an index refers to it as a manifest, but it is not one".into(),
                    });
                }
                continue;
            };
            image.manifests.push((manifest, bytes.len() as u64));
            for (blob, size) in deps.blobs.into_iter().zip(deps.blob_sizes) {
                if seen.insert(blob) {
                    image.all.push(blob);
                    image.blobs.push((blob, size));
                }
            }
            for child in deps.manifests {
                if seen.insert(child) {
                    image.all.push(child);
                    manifests.push(child);
                }
            }
        }
        Ok(image)
    }
}

/// What [`OriginCluster::walk`] found of an image.
#[derive(Clone, Debug, Default)]
pub(crate) struct ImageParts {
    /// The root, its blobs and its child manifests, each once, in the order met.
    pub(crate) all: Vec<Digest>,
    /// The manifests read and their sizes (empty when the root is no manifest).
    pub(crate) manifests: Vec<(Digest, u64)>,
    /// The configs and layers, with the sizes their manifests declare.
    pub(crate) blobs: Vec<(Digest, u64)>,
}

/// Asks each of `origins` in turn until one has the thing: its answer; `None` if every
/// origin said it has not, an error if none could say.
async fn first_found<T, F, Fut>(origins: Vec<String>, mut ask: F) -> Result<Option<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let mut failures = Vec::new();
    let mut answered = false;
    for origin in origins {
        match ask(origin).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => answered = true,
            Err(e) => failures.push(error_chain(&e)),
        }
    }
    if answered {
        return Ok(None);
    }
    Err(no_origin(failures))
}

/// Tries each of `origins` in turn until one succeeds.
async fn first_ok<F, Fut>(origins: Vec<String>, mut attempt: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failures = Vec::new();
    for origin in origins {
        match attempt(origin).await {
            Ok(()) => return Ok(()),
            Err(e) => failures.push(error_chain(&e)),
        }
    }
    Err(no_origin(failures))
}

/// What a whole-blob read checks its bytes against, and whom it tells of a mismatch.
struct Verify {
    client: OriginClient,
    namespace: String,
    digest: Digest,
}

/// The body of an origin's answer as a stream fed by a task that reads [`READ_AHEAD`] chunks
/// ahead. The body must be exactly `length` bytes: more or fewer end the stream with an
/// error. With `verify`, the chunks are hashed and the last one is held back until the
/// hash matches; on a mismatch the stream ends with an error and the origin is told. The
/// task stops when the stream is dropped.
fn stream_body(
    origin: String,
    mut response: reqwest::Response,
    length: u64,
    verify: Option<Verify>,
) -> BlobStream {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    tokio::spawn(async move {
        let fail = |reason: String| std::io::Error::other(format!("origin {origin}: {reason}"));
        let mut hasher = verify.as_ref().map(|_| kraken_core::Hasher::new());
        let mut held: Option<Bytes> = None;
        let mut received = 0u64;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let _ = sender.send(Err(fail(e.to_string()))).await;
                    return;
                }
            };
            received += chunk.len() as u64;
            if received > length {
                let error = fail(format!("sent more than the {length} bytes expected"));
                let _ = sender.send(Err(error)).await;
                return;
            }
            let ready = match &mut hasher {
                Some(hasher) => {
                    hasher.update(&chunk);
                    held.replace(chunk)
                }
                None => Some(chunk),
            };
            if let Some(ready) = ready
                && sender.send(Ok(ready)).await.is_err()
            {
                return; // the consumer went away
            }
        }
        if received < length {
            let error = fail(format!("sent {received} of the {length} bytes expected"));
            let _ = sender.send(Err(error)).await;
            return;
        }
        if let (Some(hasher), Some(verify)) = (hasher, verify) {
            let actual = hasher.finalize();
            if actual != verify.digest {
                let error = Error::DigestMismatch {
                    expected: verify.digest,
                    actual,
                };
                tracing::warn!(%origin, error = %error, "an origin served corrupt bytes; the response is aborted");
                let _ = sender.send(Err(fail(error.to_string()))).await;
                verify
                    .client
                    .report_corrupt(&origin, &verify.namespace, &verify.digest)
                    .await;
                return;
            }
        }
        if let Some(last) = held {
            let _ = sender.send(Ok(last)).await;
        }
    });
    Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((chunk, receiver))
        },
    ))
}

fn no_origin(failures: Vec<String>) -> Error {
    Error::Origin {
        origin: "origin cluster".into(),
        reason: if failures.is_empty() {
            "no origins configured".into()
        } else {
            failures.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;
    use kraken_testkit::TestServer;

    use super::*;
    use crate::origin::client::tests::chunked;

    /// The bytes `stream_body` yields for a chunked answer of `chunks` held to `length`.
    async fn stream(chunks: &'static [&'static [u8]], length: u64) -> std::io::Result<Vec<u8>> {
        let server = TestServer::start(move |_| async move { chunked(206, chunks) }).await;
        let response = reqwest::get(server.url()).await.unwrap();
        let body = stream_body(server.addr().to_string(), response, length, None);
        let chunks: Vec<Bytes> = body.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn a_body_without_content_length_is_held_to_the_expected_length() {
        assert_eq!(stream(&[b"ab", b"cd"], 4).await.unwrap(), b"abcd");
        assert!(stream(&[b"ab", b"cd", b"ef"], 4).await.is_err(), "too long");
        assert!(stream(&[b"ab"], 4).await.is_err(), "too short");
    }
}
