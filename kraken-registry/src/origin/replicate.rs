//! Replication: every blob reaches all its owners on the ring.
//!
//! Origins **push**: after a client's upload, and after a fetch from the backend, the origin
//! holding the blob uploads it to each other owner that lacks it (checked with
//! `HEAD …?local=true`), committing with [`CommitKind::Replica`]. The repair pass does the
//! same for every held blob, every [`ClusterConfig::repair_interval`] and whenever the
//! healthy membership changes, so a blob whose owner died (or that gained a new owner)
//! regains its replica count from any origin that still holds it.
//!
//! [`ClusterConfig::repair_interval`]: super::ClusterConfig::repair_interval

use std::sync::Arc;

use futures::StreamExt;
use kraken_core::Digest;

use super::client::CommitKind;
use super::state::OriginState;
use crate::error::{Error, error_chain};

/// Blobs checked at once by a repair pass.
const REPAIR_CONCURRENCY: usize = 4;

/// Pushes `digest` to each of its owners (other than this origin) that lacks it, as a
/// [`CommitKind::Replica`] or, from a repair pass, a [`CommitKind::Repair`] (which an owner
/// that deleted the blob lately refuses). Returns how many copies were made.
pub(crate) async fn replicate(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
    kind: CommitKind,
) -> usize {
    let owners = state.membership.view().owners(digest);
    let pushes = owners
        .iter()
        .filter(|owner| **owner != state.name)
        .map(|owner| async move {
            match state.client.stat(owner, namespace, digest, true).await {
                Ok(Some(_)) => return false,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%owner, error = %error_chain(&e), "replica check failed");
                    return false;
                }
            }
            // Evicted meanwhile: nothing to push.
            let Ok(blob) = state.store.open_blob(digest) else {
                return false;
            };
            let pushed = state
                .client
                .upload_file(owner, namespace, digest, blob.path(), kind)
                .await;
            if let Err(Error::Deleted { .. }) = pushed {
                tracing::debug!(%owner, digest = %digest.fmt_short(), "not repaired: the owner deleted it lately");
                return false;
            }
            state.counters.replicated(pushed.is_ok());
            match pushed {
                Ok(()) => {
                    tracing::info!(%owner, digest = %digest.fmt_short(), "replicated blob");
                    true
                }
                Err(e) => {
                    tracing::warn!(%owner, digest = %digest.fmt_short(), error = %error_chain(&e), "replication failed");
                    false
                }
            }
        });
    futures::future::join_all(pushes)
        .await
        .into_iter()
        .filter(|&copied| copied)
        .count()
}

/// Checks every held blob against its owners once.
pub(crate) async fn repair_pass(state: &Arc<OriginState>) -> usize {
    state.counters.repair_pass();
    let digests = state.store.cached();
    futures::stream::iter(digests)
        .map(|digest| async move {
            let namespace = state.namespaces.get(&digest).unwrap_or_default();
            replicate(state, &namespace, &digest, CommitKind::Repair).await
        })
        .buffer_unordered(REPAIR_CONCURRENCY)
        .fold(0, |total, copies| async move { total + copies })
        .await
}

/// Runs repair passes periodically and after every membership change, until shutdown.
pub(crate) async fn repair_loop(state: Arc<OriginState>) {
    let mut views = state.membership.subscribe();
    let mut ticker = tokio::time::interval(state.config.cluster.repair_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; startup needs no pass
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(copies) = state
            .shutdown
            .run_until_cancelled(repair_pass(&state))
            .await
        else {
            return;
        };
        if copies > 0 {
            tracing::info!(copies, "repair pass restored replicas");
        }
    }
}
