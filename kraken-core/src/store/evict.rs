//! One eviction pass over the store: idle entries past their TTL, then the least recently
//! used cached blobs down to the low watermark (the policy is in the module docs of
//! [`store`](super)).

use std::time::SystemTime;

use super::{BlobStore, Entry, EvictionReport, State, layout};
use crate::Digest;
use crate::error::Result;

impl BlobStore {
    /// Runs one eviction pass as of `now` (see the [module docs](super#eviction)). Call it
    /// periodically.
    pub fn evict(&self, now: SystemTime) -> Result<EvictionReport> {
        let config = &self.inner.config;
        let mut report = EvictionReport::default();
        let (idle, watermark) = {
            let index = self.inner.index();
            let evictable = |(digest, _): &(&Digest, &Entry)| index.evictable(digest);
            let idle_for =
                |entry: &Entry| now.duration_since(entry.last_access).unwrap_or_default();
            let idle: Vec<Digest> = index
                .entries
                .iter()
                .filter(evictable)
                .filter(|(_, e)| {
                    let ttl = match e.state {
                        State::Cache => config.idle_ttl,
                        State::Download => config.download_idle_ttl,
                    };
                    ttl.is_some_and(|ttl| idle_for(e) > ttl)
                })
                .map(|(d, _)| *d)
                .collect();
            let mut watermark = Vec::new();
            if let (Some(high), Some(low)) = (config.high_watermark, config.low_watermark_bytes()) {
                let mut total: u64 = index
                    .entries
                    .iter()
                    .filter(|(d, e)| !idle.contains(d) && e.in_store())
                    .map(|(_, e)| e.length)
                    .sum();
                if total > high.bytes() {
                    let mut lru: Vec<(&Digest, &Entry)> = index
                        .entries
                        .iter()
                        .filter(evictable)
                        .filter(|(d, e)| {
                            e.state == State::Cache && !e.is_referenced() && !idle.contains(d)
                        })
                        .collect();
                    lru.sort_by_key(|(d, e)| (e.last_access, **d));
                    for (digest, entry) in lru {
                        if total <= low {
                            break;
                        }
                        total -= entry.length;
                        watermark.push(*digest);
                    }
                }
            }
            (idle, watermark)
        };
        let idle_count = idle.len();
        for (position, digest) in idle.into_iter().chain(watermark).enumerate() {
            // Re-check under the lock: the blob may have been pinned or reopened meanwhile.
            let entry = {
                let mut index = self.inner.index();
                if !index.evictable(&digest) {
                    continue;
                }
                index.active.remove(&digest);
                index.entries.remove(&digest).expect("checked above")
            };
            let dir = self.inner.layout.entry_dir(entry.state, &digest);
            layout::remove_entry(&self.inner.layout, &dir)?;
            tracing::debug!(digest = %digest.fmt_short(), bytes = entry.length, "evicted blob");
            report.freed_bytes += entry.length;
            if position < idle_count {
                report.idle.push(digest);
            } else {
                report.watermark.push(digest);
            }
        }
        Ok(report)
    }
}
