//! The durable write-back queue: a journal file under the origin's data directory.
//!
//! # Format
//!
//! `writeback.journal` holds one JSON record per line:
//!
//! ```text
//! {"op":"add","namespace":"library/ubuntu","digest":"sha256:…","not_before_ms":1700000000000}
//! {"op":"done","digest":"sha256:…"}
//! ```
//!
//! A blob is pending when its last record is an `add`. [`WriteBackQueue::push`] appends an
//! `add` and `fsync`s the file before it returns, so a blob whose commit was acknowledged is
//! in the queue after any crash. `done` records are appended without `fsync`: losing one
//! only repeats a write-back, which finds the blob in the backend and stops there. A crash
//! in the middle of an append leaves a last line without its newline; it was never
//! acknowledged and is ignored on open. The journal is rewritten (to a temporary file,
//! `fsync`ed, renamed over the old one) at open and whenever finished records outnumber the
//! pending ones by [`COMPACT_SLACK`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kraken_core::Digest;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Finished records tolerated in the journal beyond the pending ones before a rewrite.
pub(crate) const COMPACT_SLACK: usize = 1024;
const JOURNAL: &str = "writeback.journal";

/// A blob waiting to be written to the backend.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct WriteBackTask {
    pub(crate) namespace: String,
    pub(crate) digest: Digest,
    /// Not attempted before this time (replicas write back late, see `CommitKind`).
    pub(crate) not_before: SystemTime,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Add {
        namespace: String,
        digest: Digest,
        not_before_ms: u64,
    },
    Done {
        digest: Digest,
    },
}

/// The queue: pending tasks in memory, every change in the journal.
#[derive(Debug)]
pub(crate) struct WriteBackQueue {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    pending: HashMap<Digest, WriteBackTask>,
    /// Records in the journal that no longer describe a pending task.
    stale_records: usize,
}

impl WriteBackQueue {
    /// Opens (creating if needed) the queue in `dir`, replaying and compacting its journal.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL);
        let pending = match fs::read(&path) {
            Ok(bytes) => replay(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e.into()),
        };
        let file = rewrite(&path, pending.values())?;
        Ok(Self {
            path,
            state: Mutex::new(State {
                file,
                pending,
                stale_records: 0,
            }),
        })
    }

    /// Adds a task and returns once it is on disk. A blob already pending keeps the earlier
    /// of the two start times.
    pub(crate) fn push(&self, task: WriteBackTask) -> Result<()> {
        let mut state = self.lock();
        if let Some(existing) = state.pending.get(&task.digest)
            && existing.not_before <= task.not_before
        {
            return Ok(());
        }
        let line = encode(&Record::Add {
            namespace: task.namespace.clone(),
            digest: task.digest,
            not_before_ms: unix_ms(task.not_before),
        });
        state.file.write_all(&line)?;
        state.file.sync_data()?;
        if state.pending.insert(task.digest, task).is_some() {
            state.stale_records += 1;
        }
        Ok(())
    }

    /// Marks a task finished (not `fsync`ed; see the module docs).
    pub(crate) fn complete(&self, digest: &Digest) -> Result<()> {
        let mut state = self.lock();
        if state.pending.remove(digest).is_none() {
            return Ok(());
        }
        state
            .file
            .write_all(&encode(&Record::Done { digest: *digest }))?;
        state.stale_records += 2;
        if state.stale_records > state.pending.len() + COMPACT_SLACK {
            state.file = rewrite(&self.path, state.pending.values())?;
            state.stale_records = 0;
        }
        Ok(())
    }

    /// Every pending task.
    pub(crate) fn pending(&self) -> Vec<WriteBackTask> {
        self.lock().pending.values().cloned().collect()
    }

    /// Whether a blob waits for write-back.
    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.lock().pending.contains_key(digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn replay(bytes: &[u8]) -> HashMap<Digest, WriteBackTask> {
    let mut pending = HashMap::new();
    // Only newline-terminated lines were written completely.
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..=end]);
    for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(line) {
            Ok(Record::Add {
                namespace,
                digest,
                not_before_ms,
            }) => {
                let not_before = UNIX_EPOCH + Duration::from_millis(not_before_ms);
                pending.insert(
                    digest,
                    WriteBackTask {
                        namespace,
                        digest,
                        not_before,
                    },
                );
            }
            Ok(Record::Done { digest }) => {
                pending.remove(&digest);
            }
            Err(e) => tracing::error!(error = %e, "skipping an unreadable write-back record"),
        }
    }
    pending
}

/// Writes a journal holding exactly `tasks`, atomically, and opens it for appending.
fn rewrite<'a>(path: &Path, tasks: impl Iterator<Item = &'a WriteBackTask>) -> Result<File> {
    let tmp = path.with_extension("journal.tmp");
    {
        let mut file = File::create(&tmp)?;
        for task in tasks {
            file.write_all(&encode(&Record::Add {
                namespace: task.namespace.clone(),
                digest: task.digest,
                not_before_ms: unix_ms(task.not_before),
            }))?;
        }
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(OpenOptions::new().append(true).open(path)?)
}

fn encode(record: &Record) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).expect("records serialise");
    line.push(b'\n');
    line
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(i: u8) -> WriteBackTask {
        WriteBackTask {
            namespace: format!("ns/{i}"),
            digest: Digest::sha256_of(&[i]),
            not_before: UNIX_EPOCH + Duration::from_millis(u64::from(i) * 1000),
        }
    }

    #[test]
    fn pending_tasks_survive_reopening_and_finished_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue = WriteBackQueue::open(dir.path()).unwrap();
            for i in 0..3 {
                queue.push(task(i)).unwrap();
            }
            queue.complete(&task(1).digest).unwrap();
        }
        let queue = WriteBackQueue::open(dir.path()).unwrap();
        let mut pending = queue.pending();
        pending.sort_by_key(|t| t.namespace.clone());
        assert_eq!(pending, vec![task(0), task(2)]);
        assert!(queue.contains(&task(2).digest) && !queue.contains(&task(1).digest));
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue = WriteBackQueue::open(dir.path()).unwrap();
            queue.push(task(0)).unwrap();
        }
        let path = dir.path().join(JOURNAL);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"add","namespace":"x","dig"#)
            .unwrap();
        drop(file);
        let queue = WriteBackQueue::open(dir.path()).unwrap();
        assert_eq!(queue.pending(), vec![task(0)]);
        // The rewrite dropped the torn record: appending goes on after a whole line.
        queue.push(task(1)).unwrap();
        assert_eq!(WriteBackQueue::open(dir.path()).unwrap().pending().len(), 2);
    }

    #[test]
    fn the_journal_is_compacted_when_mostly_finished() {
        let dir = tempfile::tempdir().unwrap();
        let queue = WriteBackQueue::open(dir.path()).unwrap();
        for round in 0..(COMPACT_SLACK / 2 + 10) {
            let mut t = task(0);
            t.digest = Digest::sha256_of(&round.to_be_bytes());
            queue.push(t.clone()).unwrap();
            queue.complete(&t.digest).unwrap();
        }
        let lines = fs::read_to_string(dir.path().join(JOURNAL))
            .unwrap()
            .lines()
            .count();
        assert!(lines < COMPACT_SLACK, "{lines} lines");
    }
}
