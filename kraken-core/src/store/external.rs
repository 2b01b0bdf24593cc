//! Downloads written straight to a caller's path on another file system.
//!
//! [`BlobStore::export`] moves a downloaded blob out of the store with a rename, so its bytes
//! are written once — but only when the destination is on the store's file system; elsewhere
//! it must copy them, a second full write. [`BlobStore::begin_download_to`] avoids that: when
//! the destination's directory is on another file system, the download's data file is not
//! `data` in the entry directory but a temporary file beside the destination
//! (`.NAME.kraken-partial-NONCE`, see [`partial_path`]). Pieces are verified and written as
//! for any download; [`Download::finish`] renames the file into place and caches the blob
//! **by reference** to it (see [`reference`](super::reference)), so the node can go on
//! seeding it.
//!
//! The entry directory under `download/` holds the metainfo and bitfield as usual, and an
//! `external` record naming the destination and the partial file's nonce, written (and made
//! durable) before the partial file is created: a partial file the store made is always
//! recorded.
//!
//! # Lifetime: no resume
//!
//! Such a download lives only as long as its [`Download`] handles. When the last handle goes
//! without the download having finished — it failed, was cancelled, or its digest did not
//! match — the partial file and the entry are removed. After a crash, opening the store
//! removes every download with an `external` record and its partial file. A partial file
//! sits in the caller's directory, not the store's, and nothing but the caller that asked
//! for that path knows whether it is still wanted there; resuming it would also make a
//! later plain download of the blob land at a path its caller did not choose. Pieces are
//! fetched again instead.

use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::download::{Download, Progress, reserve_space, start_progress};
use super::layout::{self, Layout};
use super::reference::{self, Destination};
use super::{BlobStore, StoreInner};
use crate::error::{Error, Result};
use crate::metainfo::MetaInfo;

/// First line of an `external` record, naming its format.
const MAGIC: &[u8] = b"kraken-external 1\n";
/// Most bytes of an `external` record (a path of up to 4 KiB plus a nonce).
const MAX_LEN: u64 = 8192;

/// Where a download's bytes go when they are written outside the store.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct External {
    /// The caller's destination (absolute, through its canonical directory).
    pub(super) dest: PathBuf,
    /// The temporary file beside `dest` the pieces are written to.
    pub(super) partial: PathBuf,
    nonce: u64,
}

impl External {
    fn new(dest: PathBuf, nonce: u64) -> Self {
        let partial = reference::partial_path(&dest, nonce);
        Self {
            dest,
            partial,
            nonce,
        }
    }

    /// The record: the nonce, not the partial file's name, so that whatever a record says
    /// it can only name a `.NAME.kraken-partial-NONCE` file beside its destination, never
    /// somebody else's file.
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(format!("{:016x}\n", self.nonce).as_bytes());
        out.extend_from_slice(self.dest.as_os_str().as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let mut parts = rest.splitn(2, |&b| b == b'\n');
        let nonce = std::str::from_utf8(parts.next()?).ok()?;
        let nonce = (nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(nonce, 16).ok())
            .flatten()?;
        let dest = PathBuf::from(std::ffi::OsStr::from_bytes(parts.next()?));
        (dest.is_absolute() && dest.file_name().is_some()).then(|| Self::new(dest, nonce))
    }

    /// The record in an entry directory, if it has one.
    fn load(dir: &Path) -> Option<Self> {
        let bytes = layout::read_bounded(&dir.join(layout::EXTERNAL), MAX_LEN)
            .ok()
            .flatten()?;
        let external = Self::decode(&bytes);
        if external.is_none() {
            tracing::warn!(dir = %dir.display(), "ignoring unreadable external download record");
        }
        external
    }
}

impl BlobStore {
    /// Starts downloading the blob `meta` describes so that it ends up at `dest` with each of
    /// its bytes written once, wherever `dest` is.
    ///
    /// When `dest`'s directory is on the store's file system, or a download of the blob is
    /// already open or on disk (its pieces are kept), this is
    /// [`begin_download`](Self::begin_download): the bytes go into the store and
    /// [`export`](Self::export) later moves them to `dest` with a rename. Otherwise the
    /// pieces are written to a temporary file beside `dest`, and
    /// [`Download::finish`] renames it to `dest` (replacing a regular file there) and keeps
    /// the blob cached **by reference** to it, as `export` would have. Such a download is
    /// not resumed: when its last handle is dropped unfinished, or the store is reopened
    /// after a crash, the temporary file is removed. (It sits in the caller's directory,
    /// where only the caller knows whether it is still wanted; and a resumed one would make
    /// a later plain download of the blob land at a path its caller did not choose.)
    ///
    /// Fails with [`Error::AlreadyComplete`] if the blob is already cached (then `export`
    /// it), and as [`begin_download`](Self::begin_download) does.
    pub fn begin_download_to(&self, meta: &MetaInfo, dest: &Path) -> Result<Download> {
        let destination = Destination::resolve(dest)?;
        let store_device = device(self.root())?;
        if device(&destination.parent)? == store_device {
            return self.begin_download(meta);
        }
        self.begin(meta, Some(destination.dest))
    }
}

/// The device (file system) a path is on.
fn device(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|source| Error::io(path, source))
}

/// Creates a fresh download of `meta` in `dir` whose data file is a new partial file beside
/// `dest`. The record is durable before the partial file exists.
pub(super) fn create(
    store: &StoreInner,
    meta: &MetaInfo,
    dir: &Path,
    dest: PathBuf,
) -> Result<(fs::File, Progress, External)> {
    layout::remove_entry(&store.layout, dir)?;
    layout::create_dir_all(dir)?;
    let external = External::new(dest, rand::random());
    layout::write_atomically(&dir.join(layout::EXTERNAL), &external.encode())?;
    layout::sync_dir(dir)?;
    let partial = &external.partial;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(|source| Error::io(partial, source));
    let result = created.and_then(|data| {
        reserve_space(&data, meta.length()).map_err(|source| Error::io(partial, source))?;
        Ok((data, start_progress(meta, dir)?))
    });
    match result {
        Ok((data, progress)) => Ok((data, progress, external)),
        Err(e) => {
            let _ = fs::remove_file(partial);
            let _ = layout::remove_entry(&store.layout, dir);
            Err(e)
        }
    }
}

/// Removes a download left by an earlier run whose data file was outside the store (see the
/// [module docs](self) for why it is not resumed), with that file. Returns whether `dir` was
/// such a download.
pub(super) fn discard_leftover(layout: &Layout, dir: &Path) -> Result<bool> {
    if !dir.join(layout::EXTERNAL).exists() {
        return Ok(false);
    }
    if let Some(external) = External::load(dir) {
        tracing::warn!(
            partial = %external.partial.display(),
            "removing a download to another file system interrupted by a restart"
        );
        match fs::remove_file(&external.partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&external.partial, e));
            }
            _ => {}
        }
    }
    layout::remove_entry(layout, dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::store::layout::State;
    use crate::store::{BlobStatus, StoreConfig};

    const PIECE: u64 = 4096;

    /// A store under `/tmp`, a directory on another file system for its downloads to go to,
    /// and a blob of 11 pieces (the last short).
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: BlobStore,
        out: tempfile::TempDir,
        content: Vec<u8>,
        meta: MetaInfo,
    }

    impl Fixture {
        /// `None` (the test skipped) without a second file system; see `other_file_system`.
        fn new(config: StoreConfig) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            let store = BlobStore::open_with_config(&root, config).unwrap();
            let out = other_file_system(&root)?;
            let content: Vec<u8> = (0..10 * PIECE + 7).map(|i| (i * 7 % 251) as u8).collect();
            let meta = MetaInfo::from_bytes(&content, PIECE).unwrap();
            Some(Self {
                _dir: dir,
                root,
                store,
                out,
                content,
                meta,
            })
        }

        fn dest(&self) -> PathBuf {
            self.out.path().join("model.bin")
        }

        fn begin(&self) -> Download {
            self.store
                .begin_download_to(&self.meta, &self.dest())
                .unwrap()
        }

        /// Writes pieces `indices` of the blob.
        fn write(&self, download: &Download, indices: std::ops::Range<usize>) {
            for index in self.meta.pieces().skip(indices.start).take(indices.len()) {
                let range = self.meta.piece_range(index);
                download
                    .write_piece(
                        index,
                        &self.content[range.start as usize..range.end as usize],
                    )
                    .unwrap();
            }
        }

        /// The names in the destination's directory.
        fn beside_dest(&self) -> Vec<String> {
            names_in(self.out.path())
        }

        /// Whether the blob's download entry directory exists.
        fn entry_exists(&self) -> bool {
            Layout::new(&self.root)
                .entry_dir(State::Download, self.meta.digest())
                .exists()
        }
    }

    /// A directory on another file system than `store`'s: under `/dev/shm`, a tmpfs on
    /// Linux. Without one the test cannot say anything: it fails under `CI=true`, and is
    /// skipped elsewhere. (kraken-testkit's `other_file_system_dir` does this for the other
    /// crates' tests; kraken-core cannot depend on it.)
    fn other_file_system(store: &Path) -> Option<tempfile::TempDir> {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && device(shm).ok() != device(store).ok() {
            return Some(tempfile::tempdir_in(shm).unwrap());
        }
        let message = "no second file system: mount a tmpfs at /dev/shm";
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{message}");
        println!("SKIPPED: {message}");
        None
    }

    /// Every file under `dir` named `data`, whatever its size.
    fn data_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(data_files(&path));
            } else if path.file_name().is_some_and(|n| n == layout::DATA) {
                found.push(path);
            }
        }
        found
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    const NONE: Vec<String> = Vec::new();

    #[test]
    fn a_download_to_another_file_system_writes_its_bytes_only_there() {
        let Some(f) = Fixture::new(StoreConfig::default()) else {
            return;
        };
        fs::write(f.dest(), b"an older file").unwrap();
        let download = f.begin();
        let dest = fs::canonicalize(f.dest()).unwrap();
        assert_eq!(download.destination(), Some(dest.as_path()));
        f.write(&download, 0..5);
        // Halfway: the store holds no data file; a partial file beside the destination
        // holds the pieces, and reads are served from it.
        assert_eq!(data_files(&f.root), Vec::<PathBuf>::new());
        let names = f.beside_dest();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].starts_with(".model.bin.kraken-partial-"),
            "{names:?}"
        );
        let second = f.meta.pieces().nth(1).unwrap();
        assert_eq!(download.read_piece(second).unwrap(), &f.content[4096..8192]);
        f.write(&download, 5..11);
        let blob = download.finish().unwrap();
        assert_eq!(blob.path(), dest);
        assert_eq!(fs::read(&dest).unwrap(), f.content);
        assert_eq!(f.beside_dest(), ["model.bin"]);
        assert_eq!(data_files(&f.root), Vec::<PathBuf>::new());
        let usage = f.store.usage();
        assert_eq!(
            (
                usage.referenced_blobs,
                usage.cached_blobs,
                usage.downloading_blobs
            ),
            (1, 0, 0)
        );
        // Exporting it to where it is does nothing; the blob stays cached there across a
        // restart, seedable.
        f.store.export(f.meta.digest(), &dest).unwrap();
        drop(download);
        let store = BlobStore::open(&f.root).unwrap();
        assert_eq!(
            store.status(f.meta.digest()),
            BlobStatus::Cached {
                length: f.content.len() as u64
            }
        );
        assert_eq!(store.open_blob(f.meta.digest()).unwrap().path(), dest);
        assert_eq!(store.metainfo(f.meta.digest()).unwrap(), f.meta);
    }

    #[test]
    fn on_the_stores_file_system_the_download_stays_in_the_store_until_exported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = BlobStore::open(&root).unwrap();
        let meta = MetaInfo::from_bytes(&[7; 3 * PIECE as usize], PIECE).unwrap();
        let download = store
            .begin_download_to(&meta, &dir.path().join("out.bin"))
            .unwrap();
        assert_eq!(data_files(&root).len(), 1);
        assert_eq!(names_in(dir.path()), ["store"]);
        assert_eq!(download.destination(), None);
        drop(download);
        // It is kept for a later download to resume, as any download in the store.
        assert_eq!(store.status(meta.digest()), BlobStatus::Downloading);
    }

    #[test]
    fn an_abandoned_or_refused_download_removes_its_partial_file() {
        let Some(f) = Fixture::new(StoreConfig::default()) else {
            return;
        };
        let download = f.begin();
        f.write(&download, 0..1);
        // A second handle keeps it alive; a bad piece is refused and changes nothing.
        let other = f.begin();
        let first = f.meta.pieces().next().unwrap();
        assert!(matches!(
            other.write_piece(first, &[0; 4096]),
            Err(Error::PieceHashMismatch { .. })
        ));
        drop(download);
        assert_eq!(f.beside_dest().len(), 1);
        assert_eq!(f.store.status(f.meta.digest()), BlobStatus::Downloading);
        // The last handle goes unfinished (a failed or cancelled download): nothing is left
        // beside the destination, nor in the store.
        drop(other);
        assert_eq!(f.beside_dest(), NONE);
        assert_eq!(f.store.status(f.meta.digest()), BlobStatus::Absent);
        assert!(!f.entry_exists());
        // A fresh download starts again from nothing.
        let again = f.begin();
        assert_eq!(again.bitfield().count_ones(), 0);
        drop(again);
        assert_eq!(f.beside_dest(), NONE);
    }

    #[test]
    fn a_download_outside_the_store_does_not_count_toward_its_watermarks() {
        let config = StoreConfig {
            high_watermark: Some(crate::size::ByteSize(12 * PIECE)),
            low_watermark: Some(crate::size::ByteSize(6 * PIECE)),
            ..Default::default()
        };
        let Some(f) = Fixture::new(config) else {
            return;
        };
        let kept = f
            .store
            .import(&f.content[..8 * PIECE as usize], PIECE, None)
            .unwrap();
        // 8 pieces in the store (under the high watermark of 12) and 11 outside it: over
        // the high watermark only if the download counted.
        let download = f.begin();
        let report = f.store.evict(std::time::SystemTime::now()).unwrap();
        assert_eq!(report.watermark, Vec::<Digest>::new());
        assert!(matches!(
            f.store.status(kept.digest()),
            BlobStatus::Cached { .. }
        ));
        assert_eq!(f.store.usage().downloading_bytes, f.meta.length());
        drop(download);
    }

    #[test]
    fn an_abandoned_download_dropped_while_the_store_is_busy_still_removes_its_file() {
        let Some(f) = Fixture::new(StoreConfig::default()) else {
            return;
        };
        let download = f.begin();
        f.write(&download, 0..1);
        // Another download is being opened (the store's `opening` lock is held): the last
        // handle's drop does not wait for it.
        let busy = f.store.inner.opening.lock().unwrap();
        drop(download);
        drop(busy);
        assert_eq!(f.beside_dest(), NONE);
        // The entry left behind is started afresh over, outside the store again.
        let again = f.begin();
        assert_eq!(again.bitfield().count_ones(), 0);
        assert_eq!(f.beside_dest().len(), 1);
        assert_eq!(data_files(&f.root), Vec::<PathBuf>::new());
        drop(again);
        assert_eq!(f.beside_dest(), NONE);
        assert_eq!(f.store.status(f.meta.digest()), BlobStatus::Absent);
    }

    #[test]
    fn reopening_after_a_crash_discards_an_external_download_and_its_partial_file() {
        let Some(f) = Fixture::new(StoreConfig::default()) else {
            return;
        };
        let download = f.begin();
        f.write(&download, 0..1);
        // A crash: the handle's cleanup never runs.
        std::mem::forget(download);
        assert_eq!(f.beside_dest().len(), 1);
        let store = BlobStore::open(&f.root).unwrap();
        assert_eq!(store.status(f.meta.digest()), BlobStatus::Absent);
        assert_eq!(f.beside_dest(), NONE);
        assert!(!f.entry_exists());
        // The blob downloads again from scratch, to the same place.
        let download = store.begin_download_to(&f.meta, &f.dest()).unwrap();
        assert_eq!(download.bitfield().count_ones(), 0);
        f.write(&download, 0..11);
        download.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.content);
        // An unreadable record removes its entry and no file.
        let fake = Layout::new(&f.root).entry_dir(State::Download, &Digest::sha256_of(b"x"));
        fs::create_dir_all(&fake).unwrap();
        let mut record = MAGIC.to_vec();
        record.extend_from_slice(b"model.bin\n");
        record.extend_from_slice(f.dest().as_os_str().as_bytes());
        fs::write(fake.join(layout::EXTERNAL), record).unwrap();
        drop(store);
        let _store = BlobStore::open(&f.root).unwrap();
        assert!(!fake.exists());
        assert_eq!(fs::read(f.dest()).unwrap(), f.content);
    }

    #[test]
    fn records_round_trip_and_refuse_to_name_other_files() {
        let external = External::new(PathBuf::from("/out/with\nnewline.bin"), 0xabc);
        assert_eq!(External::decode(&external.encode()), Some(external.clone()));
        assert_eq!(
            external.partial,
            PathBuf::from("/out/.with\nnewline.bin.kraken-partial-0000000000000abc")
        );
        for garbage in [
            &b"kraken-external 1\nimportant.txt\n/out/a.bin"[..],
            b"kraken-external 1\n+000000000000abc\n/out/a.bin",
            b"kraken-external 1\n0000000000000abc\nrelative/a.bin",
            b"kraken-external 1\n0000000000000abc\n/",
            b"kraken-external 2\n0000000000000abc\n/out/a.bin",
        ] {
            assert_eq!(External::decode(garbage), None, "{garbage:?}");
        }
    }
}
