//! The in-memory cache of small blobs (manifests, image configs, small layers) that agents
//! and origins serve from memory instead of the disk: `[cache]` in their configs.
//!
//! It can only ever serve bytes that hash to their digest: an entry goes in through
//! `SmallBlobs::insert_verified`, which hashes the bytes and refuses a mismatch, and the
//! bytes of an entry never change afterwards. Bounded by its total bytes; the least recently
//! used entries leave first. Nothing removes a blob from the cluster yet; whatever does
//! must drop it from here too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use kraken_core::{BlobStatus, BlobStore, ByteSize, Digest};
use serde::{Deserialize, Serialize};

/// `[cache]` of the agent and the origin: the in-memory cache of small blobs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmallBlobConfig {
    /// Most bytes the cache holds in all; `0` turns it off. Default: 64MiB.
    pub small_blob_bytes: ByteSize,
    /// Largest blob it keeps (manifests and image configs are a few KiB). Default: 1MiB.
    pub small_blob_max_size: ByteSize,
}

impl Default for SmallBlobConfig {
    fn default() -> Self {
        Self {
            small_blob_bytes: ByteSize(64 << 20),
            small_blob_max_size: ByteSize(1 << 20),
        }
    }
}

/// What a lookup found, for the hit and miss counters.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Lookup {
    /// Served from memory.
    Hit,
    /// Small enough, not in memory.
    Miss,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<Digest, (Bytes, u64)>,
    /// Entries by last use (a counter), least recent first.
    order: BTreeMap<u64, Digest>,
    bytes: u64,
    clock: u64,
}

/// A byte-bounded LRU of verified small blobs.
#[derive(Debug)]
pub(crate) struct SmallBlobs {
    config: SmallBlobConfig,
    lru: Mutex<Lru>,
    /// Hit and miss counters, when the role has metrics.
    counters: Option<crate::metrics::SmallBlobMetrics>,
}

impl SmallBlobs {
    /// An empty cache bounded by `config`.
    pub(crate) fn new(config: SmallBlobConfig) -> Self {
        Self {
            config,
            lru: Mutex::new(Lru::default()),
            counters: None,
        }
    }

    /// Counts hits and misses in `counters`.
    pub(crate) fn with_counters(mut self, counters: crate::metrics::SmallBlobMetrics) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Whether a blob of `size` bytes belongs here.
    pub(crate) fn wants(&self, size: u64) -> bool {
        size <= self.config.small_blob_max_size.0 && size <= self.config.small_blob_bytes.0
    }

    /// The blob's bytes if they are in memory (and marks them used); counts a hit, or a miss
    /// when the caller says the blob is small enough to be here.
    pub(crate) fn get(&self, digest: &Digest, small: bool) -> Option<Bytes> {
        let found = {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            lru.clock += 1;
            let now = lru.clock;
            let found = lru.entries.get_mut(digest).map(|(bytes, used)| {
                let before = std::mem::replace(used, now);
                (bytes.clone(), before)
            });
            if let Some((_, before)) = &found {
                lru.order.remove(before);
                lru.order.insert(now, *digest);
            }
            found.map(|(bytes, _)| bytes)
        };
        if let Some(counters) = &self.counters {
            match (&found, small) {
                (Some(_), _) => counters.lookup(Lookup::Hit),
                (None, true) => counters.lookup(Lookup::Miss),
                (None, false) => {}
            }
        }
        found
    }

    /// Keeps `bytes` as blob `digest` if they hash to it and are small enough, evicting the
    /// least recently used beyond the bound. Returns whether they matched the digest: bytes
    /// that do not are never kept (the caller's copy is corrupt).
    pub(crate) fn insert_verified(&self, digest: &Digest, bytes: Bytes) -> bool {
        if Digest::sha256_of(&bytes) != *digest {
            return false;
        }
        let size = bytes.len() as u64;
        if !self.wants(size) {
            return true;
        }
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        if lru.entries.contains_key(digest) {
            return true;
        }
        while lru.bytes + size > self.config.small_blob_bytes.0 {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some((gone, _)) = lru.entries.remove(&oldest) {
                lru.bytes -= gone.len() as u64;
            }
        }
        lru.clock += 1;
        let now = lru.clock;
        lru.order.insert(now, *digest);
        lru.entries.insert(*digest, (bytes, now));
        lru.bytes += size;
        true
    }

    /// Blob `digest` from memory, or else — when `store` holds it complete and it is small —
    /// read whole from the store, hashed, kept and returned. `None` when it is not small, not
    /// complete in `store`, or its copy there does not hash to its digest (the caller then
    /// serves it the usual way, whose own checks find the corruption).
    ///
    /// Memory answers only for a blob `store` still holds complete: a blob deleted from the
    /// store (a registry delete, a garbage collector's sweep, eviction) is dropped from
    /// memory here too, so it is never served after it is gone.
    pub(crate) async fn read(&self, store: &BlobStore, digest: &Digest) -> Option<Bytes> {
        let small = match store.status(digest) {
            BlobStatus::Cached { length } => self.wants(length),
            _ => {
                self.remove(digest);
                return None;
            }
        };
        if let Some(bytes) = self.get(digest, small) {
            return Some(bytes);
        }
        if !small {
            return None;
        }
        let (store, wanted) = (store.clone(), *digest);
        let max = self.config.small_blob_max_size.0;
        let read = tokio::task::spawn_blocking(move || {
            let blob = store.open_blob(&wanted).ok()?;
            if blob.len() > max {
                return None;
            }
            let mut bytes = vec![0; blob.len() as usize];
            blob.read_exact_at(0, &mut bytes).ok()?;
            Some(bytes)
        });
        let bytes = Bytes::from(read.await.ok()??);
        if self.insert_verified(digest, bytes.clone()) {
            Some(bytes)
        } else {
            tracing::warn!(digest = %digest.fmt_short(),
                "a small blob's copy on disk does not hash to its digest; not kept in memory");
            None
        }
    }

    /// Drops blob `digest` from memory, if it is there.
    pub(crate) fn remove(&self, digest: &Digest) {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((gone, used)) = lru.entries.remove(digest) {
            lru.order.remove(&used);
            lru.bytes -= gone.len() as u64;
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.lru.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// Bytes `range` of `bytes` (all when `None`), for a range request served from memory; a
/// range past the end is cut at the end (callers check ranges against the length first).
pub(crate) fn slice(bytes: &Bytes, range: Option<std::ops::Range<u64>>) -> Bytes {
    match range {
        Some(range) => {
            let end = (range.end as usize).min(bytes.len());
            bytes.slice((range.start as usize).min(end)..end)
        }
        None => bytes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: usize) -> (Digest, Bytes) {
        let bytes = Bytes::from(vec![n; len]);
        (Digest::sha256_of(&bytes), bytes)
    }

    #[test]
    fn only_verified_small_blobs_go_in_and_the_least_recently_used_leave_first() {
        let cache = SmallBlobs::new(SmallBlobConfig {
            small_blob_bytes: ByteSize(300),
            small_blob_max_size: ByteSize(150),
        });
        let (a, a_bytes) = blob(1, 100);
        let (b, b_bytes) = blob(2, 100);
        let (c, c_bytes) = blob(3, 100);
        // Bytes that are not the digest's are refused.
        assert!(!cache.insert_verified(&a, b_bytes.clone()));
        assert_eq!(cache.get(&a, true), None);
        // Too large: verified, not kept.
        let (big, big_bytes) = blob(4, 200);
        assert!(cache.insert_verified(&big, big_bytes));
        assert_eq!(cache.get(&big, false), None);

        for (digest, bytes) in [(&a, &a_bytes), (&b, &b_bytes), (&c, &c_bytes)] {
            assert!(cache.insert_verified(digest, bytes.clone()));
        }
        assert_eq!(cache.bytes(), 300);
        // `a` used: `b` is now the least recently used and leaves for `d`.
        assert_eq!(cache.get(&a, true), Some(a_bytes.clone()));
        let (d, d_bytes) = blob(5, 100);
        assert!(cache.insert_verified(&d, d_bytes.clone()));
        assert_eq!(cache.get(&b, true), None);
        assert_eq!(cache.get(&a, true), Some(a_bytes));
        assert_eq!(cache.get(&c, true), Some(c_bytes));
        assert_eq!(cache.get(&d, true), Some(d_bytes));
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let cache = SmallBlobs::new(SmallBlobConfig {
            small_blob_bytes: ByteSize(0),
            ..SmallBlobConfig::default()
        });
        let (a, bytes) = blob(1, 10);
        assert!(cache.insert_verified(&a, bytes));
        assert_eq!(cache.get(&a, true), None);
    }

    #[tokio::test]
    async fn a_blob_gone_from_the_store_is_not_served_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let cache = SmallBlobs::new(SmallBlobConfig::default());
        let meta = store
            .import(&b"a small manifest"[..], 1 << 20, None)
            .unwrap();
        let digest = *meta.digest();
        let first = cache.read(&store, &digest).await.expect("read and kept");
        assert_eq!(cache.bytes(), first.len() as u64);
        // Deleted (a registry delete, a sweep, eviction): memory no longer answers.
        assert!(store.delete(&digest).unwrap());
        assert_eq!(cache.read(&store, &digest).await, None);
        assert_eq!(cache.bytes(), 0);
        // And `remove` drops an entry outright.
        let meta = store.import(&b"another"[..], 1 << 20, None).unwrap();
        cache.read(&store, meta.digest()).await.unwrap();
        cache.remove(meta.digest());
        assert_eq!(cache.bytes(), 0);
    }
}
