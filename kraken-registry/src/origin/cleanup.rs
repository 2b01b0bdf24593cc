//! Disk cleanup: evicts idle blobs and, above the high watermark, the least recently used
//! ones (never a blob pinned for write-back), and deletes abandoned uploads.

use std::sync::Arc;
use std::time::SystemTime;

use super::state::OriginState;
use crate::error::error_chain;

pub(crate) async fn cleanup_loop(state: Arc<OriginState>) {
    let mut ticker = tokio::time::interval(state.config.cleanup.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let this = Arc::clone(&state);
        let pass = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            this.uploads.sweep(now, this.config.cleanup.upload_ttl);
            this.store.evict(now)
        })
        .await;
        let report = match pass {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cleanup pass failed");
                continue;
            }
            Err(_) => continue,
        };
        for digest in report.idle.iter().chain(&report.watermark) {
            state.namespaces.remove(digest);
            // The seeding torrent holds the file open; closing it frees the space.
            if let Some(node) = &state.node {
                node.unseed(digest);
            }
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
