//! A byte-rate limit shared by every connection of a node.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket in bytes. Callers take what they need up front and, if that drives the
/// bucket into debt, sleep until the debt is paid: a transfer larger than the bucket still
/// goes through at the configured rate (Go Kraken's limiter rejected those), and waiters are
/// served roughly in arrival order because each one's sleep covers all the debt before it.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limit of `bytes_per_sec`, with bursts of up to 50 ms worth (at least 64 KiB).
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate * 0.05).max(64.0 * 1024.0);
        Self {
            bytes_per_sec: rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket, waiting if the node is over its rate.
    pub(crate) async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * self.bytes_per_sec).min(self.burst);
            bucket.refilled = now;
            bucket.tokens -= bytes as f64;
            if bucket.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-bucket.tokens / self.bytes_per_sec)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_across_concurrent_users_and_large_transfers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1_000_000));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                // 2.5 MB each in 4 MiB-piece-sized and small chunks: 10 MB in all.
                limiter.acquire(2_000_000).await;
                for _ in 0..10 {
                    limiter.acquire(50_000).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        // 10 MB at 1 MB/s, minus the initial burst.
        assert!((9.8..=10.1).contains(&elapsed), "took {elapsed}s");
    }
}
