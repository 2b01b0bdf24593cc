//! The origins' mark-and-sweep garbage collector (`kraken gc`).
//!
//! **Mark.** Every tag the build-index holds (`GET /list/`, page by page) is resolved to its
//! digest, and the image is walked through the origins exactly as the build-index's
//! dependency check walks it — the manifest, recursively the children of manifest lists
//! and image indexes, their configs and layers (`OriginCluster::reachable`, over
//! `oci::manifest::dependencies`). Referrers are marked through their subject's referrers
//! tag (`<repo>:sha256-<hex>`), which points at an index of them. Any failure to list, resolve or
//! walk stops the collection before anything is swept: a partial mark would sweep live
//! blobs.
//!
//! **Sweep.** Each origin is sent the marks (`POST /internal/gc`, an operator's endpoint)
//! and removes from its disk every blob that is not marked, is older than the grace period
//! and does not await write-back, and the backend copy of each; the first origin that
//! answers also lists the backends of the tagged repositories (and of
//! [`GcConfig::backend_namespaces`]) and removes the unmarked blobs there that the backend
//! says are older than the grace period. See `docs/origin.md`, "Garbage collection", for
//! the race with pushes in progress that the grace period covers.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kraken_core::{ByteSize, Digest};
use kraken_p2p::tls::ClientTlsConfig;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build_index::{BuildIndexClient, PageOptions, TagName};
use crate::error::{Error, Result, error_chain};
use crate::origin::{
    ClusterConfig, Location, MembersConfig, OriginClient, OriginCluster, SweepReport, SweepRequest,
};

/// Tags resolved and walked at once.
const MARK_CONCURRENCY: usize = 8;
/// Pages of the build-index's tag listing read at most (a build-index that keeps
/// answering with a next page cannot keep a collection running for ever).
const MAX_TAG_PAGES: usize = 1_000_000;

/// What `kraken gc` collects and how.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Build-indexes of the cluster (`host:port`), tried in order. Required.
    pub build_index: Vec<String>,
    /// Every origin of the cluster (`host:port`): each sweeps its own disk. Required.
    pub origins: Vec<String>,
    /// The origins' `cluster.replicas`, so that manifests are read from their owners
    /// first. Default: 3.
    pub replicas: usize,
    /// Blobs written less than this long ago are never swept; it must be longer than any
    /// push takes from its first blob to its tag. Default: 24 h.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Only report what would be swept. Default: false.
    pub dry_run: bool,
    /// Namespaces whose backends are listed for blobs no origin holds, besides the
    /// repositories that have tags (a backend route is chosen by namespace; with one route
    /// for every namespace, any one lists the whole backend). Default: none.
    pub backend_namespaces: Vec<String>,
    /// Largest manifest read while marking. Default: 4 MiB.
    pub max_manifest_size: ByteSize,
    /// Manifests read per tag while marking, at most (an index and its children); more
    /// fails the collection. Default: 256.
    pub max_manifests: usize,
    /// TLS toward the build-index and the origins; the origins' `POST /internal/gc` needs
    /// an operator's client certificate when they require client certificates. Default:
    /// plain HTTP.
    pub client_tls: Option<ClientTlsConfig>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            build_index: Vec::new(),
            origins: Vec::new(),
            replicas: 3,
            grace: Duration::from_secs(24 * 3600),
            dry_run: false,
            backend_namespaces: Vec::new(),
            max_manifest_size: ByteSize(4 << 20),
            max_manifests: 256,
            client_tls: None,
        }
    }
}

/// One origin's part of a collection.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OriginSweep {
    /// The origin (`host:port`).
    pub origin: String,
    /// What it swept; `None` when it could not be asked (see `error`).
    pub report: Option<SweepReport>,
    /// Why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a collection did, as `kraken gc` prints it (JSON).
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct GcReport {
    /// Whether nothing was deleted.
    pub dry_run: bool,
    /// The grace period, in seconds.
    pub grace_seconds: u64,
    /// Tags read from the build-index.
    pub tags: usize,
    /// Blobs marked (reachable from a tag).
    pub marked: usize,
    /// Blobs swept from the origins' disks (a blob held by two origins counts twice).
    pub swept_blobs: usize,
    /// Their bytes.
    pub swept_bytes: u64,
    /// Blobs swept from the backends.
    pub backend_swept_blobs: usize,
    /// Their bytes.
    pub backend_swept_bytes: u64,
    /// Each origin's report.
    pub origins: Vec<OriginSweep>,
}

impl GcReport {
    /// Whether every origin swept (none failed to answer).
    pub fn complete(&self) -> bool {
        self.origins.iter().all(|o| o.report.is_some())
    }
}

/// Marks from the build-index's tags, then has every origin sweep.
pub async fn collect_garbage(config: &GcConfig) -> Result<GcReport> {
    if config.build_index.is_empty() || config.origins.is_empty() {
        return Err(Error::Config(
            "garbage collection needs the build-index and every origin".into(),
        ));
    }
    let tls = config.client_tls.as_ref().map(|t| t.load()).transpose()?;
    let build_index = BuildIndexClient::with_tls(config.build_index.clone(), tls.as_ref())?;
    let client = OriginClient::with_tls(tls.as_ref())?;
    let cluster_config = ClusterConfig {
        members: MembersConfig::Static(config.origins.clone()),
        replicas: config.replicas.max(1),
        ..ClusterConfig::default()
    };
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let origins =
        OriginCluster::start(&cluster_config, client.clone(), &tasks, shutdown.clone()).await?;
    let marked = mark(config, &build_index, &origins).await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    let (tags, marked, namespaces) = marked?;

    let mut report = GcReport {
        dry_run: config.dry_run,
        grace_seconds: config.grace.as_secs(),
        tags,
        marked: marked.len(),
        ..GcReport::default()
    };
    let mut backend_namespaces: BTreeSet<String> = namespaces;
    backend_namespaces.extend(config.backend_namespaces.iter().cloned());
    let mut request = SweepRequest {
        keep: marked.into_iter().collect(),
        grace_seconds: config.grace.as_secs(),
        dry_run: config.dry_run,
        backend_namespaces: backend_namespaces.into_iter().collect(),
    };
    for origin in &config.origins {
        match client.sweep(origin, &request).await {
            Ok(sweep) => {
                let (blobs, bytes) = sweep.totals(Location::Store);
                let (backend_blobs, backend_bytes) = sweep.totals(Location::Backend);
                report.swept_blobs += blobs;
                report.swept_bytes += bytes;
                report.backend_swept_blobs += backend_blobs;
                report.backend_swept_bytes += backend_bytes;
                // One origin lists the backends: they are shared.
                request.backend_namespaces.clear();
                report.origins.push(OriginSweep {
                    origin: origin.clone(),
                    report: Some(sweep),
                    error: None,
                });
            }
            Err(e) => report.origins.push(OriginSweep {
                origin: origin.clone(),
                report: None,
                error: Some(error_chain(&e)),
            }),
        }
    }
    tracing::info!(
        dry_run = report.dry_run,
        tags = report.tags,
        marked = report.marked,
        swept_blobs = report.swept_blobs,
        swept_bytes = report.swept_bytes,
        backend_swept_blobs = report.backend_swept_blobs,
        "garbage collection done"
    );
    Ok(report)
}

/// The tag count, every blob a tag reaches, and the tagged repositories.
async fn mark(
    config: &GcConfig,
    build_index: &BuildIndexClient,
    origins: &OriginCluster,
) -> Result<(usize, BTreeSet<Digest>, BTreeSet<String>)> {
    let mut names = Vec::new();
    let mut options = PageOptions::default();
    let mut ended = false;
    for _ in 0..MAX_TAG_PAGES {
        let page = build_index.list("", &options).await?;
        names.extend(page.names);
        match page.next {
            Some(next) => options.offset = Some(next),
            None => {
                ended = true;
                break;
            }
        }
    }
    if !ended {
        return Err(Error::Internal("the build-index's tag listing did not end"));
    }
    let tags: Vec<TagName> = names
        .iter()
        .map(|name| name.parse::<TagName>())
        .collect::<Result<_>>()?;
    let namespaces = tags.iter().map(|t| t.repository().to_owned()).collect();
    let reached: Vec<Vec<Digest>> = futures::stream::iter(tags.iter())
        .map(|tag| async move {
            // Deleted since it was listed: it marks nothing.
            let Some(root) = build_index.get_tag(tag).await? else {
                return Ok(Vec::new());
            };
            origins
                .reachable(
                    tag.repository(),
                    &root,
                    config.max_manifest_size.bytes(),
                    config.max_manifests,
                )
                .await
                .map_err(|e| Error::Origin {
                    origin: "origin cluster".into(),
                    reason: format!("marking from {tag}: {}", error_chain(&e)),
                })
        })
        .buffer_unordered(MARK_CONCURRENCY)
        .try_collect()
        .await?;
    let marked = reached.into_iter().flatten().collect();
    Ok((tags.len(), marked, namespaces))
}
