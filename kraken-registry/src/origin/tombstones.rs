//! Blobs this origin deleted lately, whose replicas it refuses for a while.
//!
//! A registry delete purges a blob from every origin, and a garbage collection sweeps each
//! origin in turn; neither happens on all origins at the same instant. In between, an
//! origin that still holds the blob runs its repair pass, finds an owner without it, and
//! pushes it a replica: the blob comes back on the origin that had just deleted it, newly
//! written, so the collection leaves it for another grace period (and a purged blob is
//! served again). Remembering what was deleted, and refusing replicas of it for
//! [`ClusterConfig::tombstone_ttl`](super::ClusterConfig::tombstone_ttl), closes that
//! window. A client's push of the same blob lifts its tombstone at once.
//!
//! The set is bounded: beyond [`MAX_TOMBSTONES`], the oldest tombstones go first (a sweep
//! of more blobs than that within one lifetime protects only the latest ones).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kraken_core::Digest;

/// Burials remembered at most: about 10 MiB.
pub(crate) const MAX_TOMBSTONES: usize = 100_000;

/// Recently deleted digests, each until its lifetime ends.
#[derive(Debug)]
pub(crate) struct Tombstones {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each buried digest and when it was buried.
    buried: HashMap<Digest, Instant>,
    /// Burials in order, oldest first; an entry whose digest was buried again later (or
    /// lifted) no longer matches `buried` and is skipped.
    order: VecDeque<(Instant, Digest)>,
}

impl Tombstones {
    /// Tombstones that last `ttl` each, at most [`MAX_TOMBSTONES`] of them.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_TOMBSTONES)
    }

    fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Records that `digest` was deleted now.
    pub(crate) fn bury(&self, digest: &Digest) {
        self.bury_at(digest, Instant::now());
    }

    fn bury_at(&self, digest: &Digest, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        inner.buried.insert(*digest, now);
        inner.order.push_back((now, *digest));
        self.expire(&mut inner, now);
    }

    /// Forgets `digest`'s tombstone: a client pushed it again.
    pub(crate) fn lift(&self, digest: &Digest) {
        self.lock().buried.remove(digest);
    }

    /// How long ago `digest` was deleted, if it still has a tombstone.
    pub(crate) fn deleted_ago(&self, digest: &Digest) -> Option<Duration> {
        self.deleted_ago_at(digest, Instant::now())
    }

    fn deleted_ago_at(&self, digest: &Digest, now: Instant) -> Option<Duration> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner
            .buried
            .get(digest)
            .map(|&at| now.saturating_duration_since(at))
    }

    /// Drops the tombstones past their lifetime, and the oldest burials beyond the capacity
    /// (every tombstone has its burial in `order`, so bounding it bounds both).
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, digest)) = inner.order.front() {
            let current = inner.buried.get(&digest) == Some(&at);
            let expired = now.saturating_duration_since(at) >= self.ttl;
            if current && !expired && inner.order.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            if current {
                inner.buried.remove(&digest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
    fn a_tombstone_lasts_its_lifetime_and_a_push_lifts_it() {
        let stones = Tombstones::new(Duration::from_secs(60));
        let start = Instant::now();
        stones.bury_at(&digest(1), start);
        stones.bury_at(&digest(2), start);
        let later = start + Duration::from_secs(59);
        assert_eq!(
            stones.deleted_ago_at(&digest(1), later),
            Some(Duration::from_secs(59))
        );
        assert_eq!(stones.deleted_ago_at(&digest(3), later), None);
        stones.lift(&digest(2));
        assert_eq!(stones.deleted_ago_at(&digest(2), later), None);
        let expired = start + Duration::from_secs(60);
        assert_eq!(stones.deleted_ago_at(&digest(1), expired), None);
        assert!(
            stones.lock().order.is_empty(),
            "expired entries are dropped"
        );
    }

    #[test]
    fn burying_again_restarts_the_lifetime() {
        let stones = Tombstones::new(Duration::from_secs(60));
        let start = Instant::now();
        stones.bury_at(&digest(1), start);
        stones.bury_at(&digest(1), start + Duration::from_secs(30));
        let at = start + Duration::from_secs(70);
        assert_eq!(
            stones.deleted_ago_at(&digest(1), at),
            Some(Duration::from_secs(40))
        );
    }

    #[test]
    fn beyond_the_capacity_the_oldest_go_first() {
        let stones = Tombstones::with_capacity(Duration::from_secs(60), 2);
        let start = Instant::now();
        for n in 1..=3 {
            stones.bury_at(&digest(n), start + Duration::from_secs(u64::from(n)));
        }
        let at = start + Duration::from_secs(4);
        assert_eq!(stones.deleted_ago_at(&digest(1), at), None);
        assert!(stones.deleted_ago_at(&digest(2), at).is_some());
        assert!(stones.deleted_ago_at(&digest(3), at).is_some());
        assert_eq!(stones.lock().buried.len(), 2);
    }

    #[test]
    fn a_zero_lifetime_keeps_nothing() {
        let stones = Tombstones::new(Duration::ZERO);
        stones.bury(&digest(1));
        assert_eq!(stones.deleted_ago(&digest(1)), None);
    }
}
