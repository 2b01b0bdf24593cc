//! The durable write-back queue: a [`Journal`] of blobs to write to the backend, in
//! `writeback.journal` under the origin's data directory (format in [`crate::durable`]).
//! A blob whose commit was acknowledged is in the queue after any crash.

use std::path::Path;
use std::time::SystemTime;

use kraken_core::Digest;
use serde::{Deserialize, Serialize};

use crate::durable::{Entry, Journal, Task, unix_ms};
use crate::error::Result;

const JOURNAL: &str = "writeback.journal";

/// The queue of blobs waiting for write-back, by namespace and digest: a blob committed in
/// two namespaces (which may route to two backends) is written back to each.
pub(crate) type WriteBackQueue = Journal<WriteBackTask>;

/// Opens the queue in the origin's data directory.
pub(crate) fn open(dir: &Path) -> Result<WriteBackQueue> {
    Journal::open(dir, JOURNAL)
}

/// A blob waiting to be written to the backend.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct WriteBackTask {
    pub(crate) namespace: String,
    pub(crate) digest: Digest,
    /// Not attempted before this time (replicas write back late, see `CommitKind`).
    #[serde(rename = "not_before_ms", with = "unix_ms")]
    pub(crate) not_before: SystemTime,
}

impl Entry for WriteBackTask {
    type Key = (String, Digest);

    fn key(&self) -> (String, Digest) {
        (self.namespace.clone(), self.digest)
    }

    /// A blob already pending keeps the earlier of the two start times.
    fn replaces(&self, existing: &Self) -> bool {
        self.not_before < existing.not_before
    }
}

impl Task for WriteBackTask {
    fn not_before(&self) -> SystemTime {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn records_keep_the_journal_format_of_earlier_releases() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::sha256_of(b"x");
        std::fs::write(
            dir.path().join(JOURNAL),
            format!(
                "{{\"op\":\"add\",\"namespace\":\"ns\",\"digest\":\"{digest}\",\"not_before_ms\":5000}}\n"
            ),
        )
        .unwrap();
        let queue = open(dir.path()).unwrap();
        let task = WriteBackTask {
            namespace: "ns".into(),
            digest,
            not_before: UNIX_EPOCH + Duration::from_secs(5),
        };
        assert_eq!(queue.entries(), vec![task.clone()]);
        // A later start time does not postpone a pending write-back; an earlier one advances it.
        let mut later = task.clone();
        later.not_before += Duration::from_secs(60);
        assert!(!queue.insert(later).unwrap());
        let mut earlier = task;
        earlier.not_before = UNIX_EPOCH;
        assert!(queue.insert(earlier.clone()).unwrap());
        assert_eq!(queue.get(&("ns".into(), digest)), Some(earlier));
    }
}
