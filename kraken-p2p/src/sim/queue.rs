//! The simulator's event queue: a radix heap beside a FIFO lane.
//!
//! Virtual time never goes back, so the queue is *monotone*: nothing is ever queued before
//! the last entry taken out. A radix heap uses that. Entries sit in buckets by the highest
//! bit in which their key differs from the last key taken; taking the next one empties only
//! the lowest non-empty bucket, spreading its entries over the buckets below. An entry
//! moves down at most once per bit of key, through vectors walked in order, where a binary
//! heap of the same entries sifts through scattered levels at every push and pop (a tenth of
//! the simulator's time at 3,000 hosts, mostly cache misses).
//!
//! Keys are (time, sequence number), so entries due at one time come out in the order they
//! were queued, exactly as from a binary heap ordered the same way.

use std::collections::VecDeque;

/// One queued item: when, and in which order among those due at once.
#[derive(Debug)]
struct Entry<T> {
    /// Time, then the order of queueing: unique, since every entry has its own sequence number.
    key: u128,
    item: T,
}

/// Bucket `i` holds keys whose highest bit differing from the last key taken is bit `i - 1`
/// (bucket 0, the last key itself, stays empty: keys are unique).
const BUCKETS: usize = 129;

/// Pending items in time order, ties in the order they were queued. Times are nanoseconds
/// from any fixed start.
#[derive(Debug)]
pub(super) struct EventQueue<T> {
    buckets: Vec<Vec<Entry<T>>>,
    /// Every key in the buckets is greater than this one: the last key taken out of them.
    last: u128,
    /// Entries in the buckets.
    len: usize,
    /// The least key in the buckets, once looked for, until it is taken out. Looking does not
    /// move `last` there: the lane may deliver first, and what that delivery queues may come
    /// before it.
    least: Option<u128>,
    /// Entries queued in time order by the caller — deliveries one latency ahead, most
    /// messages — skip the buckets; the next entry is the earlier of this lane's front and
    /// the buckets' least.
    lane: VecDeque<Entry<T>>,
    seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        Self {
            buckets: std::iter::repeat_with(Vec::new).take(BUCKETS).collect(),
            last: 0,
            len: 0,
            least: None,
            lane: VecDeque::new(),
            seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `item` for time `at`, which must not be earlier than any entry already taken
    /// out.
    pub(super) fn push(&mut self, at: u64, item: T) {
        let entry = self.entry(at, item);
        debug_assert!(entry.key > self.last, "the queue is monotone");
        if let Some(least) = &mut self.least {
            *least = (*least).min(entry.key);
        }
        self.buckets[bucket(self.last, entry.key)].push(entry);
        self.len += 1;
    }

    /// Queues `item` for time `at`, in the lane if that is not earlier than the lane's last
    /// entry (the lane then stays in order), otherwise in the buckets.
    pub(super) fn push_in_order(&mut self, at: u64, item: T) {
        if self.lane.back().is_none_or(|last| time(last.key) <= at) {
            let entry = self.entry(at, item);
            self.lane.push_back(entry);
        } else {
            self.push(at, item);
        }
    }

    /// When the next entry is due.
    pub(super) fn next_at(&mut self) -> Option<u64> {
        let lane = self.lane.front().map(|e| e.key);
        let least = self.least();
        lane.into_iter().chain(least).min().map(time)
    }

    /// Takes the next entry out: its time and item.
    pub(super) fn pop(&mut self) -> Option<(u64, T)> {
        let lane = self.lane.front().map(|e| e.key);
        let entry = match (lane, self.least()) {
            (Some(lane), Some(least)) if least < lane => self.take_least(least),
            (Some(_), _) => self.lane.pop_front().expect("the lane has a front"),
            (None, Some(least)) => self.take_least(least),
            (None, None) => return None,
        };
        Some((time(entry.key), entry.item))
    }

    /// Entries queued.
    pub(super) fn len(&self) -> usize {
        self.len + self.lane.len()
    }

    fn entry(&mut self, at: u64, item: T) -> Entry<T> {
        self.seq += 1;
        Entry {
            key: (u128::from(at) << 64) | u128::from(self.seq),
            item,
        }
    }

    /// The least key in the buckets: the least of the lowest bucket that holds any.
    fn least(&mut self) -> Option<u128> {
        if self.least.is_none() && self.len > 0 {
            let lowest = self.buckets.iter().find(|b| !b.is_empty());
            self.least = lowest.and_then(|b| b.iter().map(|e| e.key).min());
        }
        self.least
    }

    /// Takes the entry of key `least`, the buckets' least, out: its key becomes `last`, so the
    /// other entries of the lowest bucket spread over the buckets below it.
    fn take_least(&mut self, least: u128) -> Entry<T> {
        self.last = least;
        let lowest = self
            .buckets
            .iter()
            .position(|b| !b.is_empty())
            .expect("the least entry is in a bucket");
        let mut entries = std::mem::take(&mut self.buckets[lowest]);
        let mut taken = None;
        for entry in entries.drain(..) {
            if entry.key == least {
                taken = Some(entry);
            } else {
                self.buckets[bucket(least, entry.key)].push(entry);
            }
        }
        // Every other entry went to a lower bucket; the emptied vector keeps its allocation
        // for this bucket's next entries.
        self.buckets[lowest] = entries;
        self.len -= 1;
        self.least = None;
        taken.expect("the least key is in the lowest bucket")
    }
}

/// The time part of a key.
fn time(key: u128) -> u64 {
    (key >> 64) as u64
}

/// The bucket of `key` given the last key taken.
fn bucket(last: u128, key: u128) -> usize {
    (u128::BITS - (key ^ last).leading_zeros()) as usize
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::EventQueue;

    proptest! {
        /// Against a binary heap of (time, order of queueing): every push is at or after the
        /// last entry taken, as in the simulator; some go to the lane, some to the buckets.
        #[test]
        fn comes_out_in_the_order_of_a_binary_heap(
            steps in proptest::collection::vec((0u64..3, 0u64..5_000, any::<bool>()), 1..400)
        ) {
            let mut queue = EventQueue::default();
            let mut heap = BinaryHeap::new();
            let mut now = 0u64;
            for (item, (pops, delay, lane)) in steps.into_iter().enumerate() {
                if lane {
                    queue.push_in_order(now + delay, item);
                } else {
                    queue.push(now + delay, item);
                }
                heap.push(Reverse((now + delay, item)));
                for _ in 0..pops {
                    let expected = heap.pop().map(|Reverse(e)| e);
                    prop_assert_eq!(queue.next_at(), expected.map(|(at, _)| at));
                    prop_assert_eq!(queue.pop(), expected);
                    if let Some((at, _)) = expected {
                        now = at;
                    }
                }
                prop_assert_eq!(queue.len(), heap.len());
            }
            while let Some(Reverse(expected)) = heap.pop() {
                prop_assert_eq!(queue.pop(), Some(expected));
            }
            prop_assert_eq!(queue.pop(), None);
        }
    }

    #[test]
    fn ties_come_out_in_the_order_they_were_queued() {
        let mut queue = EventQueue::default();
        for item in ['a', 'b', 'c'] {
            queue.push(5, item);
        }
        queue.push_in_order(5, 'd');
        queue.push(4, 'e');
        queue.push_in_order(5, 'f');
        let items: String = std::iter::from_fn(|| queue.pop()).map(|(_, i)| i).collect();
        assert_eq!(items, "eabcdf");
    }
}
