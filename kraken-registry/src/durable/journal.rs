//! A durable map of entries: one JSON record per line in a journal file, replayed at open.
//!
//! # Format
//!
//! The journal holds one record per line: the entry's own fields beside an `op` tag, then a
//! tab and the first 8 hex digits of the SHA-256 of the JSON (a checksum):
//!
//! ```text
//! {"op":"add","namespace":"library/ubuntu","digest":"sha256:…","not_before_ms":1700000000000}\t1a2b3c4d
//! {"op":"done","namespace":"library/ubuntu","digest":"sha256:…","not_before_ms":1700000000000}\t5e6f7a8b
//! ```
//!
//! Lines without a checksum (written by earlier releases) are read as before.
//!
//! An entry is present when the last record of its key is an `add`. [`Journal::insert`]
//! appends an `add` and `fsync`s the file before it returns, so an entry whose insertion was
//! acknowledged is there after any crash. `done` records are appended without `fsync`:
//! losing one only brings back a finished task, and every task is idempotent.
//!
//! An append that fails (a short write on a full disk, a failed `fsync`) is cut off again:
//! the file is truncated back to the end of the last whole record before the error is
//! returned, and if even that fails, before the next append — so a failed append never
//! glues its fragment to the records after it. A crash in the middle of an append leaves a
//! last line without its newline; it was never acknowledged and is ignored on open, as is a
//! line whose checksum or JSON does not match (logged). The journal is rewritten (to a
//! temporary file, `fsync`ed, renamed over the old one) at open and whenever superseded
//! records outnumber the live ones by [`COMPACT_SLACK`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::Result;
use crate::fault::{self, Fault};

/// Superseded records tolerated in the journal beyond the live ones before a rewrite.
pub(crate) const COMPACT_SLACK: usize = 1024;

/// What a journal holds: a serialisable value with a key; one entry per key.
pub(crate) trait Entry:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// What identifies an entry; a later entry with the same key replaces the earlier one.
    type Key: Clone + Debug + Ord + Send + Sync + 'static;

    /// This entry's key.
    fn key(&self) -> Self::Key;

    /// Whether this entry, inserted while `existing` has its key, takes its place.
    fn replaces(&self, existing: &Self) -> bool {
        let _ = existing;
        true
    }
}

/// An entry that is work to do, not before a time.
pub(crate) trait Task: Entry {
    /// The earliest time to attempt the task.
    fn not_before(&self) -> SystemTime;
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record<E> {
    Add(E),
    Done(E),
}

/// The map in memory, every change in the journal file. Cheap reads, one `fsync` per
/// insertion.
#[derive(Debug)]
pub(crate) struct Journal<E: Entry> {
    path: PathBuf,
    state: Mutex<State<E>>,
    /// Woken on every insertion, for the loop that drains a queue.
    inserted: Notify,
}

#[derive(Debug)]
struct State<E: Entry> {
    file: File,
    /// Where the last whole record ends: a failed append is truncated back to here.
    len: u64,
    /// A failed append could not be truncated: do it before the next one.
    torn: bool,
    entries: BTreeMap<E::Key, E>,
    /// Records in the file that no longer describe a live entry.
    stale_records: usize,
}

impl<E: Entry> Journal<E> {
    /// Opens (creating if needed) the journal `dir/name`, replaying and compacting it.
    pub(crate) fn open(dir: &Path, name: &str) -> Result<Self> {
        create_dir_all_synced(dir)?;
        let path = dir.join(name);
        let entries = match fs::read(&path) {
            Ok(bytes) => replay(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        let file = rewrite(&path, entries.values())?;
        let len = file.metadata()?.len();
        Ok(Self {
            path,
            state: Mutex::new(State {
                file,
                len,
                torn: false,
                entries,
                stale_records: 0,
            }),
            inserted: Notify::new(),
        })
    }

    /// Stores `entry` unless the entry already under its key wins ([`Entry::replaces`]), and
    /// returns once it is on disk. Returns whether it was stored.
    pub(crate) fn insert(&self, entry: E) -> Result<bool> {
        let mut state = self.lock();
        let key = entry.key();
        if let Some(existing) = state.entries.get(&key)
            && (existing == &entry || !entry.replaces(existing))
        {
            return Ok(false);
        }
        state.append(&encode(&Record::Add(&entry)), true)?;
        if state.entries.insert(key, entry).is_some() {
            state.stale_records += 1;
        }
        self.compact_if_stale(&mut state)?;
        drop(state);
        self.inserted.notify_one();
        Ok(true)
    }

    /// Removes `entry` if it is still the one under its key (an entry that replaced it
    /// meanwhile stays). Not `fsync`ed; see the module docs.
    pub(crate) fn complete(&self, entry: &E) -> Result<()> {
        let mut state = self.lock();
        if state.entries.get(&entry.key()) != Some(entry) {
            return Ok(());
        }
        self.remove_locked(&mut state, &entry.key())
    }

    /// Removes whatever entry has `key`.
    pub(crate) fn remove(&self, key: &E::Key) -> Result<()> {
        let mut state = self.lock();
        self.remove_locked(&mut state, key)
    }

    /// The entry under `key`.
    pub(crate) fn get(&self, key: &E::Key) -> Option<E> {
        self.lock().entries.get(key).cloned()
    }

    /// Whether an entry has `key`.
    pub(crate) fn contains(&self, key: &E::Key) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// Every entry, by key.
    pub(crate) fn entries(&self) -> Vec<E> {
        self.lock().entries.values().cloned().collect()
    }

    /// Runs `f` over the entries in key order, under the lock (keep it short).
    pub(crate) fn scan<R>(&self, f: impl FnOnce(&BTreeMap<E::Key, E>) -> R) -> R {
        f(&self.lock().entries)
    }

    /// Resolves after the next insertion (or at once if one happened since the last wait).
    pub(crate) async fn inserted(&self) {
        self.inserted.notified().await;
    }

    fn remove_locked(&self, state: &mut State<E>, key: &E::Key) -> Result<()> {
        let Some(entry) = state.entries.remove(key) else {
            return Ok(());
        };
        if let Err(e) = state.append(&encode(&Record::Done(&entry)), false) {
            // Not on disk: the entry comes back at the next open, and its task is redone.
            state.entries.insert(key.clone(), entry);
            return Err(e.into());
        }
        state.stale_records += 2;
        self.compact_if_stale(state)
    }

    fn compact_if_stale(&self, state: &mut State<E>) -> Result<()> {
        if state.stale_records > state.entries.len() + COMPACT_SLACK {
            state.file = rewrite(&self.path, state.entries.values())?;
            state.len = state.file.metadata()?.len();
            state.torn = false;
            state.stale_records = 0;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<E: Entry> State<E> {
    /// Appends one encoded record (and `fsync`s it with `sync`); on failure the file is cut
    /// back to its last whole record.
    fn append(&mut self, record: &[u8], sync: bool) -> std::io::Result<()> {
        if self.torn {
            self.file.set_len(self.len)?;
            self.torn = false;
        }
        let written = if fault::armed(Fault::JournalFull) {
            self.file
                .write_all(&record[..record.len() / 2])
                .and_then(|()| Err(std::io::Error::from_raw_os_error(28 /* ENOSPC */)))
        } else {
            self.file.write_all(record)
        };
        match written.and_then(|()| if sync { self.file.sync_data() } else { Ok(()) }) {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = self.file.set_len(self.len).is_err();
                Err(e)
            }
        }
    }
}

fn replay<E: Entry>(bytes: &[u8]) -> BTreeMap<E::Key, E> {
    let mut entries = BTreeMap::new();
    // Only newline-terminated lines were written completely.
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..=end]);
    for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(json) = verified(line) else {
            tracing::error!("skipping a journal record whose checksum does not match");
            continue;
        };
        match serde_json::from_slice::<Record<E>>(json) {
            Ok(Record::Add(entry)) => {
                entries.insert(entry.key(), entry);
            }
            Ok(Record::Done(entry)) => {
                entries.remove(&entry.key());
            }
            Err(e) => tracing::error!(error = %e, "skipping an unreadable journal record"),
        }
    }
    entries
}

/// What a rewrite at open makes of a journal file holding `bytes`: one `add` line per live
/// entry. For the fuzz targets, which check that it is a fixed point of replay.
#[cfg(feature = "fuzzing")]
pub(crate) fn compacted<E: Entry>(bytes: &[u8]) -> Vec<u8> {
    replay::<E>(bytes)
        .values()
        .flat_map(|entry| encode(&Record::Add(entry)))
        .collect()
}

/// Writes a journal holding exactly `entries`, atomically, and opens it for appending.
fn rewrite<'a, E: Entry>(path: &Path, entries: impl Iterator<Item = &'a E>) -> Result<File> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        for entry in entries {
            file.write_all(&encode(&Record::Add(entry)))?;
        }
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(OpenOptions::new().append(true).open(path)?)
}

/// Creates `dir` and any missing parents, `fsync`ing the parent of each one created, so that
/// what is later written under it survives a power failure.
pub(crate) fn create_dir_all_synced(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        next = d.parent();
    }
    fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

fn encode<E: Serialize>(record: &Record<&E>) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).expect("records serialise");
    let sum = checksum(&line);
    line.push(b'\t');
    line.extend_from_slice(sum.as_bytes());
    line.push(b'\n');
    line
}

/// The JSON of a record line whose checksum matches (or that has none: an earlier
/// release's). JSON never holds a raw tab, so the last tab starts the checksum.
fn verified(line: &[u8]) -> Option<&[u8]> {
    match line.iter().rposition(|&b| b == b'\t') {
        None => Some(line),
        Some(tab) => {
            let (json, sum) = (&line[..tab], &line[tab + 1..]);
            (checksum(json).as_bytes() == sum).then_some(json)
        }
    }
}

fn checksum(json: &[u8]) -> String {
    kraken_core::Digest::sha256_of(json).hex()[..8].to_owned()
}

/// Serde of a `SystemTime` as milliseconds since the Unix epoch.
pub(crate) mod unix_ms {
    use super::{Duration, SystemTime, UNIX_EPOCH};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        serializer.serialize_u64(ms)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(deserializer)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
    struct Item {
        name: String,
        value: u32,
    }

    impl Entry for Item {
        type Key = String;

        fn key(&self) -> String {
            self.name.clone()
        }

        fn replaces(&self, existing: &Self) -> bool {
            self.value > existing.value
        }
    }

    fn item(name: &str, value: u32) -> Item {
        Item {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn entries_survive_reopening_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path(), "j").unwrap();
            for name in ["a", "b", "c"] {
                assert!(journal.insert(item(name, 1)).unwrap());
            }
            journal.remove(&"b".to_owned()).unwrap();
        }
        let journal = Journal::<Item>::open(dir.path(), "j").unwrap();
        assert_eq!(journal.entries(), vec![item("a", 1), item("c", 1)]);
        assert!(journal.contains(&"c".to_owned()) && !journal.contains(&"b".to_owned()));
    }

    #[test]
    fn replacement_follows_the_entry_rule_and_completion_spares_a_newer_entry() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), "j").unwrap();
        assert!(journal.insert(item("a", 2)).unwrap());
        assert!(!journal.insert(item("a", 1)).unwrap());
        assert!(journal.insert(item("a", 3)).unwrap());
        // The task for value 2 finished after value 3 arrived: 3 stays.
        journal.complete(&item("a", 2)).unwrap();
        assert_eq!(journal.get(&"a".to_owned()), Some(item("a", 3)));
        journal.complete(&item("a", 3)).unwrap();
        assert_eq!(journal.get(&"a".to_owned()), None);
        drop(journal);
        assert!(
            Journal::<Item>::open(dir.path(), "j")
                .unwrap()
                .entries()
                .is_empty()
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path(), "j").unwrap();
            journal.insert(item("a", 1)).unwrap();
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("j"))
            .unwrap();
        file.write_all(br#"{"op":"add","name":"x","va"#).unwrap();
        drop(file);
        let journal = Journal::open(dir.path(), "j").unwrap();
        assert_eq!(journal.entries(), vec![item("a", 1)]);
        // The rewrite dropped the torn record: appending goes on after a whole line.
        journal.insert(item("b", 1)).unwrap();
        assert_eq!(
            Journal::<Item>::open(dir.path(), "j")
                .unwrap()
                .entries()
                .len(),
            2
        );
    }

    #[test]
    fn a_failed_append_is_cut_off_and_the_records_after_it_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path(), "j").unwrap();
            journal.insert(item("a", 1)).unwrap();
            {
                let _full = fault::arm_on_this_thread(Fault::JournalFull);
                assert!(journal.insert(item("b", 1)).is_err());
                assert!(journal.remove(&"a".to_owned()).is_err());
            }
            assert_eq!(journal.get(&"a".to_owned()), Some(item("a", 1)));
            assert_eq!(journal.get(&"b".to_owned()), None);
            journal.insert(item("c", 1)).unwrap();
        }
        let journal = Journal::<Item>::open(dir.path(), "j").unwrap();
        assert_eq!(journal.entries(), vec![item("a", 1), item("c", 1)]);
    }

    #[test]
    fn a_record_whose_checksum_fails_is_skipped_and_old_lines_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode(&Record::Add(&item("a", 1)));
        let mut bad = encode(&Record::Add(&item("b", 1)));
        // Same shape, other bytes: still JSON, but not what was written.
        let at = bad.iter().position(|&b| b == b'1').unwrap();
        bad[at] = b'7';
        let legacy = b"{\"op\":\"add\",\"name\":\"c\",\"value\":1}\n";
        fs::write(dir.path().join("j"), [&good[..], &bad, legacy].concat()).unwrap();
        let journal = Journal::<Item>::open(dir.path(), "j").unwrap();
        assert_eq!(journal.entries(), vec![item("a", 1), item("c", 1)]);
    }

    #[test]
    fn the_journal_is_compacted_when_mostly_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), "j").unwrap();
        for round in 0..(COMPACT_SLACK as u32 + 10) {
            journal.insert(item("a", round + 1)).unwrap();
        }
        let lines = fs::read_to_string(dir.path().join("j"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < COMPACT_SLACK, "{lines} lines");
        assert_eq!(journal.entries().len(), 1);
    }
}
