//! Blobs kept outside the store: files seeded in place, and downloads moved to where the
//! caller wants them.
//!
//! A cached entry normally holds its bytes in `data`. A *referenced* entry holds instead a
//! `reference` file naming an external file by absolute path, with the size and modification
//! time it had when it was hashed. The store writes none of the blob's bytes for it: seeding
//! a model in place costs its seeder no writes, and a download moved out with
//! [`BlobStore::export`] leaves only its metainfo behind while it can still be seeded.
//!
//! Every [`BlobStore::open_blob`] of a referenced entry compares the file's size and
//! modification time with the recorded ones. A file that changed (or vanished) is refused
//! with [`Error::ReferenceChanged`] and the entry is forgotten; seeding it again re-hashes
//! it. A change that keeps both size and modification time is not noticed here, but
//! receivers still check every piece against its hash and refuse what does not match.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout::{self, State};
use super::{Blob, BlobStore, Entry};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::metainfo::MetaInfo;

/// First line of a `reference` file, naming its format.
const MAGIC: &[u8] = b"kraken-reference 1\n";
/// Most bytes of a `reference` file (a path of up to 4 KiB plus two numbers).
const MAX_LEN: u64 = 8192;

/// Where a referenced blob's bytes are, and what the file looked like when it was recorded.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct Reference {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Nanoseconds since the Unix epoch.
    pub(super) mtime_nanos: u128,
}

impl Reference {
    pub(super) fn of(path: PathBuf, metadata: &fs::Metadata) -> Self {
        Self {
            path,
            size: metadata.len(),
            mtime_nanos: mtime_nanos(metadata),
        }
    }

    fn matches(&self, metadata: &fs::Metadata) -> bool {
        metadata.is_file()
            && metadata.len() == self.size
            && mtime_nanos(metadata) == self.mtime_nanos
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(format!("{}\n{}\n", self.size, self.mtime_nanos).as_bytes());
        out.extend_from_slice(self.path.as_os_str().as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let size = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let mtime_nanos = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(parts.next()?));
        path.is_absolute().then_some(Self {
            path,
            size,
            mtime_nanos,
        })
    }

    /// Reads an entry directory's reference, if it has one.
    pub(super) fn load(dir: &Path) -> Option<Self> {
        let bytes = layout::read_bounded(&dir.join(layout::REFERENCE), MAX_LEN)
            .ok()
            .flatten()?;
        let reference = Self::decode(&bytes);
        if reference.is_none() {
            tracing::warn!(dir = %dir.display(), "ignoring unreadable reference file");
        }
        reference
    }
}

/// A caller's destination path, made absolute through its canonical parent directory, so
/// that the path a reference records is the one a later [`BlobStore::export`] to the same
/// place computes.
#[derive(Clone, Debug)]
pub(super) struct Destination {
    /// The directory the file goes in (canonical).
    pub(super) parent: PathBuf,
    /// `parent` joined with the file's name.
    pub(super) dest: PathBuf,
}

impl Destination {
    pub(super) fn resolve(dest: &Path) -> Result<Self> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let parent = fs::canonicalize(&parent).map_err(|source| Error::io(&parent, source))?;
        let name = dest.file_name().ok_or_else(|| {
            Error::io(
                dest,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
            )
        })?;
        let dest = parent.join(name);
        Ok(Self { parent, dest })
    }
}

/// The temporary file beside `dest` that its bytes are written to before a rename puts them
/// in place: `.NAME.kraken-partial-NONCE`, hidden, and named so a person knows what it is.
pub(super) fn partial_path(dest: &Path, nonce: u64) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.kraken-partial-{nonce:016x}"))
}

fn mtime_nanos(metadata: &fs::Metadata) -> u128 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .as_ref()
        .map_or(0, Duration::as_nanos)
}

impl BlobStore {
    /// Records the file at `path` as a cached blob **by reference**: hashes it (pieces of
    /// `piece_length` bytes) and stores only its metainfo and where it is; none of its
    /// bytes are written into the store. The file must then stay unchanged: every
    /// [`open_blob`](Self::open_blob) compares its size and modification time with the
    /// recorded ones, and a file that changed or vanished is refused with
    /// [`Error::ReferenceChanged`] and forgotten (seeding it again re-hashes it).
    ///
    /// If the blob is already cached (a copy in the store, or a valid reference), that entry
    /// is kept. Fails with [`Error::ReferenceChanged`] if the file changed while it was
    /// being hashed.
    pub fn import_reference(&self, path: &Path, piece_length: u64) -> Result<MetaInfo> {
        let path = fs::canonicalize(path).map_err(|source| Error::io(path, source))?;
        let file = File::open(&path).map_err(|source| Error::io(&path, source))?;
        let before = file.metadata().map_err(|source| Error::io(&path, source))?;
        if !before.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let reference = Reference::of(path.clone(), &before);
        let meta = MetaInfo::from_reader(&file, piece_length)?;
        let after = file.metadata().map_err(|source| Error::io(&path, source))?;
        if !reference.matches(&after) || meta.length() != reference.size {
            return Err(Error::ReferenceChanged {
                digest: *meta.digest(),
                path,
            });
        }
        // A cached copy or a still valid reference wins; a stale reference is forgotten by
        // `open_blob` and replaced below.
        if self.open_blob(meta.digest()).is_ok() {
            return self.metainfo(meta.digest());
        }
        let staging = self.inner.layout.tmp_path("reference");
        layout::create_dir_all(&staging)?;
        let result = (|| {
            layout::write_atomically(&staging.join(layout::METAINFO), &meta.encode())?;
            layout::write_atomically(&staging.join(layout::REFERENCE), &reference.encode())?;
            layout::sync_dir(&staging)
        })()
        .and_then(|()| self.inner.install(&staging, meta.digest(), meta.length()));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(meta)
    }

    /// Puts a cached blob's bytes at `dest` (replacing a regular file there) and keeps the
    /// blob cached **by reference** to `dest`, so it can still be seeded. A copy held in the
    /// store is moved, not copied, when `dest` is on the store's file system (so the bytes
    /// were written once, by the download); across file systems, or for a blob that is
    /// itself a reference elsewhere, the bytes are copied through a temporary file beside
    /// `dest` and renamed into place — a second write of every byte. To write a blob not yet
    /// downloaded once onto another file system, download it with
    /// [`begin_download_to`](Self::begin_download_to) instead; exporting it afterwards to
    /// the same `dest` does nothing. Readers holding the blob open keep reading it.
    pub fn export(&self, digest: &Digest, dest: &Path) -> Result<()> {
        let entry = self
            .inner
            .index()
            .entries
            .get(digest)
            .filter(|e| e.state == State::Cache)
            .cloned()
            .ok_or(Error::NotFound(*digest))?;
        let dir = self.inner.layout.entry_dir(State::Cache, digest);
        let Destination { parent, dest } = Destination::resolve(dest)?;
        if entry.reference.as_ref().is_some_and(|r| r.path == dest) {
            // Already there: check it is still what was recorded.
            self.open_blob(digest)?;
            return Ok(());
        }
        let tmp = partial_path(&dest, rand::random());
        let result = (|| {
            let moved = match &entry.reference {
                None => {
                    let data = dir.join(layout::DATA);
                    match fs::rename(&data, &tmp) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                            fs::copy(&data, &tmp).map_err(|source| Error::io(&tmp, source))?;
                            false
                        }
                        Err(source) => return Err(Error::io(&data, source)),
                    }
                }
                Some(_) => {
                    let blob = self.open_blob(digest)?;
                    fs::copy(blob.path(), &tmp).map_err(|source| Error::io(&tmp, source))?;
                    false
                }
            };
            let metadata = fs::metadata(&tmp).map_err(|source| Error::io(&tmp, source))?;
            if !moved {
                File::open(&tmp)
                    .and_then(|f| f.sync_data())
                    .map_err(|source| Error::io(&tmp, source))?;
            }
            let reference = Reference::of(dest.clone(), &metadata);
            layout::write_atomically(&dir.join(layout::REFERENCE), &reference.encode())?;
            fs::rename(&tmp, &dest).map_err(|source| Error::io(&dest, source))?;
            layout::sync_dir(&parent)?;
            // A copy left in the store (copied across file systems) is no longer needed.
            let _ = fs::remove_file(dir.join(layout::DATA));
            Ok(reference)
        })();
        match result {
            Ok(reference) => {
                if let Some(e) = self.inner.index().entries.get_mut(digest) {
                    e.reference = Some(reference);
                }
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Opens a referenced blob, refusing (and forgetting) a file that changed.
    pub(super) fn open_referenced(&self, digest: &Digest, reference: &Reference) -> Result<Blob> {
        let opened = File::open(&reference.path).and_then(|file| {
            let metadata = file.metadata()?;
            Ok((file, metadata))
        });
        match opened {
            Ok((file, metadata)) if reference.matches(&metadata) => {
                self.inner.touch(digest, SystemTime::now());
                Ok(Blob::new(
                    *digest,
                    reference.size,
                    file,
                    reference.path.clone(),
                    false,
                ))
            }
            _ => {
                tracing::warn!(
                    %digest,
                    path = %reference.path.display(),
                    "file seeded in place changed or vanished; forgetting it"
                );
                let removed = {
                    let mut index = self.inner.index();
                    index.entries.remove(digest)
                };
                if removed.is_some() {
                    let dir = self.inner.layout.entry_dir(State::Cache, digest);
                    layout::remove_entry(&self.inner.layout, &dir)?;
                }
                Err(Error::ReferenceChanged {
                    digest: *digest,
                    path: reference.path.clone(),
                })
            }
        }
    }
}

impl Entry {
    /// Whether the blob's bytes live outside the store.
    pub(super) fn is_referenced(&self) -> bool {
        self.reference.is_some()
    }

    /// Whether the store's file system holds the blob's bytes: not for a reference, nor for
    /// a download written beside its destination. Only these count toward the watermarks.
    pub(super) fn in_store(&self) -> bool {
        !self.is_referenced() && !self.external
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobStatus;

    /// Every regular file named `data` under the store, with its length.
    fn data_bytes(root: &Path) -> u64 {
        fn walk(dir: &Path, total: &mut u64) {
            for entry in fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    walk(&path, total);
                } else if path.file_name().is_some_and(|n| n == layout::DATA) {
                    *total += meta.len().max(1);
                }
            }
        }
        let mut total = 0;
        walk(root, &mut total);
        total
    }

    #[test]
    fn seeding_in_place_writes_no_bytes_into_the_store_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        let content = b"weights".repeat(10_000);
        fs::write(&file, &content).unwrap();
        let root = dir.path().join("store");
        let store = BlobStore::open(&root).unwrap();
        let meta = store.import_reference(&file, 4096).unwrap();
        assert_eq!(meta.digest(), &Digest::sha256_of(&content));
        assert_eq!(data_bytes(&root), 0, "the store holds a copy");
        let usage = store.usage();
        assert_eq!(
            (
                usage.referenced_blobs,
                usage.referenced_bytes,
                usage.cached_bytes
            ),
            (1, content.len() as u64, 0)
        );
        let blob = store.open_blob(meta.digest()).unwrap();
        let mut read = vec![0; content.len()];
        blob.read_exact_at(0, &mut read).unwrap();
        assert_eq!(read, content);
        drop(store);
        let store = BlobStore::open(&root).unwrap();
        assert_eq!(
            store.status(meta.digest()),
            BlobStatus::Cached {
                length: content.len() as u64
            }
        );
        assert_eq!(store.metainfo(meta.digest()).unwrap(), meta);
        assert_eq!(store.open_blob(meta.digest()).unwrap().path(), file);
        // Forgetting it leaves the file alone.
        assert!(store.delete(meta.digest()).unwrap());
        assert_eq!(fs::read(&file).unwrap(), content);
    }

    #[test]
    fn a_changed_file_is_refused_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let file = dir.path().join("a");
        fs::write(&file, b"original").unwrap();
        let meta = store.import_reference(&file, 4096).unwrap();
        // Same size, new modification time.
        fs::write(&file, b"ORIGINAL").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(matches!(
            store.open_blob(meta.digest()),
            Err(Error::ReferenceChanged { .. })
        ));
        assert_eq!(store.status(meta.digest()), BlobStatus::Absent);
        // Seeding it again re-hashes what is there now.
        let again = store.import_reference(&file, 4096).unwrap();
        assert_eq!(again.digest(), &Digest::sha256_of(b"ORIGINAL"));
        // A different size is refused too, and so is a vanished file.
        fs::write(&file, b"longer than before").unwrap();
        assert!(store.open_blob(again.digest()).is_err());
        fs::write(&file, b"x").unwrap();
        let third = store.import_reference(&file, 4096).unwrap();
        fs::remove_file(&file).unwrap();
        assert!(matches!(
            store.open_blob(third.digest()),
            Err(Error::ReferenceChanged { .. })
        ));
    }

    #[test]
    fn export_moves_the_bytes_out_and_keeps_the_blob_seedable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = BlobStore::open(&root).unwrap();
        let content = b"layer".repeat(5000);
        let meta = store.import(&content[..], 4096, None).unwrap();
        let reader = store.open_blob(meta.digest()).unwrap();
        let dest = dir.path().join("out").join("file.bin");
        fs::create_dir(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"old contents").unwrap();
        store.export(meta.digest(), &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), content);
        assert_eq!(data_bytes(&root), 0, "the store kept a copy");
        // Readers that had it open keep reading; new readers read the moved file.
        let mut first = [0; 5];
        reader.read_exact_at(0, &mut first).unwrap();
        assert_eq!(&first, b"layer");
        assert_eq!(store.open_blob(meta.digest()).unwrap().path(), dest);
        // Exporting again to the same place does nothing; elsewhere copies.
        store.export(meta.digest(), &dest).unwrap();
        let second = dir.path().join("copy.bin");
        store.export(meta.digest(), &second).unwrap();
        assert_eq!(fs::read(&second).unwrap(), content);
        assert_eq!(store.open_blob(meta.digest()).unwrap().path(), second);
        // No temporary files are left beside the destinations.
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file.bin")]);
    }

    #[test]
    fn reference_files_round_trip_and_reject_garbage() {
        let reference = Reference {
            path: PathBuf::from("/models/with\nnewline"),
            size: 42,
            mtime_nanos: 1_700_000_000_123_456_789,
        };
        assert_eq!(Reference::decode(&reference.encode()), Some(reference));
        assert_eq!(
            Reference::decode(b"kraken-reference 1\n1\n2\nrelative"),
            None
        );
        assert_eq!(Reference::decode(b"kraken-reference 2\n1\n2\n/a"), None);
        assert_eq!(Reference::decode(b"kraken-reference 1\nx\n2\n/a"), None);
    }
}
