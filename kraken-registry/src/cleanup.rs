//! Removing blobs from a host's local disk, shared by the origin and the agent: the
//! `[cleanup]` settings of both roles and the loop that runs a store's eviction pass.
//!
//! Idle blobs and, above the high watermark, the least recently used ones are evicted
//! ([`kraken_core::BlobStore::evict`]); blobs pinned for write-back never are.

use std::time::Duration;

use kraken_core::{ByteSize, Digest, EvictionReport, StoreConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::error_chain;
use crate::metrics::StoreMetrics;

/// Removing blobs from the local disk: `[cleanup]` of the origin and the agent. Blobs
/// awaiting write-back are never removed.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// How often a cleanup pass runs. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Blobs not read for this long are removed; `None` keeps them. Default: 6h.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Option<Duration>,
    /// Above this many bytes, least recently used blobs are removed. Default: none.
    pub high_watermark: Option<ByteSize>,
    /// Watermark cleanup stops at this many bytes. Default: 90% of `high_watermark`.
    pub low_watermark: Option<ByteSize>,
    /// Deprecated alias of the origin's `limits.upload_ttl`, where upload lifetimes now live
    /// on every role that takes uploads; accepted by the origin until the next release and
    /// refused by the agent, which takes no uploads. Default: unset.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub upload_ttl: Option<Duration>,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            idle_ttl: Some(Duration::from_secs(6 * 3600)),
            high_watermark: None,
            low_watermark: None,
            upload_ttl: None,
        }
    }
}

impl CleanupConfig {
    /// The blob store's settings with these eviction bounds.
    pub(crate) fn store_config(&self) -> StoreConfig {
        let mut store = StoreConfig::default();
        store.idle_ttl = self.idle_ttl;
        store.high_watermark = self.high_watermark;
        store.low_watermark = self.low_watermark;
        store
    }
}

/// Every `interval` until `shutdown`: runs `evict` (a store's eviction pass) on the blocking
/// pool, calls `evicted` for each blob it removed, and logs what was freed. The origin's and
/// the agent's cleanup.
pub(crate) async fn eviction_loop<E, F>(
    interval: Duration,
    shutdown: CancellationToken,
    evict: E,
    evicted: F,
    metrics: StoreMetrics,
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
        metrics.evicted(&report);
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
