//! Fetch-on-miss: a blob asked for but not on disk is read from the backend once, however
//! many requests ask for it at once (single flight), verified and cached.
//!
//! Fetches and their remembered failures are per namespace and digest: namespaces may route
//! to different backends, so a request in a namespace whose backend lacks a blob (or a
//! bogus namespace) makes the blob unavailable in that namespace only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kraken_backends::Backend;
use kraken_core::{BlobStatus, BlobStore, Digest, MetaInfo, PieceLengthPolicy};
use tokio::sync::{Semaphore, watch};
use tokio_util::io::{StreamReader, SyncIoBridge};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::LimitsConfig;
use crate::error::{Error, Result, error_chain};
use crate::metrics::OriginMetrics;

/// How long a failed fetch is remembered, so that requests polling for a blob the backend
/// lacks get their `404` instead of starting a fetch each (Go Kraken: 15 s).
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// How a fetch ended, as every waiter sees it.
#[derive(Clone, Debug)]
pub(crate) enum FetchFailure {
    /// The backend does not have the blob.
    NotFound,
    /// The backend or the disk failed; the message says how.
    Failed(String),
}

impl FetchFailure {
    pub(crate) fn into_error(self, digest: &Digest) -> Error {
        match self {
            Self::NotFound => Error::NotFound(*digest),
            Self::Failed(reason) => Error::Origin {
                origin: "backend".into(),
                reason,
            },
        }
    }
}

type Outcome = Option<std::result::Result<MetaInfo, FetchFailure>>;

/// Where a blob stands for a request.
#[derive(Debug)]
pub(crate) enum Availability {
    /// On disk.
    Cached(MetaInfo),
    /// Being fetched; await the receiver for the outcome.
    Fetching(watch::Receiver<Outcome>),
    /// A recent fetch failed.
    Failed(FetchFailure),
    /// Not on disk and `limits.max_backend_fetches` fetches are running: ask again later.
    Busy,
}

#[derive(Debug)]
enum Flight {
    Running(watch::Receiver<Outcome>),
    Failed(FetchFailure, Instant),
}

/// Runs fetches, one per namespace and digest at a time.
#[derive(Debug)]
pub(crate) struct Fetcher {
    store: BlobStore,
    backend: Arc<dyn Backend>,
    pieces: PieceLengthPolicy,
    max_blob: u64,
    flights: Mutex<HashMap<(String, Digest), Flight>>,
    /// One permit per fetch running (`limits.max_backend_fetches`).
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    metrics: OriginMetrics,
}

impl Fetcher {
    pub(crate) fn new(
        store: BlobStore,
        backend: Arc<dyn Backend>,
        pieces: PieceLengthPolicy,
        limits: &LimitsConfig,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        metrics: OriginMetrics,
    ) -> Self {
        Self {
            store,
            backend,
            pieces,
            max_blob: limits.max_blob_size.bytes(),
            flights: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limits.max_backend_fetches.max(1))),
            tasks,
            shutdown,
            metrics,
        }
    }

    /// The blob if cached; otherwise joins the fetch in flight or starts one. `on_fetched`
    /// runs once, after a fetch this call started succeeds.
    pub(crate) fn availability(
        self: &Arc<Self>,
        namespace: &str,
        digest: &Digest,
        on_fetched: impl FnOnce(MetaInfo) + Send + 'static,
    ) -> Availability {
        if matches!(self.store.status(digest), BlobStatus::Cached { .. })
            && let Ok(meta) = self.store.metainfo(digest)
        {
            self.metrics.cache(true);
            return Availability::Cached(meta);
        }
        self.metrics.cache(false);
        let key = (namespace.to_owned(), *digest);
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        match flights.get(&key) {
            Some(Flight::Running(outcome)) => return Availability::Fetching(outcome.clone()),
            Some(Flight::Failed(failure, at)) if at.elapsed() < FAILURE_MEMORY => {
                return Availability::Failed(failure.clone());
            }
            _ => {}
        }
        // Joining a fetch in flight is free; a new one needs a slot. Refused rather than
        // queued: the caller's retry (after `Retry-After`) costs nothing here meanwhile.
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.fetch_busy();
            return Availability::Busy;
        };
        let (sender, outcome) = watch::channel(None);
        flights.insert(key.clone(), Flight::Running(outcome.clone()));
        drop(flights);
        let this = Arc::clone(self);
        let namespace = namespace.to_owned();
        let digest = *digest;
        self.tasks.spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            // On shutdown the fetch stops; its waiters see the channel close.
            let fetched = this
                .shutdown
                .run_until_cancelled(this.fetch(&namespace, &digest))
                .await;
            let Some(result) = fetched else { return };
            let result = match result {
                Ok(meta) => {
                    this.metrics.fetched("ok", started);
                    this.forget(&key);
                    on_fetched(meta.clone());
                    Ok(meta)
                }
                Err(e) => {
                    let failure = if e.is_not_found() {
                        this.metrics.fetched("not_found", started);
                        FetchFailure::NotFound
                    } else {
                        this.metrics.fetched("error", started);
                        tracing::warn!(digest = %digest.fmt_short(), error = %error_chain(&e), "fetch from backend failed");
                        FetchFailure::Failed(error_chain(&e))
                    };
                    let mut flights = this.flights.lock().unwrap_or_else(|e| e.into_inner());
                    flights.insert(key, Flight::Failed(failure.clone(), Instant::now()));
                    flights.retain(|_, f| !matches!(f, Flight::Failed(_, at) if at.elapsed() >= FAILURE_MEMORY));
                    Err(failure)
                }
            };
            sender.send_replace(Some(result));
        });
        Availability::Fetching(outcome)
    }

    /// The blob's metainfo once it is on disk, fetching it if needed.
    pub(crate) async fn ensure(
        self: &Arc<Self>,
        namespace: &str,
        digest: &Digest,
        on_fetched: impl FnOnce(MetaInfo) + Send + 'static,
    ) -> Result<MetaInfo> {
        match self.availability(namespace, digest, on_fetched) {
            Availability::Cached(meta) => Ok(meta),
            Availability::Failed(failure) => Err(failure.into_error(digest)),
            Availability::Busy => Err(Error::Busy("backend fetches")),
            Availability::Fetching(mut outcome) => {
                let done = outcome
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| Error::Shutdown)?;
                match done.clone() {
                    Some(Ok(meta)) => Ok(meta),
                    Some(Err(failure)) => Err(failure.into_error(digest)),
                    None => Err(Error::Internal("fetch ended without an outcome")),
                }
            }
        }
    }

    fn forget(&self, key: &(String, Digest)) {
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// One backend read: stat for the size (and piece length), then the whole blob streamed
    /// into the store, which verifies it against `digest` before caching it.
    async fn fetch(&self, namespace: &str, digest: &Digest) -> Result<MetaInfo> {
        let name = digest.to_string();
        let size = self.backend.stat(namespace, &name).await?.size;
        if size > self.max_blob {
            return Err(Error::Config(format!(
                "blob {digest} has {size} bytes, more than limits.max_blob_size"
            )));
        }
        let stream = self.backend.download(namespace, &name, None).await?;
        let reader = StreamReader::new(stream.map_err(std::io::Error::other));
        let store = self.store.clone();
        let piece_length = self.pieces.piece_length_for(size);
        let expected = *digest;
        let imported = tokio::task::spawn_blocking(move || {
            store.import(SyncIoBridge::new(reader), piece_length, Some(&expected))
        })
        .await
        .map_err(|_| Error::Internal("import task failed"))?;
        Ok(imported?)
    }
}
