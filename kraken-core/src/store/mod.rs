//! The content-addressed blob store on local disk.
//!
//! A blob is either **downloading** — a pre-sized data file written piece by piece, beside a
//! persisted metainfo and bitfield of verified pieces — or **cached**: complete, and known to
//! hash to its digest. A download becomes cached only after the whole blob's SHA-256 has been
//! checked against its digest, by renaming its directory (atomic on one file system); a
//! mismatch discards it, so nothing under `cache/` is ever wrong. See [`layout`] for the paths.
//!
//! # Why piece I/O is synchronous
//!
//! Every method here blocks: piece writes and reads are positional (`pwrite`/`pread` through
//! [`std::os::unix::fs::FileExt`]) on a shared file handle, and async callers run them on a
//! blocking pool (`tokio::task::spawn_blocking`). That is deliberate, as in rqbit's storage:
//! positional I/O needs no seek and no lock, so many pieces of one file are written and read
//! at once; the bytes go straight from the caller's buffer to the kernel, where `tokio::fs`
//! would copy them into its own buffers and run the same blocking call anyway; and hashing a
//! piece (milliseconds of CPU) belongs off the async reactor too. The async layers above
//! decide how many blocking jobs run at once.
//!
//! # Crashes
//!
//! A piece's bit is persisted after its data is written. A killed process therefore resumes
//! with every piece whose bit is set (the kernel keeps written data), and by default
//! ([`StoreConfig::verify_on_resume`]) re-hashes those pieces when a download is resumed, so
//! even data lost in a power failure is found and fetched again. Metadata files are replaced
//! atomically, deletions first move an entry into `tmp/`, and `tmp/` is emptied at start.
//!
//! # Eviction
//!
//! [`BlobStore::evict`] removes cached blobs idle longer than [`StoreConfig::idle_ttl`],
//! abandoned downloads idle longer than [`StoreConfig::download_idle_ttl`], and then, while
//! the store holds more than [`StoreConfig::high_watermark`] bytes, the least recently used
//! cached blobs until it is down to [`StoreConfig::low_watermark`]. Pinned blobs and
//! downloads with a live [`Download`] handle are never evicted.
//!
//! # Blobs outside the store
//!
//! [`BlobStore::import_reference`] records a file where it is (seeding in place),
//! [`BlobStore::export`] moves a cached blob to a caller's path, and
//! [`BlobStore::begin_download_to`] downloads a blob straight to a caller's path on another
//! file system (such a download is not resumed after a crash: its partial file beside the
//! destination is removed when the store opens); all leave
//! a cached entry that points at the external file, refused once the file changes. Such
//! entries hold no bytes of the store: they count in [`StoreUsage::referenced_bytes`], not
//! toward the watermarks, and evicting or deleting one forgets the file without touching it.

mod background;
mod batch;
mod blob;
mod config;
mod download;
mod evict;
mod external;
pub mod layout;
mod mapped;
mod positional;
mod reference;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

pub use self::background::{BACKGROUND_IDLE_FOR, spawn_background};
pub use self::blob::{Blob, BlobReader};
pub use self::config::StoreConfig;
pub use self::download::Download;
use self::download::DownloadShared;
use self::layout::{Layout, State};
pub use self::mapped::MappedRange;
pub use self::positional::{
    MAX_PARTS, drop_cached, is_cached, read_vec_at, sync_dir, write_all_vectored_at,
};
use self::reference::Reference;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::metainfo::{
    self, HEADER_LEN, MAX_PIECE_COUNT, MetaInfo, MetaInfoError, MetaInfoGenerator,
};
use crate::piece_length::PieceLengthPolicy;

/// Where a blob stands in the store.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum BlobStatus {
    /// Not in the store.
    Absent,
    /// Partly downloaded.
    Downloading,
    /// Complete and verified.
    Cached {
        /// Length in bytes.
        length: u64,
    },
}

/// Byte and blob counts of a store.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct StoreUsage {
    /// Complete blobs.
    pub cached_blobs: usize,
    /// Bytes of complete blobs.
    pub cached_bytes: u64,
    /// Downloads in progress.
    pub downloading_blobs: usize,
    /// Bytes reserved by downloads in progress (their full lengths), including those written
    /// outside the store ([`BlobStore::begin_download_to`]).
    pub downloading_bytes: u64,
    /// Complete blobs kept outside the store (seeded in place or exported), not counted in
    /// `cached_blobs`.
    pub referenced_blobs: usize,
    /// Their bytes, which the store does not hold.
    pub referenced_bytes: u64,
}

/// What one [`BlobStore::evict`] pass removed.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct EvictionReport {
    /// Blobs removed because they were idle.
    pub idle: Vec<Digest>,
    /// Blobs removed to bring the store under its watermark.
    pub watermark: Vec<Digest>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// A content-addressed store of blobs on local disk: a cheap, cloneable handle.
///
/// Every method blocks on file I/O; see the [module docs](self) for why and for how to call it
/// from async code.
#[derive(Clone, Debug)]
pub struct BlobStore {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    layout: Layout,
    config: StoreConfig,
    index: Mutex<Index>,
    /// Serialises the creation and resumption of downloads, which do file I/O that must not
    /// run under the index lock.
    opening: Mutex<()>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    /// Downloads with live handles, so that two callers share one.
    active: HashMap<Digest, Weak<DownloadShared>>,
}

#[derive(Clone, Debug)]
struct Entry {
    state: State,
    length: u64,
    /// Last read of a cached blob, or last piece written to a download.
    last_access: SystemTime,
    persisted_access: SystemTime,
    pinned: bool,
    /// Where the bytes are when they are outside the store.
    reference: Option<Reference>,
    /// A download whose data file is beside its destination, outside the store
    /// ([`external`]).
    external: bool,
}

impl BlobStore {
    /// Opens (creating if needed) a store under `root` with default settings.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_config(root, StoreConfig::default())
    }

    /// Opens (creating if needed) a store under `root`.
    pub fn open_with_config(root: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        if let (Some(high), Some(low)) = (config.high_watermark, config.low_watermark)
            && low > high
        {
            return Err(Error::InvalidConfig(
                "low_watermark must not exceed high_watermark",
            ));
        }
        let layout = Layout::new(root.as_ref());
        let tmp = layout.tmp_dir();
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|source| Error::io(&tmp, source))?;
        }
        for dir in [
            tmp,
            layout.state_dir(State::Cache),
            layout.state_dir(State::Download),
        ] {
            layout::create_dir_all(&dir)?;
        }
        let mut index = Index::default();
        for state in [State::Download, State::Cache] {
            for (digest, dir) in layout.scan(state)? {
                if state == State::Download && external::discard_leftover(&layout, &dir)? {
                    continue;
                }
                match load_entry(state, &dir) {
                    Some(entry) => {
                        index.entries.insert(digest, entry);
                    }
                    None => {
                        tracing::warn!(path = %dir.display(), "removing blob entry without data");
                        layout::remove_entry(&layout, &dir)?;
                    }
                }
            }
        }
        Ok(Self {
            inner: Arc::new(StoreInner {
                layout,
                config,
                index: Mutex::new(index),
                opening: Mutex::new(()),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Where `digest` stands.
    pub fn status(&self, digest: &Digest) -> BlobStatus {
        match self.inner.index().entries.get(digest) {
            None => BlobStatus::Absent,
            Some(e) if e.state == State::Download => BlobStatus::Downloading,
            Some(e) => BlobStatus::Cached { length: e.length },
        }
    }

    /// Opens a complete blob for reading and records the access.
    pub fn open_blob(&self, digest: &Digest) -> Result<Blob> {
        let reference = match self.inner.index().entries.get(digest) {
            Some(e) if e.state == State::Cache => e.reference.clone(),
            _ => return Err(Error::NotFound(*digest)),
        };
        if let Some(reference) = reference {
            return self.open_referenced(digest, &reference);
        }
        let dir = self.inner.layout.entry_dir(State::Cache, digest);
        let path = dir.join(layout::DATA);
        let file = match File::open(&path) {
            Ok(file) => file,
            // Evicted between the index check and the open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(*digest));
            }
            Err(source) => return Err(Error::io(&path, source)),
        };
        let length = file
            .metadata()
            .map_err(|source| Error::io(&path, source))?
            .len();
        self.inner.touch(digest, SystemTime::now());
        Ok(Blob::new(*digest, length, file, path, true))
    }

    /// The metainfo of a cached or downloading blob.
    pub fn metainfo(&self, digest: &Digest) -> Result<MetaInfo> {
        let state = match self.inner.index().entries.get(digest) {
            Some(e) => e.state,
            None => return Err(Error::NotFound(*digest)),
        };
        let path = self
            .inner
            .layout
            .entry_dir(state, digest)
            .join(layout::METAINFO);
        let bytes =
            layout::read_bounded(&path, max_metainfo_len())?.ok_or(Error::NotFound(*digest))?;
        let meta = match MetaInfo::decode(&bytes) {
            Ok(meta) => meta,
            Err(Error::MetaInfo(MetaInfoError::UnsupportedVersion(version)))
                if state == State::Cache && !dir_is_referenced(&path) =>
            {
                self.regenerate_metainfo(digest, &bytes, version)?
            }
            Err(e) => return Err(e),
        };
        if meta.digest() != digest {
            return Err(Error::Internal("stored metainfo names another blob"));
        }
        Ok(meta)
    }

    /// Rewrites a cached blob's metainfo that an earlier build stored in another encoding
    /// version (version 1 hashed pieces on their own), from the blob itself: the cache stays
    /// usable across the upgrade. Keeps the old piece length where it is still valid.
    fn regenerate_metainfo(&self, digest: &Digest, old: &[u8], version: u8) -> Result<MetaInfo> {
        let dir = self.inner.layout.entry_dir(State::Cache, digest);
        let data_path = dir.join(layout::DATA);
        let file = File::open(&data_path).map_err(|source| Error::io(&data_path, source))?;
        let length = file
            .metadata()
            .map_err(|source| Error::io(&data_path, source))?
            .len();
        let piece_length = metainfo::encoded_piece_length(old)
            .filter(|&p| PieceLengthPolicy::fixed(p).is_ok())
            .unwrap_or_else(|| PieceLengthPolicy::default().piece_length_for(length));
        let meta = MetaInfo::from_reader(file, piece_length)?;
        if meta.digest() != digest {
            return Err(Error::Internal("cached blob does not hash to its digest"));
        }
        layout::write_atomically(&dir.join(layout::METAINFO), &meta.encode())?;
        tracing::info!(%digest, from_version = version, "cached blob's metainfo regenerated");
        Ok(meta)
    }

    /// Adds a blob from a stream in one pass: writes it, computes its metainfo with pieces of
    /// `piece_length` bytes, checks it against `expected` when given, and caches it.
    ///
    /// On a digest mismatch nothing is stored and [`Error::DigestMismatch`] is returned. If the
    /// blob is already cached, the stored copy and its metainfo are kept.
    pub fn import<R: Read>(
        &self,
        mut reader: R,
        piece_length: u64,
        expected: Option<&Digest>,
    ) -> Result<MetaInfo> {
        let staging = self.inner.layout.tmp_path("import");
        layout::create_dir_all(&staging)?;
        let result = (|| {
            let data_path = staging.join(layout::DATA);
            let mut file =
                File::create(&data_path).map_err(|source| Error::io(&data_path, source))?;
            let meta = write_hashing(
                &mut reader,
                &mut file,
                &data_path,
                piece_length,
                &mut vec![0; 1 << 20],
            )?;
            file.sync_data()
                .map_err(|source| Error::io(&data_path, source))?;
            if let Some(expected) = expected
                && expected != meta.digest()
            {
                return Err(Error::DigestMismatch {
                    expected: *expected,
                    actual: *meta.digest(),
                });
            }
            layout::write_atomically(&staging.join(layout::METAINFO), &meta.encode())?;
            layout::sync_dir(&staging)?;
            Ok(meta)
        })();
        let meta = match result {
            Ok(meta) => meta,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        self.inner.install(&staging, meta.digest(), meta.length())?;
        self.metainfo(meta.digest())
    }

    /// Adds the file at `path` by moving it into the store: reads it once to compute its
    /// metainfo with pieces of `piece_length` bytes, checks it against `expected` when given,
    /// then renames it in — no second copy of the bytes when the file is on the store's
    /// filesystem (across filesystems it is copied, and the original removed).
    ///
    /// On a digest mismatch or any failure nothing is stored and the file stays where it
    /// was. If the blob is already cached, the stored copy and its metainfo are kept and the
    /// file is removed.
    pub fn import_file(
        &self,
        path: &Path,
        piece_length: u64,
        expected: Option<&Digest>,
    ) -> Result<MetaInfo> {
        self.import_file_with(path, Hashed::Pieces(piece_length), expected, false)
    }

    /// As [`import_file`](Self::import_file), with the blob [pinned](Self::pin) from the
    /// moment it is cached: no reader, eviction or crash ever sees it cached and unpinned.
    /// (An already cached copy keeps its own pin state.)
    pub fn import_file_pinned(
        &self,
        path: &Path,
        piece_length: u64,
        expected: Option<&Digest>,
    ) -> Result<MetaInfo> {
        self.import_file_with(path, Hashed::Pieces(piece_length), expected, true)
    }

    /// As [`import_file_pinned`](Self::import_file_pinned) for a file whose metainfo the
    /// caller computed from the very bytes it wrote there, in order (a
    /// [`MetaInfoGenerator`] fed as an upload was written): the file is not read again, only
    /// its length checked against `meta`. Fails with [`Error::DigestMismatch`] if `meta` is
    /// not `expected`'s.
    pub fn import_hashed_file_pinned(
        &self,
        path: &Path,
        meta: &MetaInfo,
        expected: &Digest,
    ) -> Result<MetaInfo> {
        let length = fs::metadata(path)
            .map_err(|source| Error::io(path, source))?
            .len();
        if length != meta.length() {
            return Err(Error::Internal("the file's length is not its metainfo's"));
        }
        self.import_file_with(path, Hashed::Already(meta.clone()), Some(expected), true)
    }

    fn import_file_with(
        &self,
        path: &Path,
        hashed: Hashed,
        expected: Option<&Digest>,
        pinned: bool,
    ) -> Result<MetaInfo> {
        let meta = match hashed {
            Hashed::Already(meta) => meta,
            Hashed::Pieces(piece_length) => {
                let file = File::open(path).map_err(|source| Error::io(path, source))?;
                MetaInfo::from_reader(file, piece_length)?
            }
        };
        if let Some(expected) = expected
            && expected != meta.digest()
        {
            return Err(Error::DigestMismatch {
                expected: *expected,
                actual: *meta.digest(),
            });
        }
        let staging = self.inner.layout.tmp_path("import");
        layout::create_dir_all(&staging)?;
        let result = (|| {
            let data_path = staging.join(layout::DATA);
            match fs::rename(path, &data_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    fs::copy(path, &data_path).map_err(|source| Error::io(&data_path, source))?;
                }
                Err(source) => return Err(Error::io(path, source)),
            }
            File::open(&data_path)
                .and_then(|file| file.sync_data())
                .map_err(|source| Error::io(&data_path, source))?;
            if pinned {
                let pin = staging.join(layout::PINNED);
                File::create(&pin).map_err(|source| Error::io(&pin, source))?;
            }
            layout::write_atomically(&staging.join(layout::METAINFO), &meta.encode())?;
            // The entry directory's own entries (data, metainfo, pin) are durable before the
            // directory is renamed into the cache.
            layout::sync_dir(&staging)
        })();
        if let Err(e) = result {
            // Put the file back where the caller had it, so nothing is lost.
            let _ = fs::rename(staging.join(layout::DATA), path);
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        if let Err(e) = self.inner.install(&staging, meta.digest(), meta.length()) {
            let _ = fs::rename(staging.join(layout::DATA), path);
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        let _ = fs::remove_file(path);
        self.metainfo(meta.digest())
    }

    /// Deletes a blob, cached or downloading. Pinned blobs are refused with [`Error::Pinned`].
    /// Returns whether there was anything to delete.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let entry = {
            let mut index = self.inner.index();
            match index.entries.get(digest) {
                None => return Ok(false),
                Some(e) if e.pinned => return Err(Error::Pinned(*digest)),
                Some(_) => {}
            }
            index.active.remove(digest);
            index.entries.remove(digest).expect("checked above")
        };
        let dir = self.inner.layout.entry_dir(entry.state, digest);
        layout::remove_entry(&self.inner.layout, &dir)?;
        Ok(true)
    }

    /// Pins a blob so eviction and [`delete`](Self::delete) leave it alone, until
    /// [`unpin`](Self::unpin). The pin is persisted and survives restarts.
    pub fn pin(&self, digest: &Digest) -> Result<()> {
        self.set_pinned(digest, true)
    }

    /// Removes a pin. Unpinning an unpinned blob does nothing.
    pub fn unpin(&self, digest: &Digest) -> Result<()> {
        self.set_pinned(digest, false)
    }

    /// Whether a blob is pinned.
    pub fn is_pinned(&self, digest: &Digest) -> bool {
        self.inner
            .index()
            .entries
            .get(digest)
            .is_some_and(|e| e.pinned)
    }

    /// When a blob was last opened or added, or `None` if it is not in the store.
    pub fn last_access(&self, digest: &Digest) -> Option<SystemTime> {
        self.inner
            .index()
            .entries
            .get(digest)
            .map(|e| e.last_access)
    }

    /// When a cached blob's bytes were written on this host (its data file's modification
    /// time), or `None` if it is not cached here (or a reference outside the store). Unlike
    /// [`open_blob`](Self::open_blob) it does not count as an access, so asking leaves
    /// eviction's idle clock alone; the origins' garbage collector reads a blob's age here.
    pub fn written_at(&self, digest: &Digest) -> Option<SystemTime> {
        let dir = {
            let index = self.inner.index();
            let entry = index.entries.get(digest)?;
            if entry.state != State::Cache || entry.is_referenced() {
                return None;
            }
            self.inner.layout.entry_dir(State::Cache, digest)
        };
        fs::metadata(dir.join(layout::DATA))
            .and_then(|meta| meta.modified())
            .ok()
    }

    /// Byte and blob counts.
    pub fn usage(&self) -> StoreUsage {
        let index = self.inner.index();
        let mut usage = StoreUsage::default();
        for entry in index.entries.values() {
            match entry.state {
                State::Cache if entry.is_referenced() => {
                    usage.referenced_blobs += 1;
                    usage.referenced_bytes += entry.length;
                }
                State::Cache => {
                    usage.cached_blobs += 1;
                    usage.cached_bytes += entry.length;
                }
                State::Download => {
                    usage.downloading_blobs += 1;
                    usage.downloading_bytes += entry.length;
                }
            }
        }
        usage
    }

    /// The digests of all cached blobs.
    pub fn cached(&self) -> Vec<Digest> {
        let index = self.inner.index();
        let mut digests: Vec<Digest> = index
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Cache)
            .map(|(d, _)| *d)
            .collect();
        digests.sort();
        digests
    }

    fn set_pinned(&self, digest: &Digest, pinned: bool) -> Result<()> {
        let mut index = self.inner.index();
        let entry = index
            .entries
            .get_mut(digest)
            .ok_or(Error::NotFound(*digest))?;
        let path = self
            .inner
            .layout
            .entry_dir(entry.state, digest)
            .join(layout::PINNED);
        let result = if pinned {
            File::create(&path).map(drop)
        } else {
            match fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        result.map_err(|source| Error::io(&path, source))?;
        entry.pinned = pinned;
        Ok(())
    }
}

/// An imported file's metainfo: computed by the caller as the bytes were written, or to
/// compute by reading it with pieces of this length.
enum Hashed {
    Already(MetaInfo),
    Pieces(u64),
}

impl Index {
    /// Whether a blob exists, is not pinned and has no live download handle.
    fn evictable(&self, digest: &Digest) -> bool {
        let live = self
            .active
            .get(digest)
            .is_some_and(|w| w.strong_count() > 0);
        self.entries.get(digest).is_some_and(|e| !e.pinned) && !live
    }
}

impl StoreInner {
    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Records an access; writes it to disk when the persisted one is old enough.
    fn touch(&self, digest: &Digest, now: SystemTime) {
        let persist = {
            let mut index = self.index();
            let Some(entry) = index.entries.get_mut(digest) else {
                return;
            };
            entry.last_access = entry.last_access.max(now);
            let stale = now
                .duration_since(entry.persisted_access)
                .is_ok_and(|age| age >= self.config.access_persist_interval);
            if stale && entry.state == State::Cache {
                entry.persisted_access = now;
            }
            stale && entry.state == State::Cache
        };
        if persist {
            let path = self
                .layout
                .entry_dir(State::Cache, digest)
                .join(layout::LAST_ACCESS);
            // Losing an access time only makes eviction slightly less accurate.
            if let Err(e) = layout::write_atomically(&path, &layout::encode_time(now)) {
                tracing::warn!(error = %e, "failed to persist last access time");
            }
        }
    }

    /// Moves a fully written and verified entry directory into `cache/`. If the blob is
    /// already cached, the existing copy wins and `source_dir` is removed.
    fn install(&self, source_dir: &Path, digest: &Digest, length: u64) -> Result<()> {
        self.install_with(source_dir, digest, length, true)
    }

    /// [`install`](Self::install); without `durable`, nothing is `fsync`ed and no access
    /// time is written (the data file's mtime stands for it): the caller syncs the whole
    /// file system once for many entries ([`BlobStore::import_batch`]).
    fn install_with(
        &self,
        source_dir: &Path,
        digest: &Digest,
        length: u64,
        durable: bool,
    ) -> Result<()> {
        let target = self.layout.entry_dir(State::Cache, digest);
        let mut index = self.index();
        if matches!(index.entries.get(digest), Some(e) if e.state == State::Cache) {
            drop(index);
            return layout::remove_entry(&self.layout, source_dir);
        }
        let pinned = source_dir.join(layout::PINNED).exists();
        // A stale download of the same blob is superseded by the complete copy.
        if matches!(index.entries.get(digest), Some(e) if e.state == State::Download)
            && source_dir != self.layout.entry_dir(State::Download, digest)
        {
            let stale = self.layout.entry_dir(State::Download, digest);
            layout::remove_entry(&self.layout, &stale)?;
        }
        if let Some(parent) = target.parent() {
            if durable {
                layout::create_dir_all_synced(parent)?;
            } else {
                layout::create_dir_all(parent)?;
            }
        }
        fs::rename(source_dir, &target).map_err(|source| Error::io(&target, source))?;
        // The rename is what makes the blob cached: it must survive a power failure before
        // anyone is told the blob is here.
        if durable && let Some(parent) = target.parent() {
            layout::sync_dir(parent)?;
        }
        let _ = fs::remove_file(target.join(layout::BITFIELD));
        let now = SystemTime::now();
        if durable {
            let _ = layout::write_atomically(
                &target.join(layout::LAST_ACCESS),
                &layout::encode_time(now),
            );
        }
        index.entries.insert(
            *digest,
            Entry {
                state: State::Cache,
                length,
                last_access: now,
                persisted_access: now,
                pinned,
                reference: Reference::load(&target),
                external: false,
            },
        );
        index.active.remove(digest);
        Ok(())
    }
}

/// Reads an entry's bookkeeping; `None` if it has no data file (a crash while creating it)
/// and no reference to one.
fn load_entry(state: State, dir: &Path) -> Option<Entry> {
    let reference = (state == State::Cache)
        .then(|| Reference::load(dir))
        .flatten();
    let (length, modified) = match &reference {
        Some(r) => (r.size, SystemTime::now()),
        None => {
            let metadata = fs::metadata(dir.join(layout::DATA)).ok()?;
            let modified = metadata.modified().unwrap_or_else(|_| SystemTime::now());
            (metadata.len(), modified)
        }
    };
    let last_access = match state {
        State::Cache => layout::read_bounded(&dir.join(layout::LAST_ACCESS), 8)
            .ok()
            .flatten()
            .and_then(|b| layout::decode_time(&b))
            .unwrap_or(modified),
        State::Download => modified,
    };
    Some(Entry {
        state,
        length,
        last_access,
        persisted_access: last_access,
        pinned: dir.join(layout::PINNED).exists(),
        reference,
        external: false,
    })
}

/// Copies `reader` into `file` (at `path`, for errors) through `buf`, computing the
/// metainfo with pieces of `piece_length` bytes on the way: one pass over the bytes.
fn write_hashing(
    reader: &mut impl Read,
    file: &mut File,
    path: &Path,
    piece_length: u64,
    buf: &mut [u8],
) -> Result<MetaInfo> {
    let mut generator = MetaInfoGenerator::new(piece_length)?;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Read(e)),
        };
        file.write_all(&buf[..n])
            .map_err(|source| Error::io(path, source))?;
        generator.update(&buf[..n]);
    }
    generator.finish()
}

/// Whether the entry directory holding `file` keeps its bytes elsewhere.
fn dir_is_referenced(file: &Path) -> bool {
    file.parent()
        .is_some_and(|dir| dir.join(layout::REFERENCE).exists())
}

fn max_metainfo_len() -> u64 {
    (HEADER_LEN + MAX_PIECE_COUNT as usize * 32) as u64
}

/// Locks a mutex, recovering from poisoning: every critical section in this module leaves the
/// protected state consistent before doing anything that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
