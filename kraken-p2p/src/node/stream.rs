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
    inner: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + Sync>>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream").finish_non_exhaustive()
    }
}

struct State {
    source: PartialSource,
    progress: watch::Receiver<Progress>,
    /// Next byte to read.
    next: u64,
    /// End of the range read (exclusive), within the blob.
    end: u64,
    /// The download's restarts when the stream was opened: another count means the source
    /// read from was dropped for other metainfo.
    restarts: u32,
}

impl BlobStream {
    /// Streams bytes `range` of `source` (cut to the blob's length; the whole blob when
    /// `None`).
    pub(crate) fn new(
        source: PartialSource,
        progress: watch::Receiver<Progress>,
        range: Option<std::ops::Range<u64>>,
    ) -> Self {
        let length = match &source {
            PartialSource::Complete(blob) => blob.len(),
            PartialSource::Partial(meta, _) => meta.length(),
        };
        let range = range.unwrap_or(0..length);
        let end = range.end.min(length);
        let restarts = progress.borrow().restarts;
        let state = State {
            restarts,
            source,
            progress,
            next: range.start.min(end),
            end,
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
        if self.next >= self.end {
            return None;
        }
        let offset = self.next;
        match &self.source {
            PartialSource::Complete(blob) => {
                let len = CHUNK.min(self.end - offset);
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
                // The piece `offset` falls in; only the part of it inside the range is read.
                let index = u32::try_from(offset / meta.piece_length()).ok()?;
                let index = meta.piece_index(index).ok()?;
                let len = meta.piece_range(index).end.min(self.end) - offset;
                // Wait for the piece: every verified write bumps the progress watch.
                while !download.has_piece(index) {
                    if self.progress.changed().await.is_err() && !download.has_piece(index) {
                        return Some(Err(Error::DownloadFailed {
                            digest: *meta.digest(),
                            reason: crate::swarm::FailReason::Idle,
                        }));
                    }
                    if self.progress.borrow().restarts != self.restarts {
                        // Ends the stream, which drops the old download's handle.
                        self.next = self.end;
                        return Some(Err(Error::MetaInfoReplaced(*meta.digest())));
                    }
                }
                self.next += len;
                let download = download.clone();
                Some(
                    blocking(move || {
                        let mut buf = vec![0; len as usize];
                        download.read_exact_at(offset, &mut buf)?;
                        Ok(Bytes::from(buf))
                    })
                    .await,
                )
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
