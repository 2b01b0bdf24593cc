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
//! just freed.
//!
//! A piece a download has just verified and written is kept too while a stream reads that
//! download (an agent serving a pull as the pieces arrive): the stream then sends the bytes
//! it received instead of reading them back from the file. Such a piece was checked
//! against its torrent's metainfo only, not yet against the blob's digest, so it is kept
//! under the torrent's info hash: a download started over with other metainfo never
//! meets the pieces of the first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kraken_core::{Digest, InfoHash};

/// Whose bytes a chunk is.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub(crate) enum Owner {
    /// A complete blob, verified as a whole.
    Blob(Digest),
    /// A download, each piece verified against the metainfo this info hash names.
    Torrent(InfoHash),
}

/// A chunk: whose, the offset and the length.
type Key = (Owner, u64, u64);

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
    /// Streams open per blob or download.
    streams: HashMap<Owner, usize>,
}

/// A stream of a blob, counted while it lives (see [`ReadCache::open`]).
#[derive(Debug)]
pub(crate) struct Reader {
    cache: Arc<ReadCache>,
    owner: Owner,
}

impl Reader {
    /// The chunk `len` bytes long at `offset`, if it is here.
    pub(crate) fn get(&self, offset: u64, len: u64) -> Option<Bytes> {
        self.cache
            .lock()
            .by_key
            .get(&(self.owner, offset, len))
            .cloned()
    }

    /// Keeps `bytes`, the chunk at `offset`, if another stream reads the blob too.
    pub(crate) fn insert(&self, offset: u64, bytes: Bytes) {
        self.cache.insert(self.owner, offset, bytes, 2);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut chunks = self.cache.lock();
        if let Some(n) = chunks.streams.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                chunks.streams.remove(&self.owner);
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

    /// Counts a stream of `owner`'s bytes until the returned reader is dropped.
    pub(crate) fn open(self: &Arc<Self>, owner: Owner) -> Reader {
        *self.lock().streams.entry(owner).or_default() += 1;
        Reader {
            cache: Arc::clone(self),
            owner,
        }
    }

    /// Keeps `bytes`, a piece at `offset` that the download of torrent `info_hash` has
    /// just verified and written, if a stream reads that download.
    pub(crate) fn insert_received(&self, info_hash: InfoHash, offset: u64, bytes: Bytes) {
        self.insert(Owner::Torrent(info_hash), offset, bytes, 1);
    }

    /// Keeps `bytes`, the chunk at `offset` of `owner`, if `min_streams` streams or more
    /// read it, dropping the oldest chunks to stay within the bound. A chunk larger than
    /// the whole cache is not kept.
    fn insert(&self, owner: Owner, offset: u64, bytes: Bytes, min_streams: usize) {
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return;
        }
        let key = (owner, offset, len);
        let mut chunks = self.lock();
        if chunks.streams.get(&owner).is_none_or(|&n| n < min_streams)
            || chunks.by_key.contains_key(&key)
        {
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

    fn blob(n: u8) -> Owner {
        Owner::Blob(Digest::sha256_of(&[n]))
    }

    #[test]
    fn keeps_chunks_by_blob_and_range_within_its_bound() {
        let cache = Arc::new(ReadCache::new(10).unwrap());
        let one = [cache.open(blob(1)), cache.open(blob(1))];
        let two = [cache.open(blob(2)), cache.open(blob(2))];
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
        let first = cache.open(blob(1));
        first.insert(0, Bytes::from_static(b"abcd"));
        assert!(first.get(0, 4).is_none(), "one stream: nothing kept");
        let second = cache.open(blob(1));
        first.insert(0, Bytes::from_static(b"abcd"));
        assert_eq!(second.get(0, 4).unwrap(), &b"abcd"[..]);
        drop(second);
        first.insert(4, Bytes::from_static(b"efgh"));
        assert!(first.get(4, 4).is_none(), "alone again");
        // A received piece is kept for the one stream of its download, under its torrent.
        let torrent = |n: u8| InfoHash::from_bytes([n; 32]);
        let download = cache.open(Owner::Torrent(torrent(1)));
        cache.insert_received(torrent(1), 8, Bytes::from_static(b"ijkl"));
        assert_eq!(download.get(8, 4).unwrap(), &b"ijkl"[..]);
        assert!(
            first.get(8, 4).is_none(),
            "the blob's own chunks are another owner's"
        );
        cache.insert_received(torrent(2), 0, Bytes::from_static(b"mnop"));
        let late = cache.open(Owner::Torrent(torrent(2)));
        assert!(late.get(0, 4).is_none(), "nobody read torrent 2 then");
        drop((download, late));
        drop(first);
        assert!(cache.lock().streams.is_empty());
    }

    #[test]
    fn a_zero_bound_is_no_cache() {
        assert!(ReadCache::new(0).is_none());
    }
}
