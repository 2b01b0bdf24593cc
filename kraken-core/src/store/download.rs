//! A blob being downloaded piece by piece.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use super::blob::Blob;
use super::external::{self, External};
use super::layout::{self, State};
use super::positional;
use super::reference::Reference;
use super::{BlobStore, Entry, StoreInner, lock, max_metainfo_len};
use crate::bitfield::Bitfield;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::metainfo::{MetaInfo, PieceIndex};

/// A download in progress: a cheap, cloneable handle shared by everyone working on the blob.
///
/// Pieces are written with [`write_piece`](Self::write_piece), which checks each against its
/// hash first; verified pieces can be read back at once (to serve other peers, or a client
/// streaming the blob). [`finish`](Self::finish) moves the blob into the cache once its bytes
/// are known to hash to its digest: checking every piece computes that digest (see
/// [`MetaInfo::verify_piece`]), so only pieces taken on trust from an earlier run are read
/// again. Like the rest of the store, every method blocks.
#[derive(Clone, Debug)]
pub struct Download {
    shared: Arc<DownloadShared>,
}

#[derive(Debug)]
pub(super) struct DownloadShared {
    store: Arc<StoreInner>,
    meta: MetaInfo,
    dir: PathBuf,
    data: File,
    /// Held while a piece is written: the kernel serialises writes to one file anyway, and a
    /// writer that sleeps here costs less than one spinning on the inode's lock (without it, a
    /// measurable share of a fetcher's CPU went to that spinning; `docs/benchmarks.md`).
    writing: Mutex<()>,
    progress: Mutex<Progress>,
    /// Held for the whole of `finish`, so concurrent callers verify the blob once.
    finishing: Mutex<Option<Blob>>,
    /// Whether pieces were resumed from disk without being hashed
    /// ([`StoreConfig::verify_on_resume`](super::StoreConfig::verify_on_resume) off): then
    /// `finish` hashes the whole blob, since those pieces were never checked.
    resumed_unhashed: bool,
    /// Set when the data file is beside the caller's destination rather than in `dir`
    /// ([`BlobStore::begin_download_to`](super::BlobStore::begin_download_to)).
    external: Option<External>,
}

#[derive(Debug)]
pub(super) struct Progress {
    have: Bitfield,
    bitfield_file: File,
}

impl Download {
    pub(super) fn from_shared(shared: Arc<DownloadShared>) -> Self {
        Self { shared }
    }

    /// Checks `data` against piece `index`'s length and hash, then writes it and records it.
    ///
    /// Returns `false` if the piece was already there (nothing is written). A piece that does
    /// not match its hash is refused with [`Error::PieceHashMismatch`] and never touches the
    /// disk.
    pub fn write_piece(&self, index: PieceIndex, data: &[u8]) -> Result<bool> {
        let shared = &*self.shared;
        shared.meta.verify_piece(index, data)?;
        if self.has_piece(index) {
            return Ok(false);
        }
        let offset = shared.meta.piece_range(index).start;
        let writing = lock(&shared.writing);
        shared
            .data
            .write_all_at(data, offset)
            .map_err(|source| Error::io(&shared.data_path(), source))?;
        drop(writing);
        let mut progress = lock(&shared.progress);
        if !progress.have.set(index.get())? {
            // Another writer recorded the same piece meanwhile; it wrote the same bytes.
            return Ok(false);
        }
        // Persisted under the lock: pieces sharing a bitfield byte must not overwrite each
        // other's bits on disk.
        let (offset, byte) = progress.have.byte_of(index.get())?;
        let persisted = progress.bitfield_file.write_all_at(&[byte], offset as u64);
        if let Err(source) = persisted {
            progress.have.unset(index.get())?;
            return Err(Error::io(&shared.dir.join(layout::BITFIELD), source));
        }
        drop(progress);
        shared.store.touch_download(&shared.meta);
        Ok(true)
    }

    /// Starts writing piece `index` to the disk without waiting for it (a hint; a no-op off
    /// Linux, and for a piece not written yet). A caller that does this for every piece it
    /// writes leaves [`finish`](Self::finish) only the last pieces' writes to wait for, not
    /// everything written since the last [`write_back`](Self::write_back).
    pub fn start_write_back(&self, index: PieceIndex) {
        let range = self.shared.meta.piece_range(index);
        positional::start_write_back(&self.shared.data, range.start, range.end - range.start);
    }

    /// Makes the pieces written so far durable (`fdatasync`). [`finish`](Self::finish) does
    /// this too; calling it as the download goes (say every 64 MiB) lets the disk write while
    /// pieces still arrive, so that `finish` does not wait for the whole blob to reach it.
    ///
    /// Returns how many bytes from the start of the blob are now durable: the pieces before
    /// the first one missing when it was called (see [`drop_cached`](Self::drop_cached)).
    pub fn write_back(&self) -> Result<u64> {
        let shared = &*self.shared;
        let durable = match lock(&shared.progress).have.iter_zeros().next() {
            Some(missing) => u64::from(missing) * shared.meta.piece_length(),
            None => shared.meta.length(),
        };
        shared
            .data
            .sync_data()
            .map_err(|source| Error::io(&shared.data_path(), source))?;
        Ok(durable)
    }

    /// Asks the kernel to drop the blob's first `end` bytes from the page cache (a hint; a
    /// no-op off Linux). Only durable bytes ([`write_back`](Self::write_back)) are dropped:
    /// dirty pages stay. A download's reader that does not read the blob again (an agent
    /// whose client keeps its own copy) then keeps a bounded page-cache footprint, and its
    /// next pieces reuse the memory just freed instead of taking more.
    pub fn drop_cached(&self, end: u64) {
        positional::drop_cached(&self.shared.data, 0..end.min(self.shared.meta.length()));
    }

    /// The blob's metainfo.
    pub fn meta(&self) -> &MetaInfo {
        &self.shared.meta
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        self.shared.meta.digest()
    }

    /// Where [`finish`](Self::finish) puts the blob when its pieces are written outside the
    /// store, beside it ([`BlobStore::begin_download_to`]); `None` for a download into the
    /// store.
    pub fn destination(&self) -> Option<&Path> {
        self.shared.external.as_ref().map(|e| e.dest.as_path())
    }

    /// A snapshot of the verified pieces.
    pub fn bitfield(&self) -> Bitfield {
        lock(&self.shared.progress).have.clone()
    }

    /// Whether a piece has been verified and written.
    pub fn has_piece(&self, index: PieceIndex) -> bool {
        lock(&self.shared.progress).have.get(index.get())
    }

    /// Whether every piece is present (the blob may still fail [`finish`](Self::finish) if its
    /// metainfo was wrong).
    pub fn is_complete(&self) -> bool {
        lock(&self.shared.progress).have.is_full()
    }

    /// Reads `buf.len()` bytes at `offset` of the blob, if every piece they fall in has been
    /// verified; otherwise fails with [`Error::PieceMissing`] naming the first missing piece.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.verified_file(offset..offset.saturating_add(buf.len() as u64))?
            .read_exact_at(buf, offset)
            .map_err(|source| Error::io(&self.shared.data_path(), source))
    }

    /// `len` verified bytes from `offset` in a new buffer (not zeroed before the read: see
    /// [`read_vec_at`](super::read_vec_at)); [`Error::PieceMissing`] if a piece the range
    /// falls in is not verified yet.
    pub fn read_vec_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let file = self.verified_file(offset..offset.saturating_add(len as u64))?;
        super::read_vec_at(file, offset, len)
            .map_err(|source| Error::io(&self.shared.data_path(), source))
    }

    /// The data file, once every piece that `range` falls in has been verified (otherwise
    /// [`Error::PieceMissing`] naming the first missing piece): for zero-copy sends
    /// (`sendfile`) of verified bytes. The file stays valid after [`finish`](Self::finish)
    /// moves it into the cache. Bytes outside verified pieces are not the blob's.
    pub fn verified_file(&self, range: std::ops::Range<u64>) -> Result<&File> {
        let meta = &self.shared.meta;
        let (offset, end) = (range.start, range.end.max(range.start));
        if end > meta.length() {
            return Err(Error::PieceIndexOutOfRange {
                index: meta.pieces_covering(offset..end).end,
                count: meta.piece_count(),
            });
        }
        {
            let progress = lock(&self.shared.progress);
            if let Some(index) = meta
                .pieces_covering(offset..end)
                .find(|&i| !progress.have.get(i))
            {
                return Err(Error::PieceMissing { index });
            }
        }
        Ok(&self.shared.data)
    }

    /// Reads one verified piece.
    pub fn read_piece(&self, index: PieceIndex) -> Result<Vec<u8>> {
        let range = self.shared.meta.piece_range(index);
        self.read_vec_at(range.start, (range.end - range.start) as usize)
    }

    /// Moves the blob into the cache once its bytes are known to hash to its digest.
    ///
    /// Every piece written here was checked, and checking every piece computes the blob's
    /// SHA-256; pieces resumed without a check make this hash the whole blob again.
    /// Fails with [`Error::Incomplete`] while pieces are missing. If the bytes do not hash to
    /// the digest, the download is discarded and [`Error::DigestMismatch`] returned: the blob
    /// never reaches the cache. Calling it again after success returns the cached blob.
    pub fn finish(&self) -> Result<Blob> {
        let shared = &*self.shared;
        let mut finished = lock(&shared.finishing);
        if let Some(blob) = &*finished {
            return Ok(blob.clone());
        }
        let missing = lock(&shared.progress).have.count_zeros();
        if missing > 0 {
            return Err(Error::Incomplete {
                digest: *self.digest(),
                missing,
            });
        }
        let data_path = shared.data_path();
        let actual = if shared.resumed_unhashed {
            self.hash_whole_blob()
                .map_err(|source| Error::io(&data_path, source))?
        } else {
            *self.digest()
        };
        if actual != *self.digest() {
            tracing::warn!(digest = %self.digest(), %actual, "downloaded blob does not match its digest; discarding");
            shared.store.discard_download(self.digest())?;
            if let Some(external) = &shared.external {
                let _ = fs::remove_file(&external.partial);
            }
            return Err(Error::DigestMismatch {
                expected: *self.digest(),
                actual,
            });
        }
        shared
            .data
            .sync_data()
            .map_err(|source| Error::io(&data_path, source))?;
        let owned = shared.external.is_none();
        let cached = match &shared.external {
            None => {
                shared
                    .store
                    .install(&shared.dir, self.digest(), shared.meta.length())?;
                shared
                    .store
                    .layout
                    .entry_dir(State::Cache, self.digest())
                    .join(layout::DATA)
            }
            Some(external) => self.install_external(external)?,
        };
        let file = File::open(&cached).map_err(|source| Error::io(&cached, source))?;
        let blob = Blob::new(*self.digest(), shared.meta.length(), file, cached, owned);
        *finished = Some(blob.clone());
        Ok(blob)
    }

    /// Puts a verified external data file in place and caches the blob by reference to it;
    /// returns where it is. The reference is written before the directory is installed, so
    /// a crash leaves either a download (discarded on reopen, the file at the destination
    /// complete but forgotten) or a cached reference.
    fn install_external(&self, external: &External) -> Result<PathBuf> {
        let shared = &*self.shared;
        let dest = &external.dest;
        fs::rename(&external.partial, dest).map_err(|source| Error::io(dest, source))?;
        if let Some(parent) = dest.parent() {
            layout::sync_dir(parent)?;
        }
        let metadata = fs::metadata(dest).map_err(|source| Error::io(dest, source))?;
        let reference = Reference::of(dest.clone(), &metadata);
        layout::write_atomically(&shared.dir.join(layout::REFERENCE), &reference.encode())?;
        shared
            .store
            .install(&shared.dir, self.digest(), shared.meta.length())?;
        let installed = shared.store.layout.entry_dir(State::Cache, self.digest());
        let _ = fs::remove_file(installed.join(layout::EXTERNAL));
        Ok(dest.clone())
    }

    /// The SHA-256 of the data file, read piece by piece.
    fn hash_whole_blob(&self) -> std::io::Result<Digest> {
        let meta = &self.shared.meta;
        let mut hasher = Hasher::new();
        let mut piece = Vec::new();
        for index in meta.pieces() {
            let range = meta.piece_range(index);
            piece.resize((range.end - range.start) as usize, 0);
            self.shared.data.read_exact_at(&mut piece, range.start)?;
            hasher.update(&piece);
        }
        Ok(hasher.finalize())
    }
}

impl DownloadShared {
    /// Resumes the download in `dir` if it was started with the same metainfo, otherwise
    /// starts afresh there.
    pub(super) fn open_or_create(
        store: Arc<StoreInner>,
        meta: &MetaInfo,
        dir: PathBuf,
    ) -> Result<Self> {
        let verify = store.config.verify_on_resume;
        let resumed = match resume(meta, &dir, verify) {
            Ok(resumed) => resumed,
            Err(e) => {
                tracing::warn!(digest = %meta.digest(), error = %e, "cannot resume download; starting afresh");
                None
            }
        };
        let (data, progress) = match resumed {
            Some(parts) => parts,
            None => create(&store, meta, &dir)?,
        };
        let resumed_unhashed = !verify && progress.have.count_ones() > 0;
        Ok(Self::new(
            store,
            meta,
            dir,
            (data, progress),
            resumed_unhashed,
            None,
        ))
    }

    /// Starts afresh in `dir` a download whose data file is beside `dest`, outside the
    /// store ([`external`]).
    pub(super) fn create_external(
        store: Arc<StoreInner>,
        meta: &MetaInfo,
        dir: PathBuf,
        dest: PathBuf,
    ) -> Result<Self> {
        let (data, progress, external) = external::create(&store, meta, &dir, dest)?;
        Ok(Self::new(
            store,
            meta,
            dir,
            (data, progress),
            false,
            Some(external),
        ))
    }

    fn new(
        store: Arc<StoreInner>,
        meta: &MetaInfo,
        dir: PathBuf,
        (data, progress): (File, Progress),
        resumed_unhashed: bool,
        external: Option<External>,
    ) -> Self {
        Self {
            store,
            meta: meta.clone(),
            dir,
            data,
            writing: Mutex::new(()),
            progress: Mutex::new(progress),
            finishing: Mutex::new(None),
            resumed_unhashed,
            external,
        }
    }

    /// Where the data file is (for errors).
    fn data_path(&self) -> PathBuf {
        match &self.external {
            Some(external) => external.partial.clone(),
            None => self.dir.join(layout::DATA),
        }
    }

    pub(super) fn meta(&self) -> &MetaInfo {
        &self.meta
    }

    pub(super) fn is_external(&self) -> bool {
        self.external.is_some()
    }
}

impl BlobStore {
    /// Starts or resumes downloading the blob `meta` describes.
    ///
    /// A download already on disk with the same metainfo resumes with the pieces it has
    /// (after re-hashing them, see
    /// [`StoreConfig::verify_on_resume`](super::StoreConfig::verify_on_resume)); one with a
    /// different metainfo is discarded. Callers asking for the same blob at once share one
    /// download. Fails with [`Error::AlreadyComplete`] if the blob is already cached.
    pub fn begin_download(&self, meta: &MetaInfo) -> Result<Download> {
        self.begin(meta, None)
    }

    /// [`begin_download`](Self::begin_download), writing a new download's data file beside
    /// `external` (outside the store) when given; a download already open or on disk is
    /// shared or resumed where it is.
    pub(super) fn begin(&self, meta: &MetaInfo, external: Option<PathBuf>) -> Result<Download> {
        let opening = lock(&self.inner.opening);
        let digest = *meta.digest();
        let (existing, on_disk) = {
            let index = self.inner.index();
            if matches!(index.entries.get(&digest), Some(e) if e.state == State::Cache) {
                return Err(Error::AlreadyComplete(digest));
            }
            // A download written outside the store is never resumed: one left here is
            // started afresh over.
            let on_disk = index.entries.get(&digest).is_some_and(|e| !e.external);
            (index.active.get(&digest).and_then(Weak::upgrade), on_disk)
        };
        if let Some(shared) = existing {
            // The locks go first: dropping the last handle of a download outside the store
            // tries `opening` to remove its entry (see `DownloadShared`'s `Drop`).
            drop(opening);
            if shared.meta().info_hash() != meta.info_hash() {
                return Err(Error::MetaInfoConflict(digest));
            }
            return Ok(Download::from_shared(shared));
        }
        let dir = self.inner.layout.entry_dir(State::Download, &digest);
        let inner = Arc::clone(&self.inner);
        let shared = Arc::new(match external {
            Some(dest) if !on_disk => DownloadShared::create_external(inner, meta, dir, dest)?,
            _ => DownloadShared::open_or_create(inner, meta, dir)?,
        });
        let mut index = self.inner.index();
        let now = SystemTime::now();
        let pinned = index.entries.get(&digest).is_some_and(|e| e.pinned);
        index.entries.insert(
            digest,
            Entry {
                state: State::Download,
                length: meta.length(),
                last_access: now,
                persisted_access: now,
                pinned,
                reference: None,
                external: shared.is_external(),
            },
        );
        index.active.insert(digest, Arc::downgrade(&shared));
        Ok(Download::from_shared(shared))
    }
}

impl Drop for DownloadShared {
    /// A download outside the store lives only as long as its handles (see [`external`]):
    /// unfinished, its entry and its partial file go with the last one.
    fn drop(&mut self) {
        let Some(external) = &self.external else {
            return;
        };
        let finishing = self
            .finishing
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if finishing.is_some() {
            return;
        }
        match fs::remove_file(&external.partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %external.partial.display(), error = %e, "could not remove a partial file");
            }
            _ => {
                tracing::debug!(path = %external.partial.display(), "removed an unfinished download's partial file");
            }
        }
        let digest = *self.meta.digest();
        // The entry goes under `opening`, so that a download of the blob begun meanwhile (in
        // the same entry directory) is either seen here and left alone, or begins after
        // this. That lock can be held for seconds (resuming a download re-hashes its
        // pieces), and this may run on an async task: when it is taken, the entry is left
        // to the next download of the blob (which starts afresh over it), eviction, or the
        // next start.
        let opening = match self.store.opening.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let ours = {
            let mut index = self.store.index();
            let me: *const Self = self;
            let ours = index
                .active
                .get(&digest)
                .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), me));
            if ours {
                index.active.remove(&digest);
                index.entries.remove(&digest);
            }
            ours
        };
        if ours && let Err(e) = layout::remove_entry(&self.store.layout, &self.dir) {
            tracing::warn!(error = %e, "could not remove an abandoned download");
        }
        drop(opening);
    }
}

impl StoreInner {
    fn touch_download(&self, meta: &MetaInfo) {
        if let Some(entry) = self.index().entries.get_mut(meta.digest()) {
            entry.last_access = SystemTime::now();
        }
    }

    fn discard_download(&self, digest: &Digest) -> Result<()> {
        {
            let mut index = self.index();
            index.active.remove(digest);
            index.entries.remove(digest);
        }
        layout::remove_entry(
            &self.layout,
            &self.layout.entry_dir(State::Download, digest),
        )
    }
}

/// Opens an existing download in `dir` if its metainfo matches `meta`.
fn resume(meta: &MetaInfo, dir: &Path, verify: bool) -> Result<Option<(File, Progress)>> {
    let Some(stored) = layout::read_bounded(&dir.join(layout::METAINFO), max_metainfo_len())?
    else {
        return Ok(None);
    };
    if MetaInfo::decode(&stored)?.info_hash() != meta.info_hash() {
        tracing::info!(digest = %meta.digest(), "stored download has another metainfo; restarting it");
        return Ok(None);
    }
    let data_path = dir.join(layout::DATA);
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data_path)
        .map_err(|source| Error::io(&data_path, source))?;
    let bitfield_path = dir.join(layout::BITFIELD);
    let bitfield_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bitfield_path)
        .map_err(|source| Error::io(&bitfield_path, source))?;
    let limit = crate::bitfield::encoded_len(meta.piece_count()) as u64;
    let bytes = layout::read_bounded(&bitfield_path, limit)?.unwrap_or_default();
    let mut have = Bitfield::from_bytes(meta.piece_count(), &bytes)?;
    data.set_len(meta.length())
        .map_err(|source| Error::io(&data_path, source))?;
    if verify {
        let mut dropped = 0;
        for index in have.iter_ones().collect::<Vec<_>>() {
            let piece = meta.piece_index(index)?;
            let range = meta.piece_range(piece);
            let intact = super::read_vec_at(&data, range.start, (range.end - range.start) as usize)
                .is_ok_and(|buf| meta.verify_piece(piece, &buf).is_ok());
            if !intact {
                have.unset(index)?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(digest = %meta.digest(), dropped, "resumed download had pieces that failed verification");
            bitfield_file
                .write_all_at(have.as_bytes(), 0)
                .map_err(|source| Error::io(&bitfield_path, source))?;
        }
    }
    tracing::debug!(digest = %meta.digest(), have = have.count_ones(), of = have.len(), "resumed download");
    Ok(Some((
        data,
        Progress {
            have,
            bitfield_file,
        },
    )))
}

/// Sizes a fresh data file to `length`, reserving its blocks where the file system can, so
/// that a download fails at once on a full disk instead of midway and its file is not
/// fragmented by other writers. File systems without `fallocate` get a sparse file.
pub(super) fn reserve_space(data: &File, length: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if length > 0 {
        match rustix::fs::fallocate(data, rustix::fs::FallocateFlags::empty(), 0, length) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::NOSPC => return Err(e.into()),
            Err(e) => tracing::debug!(error = %e, "fallocate unavailable; the data file is sparse"),
        }
    }
    data.set_len(length)
}

/// Creates a fresh download directory: metainfo, pre-sized data file, empty bitfield.
fn create(store: &StoreInner, meta: &MetaInfo, dir: &Path) -> Result<(File, Progress)> {
    layout::remove_entry(&store.layout, dir)?;
    layout::create_dir_all(dir)?;
    let data_path = dir.join(layout::DATA);
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&data_path)
        .map_err(|source| Error::io(&data_path, source))?;
    reserve_space(&data, meta.length()).map_err(|source| Error::io(&data_path, source))?;
    Ok((data, start_progress(meta, dir)?))
}

/// Writes a fresh download's empty bitfield, then its metainfo, into `dir` (its data file
/// made already).
pub(super) fn start_progress(meta: &MetaInfo, dir: &Path) -> Result<Progress> {
    let have = Bitfield::new(meta.piece_count());
    let bitfield_path = dir.join(layout::BITFIELD);
    layout::write_atomically(&bitfield_path, have.as_bytes())?;
    let bitfield_file = OpenOptions::new()
        .write(true)
        .open(&bitfield_path)
        .map_err(|source| Error::io(&bitfield_path, source))?;
    // Written last: a directory with a valid metainfo has its data and bitfield files.
    layout::write_atomically(&dir.join(layout::METAINFO), &meta.encode())?;
    Ok(Progress {
        have,
        bitfield_file,
    })
}
