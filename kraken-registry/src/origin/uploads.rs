//! Uploads in progress: one file per upload under `uploads/`, written chunk by chunk at the
//! offsets the client gives, until the commit imports it into the blob store.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::Result;

/// Upload ids are 32 lowercase hex digits (128 random bits).
const ID_LEN: usize = 32;

#[derive(Debug)]
pub(crate) struct Uploads {
    dir: PathBuf,
}

impl Uploads {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
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
}
