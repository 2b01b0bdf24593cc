//! [`StoreConfig`]: the settings of a [`BlobStore`](super::BlobStore).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::size::ByteSize;

/// Settings of a [`BlobStore`](super::BlobStore).
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Cached blobs not read for this long are evicted; `None` keeps them. Default: 6h.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Option<Duration>,
    /// Downloads with no piece written for this long (and no live handle) are discarded.
    /// `None` keeps them. Default: 24h.
    #[serde(with = "humantime_serde")]
    pub download_idle_ttl: Option<Duration>,
    /// Above this many bytes (cached plus downloading), eviction removes least recently used
    /// cached blobs. `None` disables size-based eviction. Default: none.
    pub high_watermark: Option<ByteSize>,
    /// Size-based eviction stops at this many bytes. Default: 90% of `high_watermark`.
    pub low_watermark: Option<ByteSize>,
    /// Re-hash the pieces a resumed download claims to have, dropping any that fail.
    /// Default: true.
    pub verify_on_resume: bool,
    /// How often, at most, a blob's last-access time is written to disk. Reads in between
    /// update it in memory only. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub access_persist_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            idle_ttl: Some(Duration::from_secs(6 * 3600)),
            download_idle_ttl: Some(Duration::from_secs(24 * 3600)),
            high_watermark: None,
            low_watermark: None,
            verify_on_resume: true,
            access_persist_interval: Duration::from_secs(300),
        }
    }
}

impl StoreConfig {
    pub(super) fn low_watermark_bytes(&self) -> Option<u64> {
        let high = self.high_watermark?.bytes();
        Some(self.low_watermark.map_or(high / 10 * 9, ByteSize::bytes))
    }
}
