//! Disk cleanup: evicts idle blobs and, above the high watermark, the least recently used
//! ones (never a blob pinned for write-back), and deletes abandoned uploads.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kraken_core::{Digest, EvictionReport};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::state::OriginState;
use crate::error::error_chain;

pub(crate) async fn cleanup_loop(state: Arc<OriginState>) {
    let this = Arc::clone(&state);
    let evict = move || {
        let now = SystemTime::now();
        this.uploads.sweep(now, this.config.cleanup.upload_ttl);
        this.store.evict(now)
    };
    let evicted = |digest: &Digest| {
        state.namespaces.remove(digest);
        // The seeding torrent holds the file open; closing it frees the space.
        if let Some(node) = &state.node {
            node.unseed(digest);
        }
    };
    eviction_loop(
        state.config.cleanup.interval,
        state.shutdown.clone(),
        evict,
        evicted,
    )
    .await;
}

/// Every `interval` until `shutdown`: runs `evict` (a store's eviction pass) on the blocking
/// pool, calls `evicted` for each blob it removed, and logs what was freed. The origin's and
/// the agent's cleanup.
pub(crate) async fn eviction_loop<E, F>(
    interval: Duration,
    shutdown: CancellationToken,
    evict: E,
    evicted: F,
) where
    E: Fn() -> kraken_core::Result<EvictionReport> + Clone + Send + 'static,
    F: Fn(&Digest),
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let report = match tokio::task::spawn_blocking(evict.clone()).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cleanup pass failed");
                continue;
            }
            Err(_) => continue,
        };
        for digest in report.idle.iter().chain(&report.watermark) {
            evicted(digest);
        }
        if report.freed_bytes > 0 {
            tracing::info!(
                idle = report.idle.len(),
                watermark = report.watermark.len(),
                freed_bytes = report.freed_bytes,
                "cleanup evicted blobs"
            );
        }
    }
}

/// What `POST /forcecleanup` did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ForcedCleanup {
    /// Blobs deleted from this origin's disk.
    pub(crate) deleted: Vec<String>,
    /// Blobs kept, each with the reason (awaiting write-back, or a failed delete).
    pub(crate) errors: Vec<String>,
}

/// Go Kraken's manual cleanup: deletes every cached blob idle for longer than `ttl` or not
/// owned by this origin in the current ring — but never one still awaiting write-back (Go
/// Kraken writes those back first; here the queue keeps them until it has, so they are
/// reported and kept). A deleted blob that this origin owns is fetched again from the
/// backend on the next request.
pub(crate) async fn force_cleanup(state: &Arc<OriginState>, ttl: Duration) -> ForcedCleanup {
    let ring = state.membership.view();
    let now = SystemTime::now();
    let mut report = ForcedCleanup::default();
    let mut doomed: Vec<Digest> = Vec::new();
    for digest in state.store.cached() {
        let idle = state
            .store
            .last_access(&digest)
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|idle| idle > ttl);
        let owned = ring.owners(&digest).contains(&state.name);
        if !idle && owned {
            continue;
        }
        if state.store.is_pinned(&digest) {
            report.errors.push(format!("{digest}: awaiting write-back"));
            continue;
        }
        doomed.push(digest);
    }
    for digest in doomed {
        // The seeding torrent holds the file open; closing it frees the space.
        if let Some(node) = &state.node {
            node.unseed(&digest);
        }
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.delete(&digest)).await {
            Ok(Ok(_)) => {
                state.namespaces.remove(&digest);
                report.deleted.push(digest.to_string());
            }
            Ok(Err(e)) => report.errors.push(format!("{digest}: {}", error_chain(&e))),
            Err(_) => report.errors.push(format!("{digest}: delete task failed")),
        }
    }
    tracing::info!(
        deleted = report.deleted.len(),
        kept = report.errors.len(),
        "forced cleanup"
    );
    report
}
