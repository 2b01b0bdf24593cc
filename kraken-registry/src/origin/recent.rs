//! Which blobs the origin keeps in its P2P swarm: the most recently wanted ones.
//!
//! An origin may hold hundreds of thousands of blobs. Seeding every one at start-up would
//! open a file per blob, publish every metainfo and announce every blob to the tracker each
//! `seeder_announce_interval` — a start-up and a tracker load proportional to the store, not
//! to demand. Instead a blob enters the swarm when someone wants it (the tracker asks for its
//! metainfo, it is uploaded, fetched or repaired) and this set remembers the last
//! [`OriginConfig::max_announced_blobs`](super::OriginConfig::max_announced_blobs) of them;
//! the least recently wanted one beyond that is retired from the swarm (once no peer is
//! connected for it; a blob in use stays until idle). A peer that dials the origin for any
//! other held blob still gets it: the node opens a stored blob for an inbound handshake.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kraken_core::Digest;

/// A least-recently-used set of digests with a fixed capacity.
#[derive(Debug)]
pub(crate) struct RecentSet {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each member's last use, a tick that only grows.
    stamps: HashMap<Digest, u64>,
    /// The members by last use, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
}

impl RecentSet {
    /// A set of at most `capacity` digests (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Records a use of `digest`, making it the most recent; returns the member that fell
    /// out to make room, if any.
    pub(crate) fn touch(&self, digest: &Digest) -> Option<Digest> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            stamps,
            order,
            tick,
        } = &mut *inner;
        *tick += 1;
        if let Some(old) = stamps.insert(*digest, *tick) {
            order.remove(&old);
        }
        order.insert(*tick, *digest);
        if stamps.len() <= self.capacity {
            return None;
        }
        let (_, oldest) = order.pop_first()?;
        stamps.remove(&oldest);
        Some(oldest)
    }

    /// Forgets `digest` (a blob deleted from the store).
    pub(crate) fn remove(&self, digest: &Digest) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stamp) = inner.stamps.remove(digest) {
            inner.order.remove(&stamp);
        }
    }

    /// How many digests the set holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stamps
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u32) -> Digest {
        Digest::sha256_of(&i.to_le_bytes())
    }

    #[test]
    fn the_least_recently_touched_member_falls_out_beyond_the_capacity() {
        let set = RecentSet::new(3);
        for i in 0..3 {
            assert_eq!(set.touch(&digest(i)), None);
        }
        // 0 is used again, so 1 is now the oldest.
        assert_eq!(set.touch(&digest(0)), None);
        assert_eq!(set.touch(&digest(3)), Some(digest(1)));
        assert_eq!(set.touch(&digest(4)), Some(digest(2)));
        assert_eq!(set.touch(&digest(5)), Some(digest(0)));
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn a_removed_member_frees_its_place() {
        let set = RecentSet::new(2);
        set.touch(&digest(0));
        set.touch(&digest(1));
        set.remove(&digest(0));
        assert_eq!(set.touch(&digest(2)), None);
        assert_eq!(set.touch(&digest(3)), Some(digest(1)));
    }
}
