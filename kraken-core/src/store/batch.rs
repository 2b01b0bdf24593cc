//! Importing many blobs at once with two file-system syncs instead of several per blob.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{BlobStore, layout, write_hashing};
use crate::error::{Error, Result};
use crate::metainfo::MetaInfo;

impl BlobStore {
    /// Adds every blob `blobs` yields, each read once and its metainfo computed with pieces
    /// of `piece_length` bytes, and returns their metainfo in order.
    ///
    /// As durable as [`import`](Self::import) when it returns, but instead of `fsync`ing
    /// each blob's files and directories (several milliseconds a blob on common disks) it
    /// writes every entry, syncs the store's file system once (`syncfs`), moves the entries
    /// into the cache, and syncs once more: filling a store with a hundred thousand small
    /// blobs (a benchmark's, a test's, a migration's) takes seconds, not minutes. A crash
    /// before it returns leaves any subset of the blobs cached, each complete. Blobs already
    /// cached keep their stored copy. On an error nothing more is added.
    pub fn import_batch<R: Read>(
        &self,
        blobs: impl IntoIterator<Item = R>,
        piece_length: u64,
    ) -> Result<Vec<MetaInfo>> {
        let mut staged: Vec<(PathBuf, MetaInfo)> = Vec::new();
        // One buffer for every blob: a batch is typically many small ones.
        let mut buf = vec![0; 64 << 10];
        let result = (|| {
            for mut reader in blobs {
                let staging = self.inner.layout.tmp_path("import");
                layout::create_dir_all(&staging)?;
                match stage(&mut reader, &staging, piece_length, &mut buf) {
                    Ok(meta) => staged.push((staging, meta)),
                    Err(e) => {
                        let _ = fs::remove_dir_all(&staging);
                        return Err(e);
                    }
                }
            }
            self.sync_file_system()
        })();
        if let Err(e) = result {
            for (staging, _) in &staged {
                let _ = fs::remove_dir_all(staging);
            }
            return Err(e);
        }
        let mut metas = Vec::with_capacity(staged.len());
        let mut staged = staged.into_iter();
        for (staging, meta) in staged.by_ref() {
            if let Err(e) = self
                .inner
                .install_with(&staging, meta.digest(), meta.length(), false)
            {
                let _ = fs::remove_dir_all(&staging);
                for (staging, _) in staged {
                    let _ = fs::remove_dir_all(staging);
                }
                return Err(e);
            }
            metas.push(meta);
        }
        self.sync_file_system()?;
        Ok(metas)
    }

    /// `syncfs` of the file system the store is on.
    fn sync_file_system(&self) -> Result<()> {
        let root = self.inner.layout.root();
        File::open(root)
            .and_then(|dir| rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
            .map_err(|source| Error::io(root, source))
    }
}

/// Writes one blob's data and metainfo into `staging`, unsynced.
fn stage(
    reader: &mut impl Read,
    staging: &Path,
    piece_length: u64,
    buf: &mut [u8],
) -> Result<MetaInfo> {
    let data_path = staging.join(layout::DATA);
    let mut file = File::create(&data_path).map_err(|source| Error::io(&data_path, source))?;
    let meta = write_hashing(reader, &mut file, &data_path, piece_length, buf)?;
    let meta_path = staging.join(layout::METAINFO);
    fs::write(&meta_path, meta.encode()).map_err(|source| Error::io(&meta_path, source))?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobStatus;

    fn blob(i: u32) -> Vec<u8> {
        (0..4096 + i)
            .map(|j| (j ^ i.wrapping_mul(7)) as u8)
            .collect()
    }

    #[test]
    fn a_batch_is_cached_as_single_imports_would_be_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blobs: Vec<Vec<u8>> = (0..20).map(blob).collect();
        // One blob cached before, one twice in the batch.
        store.import(&blobs[3][..], 1024, None).unwrap();
        let mut batch: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        batch.push(&blobs[5]);
        let metas = store.import_batch(batch, 1024).unwrap();
        assert_eq!(metas.len(), 21);
        for (data, meta) in blobs.iter().zip(&metas) {
            assert_eq!(*meta, MetaInfo::from_bytes(data, 1024).unwrap());
        }
        drop(store);
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.cached().len(), 20);
        for (data, meta) in blobs.iter().zip(&metas) {
            assert_eq!(
                store.status(meta.digest()),
                BlobStatus::Cached {
                    length: data.len() as u64
                }
            );
            assert_eq!(store.metainfo(meta.digest()).unwrap(), *meta);
            let mut read = vec![0; data.len()];
            store
                .open_blob(meta.digest())
                .unwrap()
                .read_exact_at(0, &mut read)
                .unwrap();
            assert_eq!(&read, data);
        }
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "staging left behind"
        );
    }

    #[test]
    fn a_failing_reader_adds_nothing_and_leaves_no_staging() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let readers: Vec<Box<dyn Read>> = vec![Box::new(&b"first"[..]), Box::new(Failing)];
        assert!(matches!(
            store.import_batch(readers, 1024),
            Err(Error::Read(_))
        ));
        assert!(store.cached().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
