//! Cold-start control: warming the origins for an image before agents pull it.
//!
//! - `POST /proxy/v1/registry/prefetch` (Go Kraken's v1): resolve the tag, read the manifest
//!   tree, answer `200` at once, then warm every blob in the background.
//! - `POST /proxy/v2/registry/prefetch`: the same walk, then the origins' prefetch trigger
//!   for every blob; answers once every trigger returned.
//! - `POST /registry/notifications`: CNCF Distribution's event envelope; a `push` of a
//!   manifest warms the origins for it and everything it refers to ([`super::notifications`]).
//!
//! "Warm" means on the blob's owning origins: one owner fetches it from its backend (asked
//! for its metainfo, as an agent's tracker would) and replicates it to the others. Warms run
//! in the background at most [`PrefetchConfig::concurrency`] at once for the whole proxy, so
//! a burst of prefetches cannot flood the origins (which also bound their backend fetches).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use hyper::http::{Response, StatusCode};
use kraken_core::{ByteSize, Digest};
use kraken_p2p::http_server::RequestBody;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::storage::ProxyStorage;
use crate::build_index::TagName;
use crate::error::{Error, error_chain};
use crate::http::{Body, json};
use crate::origin::ImageParts;

/// Largest prefetch request body read (a tag and a trace id).
const MAX_PREFETCH_BODY: usize = 64 << 10;

/// Settings of prefetches and notifications (`[prefetch]` of the proxy's config). Go Kraken's
/// `prefetch_min_blob_size` and `prefetch_max_blob_size` are `min_blob_size` and
/// `max_blob_size` here.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefetchConfig {
    /// Blobs smaller than this are not warmed (manifests always are: they are read to walk
    /// the image). Default: 0.
    pub min_blob_size: ByteSize,
    /// Blobs larger than this are not warmed. Default: 50GB (Go Kraken's default).
    pub max_blob_size: ByteSize,
    /// Blobs warmed at once by the whole proxy (every prefetch and notification together).
    /// Default: 16.
    pub concurrency: usize,
    /// Manifests one prefetch reads (an index and its children). Default: 256.
    pub max_manifests: usize,
    /// How long a background warm waits for one blob to reach its origins before giving up
    /// (logged). Default: 30m.
    #[serde(with = "humantime_serde")]
    pub warm_timeout: Duration,
    /// Largest `/registry/notifications` body read; larger ones get `413`. Default: 1MiB.
    pub max_notification_size: ByteSize,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            min_blob_size: ByteSize(0),
            max_blob_size: ByteSize(50_000_000_000),
            concurrency: 16,
            max_manifests: 256,
            warm_timeout: Duration::from_secs(30 * 60),
            max_notification_size: ByteSize(1 << 20),
        }
    }
}

/// What warms the origins: the proxy's storage, the settings and the background tasks.
#[derive(Debug)]
pub(crate) struct Prefetcher {
    storage: Arc<ProxyStorage>,
    config: PrefetchConfig,
    max_manifest: u64,
    /// One permit per blob being warmed.
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Which prefetch endpoint.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Version {
    /// Answer at once, warm in the background.
    V1,
    /// Trigger every blob's fetch on its owners, then answer.
    V2,
}

/// A prefetch request (Go Kraken's body).
#[derive(Debug, Deserialize)]
struct PrefetchRequest {
    tag: String,
    #[serde(default)]
    trace_id: String,
}

/// A prefetch's answer, in Go Kraken's shape.
#[derive(Debug, Serialize)]
struct PrefetchAnswer<'a> {
    tag: &'a str,
    prefetched: bool,
    status: &'static str,
    message: String,
    trace_id: &'a str,
}

/// A refused or failed prefetch, in Go Kraken's shape.
#[derive(Debug, Serialize)]
struct PrefetchRefusal<'a> {
    error: String,
    prefetched: bool,
    status: &'static str,
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_id: &'a str,
}

/// The blobs of an image a prefetch warms, after the size filters.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) namespace: String,
    pub(crate) manifests: usize,
    pub(crate) blobs: Vec<(Digest, u64)>,
    pub(crate) skipped: usize,
}

impl Plan {
    fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }
}

impl Prefetcher {
    pub(crate) fn new(
        storage: Arc<ProxyStorage>,
        config: PrefetchConfig,
        max_manifest: u64,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            storage,
            config,
            max_manifest,
            slots,
            tasks,
            shutdown,
        }
    }

    pub(crate) fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    /// Runs `work` in the background until it ends or the proxy shuts down.
    pub(crate) fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            shutdown.run_until_cancelled(work).await;
        });
    }

    /// Handles `POST /proxy/v{1,2}/registry/prefetch`.
    pub(crate) async fn handle(
        self: &Arc<Self>,
        version: Version,
        body: RequestBody,
    ) -> Response<Body> {
        let bytes = match read_body(body, MAX_PREFETCH_BODY).await {
            Ok(bytes) => bytes,
            Err(refusal) => return refusal,
        };
        let request: PrefetchRequest = match serde_json::from_slice(&bytes) {
            Ok(request) => request,
            Err(e) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "",
                    format!(
                        "the body must be JSON {{\"tag\": \"<repo>:<tag>\", \"trace_id\": \"…\"}}: {e}"
                    ),
                );
            }
        };
        let trace_id = request.trace_id.as_str();
        let tag = match parse_tag(&request.tag) {
            Ok(tag) => tag,
            Err(reason) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    trace_id,
                    format!("invalid tag {:?}: {reason}", truncate(&request.tag)),
                );
            }
        };
        let digest = match self.storage.build_index().get_tag(&tag).await {
            Ok(Some(digest)) => digest,
            Ok(None) => {
                return refused(
                    StatusCode::NOT_FOUND,
                    trace_id,
                    format!("tag {tag} not found"),
                );
            }
            Err(e) => {
                return refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    trace_id,
                    format!("resolving tag {tag}: {}", error_chain(&e)),
                );
            }
        };
        let plan = match self.plan(tag.repository(), &digest).await {
            Ok(plan) => plan,
            Err(e) => {
                let status = match &e {
                    Error::MissingDependency(_) => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                return refused(
                    status,
                    trace_id,
                    format!("reading the image {tag} ({digest}): {}", error_chain(&e)),
                );
            }
        };
        let summary = format!(
            "{} blobs ({} bytes) of {} manifests, {} skipped by size",
            plan.blobs.len(),
            plan.bytes(),
            plan.manifests,
            plan.skipped
        );
        tracing::info!(%tag, %digest, ?version, trace_id, "prefetch: {summary}");
        let message = match version {
            Version::V1 => {
                self.warm_in_background(plan);
                format!("prefetching {summary}")
            }
            Version::V2 => match self.trigger(&plan).await {
                Ok(held) => format!(
                    "triggered {summary}: {held} already on the origins, {} being fetched",
                    plan.blobs.len() - held
                ),
                Err(failures) => {
                    return refused(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        trace_id,
                        format!(
                            "{} of {} triggers failed: {}",
                            failures.len(),
                            plan.blobs.len(),
                            failures.join("; ")
                        ),
                    );
                }
            },
        };
        json(
            StatusCode::OK,
            &PrefetchAnswer {
                tag: &request.tag,
                prefetched: true,
                status: "success",
                message,
                trace_id,
            },
        )
    }

    /// Reads the image `root` of `namespace` (its manifests, through indexes) and keeps the
    /// blobs within the size filters.
    pub(crate) async fn plan(&self, namespace: &str, root: &Digest) -> crate::Result<Plan> {
        let ImageParts {
            manifests, blobs, ..
        } = self
            .storage
            .origins()
            .walk(
                namespace,
                root,
                self.max_manifest,
                self.config.max_manifests,
            )
            .await?;
        let (min, max) = (
            self.config.min_blob_size.bytes(),
            self.config.max_blob_size.bytes(),
        );
        let total = blobs.len();
        let blobs: Vec<(Digest, u64)> = blobs
            .into_iter()
            .filter(|(_, size)| (min..=max).contains(size))
            .collect();
        Ok(Plan {
            namespace: namespace.to_owned(),
            manifests: manifests.len(),
            skipped: total - blobs.len(),
            blobs,
        })
    }

    /// Warms every blob of `plan` on its owners, in the background.
    pub(crate) fn warm_in_background(self: &Arc<Self>, plan: Plan) {
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            let digests: Vec<Digest> = plan.blobs.iter().map(|(digest, _)| *digest).collect();
            let warms = futures::stream::iter(digests)
                .map(|digest| {
                    let this = Arc::clone(&this);
                    let namespace = plan.namespace.clone();
                    async move {
                        // Each warm holds a slot only while it runs, so one image's blobs
                        // do not keep another's waiting for all of them.
                        let Ok(_slot) = this.slots.acquire().await else {
                            return;
                        };
                        let origins = this.storage.origins();
                        if let Err(e) = origins.warm(&namespace, &digest, this.config.warm_timeout).await {
                            tracing::warn!(%namespace, digest = %digest.fmt_short(), error = %error_chain(&e), "prefetch: could not warm a blob");
                        }
                    }
                })
                .buffer_unordered(this.config.concurrency.max(1))
                .collect::<Vec<()>>();
            if this.shutdown.run_until_cancelled(warms).await.is_some() {
                tracing::debug!(namespace = %plan.namespace, blobs = plan.blobs.len(), "prefetch: warmed");
            }
        });
    }

    /// Triggers every blob's fetch on its owners: how many they already held, or what
    /// failed.
    async fn trigger(&self, plan: &Plan) -> Result<usize, Vec<String>> {
        let digests: Vec<Digest> = plan.blobs.iter().map(|(digest, _)| *digest).collect();
        let results: Vec<crate::Result<bool>> = futures::stream::iter(digests)
            .map(|digest| {
                let slots = Arc::clone(&self.slots);
                let namespace = plan.namespace.clone();
                async move {
                    let Ok(_slot) = slots.acquire().await else {
                        return Err(Error::Shutdown);
                    };
                    self.storage.origins().trigger(&namespace, &digest).await
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut held = 0;
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(true) => held += 1,
                Ok(false) => {}
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        if failures.is_empty() {
            Ok(held)
        } else {
            failures.truncate(5);
            Err(failures)
        }
    }
}

/// A prefetch's tag: `repo:tag` (`library/ubuntu:22.04`), or Go Kraken's
/// `<registry host>/<repo>:<tag>` (`registry.example.com:5000/team/app:v1`), whose first
/// component is dropped when it names a host — it has a `.` or a `:`, or is `localhost`, as
/// in Docker's image references.
fn parse_tag(tag: &str) -> Result<TagName, String> {
    let tag = tag.trim();
    if tag.is_empty() {
        return Err("it is empty; give <repository>:<tag>".into());
    }
    let without_host = match tag.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => tag,
    };
    without_host
        .parse::<TagName>()
        .map_err(|e| format!("{e}; give <repository>:<tag> or <registry host>/<repository>:<tag>"))
}

/// The body, at most `max` bytes: `413` above, `400` when it cannot be read.
pub(crate) async fn read_body(
    body: RequestBody,
    max: usize,
) -> Result<bytes::Bytes, Response<Body>> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
                format!("the body is larger than {max} bytes"),
            ))
        }
        Err(e) => Err(refused(
            StatusCode::BAD_REQUEST,
            "",
            format!("the body could not be read: {e}"),
        )),
    }
}

/// A failure answer in Go Kraken's shape.
pub(crate) fn refused(status: StatusCode, trace_id: &str, message: String) -> Response<Body> {
    if status.is_server_error() {
        tracing::warn!(%status, trace_id, "prefetch failed: {message}");
    }
    json(
        status,
        &PrefetchRefusal {
            error: message.clone(),
            prefetched: false,
            status: "failure",
            message,
            trace_id,
        },
    )
}

fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_plain_or_behind_a_registry_host() {
        for (given, repository, tag) in [
            ("library/ubuntu:22.04", "library/ubuntu", "22.04"),
            ("ubuntu:latest", "ubuntu", "latest"),
            (
                "127.0.0.1:5055/uber-usi/abacus-go:v1",
                "uber-usi/abacus-go",
                "v1",
            ),
            ("registry.example.com/team/app:v2", "team/app", "v2"),
            ("localhost/a/b/c:t", "a/b/c", "t"),
            ("  team/app:v3 ", "team/app", "v3"),
        ] {
            let parsed = parse_tag(given).unwrap();
            assert_eq!(
                (parsed.repository(), parsed.tag()),
                (repository, tag),
                "{given}"
            );
        }
        for bad in [
            "",
            "   ",
            "library/ubuntu",
            "Upper/case:1",
            "host.io/:tag",
            "a:b:c:",
        ] {
            let error = parse_tag(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
    }
}
