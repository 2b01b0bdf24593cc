//! Retry decorator: exponential backoff with full jitter, for transient failures only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::error::Result;

/// Configuration of a [`RetryBackend`].
///
/// ```toml
/// [retry]
/// max_attempts = 4          # default
/// initial_backoff = "100ms" # default
/// max_backoff = "10s"       # default
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included; 1 disables retries. Default: 4.
    pub max_attempts: u32,
    /// Upper bound of the delay before the first retry; it doubles with each retry.
    /// Default: 100ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any one delay. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `retry` (1 for the first): a uniformly random duration
    /// up to `initial_backoff * 2^(retry - 1)`, capped at `max_backoff` ("full jitter", so
    /// many clients that failed together do not retry together).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// Retries the operations of the backend it wraps when they fail with a transient error
/// ([`Error::is_transient`](crate::Error::is_transient)).
///
/// The rules:
/// - Not-found, invalid names and ranges, unsupported operations and other final errors are
///   returned at once, never retried.
/// - A download is retried until its stream is open; a failure while the stream is being
///   read reaches the reader, who knows how far it got and can ask for the rest by range.
/// - An upload is retried only if its body can be replayed ([`UploadBody::try_clone`]); a
///   body from a one-shot stream or reader is tried once, since its bytes are gone.
#[derive(Debug)]
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    config: RetryConfig,
}

impl RetryBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, config: RetryConfig) -> Self {
        Self { inner, config }
    }

    async fn retry<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let max_attempts = self.config.max_attempts.max(1);
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(error) if error.is_transient() && tries < max_attempts => {
                    let delay = self.config.backoff(tries);
                    tracing::warn!(
                        operation,
                        attempt = tries,
                        ?delay,
                        error = &error as &dyn std::error::Error,
                        "backend operation failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
                result => return result,
            }
        }
    }
}

#[async_trait]
impl Backend for RetryBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        self.retry("stat", || self.inner.stat(namespace, name))
            .await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.retry("download", || self.inner.download(namespace, name, range))
            .await
    }

    async fn upload(&self, namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        if body.try_clone().is_none() {
            return self.inner.upload(namespace, name, body).await;
        }
        self.retry("upload", || {
            let replay = body.try_clone();
            async move {
                let replay =
                    replay.ok_or(crate::Error::Internal("replayable body stopped cloning"))?;
                self.inner.upload(namespace, name, replay).await
            }
        })
        .await
    }

    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage> {
        self.retry("list", || self.inner.list(namespace, prefix, options))
            .await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        self.retry("delete", || self.inner.delete(namespace, name))
            .await
    }

    async fn check_ready(&self) -> Result<()> {
        self.inner.check_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = RetryConfig {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        for _ in 0..100 {
            assert!(config.backoff(1) <= Duration::from_millis(100));
            assert!(config.backoff(2) <= Duration::from_millis(200));
            assert!(config.backoff(9) <= Duration::from_millis(250));
        }
    }
}
