//! An in-memory backend whose next calls can be made to fail or to take time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;

use kraken_backends::{
    Backend, BlobInfo, ByteRange, ByteStream, Error, ListOptions, ListPage, Result, UploadBody,
    collect_bytes, paginate,
};

/// Largest blob the in-memory backend takes.
const MAX_BLOB: usize = 256 * 1024 * 1024;

/// An in-memory backend for decorator tests: counts calls, fails the next N calls with a
/// transient [`Error::Transport`], can delay every call, and can hold downloads until
/// released (a backend that is slow for exactly as long as a test needs).
#[derive(Debug, Default)]
pub struct FaultyBackend {
    blobs: Mutex<BTreeMap<String, Bytes>>,
    failures_left: AtomicU32,
    calls: AtomicU32,
    delay: Mutex<Duration>,
    held: AtomicBool,
    released: Notify,
    waiting: AtomicU32,
}

impl FaultyBackend {
    /// A backend whose first `failures` calls fail.
    pub fn failing_first(failures: u32) -> Self {
        let backend = Self::default();
        backend.fail_next(failures);
        backend
    }

    /// Makes the next `failures` calls fail.
    pub fn fail_next(&self, failures: u32) {
        self.failures_left.store(failures, Ordering::SeqCst);
    }

    /// Makes every call take `delay` (on tokio's clock, so paused-time tests stay instant).
    pub fn delay_each_call(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Makes every download wait until [`release`](Self::release).
    pub fn hold_downloads(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets held downloads (and later ones) go on.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Downloads waiting for [`release`](Self::release) now.
    pub fn held_downloads(&self) -> u32 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Stores `data` as `name`, without counting a call.
    pub fn insert(&self, name: &str, data: Bytes) {
        self.blobs().insert(name.to_owned(), data);
    }

    /// Calls so far, failed ones included.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The stored bytes of `name`.
    pub fn uploaded(&self, name: &str) -> Option<Bytes> {
        self.blobs().get(name).cloned()
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call, waits the delay and fails if a failure is due.
    async fn enter(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let due = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if due {
            return Err(Error::Transport(Box::new(std::io::Error::other(
                "injected failure",
            ))));
        }
        Ok(())
    }

    fn blob(&self, namespace: &str, name: &str) -> Result<Bytes> {
        self.uploaded(name)
            .ok_or_else(|| Error::not_found(namespace, name))
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        self.enter().await?;
        Ok(BlobInfo::new(self.blob(namespace, name)?.len() as u64))
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.enter().await?;
        // Registered before the check, so a release between the two is not missed.
        let mut released = std::pin::pin!(self.released.notified());
        released.as_mut().enable();
        if self.held.load(Ordering::SeqCst) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while self.held.load(Ordering::SeqCst) {
                released.as_mut().await;
                released.set(self.released.notified());
                released.as_mut().enable();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let mut blob = self.blob(namespace, name)?;
        if let Some(range) = range {
            let length = range.clamp_to(blob.len() as u64)?;
            blob = blob.slice(range.offset() as usize..(range.offset() + length) as usize);
        }
        Ok(futures::stream::once(async move { Ok(blob) }).boxed())
    }

    async fn upload(&self, _namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        self.enter().await?;
        let bytes = collect_bytes(body.into_stream(), MAX_BLOB).await?;
        self.blobs().insert(name.to_owned(), bytes);
        Ok(())
    }

    async fn list(
        &self,
        _namespace: &str,
        prefix: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        self.enter().await?;
        let names = self.blobs().keys().cloned().collect();
        Ok(paginate(names, prefix, options))
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        self.enter().await?;
        match self.blobs().remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(namespace, name)),
        }
    }
}
