//! Corrupt copies on an origin's own disk: finding them (a reader's report, a background
//! scrub), quarantining them (never served again) and repairing them from a replica or the
//! backend.
//!
//! A blob is verified when it enters the store, but a disk can flip a bit afterwards. Two
//! things re-hash a cached blob against its digest:
//!
//! - **A report.** A reader that got bytes which fail the digest (the proxy, another origin)
//!   tells the origin with `POST …/blobs/<digest>/verify`. The origin re-hashes its copy in
//!   the background (one check per digest at a time, none within [`REPORT_COOLDOWN`] of the
//!   last, and at most [`MAX_REPORT_CHECKS`] at once, so reports cannot keep its disk busy).
//! - **The scrub.** Every [`ScrubConfig::interval`] the origin re-hashes every blob it holds,
//!   reading at most [`ScrubConfig::bytes_per_second`], so a bad copy nobody reads is found
//!   too.
//!
//! A copy that fails is deleted from the store at once (so `GET` and `HEAD …?local=true`
//! answer as for a blob this origin lacks, and readers move on to a replica), then fetched
//! again — from another origin that holds it, else from the backend — verified on import.
//! A blob still waiting for write-back keeps its pin and its queue entry.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kraken_core::{BlobStore, ByteSize, Digest};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::state::OriginState;
use crate::error::{Error, Result, error_chain};

/// How soon after a check of a blob a report about it is ignored.
pub(crate) const REPORT_COOLDOWN: Duration = Duration::from_secs(30);
/// Reported blobs re-hashed at once; further reports meanwhile are dropped (the reader has
/// moved on to a replica, and the scrub still comes).
pub(crate) const MAX_REPORT_CHECKS: usize = 2;
/// Bytes read per step when re-hashing a blob.
const HASH_CHUNK: usize = 1 << 20;

/// The background scrub (`[scrub]`): re-hashing every cached blob periodically, at a
/// bounded read rate. On by default: a corrupt copy found by the scrub is one no reader
/// is ever served.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrubConfig {
    /// Whether the scrub runs. Reports from readers are acted on either way. Default: true.
    pub enabled: bool,
    /// Time from the end of one pass to the start of the next. Default: 24h.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Disk read rate of a pass, so serving keeps the disk. Default: 64MiB.
    pub bytes_per_second: ByteSize,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            bytes_per_second: ByteSize(64 << 20),
        }
    }
}

/// What a check found.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    /// The copy hashes to its digest.
    Intact,
    /// The copy did not hash to its digest; it was quarantined and a repair started.
    Corrupt,
    /// No complete copy here (or it went away during the check).
    Absent,
    /// Checked too recently, or being checked now: nothing done.
    Skipped,
}

/// Which blobs are being checked, and when each was last checked.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// `None` while a check runs, then when it ended.
    last: Mutex<HashMap<Digest, Option<Instant>>>,
    /// Checks started by reports and still running.
    reported: AtomicUsize,
}

impl Checks {
    /// Claims the check of `digest`: false while another check of it runs or within
    /// `cooldown` of the last one.
    fn claim(&self, digest: &Digest, cooldown: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|_, at| at.is_none_or(|at| at.elapsed() < REPORT_COOLDOWN));
        match last.get(digest) {
            Some(None) => false,
            Some(Some(at)) if at.elapsed() < cooldown => false,
            _ => {
                last.insert(*digest, None);
                true
            }
        }
    }

    fn release(&self, digest: &Digest) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(*digest, Some(Instant::now()));
    }
}

/// A reader's report that our copy of `digest` failed its check: re-hash it in the
/// background (repairing it if it is bad) unless it is checked already or was just now.
/// Returns whether a check started.
pub(crate) fn report(state: &Arc<OriginState>, digest: &Digest) -> bool {
    let reported = &state.checks.reported;
    if reported.fetch_add(1, Ordering::AcqRel) >= MAX_REPORT_CHECKS
        || !state.checks.claim(digest, REPORT_COOLDOWN)
    {
        reported.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    tracing::warn!(digest = %digest.fmt_short(), "a reader reports our copy failed verification");
    let this = Arc::clone(state);
    let digest = *digest;
    state.tasks.spawn(async move {
        let verdict = check_claimed(&this, &digest, None).await;
        this.checks.reported.fetch_sub(1, Ordering::AcqRel);
        tracing::info!(digest = %digest.fmt_short(), ?verdict, "checked a reported blob");
    });
    true
}

/// Re-hashes our copy of `digest` (reading at most `rate` bytes per second), and
/// quarantines and repairs it if it is bad.
pub(crate) async fn check(state: &Arc<OriginState>, digest: &Digest, rate: Option<u64>) -> Verdict {
    if !state.checks.claim(digest, Duration::ZERO) {
        return Verdict::Skipped;
    }
    check_claimed(state, digest, rate).await
}

async fn check_claimed(state: &Arc<OriginState>, digest: &Digest, rate: Option<u64>) -> Verdict {
    let verdict = match rehash(&state.store, digest, rate, state.shutdown.clone()).await {
        Ok(Some(actual)) if actual == *digest => Verdict::Intact,
        Ok(Some(actual)) => {
            tracing::error!(digest = %digest, %actual, "a cached blob is corrupt: quarantined, repairing");
            match quarantine(state, digest).await {
                Ok(pinned) => {
                    repair(state, digest, pinned).await;
                    Verdict::Corrupt
                }
                Err(e) => {
                    tracing::error!(digest = %digest.fmt_short(), error = %error_chain(&e), "could not quarantine a corrupt blob");
                    Verdict::Corrupt
                }
            }
        }
        Ok(None) => Verdict::Absent,
        Err(e) => {
            tracing::warn!(digest = %digest.fmt_short(), error = %error_chain(&e), "could not re-hash a blob");
            Verdict::Absent
        }
    };
    state.checks.release(digest);
    verdict
}

/// The SHA-256 of our cached copy of `digest`, read at most `rate` bytes per second on a
/// [background](kraken_core::store::spawn_background) thread; `None` if it is not cached
/// (or shutdown came first).
async fn rehash(
    store: &BlobStore,
    digest: &Digest,
    rate: Option<u64>,
    shutdown: CancellationToken,
) -> Result<Option<Digest>> {
    let store = store.clone();
    let digest = *digest;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let rehash = move || -> Result<Option<Digest>> {
        let blob = match store.open_blob(&digest) {
            Ok(blob) => blob,
            Err(kraken_core::Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut reader = blob.reader();
        let mut hasher = kraken_core::Hasher::new();
        let mut buf = vec![0; HASH_CHUNK];
        let started = Instant::now();
        let mut read = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
            // A thread of its own: sleeping here slows only the scrub.
            if let Some(rate) = rate.filter(|&r| r > 0) {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        }
        Ok(Some(hasher.finalize()))
    };
    kraken_core::store::spawn_background("kraken-rehash", move || {
        // The caller may have stopped waiting: the result is then dropped.
        let _ = tx.send(rehash());
    })?;
    rx.await
        .map_err(|_| Error::Internal("re-hash thread failed"))?
}

/// Deletes our copy of `digest` so it is never served again; returns whether it was pinned
/// (waiting for write-back).
async fn quarantine(state: &OriginState, digest: &Digest) -> Result<bool> {
    let store = state.store.clone();
    let digest = *digest;
    tokio::task::spawn_blocking(move || -> Result<bool> {
        let pinned = store.is_pinned(&digest);
        if pinned {
            store.unpin(&digest)?;
        }
        store.delete(&digest)?;
        Ok(pinned)
    })
    .await
    .map_err(|_| Error::Internal("quarantine task failed"))?
}

/// Fetches `digest` again, verified: from another origin that has it, else (unless it was
/// waiting for write-back, so the backend lacks it) from the backend.
async fn repair(state: &Arc<OriginState>, digest: &Digest, pinned: bool) {
    let namespace = state.namespaces.get(digest).unwrap_or_default();
    match repair_from_replica(state, &namespace, digest).await {
        Ok(origin) => {
            tracing::info!(digest = %digest.fmt_short(), %origin, "repaired a corrupt blob from a replica");
            state.counters.corrupt("replica");
            if pinned && let Err(e) = state.store.pin(digest) {
                tracing::error!(digest = %digest.fmt_short(), error = %error_chain(&e), "could not pin a repaired blob");
            }
            state.seed(&namespace, digest);
            return;
        }
        Err(e) => {
            tracing::warn!(digest = %digest.fmt_short(), error = %error_chain(&e), "no replica could repair a corrupt blob");
        }
    }
    if pinned {
        tracing::error!(digest = %digest.fmt_short(), "a corrupt blob not yet written back has no good replica: lost");
        state.counters.corrupt("failed");
        return;
    }
    let this = Arc::clone(state);
    let ns = namespace.clone();
    let fetched = state
        .fetcher
        .ensure(&namespace, digest, move |meta| this.fetched(&ns, &meta))
        .await;
    match fetched {
        Ok(_) => {
            tracing::info!(digest = %digest.fmt_short(), "repaired a corrupt blob from the backend");
            state.counters.corrupt("backend");
        }
        Err(e) => {
            tracing::warn!(digest = %digest.fmt_short(), error = %error_chain(&e), "the backend could not repair a corrupt blob");
            state.counters.corrupt("failed");
        }
    }
}

/// Downloads `digest` from the first other origin that has a good copy and imports it;
/// returns that origin.
async fn repair_from_replica(
    state: &Arc<OriginState>,
    namespace: &str,
    digest: &Digest,
) -> Result<String> {
    let view = state.membership.view();
    let mut others = view.owners(digest);
    for member in view.healthy() {
        if !others.contains(&member) {
            others.push(member);
        }
    }
    others.retain(|origin| *origin != state.name);
    let max_len = state.config.limits.max_blob_size.bytes();
    let mut failures = Vec::new();
    for origin in others {
        // Only a copy on its disk: a fetch from the backend is ours to make.
        match state.client.stat(&origin, namespace, digest, true).await {
            Ok(Some(_)) => {}
            Ok(None) => continue,
            Err(e) => {
                failures.push(error_chain(&e));
                continue;
            }
        }
        let id = state.uploads.create(None)?;
        let path = state
            .uploads
            .path(&id)
            .ok_or(Error::Internal("a new upload has no path"))?;
        let downloaded = state
            .client
            .download_to_file(&origin, namespace, digest, &path, max_len)
            .await;
        let imported = match downloaded {
            Ok(_) => state.import_upload(&path, digest).await.map(drop),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&path).await;
        match imported {
            Ok(()) => return Ok(origin),
            Err(e) => failures.push(format!("{origin}: {}", error_chain(&e))),
        }
    }
    Err(Error::Origin {
        origin: "replicas".into(),
        reason: if failures.is_empty() {
            "no other origin holds the blob".into()
        } else {
            failures.join("; ")
        },
    })
}

/// Re-hashes every cached blob every `[scrub] interval`, until shutdown.
pub(crate) async fn scrub_loop(state: Arc<OriginState>) {
    let config = state.config.scrub.clone();
    if !config.enabled {
        return;
    }
    let rate = Some(config.bytes_per_second.bytes());
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(config.interval) => {}
        }
        let mut corrupt = 0;
        for digest in state.store.cached() {
            if state.shutdown.is_cancelled() {
                return;
            }
            if check(&state, &digest, rate).await == Verdict::Corrupt {
                corrupt += 1;
            }
        }
        if corrupt > 0 {
            tracing::error!(
                corrupt,
                "the scrub found corrupt blobs and repaired what it could"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_checked_once_at_a_time_and_not_again_within_the_cooldown() {
        let checks = Checks::default();
        let digest = Digest::sha256_of(b"blob");
        assert!(checks.claim(&digest, REPORT_COOLDOWN));
        assert!(
            !checks.claim(&digest, Duration::ZERO),
            "checked twice at once"
        );
        checks.release(&digest);
        assert!(
            !checks.claim(&digest, REPORT_COOLDOWN),
            "checked again at once"
        );
        assert!(
            checks.claim(&digest, Duration::ZERO),
            "the scrub has no cooldown"
        );
        let other = Digest::sha256_of(b"other");
        assert!(checks.claim(&other, REPORT_COOLDOWN));
    }
}
