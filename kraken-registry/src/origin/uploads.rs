//! Uploads in progress: one file per upload under `uploads/`, written chunk by chunk at the
//! offsets the client gives, until the commit imports it into the blob store.
//!
//! A chunk write and a commit each [claim](Uploads::claim) the upload for as long as they
//! run; a second claim is refused. So no chunk can land in the file while a commit hashes
//! it, and what the store installs is exactly what was hashed.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::Result;

/// Upload ids are 32 lowercase hex digits (128 random bits).
const ID_LEN: usize = 32;

#[derive(Debug)]
pub(crate) struct Uploads {
    dir: PathBuf,
    /// Uploads a chunk write or a commit is working on.
    claimed: Mutex<HashSet<String>>,
}

/// Why an upload could not be claimed.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum ClaimError {
    /// No such upload (never started, committed, or swept).
    Unknown,
    /// A commit or another chunk write holds it.
    Busy,
}

/// An upload held by one chunk write or commit, released on drop.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    uploads: &'a Uploads,
    id: String,
    path: PathBuf,
}

impl Claim<'_> {
    /// The upload's file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.uploads.lock().remove(&self.id);
    }
}

impl Uploads {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        crate::durable::create_dir_all_synced(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            claimed: Mutex::new(HashSet::new()),
        })
    }

    /// Claims upload `id` for one chunk write or commit.
    pub(crate) fn claim(&self, id: &str) -> std::result::Result<Claim<'_>, ClaimError> {
        let path = self.path(id).ok_or(ClaimError::Unknown)?;
        if !self.lock().insert(id.to_owned()) {
            return Err(ClaimError::Busy);
        }
        // Committed (and so removed) between the look-up and the claim.
        if !path.is_file() {
            self.lock().remove(id);
            return Err(ClaimError::Unknown);
        }
        Ok(Claim {
            uploads: self,
            id: id.to_owned(),
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.claimed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an upload; returns its id.
    pub(crate) fn create(&self) -> Result<String> {
        let id = format!("{:032x}", rand::random::<u128>());
        File::create(self.dir.join(&id))?;
        Ok(id)
    }

    /// The file of upload `id`, if it exists (and `id` is well formed).
    pub(crate) fn path(&self, id: &str) -> Option<PathBuf> {
        let valid = id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self.dir.join(id);
        (valid && path.is_file()).then_some(path)
    }

    /// Writes `data` at `offset` of upload `id`'s file.
    pub(crate) fn write_at(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.write_all_at(data, offset)?;
        Ok(())
    }

    /// Deletes uploads not written for longer than `ttl`.
    pub(crate) fn sweep(&self, now: SystemTime, ttl: Duration) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() > ttl);
            if stale && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_land_at_their_offsets_and_stale_uploads_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path()).unwrap();
        let id = uploads.create().unwrap();
        let path = uploads.path(&id).unwrap();
        Uploads::write_at(&path, 5, b"world").unwrap();
        Uploads::write_at(&path, 0, b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"helloworld");
        assert!(uploads.path("../escape").is_none());
        assert!(uploads.path(&"0".repeat(ID_LEN)).is_none());
        assert_eq!(uploads.sweep(SystemTime::now(), Duration::from_secs(60)), 0);
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(uploads.sweep(later, Duration::from_secs(60)), 1);
        assert!(uploads.path(&id).is_none());
    }

    #[test]
    fn a_claimed_upload_cannot_be_claimed_again_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path()).unwrap();
        let id = uploads.create().unwrap();
        let commit = uploads.claim(&id).unwrap();
        // A chunk arriving while the commit hashes the file is refused.
        assert_eq!(uploads.claim(&id).unwrap_err(), ClaimError::Busy);
        fs::remove_file(commit.path()).unwrap();
        drop(commit);
        assert_eq!(uploads.claim(&id).unwrap_err(), ClaimError::Unknown);
        assert_eq!(
            uploads.claim(&"a".repeat(ID_LEN)).unwrap_err(),
            ClaimError::Unknown
        );
    }
}
