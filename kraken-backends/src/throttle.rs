//! Bandwidth throttle decorator: a token bucket per direction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use kraken_core::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::error::Result;

/// Largest piece of a chunk paced at once, so a large chunk leaves in steps instead of in one
/// burst after a long wait.
const MAX_PACED_PIECE: usize = 1024 * 1024;

/// Configuration of a [`ThrottleBackend`].
///
/// ```toml
/// [throttle]
/// ingress_per_second = "100MiB"  # downloads; default: unlimited
/// egress_per_second = "50MiB"    # uploads; default: unlimited
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Bytes per second downloaded from the backend. Default: unlimited.
    pub ingress_per_second: Option<ByteSize>,
    /// Bytes per second uploaded to the backend. Default: unlimited.
    pub egress_per_second: Option<ByteSize>,
}

/// A token bucket holding up to one second of budget.
///
/// Unlike Go Kraken's limiter, which refuses (and then ignores) reservations larger than its
/// burst, this bucket lets the balance go negative: a request for more bytes than one second
/// of budget waits until the debt is paid off, so large blobs are throttled too, and later
/// requests queue behind it.
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// May be negative: bytes granted ahead of the budget.
    balance: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let bytes_per_second = bytes_per_second.max(1) as f64;
        Self {
            bytes_per_second,
            state: Mutex::new(BucketState {
                balance: bytes_per_second,
                updated: Instant::now(),
            }),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut state = match self.state.lock() {
                Ok(state) => state,
                // The state is two numbers, consistent after every statement: keep going.
                Err(poisoned) => poisoned.into_inner(),
            };
            let now = Instant::now();
            let refill = now.duration_since(state.updated).as_secs_f64() * self.bytes_per_second;
            state.balance = (state.balance + refill).min(self.bytes_per_second);
            state.updated = now;
            state.balance -= bytes as f64;
            if state.balance < 0.0 {
                Duration::from_secs_f64(-state.balance / self.bytes_per_second)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// `stream`, with each chunk let through only as fast as this bucket allows.
    pub fn pace(self: &Arc<Self>, stream: ByteStream) -> ByteStream {
        let bucket = Arc::clone(self);
        stream
            .flat_map(|chunk| futures::stream::iter(split_chunk(chunk)))
            .then(move |piece| {
                let bucket = Arc::clone(&bucket);
                async move {
                    let piece = piece?;
                    bucket.take(piece.len() as u64).await;
                    Ok(piece)
                }
            })
            .boxed()
    }
}

fn split_chunk(chunk: Result<Bytes>) -> Vec<Result<Bytes>> {
    match chunk {
        Ok(mut bytes) => {
            let mut pieces = Vec::with_capacity(bytes.len() / MAX_PACED_PIECE + 1);
            while bytes.len() > MAX_PACED_PIECE {
                pieces.push(Ok(bytes.split_to(MAX_PACED_PIECE)));
            }
            pieces.push(Ok(bytes));
            pieces
        }
        Err(error) => vec![Err(error)],
    }
}

/// Limits the bandwidth of the backend it wraps: downloads through the ingress bucket,
/// uploads through the egress bucket. Buckets can be shared between backends
/// ([`ThrottleBackend::with_buckets`]) to enforce one budget for several.
#[derive(Debug)]
pub struct ThrottleBackend {
    inner: Arc<dyn Backend>,
    ingress: Option<Arc<TokenBucket>>,
    egress: Option<Arc<TokenBucket>>,
}

impl ThrottleBackend {
    /// Wraps `inner` with buckets of its own.
    pub fn new(inner: Arc<dyn Backend>, config: &ThrottleConfig) -> Self {
        let bucket = |rate: Option<ByteSize>| rate.map(|rate| Arc::new(TokenBucket::new(rate.0)));
        Self::with_buckets(
            inner,
            bucket(config.ingress_per_second),
            bucket(config.egress_per_second),
        )
    }

    /// Wraps `inner` with the given buckets (`None`: unlimited).
    pub fn with_buckets(
        inner: Arc<dyn Backend>,
        ingress: Option<Arc<TokenBucket>>,
        egress: Option<Arc<TokenBucket>>,
    ) -> Self {
        Self {
            inner,
            ingress,
            egress,
        }
    }
}

#[async_trait]
impl Backend for ThrottleBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        self.inner.stat(namespace, name).await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let stream = self.inner.download(namespace, name, range).await?;
        Ok(match &self.ingress {
            Some(bucket) => bucket.pace(stream),
            None => stream,
        })
    }

    async fn upload(&self, namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let body = match &self.egress {
            Some(bucket) => {
                let bucket = Arc::clone(bucket);
                body.map_stream(move |stream| bucket.pace(stream))
            }
            None => body,
        };
        self.inner.upload(namespace, name, body).await
    }

    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage> {
        self.inner.list(namespace, prefix, options).await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        self.inner.delete(namespace, name).await
    }

    async fn check_ready(&self) -> Result<()> {
        self.inner.check_ready().await
    }
}
