//! Recently read chunks of complete blobs, shared by the streams that read them.
//!
//! Clients that pull the same blob from one node at about the same time (the containers
//! of a host starting from one image, a burst of pulls after a rollout) would each read
//! every chunk from the page cache into a buffer of their own. The first reader's buffer
//! is kept here instead, and the streams close behind it send the same bytes: one read
//! and one user-space copy per chunk, not one per client. Only chunks of complete,
//! verified blobs are kept, by digest and range, so a chunk found here is the blob's; and
//! only while two streams or more read the blob: a lone stream would gain nothing, and
//! keeping its buffers would have every read take fresh memory instead of the buffer
//! just freed. When the last stream of a blob ends, its chunks go.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kraken_core::Digest;

/// A chunk: the blob's digest, the offset, the length, and whether it is a memory map
/// (which only a stream that asked for maps may get: see [`Blob::map_range`]).
///
/// [`Blob::map_range`]: kraken_core::Blob::map_range
type Key = (Digest, u64, u64, bool);

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
    /// Streams open per blob.
    streams: HashMap<Digest, usize>,
}

/// A stream of a blob, counted while it lives (see [`ReadCache::open`]).
#[derive(Debug)]
pub(crate) struct Reader {
    cache: Arc<ReadCache>,
    digest: Digest,
    /// Whether the stream reads memory maps.
    mapped: bool,
}

impl Reader {
    /// The chunk `len` bytes long at `offset`, if it is here.
    pub(crate) fn get(&self, offset: u64, len: u64) -> Option<Bytes> {
        self.cache
            .lock()
            .by_key
            .get(&(self.digest, offset, len, self.mapped))
            .cloned()
    }

    /// Keeps `bytes`, the chunk at `offset`, if another stream reads the blob too.
    pub(crate) fn insert(&self, offset: u64, bytes: Bytes) {
        self.cache.insert(&self.digest, offset, self.mapped, bytes);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut chunks = self.cache.lock();
        if let Some(n) = chunks.streams.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                // Nobody reads the blob any more: its chunks go now, not when others push
                // them out, so an idle node holds no memory for it.
                chunks.streams.remove(&self.digest);
                chunks.forget(&self.digest);
            }
        }
    }
}

impl ReadCache {
    /// A cache of at most `max_bytes` of chunks; `None` for 0 (no cache).
    pub(crate) fn new(max_bytes: u64) -> Option<Self> {
        (max_bytes > 0).then(|| Self {
            max_bytes,
            inner: Mutex::new(Chunks::default()),
        })
    }

    /// Counts a stream of blob `digest` until the returned reader is dropped; `mapped`: the
    /// stream reads memory maps, and shares chunks only with streams that do too.
    pub(crate) fn open(self: &Arc<Self>, digest: &Digest, mapped: bool) -> Reader {
        *self.lock().streams.entry(*digest).or_default() += 1;
        Reader {
            cache: Arc::clone(self),
            digest: *digest,
            mapped,
        }
    }

    /// Keeps `bytes`, the chunk at `offset` of blob `digest`, if two streams or more read
    /// the blob, dropping the oldest chunks to stay within the bound. A chunk larger than
    /// the whole cache is not kept.
    fn insert(&self, digest: &Digest, offset: u64, mapped: bool, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return;
        }
        let key = (*digest, offset, len, mapped);
        let mut chunks = self.lock();
        if chunks.streams.get(digest).is_none_or(|&n| n < 2) || chunks.by_key.contains_key(&key) {
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

impl Chunks {
    /// Drops every chunk of blob `digest`.
    fn forget(&mut self, digest: &Digest) {
        let Self {
            by_key,
            order,
            bytes,
            ..
        } = self;
        order.retain(|key| {
            if key.0 != *digest {
                return true;
            }
            if let Some(gone) = by_key.remove(key) {
                *bytes -= gone.len() as u64;
            }
            false
        });
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
        let cache = Arc::new(ReadCache::new(10).unwrap());
        let one = [cache.open(&digest(1), false), cache.open(&digest(1), false)];
        let two = [cache.open(&digest(2), false), cache.open(&digest(2), false)];
        one[0].insert(0, Bytes::from_static(b"abcd"));
        one[1].insert(4, Bytes::from_static(b"efgh"));
        assert_eq!(one[1].get(0, 4).unwrap(), &b"abcd"[..]);
        assert!(two[0].get(0, 4).is_none(), "another blob");
        assert!(one[0].get(0, 3).is_none(), "another range");
        // A third chunk pushes the oldest out.
        two[0].insert(0, Bytes::from_static(b"ijkl"));
        assert!(one[0].get(0, 4).is_none());
        assert_eq!(one[0].get(4, 4).unwrap(), &b"efgh"[..]);
        assert_eq!(two[1].get(0, 4).unwrap(), &b"ijkl"[..]);
        assert_eq!(cache.lock().bytes, 8);
        // Too large for the cache: not kept, nothing pushed out.
        one[0].insert(8, Bytes::from(vec![0; 11]));
        assert!(one[0].get(8, 11).is_none());
        assert_eq!(cache.lock().bytes, 8);
        // The same chunk twice is kept once.
        two[1].insert(0, Bytes::from_static(b"ijkl"));
        assert_eq!(cache.lock().order.len(), 2);
    }

    #[test]
    fn a_lone_stream_keeps_nothing_and_closed_streams_are_forgotten() {
        let cache = Arc::new(ReadCache::new(1 << 20).unwrap());
        let first = cache.open(&digest(1), false);
        first.insert(0, Bytes::from_static(b"abcd"));
        assert!(first.get(0, 4).is_none(), "one stream: nothing kept");
        let second = cache.open(&digest(1), false);
        first.insert(0, Bytes::from_static(b"abcd"));
        assert_eq!(second.get(0, 4).unwrap(), &b"abcd"[..]);
        drop(second);
        first.insert(4, Bytes::from_static(b"efgh"));
        assert!(first.get(4, 4).is_none(), "alone again");
        drop(first);
        let chunks = cache.lock();
        assert!(chunks.streams.is_empty());
        assert_eq!(chunks.bytes, 0, "the last stream's chunks went with it");
        assert!(chunks.by_key.is_empty() && chunks.order.is_empty());
    }

    #[test]
    fn a_zero_bound_is_no_cache() {
        assert!(ReadCache::new(0).is_none());
    }
}
