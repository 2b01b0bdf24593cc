//! Disk cleanup: evicts idle blobs and, above the high watermark, the least recently used
//! ones (never a blob pinned for write-back), and deletes abandoned uploads.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kraken_core::Digest;
use serde::Serialize;

use super::state::OriginState;
use crate::cleanup::eviction_loop;
use crate::error::error_chain;

pub(crate) async fn cleanup_loop(state: Arc<OriginState>) {
    let this = Arc::clone(&state);
    let evict = move || {
        let now = SystemTime::now();
        this.uploads.sweep(now, this.config.upload_ttl());
        this.store.evict(now)
    };
    let evicted = |digest: &Digest| state.forget(digest);
    eviction_loop(
        state.config.cleanup.interval,
        state.shutdown.clone(),
        evict,
        evicted,
        state.store_metrics.clone(),
    )
    .await;
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
            state.recent.remove(&digest);
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
