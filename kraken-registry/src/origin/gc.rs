//! Removing blobs from an origin: a purge of one blob (`DELETE /internal/namespace/{ns}/blobs/{d}`,
//! what the proxy's registry deletes use) and the sweep of the cluster's mark-and-sweep
//! garbage collector (`POST /internal/gc`, driven by [`crate::gc`]). See `docs/origin.md`,
//! "Garbage collection".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kraken_backends::ListOptions;
use kraken_core::Digest;
use serde::{Deserialize, Serialize};

use super::state::OriginState;
use crate::error::{Error, Result, error_chain};

/// Names per page when the sweep lists a backend.
const LIST_PAGE: usize = 1000;
/// Pages of one backend listing at most (a backend that keeps answering with a
/// continuation token cannot keep a sweep running for ever): 100 million names.
const MAX_LIST_PAGES: usize = 100_000;

/// What a purge found and removed.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct Purged {
    /// The blob was on this origin's disk (and is no more).
    pub(crate) local: bool,
    /// The backend had it under the namespace (and has no more).
    pub(crate) backend: bool,
}

/// Removes `digest` from this origin — pinned or not, with any write-back of it still
/// queued — and from the backend of `namespace`: the registry's delete of a blob or a
/// manifest, which removes it for every repository (blobs are content-addressed across the
/// cluster). Agents that hold it keep it until they evict it.
pub(crate) async fn purge(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
) -> Result<Purged> {
    // Write-backs first: a queued one would retry for ever on a blob no longer on disk.
    for task in state.queue.entries() {
        if task.digest == *digest {
            state.queue.remove(&(task.namespace.clone(), task.digest))?;
        }
    }
    // Buried even when not held here: another owner may still push it in a repair before
    // its own purge.
    state.tombstones.bury(digest);
    let local = delete_local(state, digest, true).await?;
    let name = digest.to_string();
    let backend = match state.backend.delete(namespace, &name).await {
        Ok(()) => true,
        Err(e) if e.is_not_found() => false,
        Err(kraken_backends::Error::NoRoute { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(%digest, namespace, local, backend, "purged a blob");
    Ok(Purged { local, backend })
}

/// Stops seeding `digest` and deletes it from the store (unpinning it first when `force`);
/// whether it was there. A pinned blob without `force` is [`Error::Store`]'s `Pinned`.
async fn delete_local(state: &Arc<OriginState>, digest: &Digest, force: bool) -> Result<bool> {
    // The seeding torrent holds the file open; closing it frees the space.
    state.forget(digest);
    let store = state.store.clone();
    let digest = *digest;
    let deleted = tokio::task::spawn_blocking(move || {
        if force && store.is_pinned(&digest) {
            store.unpin(&digest)?;
        }
        store.delete(&digest)
    })
    .await
    .map_err(|_| Error::Internal("delete task failed"))??;
    Ok(deleted)
}

/// The body of `POST /internal/gc`: what the collector marked, and how to sweep.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SweepRequest {
    /// The marked blobs: every blob a tag of the build-index reaches. Never swept.
    pub keep: Vec<Digest>,
    /// Blobs written less than this many seconds ago are never swept (the grace period).
    pub grace_seconds: u64,
    /// Only report what would be swept.
    #[serde(default)]
    pub dry_run: bool,
    /// Namespaces whose backends are listed for blobs that no origin holds; empty: only
    /// the backend copies of blobs swept from this origin's disk are removed.
    #[serde(default)]
    pub backend_namespaces: Vec<String>,
}

/// Where a swept blob was.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// This origin's disk.
    Store,
    /// The backend.
    Backend,
}

/// One blob a sweep removed (or, dry, would remove).
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct SweptBlob {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Where it was.
    pub location: Location,
}

/// What one origin's sweep did: the answer of `POST /internal/gc`.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SweepReport {
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// The blobs removed (or that would be), from the disk and from the backend.
    pub swept: Vec<SweptBlob>,
    /// Blobs kept because a tag reaches them.
    pub kept_marked: usize,
    /// Unmarked blobs kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Unmarked blobs kept because they still await write-back (pinned).
    pub kept_pinned: usize,
    /// Unmarked blobs kept in a backend that does not say how old they are.
    pub kept_unknown_age: usize,
    /// What failed (the sweep goes on with the next blob).
    pub errors: Vec<String>,
}

impl SweepReport {
    /// Blobs and bytes swept from `location`.
    pub fn totals(&self, location: Location) -> (usize, u64) {
        self.swept
            .iter()
            .filter(|b| b.location == location)
            .fold((0, 0), |(n, bytes), b| (n + 1, bytes + b.size))
    }
}

/// Sweeps this origin's disk (and backend copies of what it sweeps there), then the backends
/// of `request.backend_namespaces`, of every blob that is neither marked nor younger than
/// the grace period nor awaiting write-back.
pub(crate) async fn sweep(state: &Arc<OriginState>, request: SweepRequest) -> SweepReport {
    let keep: HashSet<Digest> = request.keep.iter().copied().collect();
    let grace = Duration::from_secs(request.grace_seconds);
    let now = SystemTime::now();
    let old = |written: Option<SystemTime>| {
        written.is_some_and(|at| now.duration_since(at).is_ok_and(|age| age >= grace))
    };
    let mut report = SweepReport {
        dry_run: request.dry_run,
        ..SweepReport::default()
    };
    let mut seen = HashSet::new();
    for digest in state.store.cached() {
        seen.insert(digest);
        if keep.contains(&digest) {
            report.kept_marked += 1;
            continue;
        }
        if state.store.is_pinned(&digest) {
            report.kept_pinned += 1;
            continue;
        }
        if !old(state.store.written_at(&digest)) {
            report.kept_recent += 1;
            continue;
        }
        let size = state.store.metainfo(&digest).map_or(0, |m| m.length());
        let namespace = state.namespaces.get(&digest);
        if !request.dry_run {
            // Buried first: a repair's replica that lands after the delete would bring it
            // back (the other owners are swept after this one).
            state.tombstones.bury(&digest);
            match delete_local(state, &digest, false).await {
                Ok(_) => {}
                // Pinned since the check: a commit of the same blob just made it new.
                Err(Error::Store(kraken_core::Error::Pinned(_))) => {
                    state.tombstones.lift(&digest);
                    report.kept_pinned += 1;
                    continue;
                }
                Err(e) => {
                    report.errors.push(format!("{digest}: {}", error_chain(&e)));
                    continue;
                }
            }
        }
        report.swept.push(SweptBlob {
            digest,
            size,
            location: Location::Store,
        });
        // Its backend copy is as old as the blob in the cluster, unless the backend says
        // it was written again since (a new push of the same bytes to another origin).
        if let Some(namespace) = namespace {
            sweep_backend_blob(state, &namespace, &digest, &old, &mut report).await;
        }
    }
    // Blobs committed elsewhere and still queued for write-back here are in use.
    let pending: HashSet<Digest> = state.queue.entries().iter().map(|t| t.digest).collect();
    let skip = Skip {
        keep: &keep,
        pending: &pending,
    };
    for namespace in &request.backend_namespaces {
        if let Err(e) = sweep_backend(state, namespace, &skip, &mut seen, &old, &mut report).await {
            report.errors.push(format!(
                "listing the backend of {namespace}: {}",
                error_chain(&e)
            ));
        }
    }
    let (blobs, bytes) = report.totals(Location::Store);
    let (backend_blobs, backend_bytes) = report.totals(Location::Backend);
    tracing::info!(
        dry_run = report.dry_run,
        blobs,
        bytes,
        backend_blobs,
        backend_bytes,
        kept_marked = report.kept_marked,
        kept_recent = report.kept_recent,
        errors = report.errors.len(),
        "garbage collection sweep"
    );
    report
}

/// What a backend listing leaves alone: marked blobs and blobs awaiting write-back.
struct Skip<'a> {
    keep: &'a HashSet<Digest>,
    pending: &'a HashSet<Digest>,
}

/// Lists the backend of `namespace` and sweeps every digest-named blob not seen yet.
async fn sweep_backend(
    state: &Arc<OriginState>,
    namespace: &str,
    skip: &Skip<'_>,
    seen: &mut HashSet<Digest>,
    old: &impl Fn(Option<SystemTime>) -> bool,
    report: &mut SweepReport,
) -> Result<()> {
    let options = ListOptions::with_limit(LIST_PAGE);
    let mut token = None;
    for _ in 0..MAX_LIST_PAGES {
        let page = state
            .backend
            .list(namespace, "sha256:", &options.after(token.take()))
            .await?;
        for name in &page.names {
            // Other names (a tag store sharing the bucket, say) are not blobs.
            let Ok(digest) = name.parse::<Digest>() else {
                continue;
            };
            if !seen.insert(digest) {
                continue;
            }
            if skip.keep.contains(&digest) {
                report.kept_marked += 1;
                continue;
            }
            if skip.pending.contains(&digest) {
                report.kept_pinned += 1;
                continue;
            }
            sweep_backend_blob(state, namespace, &digest, old, report).await;
        }
        match page.continuation_token {
            Some(next) => token = Some(next),
            None => return Ok(()),
        }
    }
    Err(Error::Internal("the backend listing did not end"))
}

/// Removes one unmarked blob from the backend of `namespace` if the backend says it is older
/// than the grace period (or, for a blob swept from the disk, does not say).
async fn sweep_backend_blob(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    old: &impl Fn(Option<SystemTime>) -> bool,
    report: &mut SweepReport,
) {
    let name = digest.to_string();
    let local = report
        .swept
        .last()
        .is_some_and(|b| b.digest == *digest && b.location == Location::Store);
    let info = match state.backend.stat(namespace, &name).await {
        Ok(info) => info,
        Err(e) if e.is_not_found() => return,
        Err(kraken_backends::Error::NoRoute { .. }) => return,
        Err(e) => {
            report.errors.push(format!("{digest}: {}", error_chain(&e)));
            return;
        }
    };
    match info.modified {
        Some(_) if !old(info.modified) => {
            report.kept_recent += 1;
            return;
        }
        None if !local => {
            report.kept_unknown_age += 1;
            return;
        }
        _ => {}
    }
    if !report.dry_run {
        match state.backend.delete(namespace, &name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                report.errors.push(format!("{digest}: {}", error_chain(&e)));
                return;
            }
        }
    }
    report.swept.push(SweptBlob {
        digest: *digest,
        size: info.size,
        location: Location::Backend,
    });
}
