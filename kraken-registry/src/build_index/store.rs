//! What a build-index keeps on disk: the tag store (a journal of the newest version of each
//! tag) and its two queues (tags to write to the backend, tags to replicate to remote
//! clusters), each a [`Journal`].

use std::time::{SystemTime, UNIX_EPOCH};

use kraken_core::Digest;
use serde::{Deserialize, Serialize};

use crate::durable::{Entry, Task, unix_ms};

/// One version of a tag: what it points at (nothing once deleted), and the version's stamp.
/// Of two records of a tag, the one with the greater `(version, writer)` wins everywhere.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct TagRecord {
    pub(crate) tag: String,
    /// `None`: the tag was deleted (kept as a tombstone, so that an older copy elsewhere
    /// does not bring it back).
    pub(crate) digest: Option<Digest>,
    /// Nanoseconds since the Unix epoch when written, raised past every version of the tag
    /// the writer could see. 0 for a tag found only in the backend.
    pub(crate) version: u64,
    /// The build-index that made this version (ties between clocks).
    pub(crate) writer: String,
}

impl TagRecord {
    /// Whether `self` is a later version than `other`.
    pub(crate) fn is_newer_than(&self, other: &Self) -> bool {
        (self.version, &self.writer) > (other.version, &other.writer)
    }
}

impl Entry for TagRecord {
    type Key = String;

    fn key(&self) -> String {
        self.tag.clone()
    }

    fn replaces(&self, existing: &Self) -> bool {
        self.is_newer_than(existing)
    }
}

/// A version stamp later than `seen` and no earlier than the clock.
pub(crate) fn next_version(seen: Option<&TagRecord>) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.max(seen.map_or(0, |r| r.version.saturating_add(1)))
}

/// A tag to write to the backend: whatever its record is when the task runs (so a task
/// never writes an older version than the store holds).
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct WriteBackTask {
    pub(crate) tag: String,
    pub(crate) version: u64,
}

impl Entry for WriteBackTask {
    type Key = String;

    fn key(&self) -> String {
        self.tag.clone()
    }
}

impl Task for WriteBackTask {
    fn not_before(&self) -> SystemTime {
        UNIX_EPOCH
    }
}

/// A tag to put on a remote cluster's build-index, after its blobs, or to delete there.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct ReplicationTask {
    pub(crate) remote: String,
    pub(crate) tag: String,
    /// `None` (`null`): delete the tag on the remote. Tasks of earlier releases always
    /// name a digest.
    pub(crate) digest: Option<Digest>,
    #[serde(rename = "not_before_ms", with = "unix_ms")]
    pub(crate) not_before: SystemTime,
}

impl Entry for ReplicationTask {
    type Key = (String, String);

    fn key(&self) -> (String, String) {
        (self.remote.clone(), self.tag.clone())
    }
}

impl Task for ReplicationTask {
    fn not_before(&self) -> SystemTime {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_versions_win_and_the_writer_breaks_ties() {
        let record = |version, writer: &str| TagRecord {
            tag: "a:1".into(),
            digest: None,
            version,
            writer: writer.into(),
        };
        assert!(record(2, "a").is_newer_than(&record(1, "b")));
        assert!(record(2, "b").is_newer_than(&record(2, "a")));
        assert!(!record(2, "a").is_newer_than(&record(2, "a")));
        let far_future = record(u64::MAX / 2, "a");
        assert!(next_version(Some(&far_future)) > far_future.version);
        assert!(next_version(None) > 0);
    }
}
