//! Timing decorator: counts and durations per operation, readable as a snapshot, and a
//! `tracing` event per call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::error::Result;

/// The operations of [`Backend`], as metrics label them.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Operation {
    /// [`Backend::stat`].
    Stat,
    /// [`Backend::download`].
    Download,
    /// [`Backend::upload`].
    Upload,
    /// [`Backend::list`].
    List,
    /// [`Backend::delete`].
    Delete,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Stat,
        Self::Download,
        Self::Upload,
        Self::List,
        Self::Delete,
    ];

    /// Lowercase name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stat => "stat",
            Self::Download => "download",
            Self::Upload => "upload",
            Self::List => "list",
            Self::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one operation.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct OperationStats {
    /// Calls that returned.
    pub calls: u64,
    /// Calls that returned [`Error::NotFound`](crate::Error::NotFound) (counted apart from
    /// failures: a miss is an answer, not a fault).
    pub not_found: u64,
    /// Calls that failed with any other error.
    pub failures: u64,
    /// Time spent in all calls. For downloads: until the stream was returned.
    pub total_duration: Duration,
    /// Longest call.
    pub max_duration: Duration,
    /// Body bytes that passed (downloads: read by the caller; uploads: taken by the backend).
    pub bytes: u64,
}

/// Counters of every operation of one backend; shared, cheap to read.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    stats: Mutex<[OperationStats; 5]>,
}

impl BackendMetrics {
    /// Counters of `operation` as they are now.
    pub fn stats(&self, operation: Operation) -> OperationStats {
        self.lock()[operation.index()]
    }

    /// Every operation's counters as they are now.
    pub fn snapshot(&self) -> Vec<(Operation, OperationStats)> {
        let stats = *self.lock();
        Operation::ALL.into_iter().zip(stats).collect()
    }

    fn record(&self, operation: Operation, elapsed: Duration, outcome: Outcome) {
        let mut all = self.lock();
        let stats = &mut all[operation.index()];
        stats.calls += 1;
        stats.total_duration += elapsed;
        stats.max_duration = stats.max_duration.max(elapsed);
        match outcome {
            Outcome::Success => {}
            Outcome::NotFound => stats.not_found += 1,
            Outcome::Failure => stats.failures += 1,
        }
    }

    fn add_bytes(&self, operation: Operation, bytes: u64) {
        self.lock()[operation.index()].bytes += bytes;
    }

    fn lock(&self) -> MutexGuard<'_, [OperationStats; 5]> {
        // Counters stay meaningful after a panic elsewhere: keep counting.
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Success,
    NotFound,
    Failure,
}

/// Times and counts the operations of the backend it wraps, and logs each through
/// `tracing` (debug on success, warn on failure) with the backend's label.
#[derive(Debug)]
pub struct MetricsBackend {
    inner: Arc<dyn Backend>,
    label: String,
    metrics: Arc<BackendMetrics>,
}

impl MetricsBackend {
    /// Wraps `inner`; `label` names it in logs (e.g. the route's namespace pattern).
    pub fn new(inner: Arc<dyn Backend>, label: impl Into<String>) -> Self {
        Self {
            inner,
            label: label.into(),
            metrics: Arc::default(),
        }
    }

    /// The counters, to read now or later.
    pub fn metrics(&self) -> Arc<BackendMetrics> {
        Arc::clone(&self.metrics)
    }

    async fn timed<T>(
        &self,
        operation: Operation,
        namespace: &str,
        name: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(error) if error.is_not_found() => Outcome::NotFound,
            Err(_) => Outcome::Failure,
        };
        self.metrics.record(operation, elapsed, outcome);
        match &result {
            Err(error) if !error.is_not_found() => tracing::warn!(
                backend = %self.label,
                %operation,
                namespace,
                name,
                ?elapsed,
                error = error as &dyn std::error::Error,
                "backend operation failed"
            ),
            _ => tracing::debug!(
                backend = %self.label,
                %operation,
                namespace,
                name,
                ?elapsed,
                found = !matches!(outcome, Outcome::NotFound),
                "backend operation"
            ),
        }
        result
    }
}

/// `stream`, adding the size of each chunk that passes to `operation`'s byte counter.
fn count_bytes(
    metrics: Arc<BackendMetrics>,
    operation: Operation,
    stream: ByteStream,
) -> ByteStream {
    stream
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                metrics.add_bytes(operation, bytes.len() as u64);
            }
        })
        .boxed()
}

#[async_trait]
impl Backend for MetricsBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        let call = self.inner.stat(namespace, name);
        self.timed(Operation::Stat, namespace, name, call).await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let call = self.inner.download(namespace, name, range);
        let stream = self
            .timed(Operation::Download, namespace, name, call)
            .await?;
        Ok(count_bytes(self.metrics(), Operation::Download, stream))
    }

    async fn upload(&self, namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let metrics = self.metrics();
        let body = body
            .map_stream(move |stream| count_bytes(Arc::clone(&metrics), Operation::Upload, stream));
        let call = self.inner.upload(namespace, name, body);
        self.timed(Operation::Upload, namespace, name, call).await
    }

    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage> {
        let call = self.inner.list(namespace, prefix, options);
        self.timed(Operation::List, namespace, prefix, call).await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let call = self.inner.delete(namespace, name);
        self.timed(Operation::Delete, namespace, name, call).await
    }

    async fn check_ready(&self) -> Result<()> {
        self.inner.check_ready().await
    }
}
