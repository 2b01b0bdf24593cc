//! Recently read chunks of complete blobs, shared by the streams that read them.
//!
//! Clients that pull the same blob from one node at about the same time (the containers
//! of a host starting from one image, a burst of pulls after a rollout) would each read
//! every chunk from the page cache into a buffer of their own. The first reader's buffer
//! is kept here instead, and the streams close behind it send the same bytes: one read
//! and one user-space copy per chunk, not one per client. Only chunks of complete,
//! verified blobs are kept, by digest and range, so a chunk found here is the blob's.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use kraken_core::Digest;

/// A chunk: the blob's digest, the offset and the length.
type Key = (Digest, u64, u64);

/// A byte-bounded cache of chunks, the oldest inserted leaving first (streams move
/// forward through a blob, so the oldest chunk is the one least likely read again).
#[derive(Debug)]
pub(crate) struct ReadCache {
    max_bytes: u64,
    inner: Mutex<Chunks>,
}

#[derive(Debug, Default)]
struct Chunks {
    by_key: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
    bytes: u64,
}

impl ReadCache {
    /// A cache of at most `max_bytes` of chunks; `None` for 0 (no cache).
    pub(crate) fn new(max_bytes: u64) -> Option<Self> {
        (max_bytes > 0).then(|| Self {
            max_bytes,
            inner: Mutex::new(Chunks::default()),
        })
    }

    /// The chunk `len` bytes long at `offset` of blob `digest`, if it is here.
    pub(crate) fn get(&self, digest: &Digest, offset: u64, len: u64) -> Option<Bytes> {
        self.lock().by_key.get(&(*digest, offset, len)).cloned()
    }

    /// Keeps `bytes`, the chunk at `offset` of blob `digest`, dropping the oldest chunks
    /// to stay within the bound. A chunk larger than the whole cache is not kept.
    pub(crate) fn insert(&self, digest: &Digest, offset: u64, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return;
        }
        let key = (*digest, offset, len);
        let mut chunks = self.lock();
        if chunks.by_key.contains_key(&key) {
            return;
        }
        while chunks.bytes + len > self.max_bytes {
            let Some(oldest) = chunks.order.pop_front() else {
                break;
            };
            if let Some(gone) = chunks.by_key.remove(&oldest) {
                chunks.bytes -= gone.len() as u64;
            }
        }
        chunks.by_key.insert(key, bytes);
        chunks.order.push_back(key);
        chunks.bytes += len;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn keeps_chunks_by_blob_and_range_within_its_bound() {
        let cache = ReadCache::new(10).unwrap();
        cache.insert(&digest(1), 0, Bytes::from_static(b"abcd"));
        cache.insert(&digest(1), 4, Bytes::from_static(b"efgh"));
        assert_eq!(cache.get(&digest(1), 0, 4).unwrap(), &b"abcd"[..]);
        assert!(cache.get(&digest(2), 0, 4).is_none(), "another blob");
        assert!(cache.get(&digest(1), 0, 3).is_none(), "another range");
        // A third chunk pushes the oldest out.
        cache.insert(&digest(2), 0, Bytes::from_static(b"ijkl"));
        assert!(cache.get(&digest(1), 0, 4).is_none());
        assert_eq!(cache.get(&digest(1), 4, 4).unwrap(), &b"efgh"[..]);
        assert_eq!(cache.get(&digest(2), 0, 4).unwrap(), &b"ijkl"[..]);
        assert_eq!(cache.lock().bytes, 8);
        // Too large for the cache: not kept, nothing pushed out.
        cache.insert(&digest(3), 0, Bytes::from(vec![0; 11]));
        assert!(cache.get(&digest(3), 0, 11).is_none());
        assert_eq!(cache.lock().bytes, 8);
        // The same chunk twice is kept once.
        cache.insert(&digest(2), 0, Bytes::from_static(b"ijkl"));
        assert_eq!(cache.lock().order.len(), 2);
    }

    #[test]
    fn a_zero_bound_is_no_cache() {
        assert!(ReadCache::new(0).is_none());
    }
}
