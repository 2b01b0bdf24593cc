//! The build-index's way to an origin cluster: stat and download blobs from their owners on
//! the ring, and walk a manifest's dependencies.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kraken_core::Digest;

use super::deps::manifest_dependencies;
use crate::error::{Error, Result, error_chain};
use crate::origin::{MembersConfig, Membership, OriginClient};

/// Blobs checked at once in a dependency check.
const STAT_CONCURRENCY: usize = 8;

/// An origin cluster seen through its health-checked ring.
#[derive(Debug)]
pub(crate) struct OriginCluster {
    membership: Membership,
    members: MembersConfig,
    client: OriginClient,
}

impl OriginCluster {
    pub(crate) fn new(
        membership: Membership,
        members: MembersConfig,
        client: OriginClient,
    ) -> Self {
        Self {
            membership,
            members,
            client,
        }
    }

    /// The client used to reach origins (this cluster's and remote ones).
    pub(crate) fn client(&self) -> &OriginClient {
        &self.client
    }

    /// How a remote build-index reaches these origins: the DNS name, or the listed members
    /// joined by commas.
    pub(crate) fn address(&self) -> String {
        match &self.members {
            MembersConfig::Dns(name) => name.clone(),
            _ => self.membership.view().listed().join(","),
        }
    }

    /// Ready when at least one origin passes its health checks.
    pub(crate) async fn check_ready(&self) -> std::result::Result<(), String> {
        if self.membership.view().healthy().is_empty() {
            Err("no origin passes its health check".into())
        } else {
            Ok(())
        }
    }

    /// Whether the cluster has the blob: true if any owner (or its backend) has it, false
    /// if every owner said no, an error if none could say.
    pub(crate) async fn has(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        let mut failures = Vec::new();
        let mut answered = false;
        for origin in self.membership.view().owners(digest) {
            match self.client.stat(&origin, namespace, digest, false).await {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => answered = true,
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        if answered {
            return Ok(false);
        }
        Err(no_origin(failures))
    }

    /// A blob of at most `max_len` bytes, verified, from the first owner that has it.
    pub(crate) async fn download(
        &self,
        namespace: &str,
        digest: &Digest,
        max_len: u64,
    ) -> Result<Bytes> {
        let mut failures = Vec::new();
        let mut not_found = false;
        for origin in self.membership.view().owners(digest) {
            match self
                .client
                .download(&origin, namespace, digest, max_len)
                .await
            {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.is_not_found() => not_found = true,
                Err(e) => failures.push(error_chain(&e)),
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
        let mut all = vec![*root];
        let mut seen: BTreeSet<Digest> = all.iter().copied().collect();
        let mut manifests = vec![*root];
        let mut read = 0;
        while let Some(manifest) = manifests.pop() {
            read += 1;
            if read > max_manifests {
                return Err(Error::InvalidManifest {
                    digest: *root,
                    reason: format!("refers to more than {max_manifests} manifests"),
                });
            }
            let bytes = match self.download(namespace, &manifest, max_manifest).await {
                Ok(bytes) => bytes,
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
                if manifest != *root {
                    return Err(Error::InvalidManifest {
                        digest: manifest,
                        reason: "an index refers to it as a manifest, but it is not one".into(),
                    });
                }
                continue;
            };
            let blobs: Vec<Digest> = deps.blobs.into_iter().filter(|d| seen.insert(*d)).collect();
            futures::stream::iter(blobs.iter().copied())
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
            all.extend(blobs);
            for child in deps.manifests {
                if seen.insert(child) {
                    all.push(child);
                    manifests.push(child);
                }
            }
        }
        Ok(all)
    }
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
