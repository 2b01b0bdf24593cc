//! Reading a blob in order while it downloads.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use kraken_core::{Blob, Download, MetaInfo};
use tokio::sync::watch;

use super::Progress;
use super::conn::PieceSource;
use crate::error::{Error, Result};

/// Bytes per item when streaming a complete blob.
const CHUNK: u64 = 1 << 20;

/// Where a stream reads from.
#[derive(Debug)]
pub(crate) enum PartialSource {
    Complete(Blob),
    Partial(Arc<MetaInfo>, Download),
}

impl PartialSource {
    pub(crate) fn from_piece_source(meta: Arc<MetaInfo>, source: &PieceSource) -> Self {
        match source {
            PieceSource::Blob(blob) => Self::Complete(blob.clone()),
            PieceSource::Partial(download) => Self::Partial(meta, download.clone()),
        }
    }
}

/// A blob's bytes in order, as a `Stream` of chunks; made by
/// [`Node::read`](super::Node::read). Each chunk is verified: a piece is only read once its
/// hash has been checked.
pub struct BlobStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream").finish_non_exhaustive()
    }
}

struct State {
    source: PartialSource,
    progress: watch::Receiver<Progress>,
    /// Next piece (partial) or byte offset (complete) to read.
    next: u64,
}

impl BlobStream {
    pub(crate) fn new(source: PartialSource, progress: watch::Receiver<Progress>) -> Self {
        let state = State {
            source,
            progress,
            next: 0,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let item = state.next_chunk().await;
            item.map(|item| (item, state))
        });
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl State {
    async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        match &self.source {
            PartialSource::Complete(blob) => {
                if self.next >= blob.len() {
                    return None;
                }
                let (offset, len) = (self.next, CHUNK.min(blob.len() - self.next));
                self.next += len;
                let blob = blob.clone();
                Some(
                    blocking(move || {
                        let mut buf = vec![0; len as usize];
                        blob.read_exact_at(offset, &mut buf)?;
                        Ok(Bytes::from(buf))
                    })
                    .await,
                )
            }
            PartialSource::Partial(meta, download) => {
                let index = meta.piece_index(u32::try_from(self.next).ok()?).ok()?;
                // Wait for the piece: every verified write bumps the progress watch.
                while !download.has_piece(index) {
                    if self.progress.changed().await.is_err() && !download.has_piece(index) {
                        return Some(Err(Error::DownloadFailed {
                            digest: *meta.digest(),
                            reason: crate::swarm::FailReason::Idle,
                        }));
                    }
                }
                self.next += 1;
                let download = download.clone();
                Some(blocking(move || Ok(Bytes::from(download.read_piece(index)?))).await)
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Error::Internal("read task failed"))?
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
