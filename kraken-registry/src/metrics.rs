//! The services' own metrics, in the one registry of each service
//! ([`kraken_p2p::metrics::Metrics`], which also serves them): the blob store, the backends,
//! durable queues, the origin's cache, fetches, replication and repairs, and the agent's
//! pulls. `docs/metrics.md` lists every name.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kraken_backends::Router;
use kraken_core::{BlobStore, EvictionReport};
use kraken_p2p::metrics::prometheus_client::metrics::counter::Counter;
use kraken_p2p::metrics::prometheus_client::metrics::family::Family;
use kraken_p2p::metrics::prometheus_client::metrics::histogram::Histogram;
use kraken_p2p::metrics::{Metrics, MetricsConfig, Scrape, duration_histogram};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::durable::Task;
use crate::error::Result;

/// Starts the separate metrics listener of [`MetricsConfig::listen`], if any, as one of
/// `tasks`, stopping with `shutdown`.
pub(crate) async fn spawn_listener(
    config: &MetricsConfig,
    role: &'static str,
    metrics: &Metrics,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<()> {
    if let Some(server) = kraken_p2p::metrics::spawn_listener(config, role, metrics).await? {
        tracing::info!(addr = %server.local_addr(), "metrics listener started");
        tasks.spawn(async move {
            shutdown.cancelled().await;
            server.shutdown().await;
        });
    }
    Ok(())
}

/// A family labelled by one `key = value`.
fn labelled(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![(key, value)]
}

type OneLabel = Vec<(&'static str, &'static str)>;

/// The blob store's size (read at each scrape) and its evictions.
#[derive(Clone, Debug)]
pub(crate) struct StoreMetrics {
    evictions: Family<OneLabel, Counter>,
    evicted_bytes: Counter,
}

impl StoreMetrics {
    pub(crate) fn register(metrics: &Metrics, store: BlobStore) -> Self {
        let this = Self {
            evictions: Family::default(),
            evicted_bytes: Counter::default(),
        };
        for reason in ["idle", "watermark"] {
            this.evictions
                .get_or_create(&labelled("reason", reason))
                .inc_by(0);
        }
        metrics.register(
            "kraken_store_evictions",
            "Blobs evicted from the store: idle past idle_ttl, or above the high watermark",
            this.evictions.clone(),
        );
        metrics.register(
            "kraken_store_evicted_bytes",
            "Bytes freed by evictions",
            this.evicted_bytes.clone(),
        );
        metrics.register_scrape(move |scrape| {
            let usage = store.usage();
            scrape.gauge(
                "kraken_store_bytes",
                "Bytes in the blob store: complete blobs (cached) and downloads in progress (their full lengths)",
                &[
                    (&[("state", "cached")], usage.cached_bytes as f64),
                    (&[("state", "downloading")], usage.downloading_bytes as f64),
                ],
            );
            scrape.gauge(
                "kraken_store_blobs",
                "Blobs in the blob store: complete (cached) and downloading",
                &[
                    (&[("state", "cached")], usage.cached_blobs as f64),
                    (&[("state", "downloading")], usage.downloading_blobs as f64),
                ],
            );
        });
        this
    }

    /// Counts what one eviction pass removed.
    pub(crate) fn evicted(&self, report: &EvictionReport) {
        self.evictions
            .get_or_create(&labelled("reason", "idle"))
            .inc_by(report.idle.len() as u64);
        self.evictions
            .get_or_create(&labelled("reason", "watermark"))
            .inc_by(report.watermark.len() as u64);
        self.evicted_bytes.inc_by(report.freed_bytes);
    }
}

/// Exports the counters that [`kraken_backends::MetricsBackend`] keeps for each route of
/// `router`, labelled by the route's namespace pattern and the operation.
pub(crate) fn register_backends(metrics: &Metrics, router: Arc<Router>) {
    metrics.register_scrape(move |scrape| {
        let routes = router.metrics();
        let snapshots: Vec<_> = routes
            .iter()
            .map(|(backend, counters)| (*backend, counters.snapshot()))
            .collect();
        let samples = |read: &dyn Fn(&kraken_backends::OperationStats) -> f64| {
            let mut samples = Vec::new();
            for (backend, snapshot) in &snapshots {
                for (operation, stats) in snapshot {
                    samples.push((*backend, operation.as_str(), read(stats)));
                }
            }
            samples
        };
        let write = |scrape: &mut Scrape<'_>,
                     name: &str,
                     help: &str,
                     read: &dyn Fn(&kraken_backends::OperationStats) -> f64| {
            let values = samples(read);
            let labels: Vec<[(&str, &str); 2]> = values
                .iter()
                .map(|(backend, operation, _)| [("backend", *backend), ("operation", *operation)])
                .collect();
            let rows: Vec<(&[(&str, &str)], f64)> = labels
                .iter()
                .zip(&values)
                .map(|(labels, (_, _, value))| (&labels[..], *value))
                .collect();
            scrape.counter(name, help, &rows);
        };
        write(
            scrape,
            "kraken_backend_operations",
            "Backend calls that returned, by route (namespace pattern) and operation",
            &|s| s.calls as f64,
        );
        write(
            scrape,
            "kraken_backend_not_found",
            "Backend calls answered not found (an answer, not a fault)",
            &|s| s.not_found as f64,
        );
        write(
            scrape,
            "kraken_backend_failures",
            "Backend calls that failed with another error",
            &|s| s.failures as f64,
        );
        write(
            scrape,
            "kraken_backend_operation_seconds",
            "Time spent in backend calls (downloads: until the stream was returned)",
            &|s| s.total_duration.as_secs_f64(),
        );
        write(
            scrape,
            "kraken_backend_transferred_bytes",
            "Body bytes that passed through backend downloads and uploads",
            &|s| s.bytes as f64,
        );
    });
}

/// Reports a durable queue's depth and how long its oldest due task has waited, as
/// `{prefix}_queue_tasks` and `{prefix}_queue_oldest_seconds`; `read` gives the queue's
/// tasks (`None` once its service has stopped).
pub(crate) fn register_queue<T, F>(metrics: &Metrics, prefix: &str, what: &str, read: F)
where
    T: Task,
    F: Fn() -> Option<Vec<T>> + Send + Sync + 'static,
{
    let tasks = format!("{prefix}_queue_tasks");
    let oldest = format!("{prefix}_queue_oldest_seconds");
    let tasks_help = format!("Tasks waiting in the {what} queue");
    let oldest_help = format!(
        "Seconds the oldest due task of the {what} queue has waited since it became due (0 when none is due)"
    );
    metrics.register_scrape(move |scrape| {
        let Some(entries) = read() else {
            return;
        };
        let now = SystemTime::now();
        let waited = entries
            .iter()
            .filter_map(|task| now.duration_since(task.not_before()).ok())
            .max()
            .unwrap_or_default();
        scrape.gauge(&tasks, &tasks_help, &[(&[], entries.len() as f64)]);
        scrape.gauge(&oldest, &oldest_help, &[(&[], waited.as_secs_f64())]);
    });
}

/// The origin's cache, fetch-on-miss, replication and repair counters.
#[derive(Clone, Debug)]
pub(crate) struct OriginMetrics {
    cache: Family<OneLabel, Counter>,
    fetches: Family<OneLabel, Counter>,
    fetch_duration: Histogram,
    replicas: Family<OneLabel, Counter>,
    repair_passes: Counter,
    corrupt: Family<OneLabel, Counter>,
}

impl OriginMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            cache: Family::default(),
            fetches: Family::default(),
            fetch_duration: duration_histogram(),
            replicas: Family::default(),
            repair_passes: Counter::default(),
            corrupt: Family::default(),
        };
        for result in ["hit", "miss"] {
            this.cache
                .get_or_create(&labelled("result", result))
                .inc_by(0);
        }
        for outcome in ["ok", "not_found", "error"] {
            this.fetches
                .get_or_create(&labelled("outcome", outcome))
                .inc_by(0);
        }
        for repair in ["replica", "backend", "failed"] {
            this.corrupt
                .get_or_create(&labelled("repair", repair))
                .inc_by(0);
        }
        for outcome in ["ok", "error"] {
            this.replicas
                .get_or_create(&labelled("outcome", outcome))
                .inc_by(0);
        }
        metrics.register(
            "kraken_origin_cache_requests",
            "Blob reads by whether the blob was on disk (hit) or had to come from the backend (miss)",
            this.cache.clone(),
        );
        metrics.register(
            "kraken_origin_fetches",
            "Fetches of a missing blob from the backend, by outcome (ok, not_found, error)",
            this.fetches.clone(),
        );
        metrics.register(
            "kraken_origin_fetch_duration_seconds",
            "Time a fetch-on-miss took, from the backend's first call to the blob verified on disk",
            this.fetch_duration.clone(),
        );
        metrics.register(
            "kraken_origin_replications",
            "Copies of a blob pushed to another owner on the ring (after an upload, a fetch or in a repair pass), by outcome",
            this.replicas.clone(),
        );
        metrics.register(
            "kraken_origin_repair_passes",
            "Repair passes run (every blob checked against its owners)",
            this.repair_passes.clone(),
        );
        metrics.register(
            "kraken_origin_corrupt_blobs",
            "Cached blobs found corrupt and quarantined, by how they were repaired (replica, backend, failed)",
            this.corrupt.clone(),
        );
        this
    }

    pub(crate) fn cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&labelled("result", result)).inc();
    }

    pub(crate) fn fetched(&self, outcome: &'static str, started: Instant) {
        self.fetches
            .get_or_create(&labelled("outcome", outcome))
            .inc();
        if outcome == "ok" {
            self.fetch_duration.observe(started.elapsed().as_secs_f64());
        }
    }

    /// A fetch refused because `limits.max_backend_fetches` were running.
    pub(crate) fn fetch_busy(&self) {
        self.fetches
            .get_or_create(&labelled("outcome", "busy"))
            .inc();
    }

    pub(crate) fn replicated(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.replicas
            .get_or_create(&labelled("outcome", outcome))
            .inc();
    }

    pub(crate) fn repair_pass(&self) {
        self.repair_passes.inc();
    }

    pub(crate) fn corrupt(&self, repaired_from: &'static str) {
        self.corrupt
            .get_or_create(&labelled("repair", repaired_from))
            .inc();
    }
}

/// The in-memory cache of small blobs: lookups of small blobs by result, and its size.
#[derive(Clone, Debug)]
pub(crate) struct SmallBlobMetrics {
    lookups: Family<OneLabel, Counter>,
}

impl SmallBlobMetrics {
    /// The cache of `config` with its counters in `metrics`, and its size read at each
    /// scrape.
    pub(crate) fn cache(
        metrics: &Metrics,
        config: crate::small_blobs::SmallBlobConfig,
    ) -> Arc<crate::small_blobs::SmallBlobs> {
        let this = Self {
            lookups: Family::default(),
        };
        for result in ["hit", "miss"] {
            this.lookups
                .get_or_create(&labelled("result", result))
                .inc_by(0);
        }
        metrics.register(
            "kraken_small_blob_lookups",
            "Reads of small blobs ([cache] small_blob_max_size or less) served from memory (hit) or from the disk or P2P (miss)",
            this.lookups.clone(),
        );
        let cache = Arc::new(crate::small_blobs::SmallBlobs::new(config).with_counters(this));
        let held = Arc::downgrade(&cache);
        metrics.register_scrape(move |scrape| {
            if let Some(cache) = held.upgrade() {
                scrape.gauge(
                    "kraken_small_blob_bytes",
                    "Bytes held by the in-memory cache of small blobs",
                    &[(&[], cache.bytes() as f64)],
                );
            }
        });
        cache
    }

    pub(crate) fn lookup(&self, lookup: crate::small_blobs::Lookup) {
        let result = match lookup {
            crate::small_blobs::Lookup::Hit => "hit",
            crate::small_blobs::Lookup::Miss => "miss",
        };
        self.lookups
            .get_or_create(&labelled("result", result))
            .inc();
    }
}

/// The agent's pulls: time to the first byte of a blob served to a client.
#[derive(Clone, Debug)]
pub(crate) struct AgentMetrics {
    first_byte: Histogram,
}

impl AgentMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            first_byte: duration_histogram(),
        };
        metrics.register(
            "kraken_agent_pull_first_byte_seconds",
            "Time from a blob request to its first byte being ready for the client (cached or over P2P)",
            this.first_byte.clone(),
        );
        this
    }

    pub(crate) fn first_byte(&self, started: Instant) {
        self.first_byte.observe(started.elapsed().as_secs_f64());
    }
}
