//! Which namespace each held blob belongs to, so that re-replication and seeding after a
//! restart route it as it was uploaded. One small file per blob: `namespaces/<hex>`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kraken_core::Digest;

use crate::error::Result;

/// Longest namespace kept; longer ones are not accepted by the API either.
pub(crate) const MAX_NAMESPACE_LEN: usize = 1024;

#[derive(Debug)]
pub(crate) struct NamespaceIndex {
    dir: PathBuf,
}

impl NamespaceIndex {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        crate::durable::create_dir_all_synced(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Records `digest`'s namespace (atomically: a reader sees the old one or the new one),
    /// durably: a restart routes a pending write-back by it.
    pub(crate) fn set(&self, digest: &Digest, namespace: &str) -> Result<()> {
        let path = self.path(digest);
        if self.get(digest).as_deref() == Some(namespace) {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(namespace.as_bytes())?;
        file.sync_data()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The namespace of `digest`; `None` if never recorded.
    pub(crate) fn get(&self, digest: &Digest) -> Option<String> {
        let bytes = fs::read(self.path(digest)).ok()?;
        (bytes.len() <= MAX_NAMESPACE_LEN)
            .then(|| String::from_utf8(bytes).ok())
            .flatten()
    }

    /// Forgets `digest`.
    pub(crate) fn remove(&self, digest: &Digest) {
        let _ = fs::remove_file(self.path(digest));
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_kept_per_blob() {
        let dir = tempfile::tempdir().unwrap();
        let index = NamespaceIndex::open(dir.path()).unwrap();
        let digest = Digest::sha256_of(b"x");
        assert_eq!(index.get(&digest), None);
        index.set(&digest, "library/ubuntu").unwrap();
        index.set(&digest, "other").unwrap();
        assert_eq!(
            NamespaceIndex::open(dir.path())
                .unwrap()
                .get(&digest)
                .as_deref(),
            Some("other")
        );
        index.remove(&digest);
        assert_eq!(index.get(&digest), None);
    }
}
