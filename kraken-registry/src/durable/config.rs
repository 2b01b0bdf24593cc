//! How a journal of tasks is drained: retry backoff and concurrency.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Draining a durable queue: writing blobs or tags back to the backend, or replicating them
/// to another cluster. The origin's `[write_back]`, the build-index's `[write_back]` and
/// `[replication]`.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteBackConfig {
    /// Delay before the first retry of a failed task; it doubles with every failure.
    /// Default: 1s.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest delay between retries. Default: 1m.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Tasks run at once. Default: 4.
    pub concurrency: usize,
}

impl Default for WriteBackConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            concurrency: 4,
        }
    }
}
