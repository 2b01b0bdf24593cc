//! The blob store of `kraken seed` and `kraken fetch` without `--store`, and the policy that
//! keeps it from growing (docs/embedding.md, "The commands' own stores"):
//!
//! - **`kraken fetch --out PATH`** keeps its store beside `PATH`, in `.NAME.kraken/`, on
//!   `PATH`'s file system: the download is renamed into place, so its bytes are written once
//!   and never copied across file systems. A fetch that fails or is interrupted leaves that
//!   directory for the next `kraken fetch --out PATH` to resume from; one that succeeds
//!   removes it. One fetch at a time holds it (an advisory lock).
//! - **`kraken seed`**, and a fetch into a special file (`/dev/null`, a FIFO), use one store
//!   per listen address under `$TMPDIR/kraken/`. Seeded files are recorded where they are
//!   (no copy), and a blob a fetch wrote into a special file is deleted from the store
//!   afterwards. Every start evicts its own store (finished entries idle for an hour, partial
//!   downloads idle for a day) and sweeps the other stores there that no process holds by
//!   the same policy, removing those left empty: stores of addresses never used again (a
//!   benchmark's) do not accumulate.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kraken_core::{BlobStore, Digest, StoreConfig, StoreUsage};

/// How long a default store keeps a finished blob's entry (its metainfo, and where the blob
/// went) unused.
const IDLE_TTL: Duration = Duration::from_secs(3600);
/// How long a default store keeps a partial download for a later run to resume.
const DOWNLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most other per-address stores one start sweeps; the rest wait for later starts, so a
/// start stays quick however many there are.
const MAX_SWEPT: usize = 64;
/// The lock file a process holds in the store directory it uses.
const LOCK: &str = "lock";

/// A default store this process holds (see the module docs).
#[derive(Debug)]
pub(crate) struct DefaultStore {
    store: BlobStore,
    dir: PathBuf,
    /// The store beside `--out`: removed when dropped after [`finish`](Self::finish), or
    /// when it holds no partial download to resume.
    scratch: bool,
    finished: bool,
    /// Held while this process uses the directory; the kernel releases it at exit.
    _lock: File,
}

impl DefaultStore {
    /// The store of `kraken fetch --out out`: beside `out`, or, when `out` is a special file,
    /// the one of `listen`.
    pub(crate) fn for_fetch(out: &Path, listen: SocketAddr) -> anyhow::Result<Self> {
        let special = fs::metadata(out).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if special {
            return Self::for_address(listen);
        }
        let name = out
            .file_name()
            .with_context(|| format!("--out {} names no file", out.display()))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = parent.join(format!(".{}.kraken", name.to_string_lossy()));
        let lock = lock(&dir)?.with_context(|| {
            format!(
                "another kraken fetch is writing {} (it holds {})",
                out.display(),
                dir.display()
            )
        })?;
        Ok(Self {
            store: open_evicted(&dir)?,
            dir,
            scratch: true,
            finished: false,
            _lock: lock,
        })
    }

    /// The store of listen address `listen` under the temporary directory; sweeps the other
    /// stores there first.
    pub(crate) fn for_address(listen: SocketAddr) -> anyhow::Result<Self> {
        let base = std::env::temp_dir().join("kraken");
        let dir = base.join(listen.to_string().replace([':', '[', ']'], "_"));
        let lock = lock(&dir)?.with_context(|| {
            format!(
                "another kraken process uses the store of {listen} ({})",
                dir.display()
            )
        })?;
        sweep(&base, &dir);
        Ok(Self {
            store: open_evicted(&dir)?,
            dir,
            scratch: false,
            finished: false,
            _lock: lock,
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &BlobStore {
        &self.store
    }

    /// After a fetch succeeded (and its node stopped): the store beside `--out` is removed
    /// (when this is dropped), and `digests` are deleted from a per-address store (their
    /// bytes went into a special file, so the store held the only other copy).
    pub(crate) fn finish(mut self, digests: &[Digest]) -> anyhow::Result<()> {
        self.finished = true;
        if self.scratch {
            return Ok(());
        }
        for digest in digests {
            self.store
                .delete(digest)
                .with_context(|| format!("removing {digest} from {}", self.dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for DefaultStore {
    fn drop(&mut self) {
        // A store beside `--out` stays only for a download to resume.
        let resumable = self.store.usage().downloading_blobs > 0;
        if self.scratch
            && (self.finished || !resumable)
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the fetch's store");
        }
    }
}

/// Creates `dir` and takes its lock; `None` if another process holds it.
fn lock(dir: &Path) -> anyhow::Result<Option<File>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Opens the store in `dir` with the default stores' policy and runs one eviction pass.
fn open_evicted(dir: &Path) -> anyhow::Result<BlobStore> {
    let mut config = StoreConfig::default();
    config.idle_ttl = Some(IDLE_TTL);
    config.download_idle_ttl = Some(DOWNLOAD_TTL);
    let store = BlobStore::open_with_config(dir, config)
        .with_context(|| format!("opening the blob store at {}", dir.display()))?;
    let report = store
        .evict(SystemTime::now())
        .with_context(|| format!("evicting from {}", dir.display()))?;
    if report.freed_bytes > 0 || !report.idle.is_empty() {
        tracing::info!(
            store = %dir.display(),
            blobs = report.idle.len() + report.watermark.len(),
            bytes = report.freed_bytes,
            "evicted idle blobs from a default store"
        );
    }
    Ok(store)
}

/// Evicts from the stores under `base` other than `own` that no process holds, and removes
/// those left empty. Failures are logged: a store that cannot be swept now may be later.
fn sweep(base: &Path, own: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let others = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != own && p.is_dir())
        .take(MAX_SWEPT);
    for dir in others {
        let held = match lock(&dir) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue, // in use
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot sweep a default store");
                continue;
            }
        };
        match open_evicted(&dir) {
            Ok(store) if store.usage() == StoreUsage::default() => {
                drop(store);
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot remove an empty default store");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "cannot sweep a default store"),
        }
        drop(held);
    }
}
