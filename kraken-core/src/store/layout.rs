//! Where the store keeps things on disk.
//!
//! ```text
//! <root>/cache/<algorithm>/<hex[0..2]>/<hex>/data          complete, verified blob
//!                                            /metainfo      canonical metainfo encoding
//!                                            /last_access   u64 big-endian Unix milliseconds
//!                                            /pinned        present while pinned
//!                                            /reference     instead of data: an external file
//!                                                           (see `reference`)
//! <root>/download/<algorithm>/<hex[0..2]>/<hex>/data       pre-sized, written piece by piece
//!                                               /metainfo
//!                                               /bitfield   compact bitfield of verified pieces
//!                                               /pinned
//!                                               /external   instead of data: the download is
//!                                                           written beside its destination
//!                                                           (see `external`)
//! <root>/tmp/                                                imports and deletions in flight
//! ```
//!
//! Every path under `cache/` and `download/` is built from a parsed [`Digest`] — an algorithm
//! name from a fixed list and lowercase hex — so no input can name a file outside the store.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub(super) const DATA: &str = "data";
pub(super) const METAINFO: &str = "metainfo";
pub(super) const BITFIELD: &str = "bitfield";
pub(super) const LAST_ACCESS: &str = "last_access";
pub(super) const PINNED: &str = "pinned";
pub(super) const REFERENCE: &str = "reference";
pub(super) const EXTERNAL: &str = "external";

/// The two states a blob can be in on disk.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum State {
    Download,
    Cache,
}

impl State {
    fn dir_name(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Cache => "cache",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(super) fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn state_dir(&self, state: State) -> PathBuf {
        self.root.join(state.dir_name())
    }

    pub(super) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(super) fn entry_dir(&self, state: State, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.state_dir(state)
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// A fresh, unique path under `tmp/`.
    pub(super) fn tmp_path(&self, purpose: &str) -> PathBuf {
        let nonce: u64 = rand::random();
        self.tmp_dir().join(format!("{purpose}-{nonce:016x}"))
    }

    /// Every entry directory of `state`, with the digest its name spells. Directories whose
    /// names are not digests are skipped with a warning: the store never touches them.
    pub(super) fn scan(&self, state: State) -> Result<Vec<(Digest, PathBuf)>> {
        let mut found = Vec::new();
        let base = self.state_dir(state);
        for algorithm_dir in read_dir_paths(&base)? {
            let Some(algorithm) = file_name(&algorithm_dir) else {
                continue;
            };
            for shard_dir in read_dir_paths(&algorithm_dir)? {
                for entry in read_dir_paths(&shard_dir)? {
                    let parsed = file_name(&entry)
                        .and_then(|hex| format!("{algorithm}:{hex}").parse::<Digest>().ok());
                    match parsed {
                        Some(digest) if entry == self.entry_dir(state, &digest) => {
                            found.push((digest, entry));
                        }
                        _ => {
                            tracing::warn!(path = %entry.display(), "ignoring unexpected entry in blob store");
                        }
                    }
                }
            }
        }
        Ok(found)
    }
}

fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()).map_err(|source| Error::io(dir, source)))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::io(dir, source)),
    }
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers and a crash see
/// either the old contents or the new, never a mix.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| Error::io(path, source))
}

/// Reads a small metadata file, refusing one larger than `limit` bytes.
pub(super) fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::io(path, source)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::io(path, source))?;
    if bytes.len() as u64 > limit {
        return Err(Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidData, "metadata file too large"),
        ));
    }
    Ok(Some(bytes))
}

pub(super) fn encode_time(time: SystemTime) -> [u8; 8] {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX).to_be_bytes()
}

pub(super) fn decode_time(bytes: &[u8]) -> Option<SystemTime> {
    let millis = u64::from_be_bytes(bytes.try_into().ok()?);
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

pub(super) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::io(path, source))
}

/// As [`create_dir_all`], then `fsync`s the parent of every directory it created (deepest
/// first), so that the new directories — and so whatever is renamed into them — survive a
/// power failure.
pub(super) fn create_dir_all_synced(path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut dir = Some(path);
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_owned());
        dir = d.parent();
    }
    create_dir_all(path)?;
    for created in &missing {
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// `fsync`s a directory, making the entries created or renamed in it durable
/// ([`positional::sync_dir`](super::positional::sync_dir)).
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    SYNCED_DIRS.with(|synced| synced.borrow_mut().push(dir.to_owned()));
    super::positional::sync_dir(dir).map_err(|source| Error::io(dir, source))
}

#[cfg(test)]
thread_local! {
    /// The directories this thread `fsync`ed, for tests to check.
    pub(super) static SYNCED_DIRS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Removes an entry directory by first renaming it into `tmp/`, so that a crash halfway
/// through never leaves a partial entry under `cache/` or `download/`.
pub(super) fn remove_entry(layout: &Layout, dir: &Path) -> Result<()> {
    let grave = layout.tmp_path("deleted");
    match fs::rename(dir, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::io(dir, source)),
    }
    fs::remove_dir_all(&grave).map_err(|source| Error::io(&grave, source))
}
