//! Reading a blob in order while it downloads.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use kraken_core::{Blob, Download, MetaInfo};
use tokio::sync::watch;

use super::Progress;
use super::conn::PieceSource;
use super::read_cache::{ReadCache, Reader};
use crate::error::{Error, Result};

/// Most bytes per item: a piece longer than this is read in several items.
const CHUNK: u64 = 1 << 20;
/// Items read ahead of the consumer, so that the disk read of the next chunk overlaps the
/// send of this one (without it a pull alternated between reading and sending): memory per
/// stream stays bounded at this many chunks.
const READ_AHEAD: usize = 4;

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

impl BlobStream {
    /// Streams bytes `range` of `source` (cut to the blob's length; the whole blob when
    /// `None`), sharing the chunks of a complete blob with other streams through `cache`.
    /// With `mapped`, the chunks of a complete blob are memory maps of its file
    /// ([`Blob::map_range`](kraken_core::Blob::map_range)) where they can be.
    pub(crate) fn new(
        source: PartialSource,
        progress: watch::Receiver<Progress>,
        range: Option<std::ops::Range<u64>>,
        cache: Option<Arc<ReadCache>>,
        mapped: bool,
    ) -> Self {
        let (length, piece_length) = match &source {
            PartialSource::Complete(blob) => (blob.len(), CHUNK),
            PartialSource::Partial(meta, _) => (meta.length(), meta.piece_length()),
        };
        let range = range.unwrap_or(0..length);
        let end = range.end.min(length);
        let start = range.start.min(end);
        let restarts = progress.borrow().restarts;
        // Counted as a reader of the blob while the stream lives.
        let reader = match (&source, cache) {
            (PartialSource::Complete(blob), Some(cache)) => {
                Some(Arc::new(cache.open(blob.digest(), mapped)))
            }
            _ => None,
        };
        let source = Arc::new(source);
        // Items never straddle a piece boundary, so each waits for one piece only.
        let item_end = move |offset: u64| {
            let piece_end = (offset / piece_length + 1) * piece_length;
            (offset + CHUNK).min(piece_end).min(end)
        };
        let items = std::iter::successors(Some(start), move |&offset| Some(item_end(offset)))
            .take_while(move |&offset| offset < end)
            .map(move |offset| (offset, item_end(offset) - offset));
        let reads = futures::stream::iter(items)
            .map(move |(offset, len)| {
                let (source, progress) = (Arc::clone(&source), progress.clone());
                read_item(
                    source,
                    reader.clone(),
                    progress,
                    restarts,
                    mapped,
                    offset,
                    len,
                )
            })
            .buffered(READ_AHEAD);
        // The first error ends the stream (the items read ahead after it are dropped).
        let mut failed = false;
        let stream = reads.take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            std::future::ready(go)
        });
        Self {
            inner: Box::pin(stream),
        }
    }
}

/// Reads `len` bytes at `offset` of `source`, once the piece they fall in is verified;
/// `mapped`: maps them instead where the blob is complete.
async fn read_item(
    source: Arc<PartialSource>,
    reader: Option<Arc<Reader>>,
    mut progress: watch::Receiver<Progress>,
    restarts: u32,
    mapped: bool,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    if let Some(bytes) = reader.as_ref().and_then(|r| r.get(offset, len)) {
        return Ok(bytes);
    }
    if let PartialSource::Partial(meta, download) = &*source {
        let index = u32::try_from(offset / meta.piece_length())
            .ok()
            .and_then(|i| meta.piece_index(i).ok())
            .ok_or(Error::Internal("stream offset past the blob"))?;
        // Wait for the piece: every verified write bumps the progress watch.
        while !download.has_piece(index) {
            if progress.changed().await.is_err() && !download.has_piece(index) {
                return Err(Error::DownloadFailed {
                    digest: *meta.digest(),
                    reason: crate::swarm::FailReason::Idle,
                });
            }
            if progress.borrow().restarts != restarts {
                // Ends the stream, which drops the old download's handle.
                return Err(Error::MetaInfoReplaced(*meta.digest()));
            }
        }
    }
    tokio::task::spawn_blocking(move || match &*source {
        PartialSource::Complete(blob) => {
            #[allow(unsafe_code, reason = "mapped streams come only from `read_mapped_in`")]
            // SAFETY: `mapped` is set only by `Node::read_mapped_in`, whose caller promises
            // that only the kernel reads the stream's bytes (and by this module's tests,
            // whose files change only between reads); the read cache hands maps only to
            // such streams.
            let map = mapped
                .then(|| unsafe { blob.map_range(offset, len as usize) })
                .flatten();
            let bytes = match map {
                Some(map) => Bytes::from_owner(map),
                None => Bytes::from(blob.read_vec_at(offset, len as usize)?),
            };
            if let Some(reader) = &reader {
                reader.insert(offset, bytes.clone());
            }
            Ok(bytes)
        }
        PartialSource::Partial(_, download) => {
            Ok(Bytes::from(download.read_vec_at(offset, len as usize)?))
        }
    })
    .await
    .map_err(|_| Error::Internal("read task failed"))?
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use kraken_core::{BlobStore, MetaInfo};

    use super::*;

    /// Pseudo-random bytes (no two pieces alike).
    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Items of a stream: each at most `CHUNK` long, none across a piece boundary, in order.
    async fn items(stream: BlobStream) -> Vec<Bytes> {
        stream.map(|item| item.unwrap()).collect().await
    }

    #[tokio::test]
    async fn items_are_bounded_chunks_within_pieces_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = bytes(9 << 20 | 333);
        let piece = 4 << 20;
        let meta = store.import(&data[..], piece, None).unwrap();
        let blob = store.open_blob(meta.digest()).unwrap();
        let (_tx, progress) = watch::channel(Progress::default());
        let range = 100..(8 << 20) + 5;
        for mapped in [false, true] {
            let got = items(BlobStream::new(
                PartialSource::Complete(blob.clone()),
                progress.clone(),
                Some(range.clone()),
                None,
                mapped,
            ))
            .await;
            assert!(got.iter().all(|item| item.len() as u64 <= CHUNK));
            assert_eq!(
                got.concat(),
                &data[range.start as usize..range.end as usize]
            );
        }
    }

    /// A blob of a little over 3 MiB in 1 MiB pieces, complete in a new store in `dir`.
    fn stored_blob(dir: &std::path::Path) -> (Vec<u8>, Blob) {
        let store = BlobStore::open(dir).unwrap();
        let data = bytes(3 << 20 | 77);
        let meta = store.import(&data[..], 1 << 20, None).unwrap();
        (data, store.open_blob(meta.digest()).unwrap())
    }

    #[tokio::test]
    async fn streams_of_one_blob_share_the_chunks_the_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let (data, blob) = stored_blob(dir.path());
        let cache = ReadCache::new(8 << 20).map(Arc::new);
        let stream = |cache: Option<Arc<ReadCache>>| {
            let (_tx, progress) = watch::channel(Progress::default());
            BlobStream::new(
                PartialSource::Complete(blob.clone()),
                progress,
                None,
                cache,
                false,
            )
        };
        // Two streams at once: the chunks one reads are kept for the other.
        let (first, second) = (stream(cache.clone()), stream(cache.clone()));
        assert_eq!(items(first).await.concat(), data);
        // The file changes under the store (as a failing disk might change it): a stream
        // that reads the file sees it, the one behind the first takes its chunks.
        std::fs::write(blob.path(), vec![b'x'; data.len()]).unwrap();
        assert_ne!(items(stream(None)).await.concat(), data);
        assert_eq!(items(second).await.concat(), data);
    }

    #[tokio::test]
    async fn mapped_streams_hand_out_maps_of_the_file_and_never_take_copies() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (data, blob) = stored_blob(dir.path());
        let cache = ReadCache::new(8 << 20).map(Arc::new);
        let stream = |mapped: bool| {
            let (_tx, progress) = watch::channel(Progress::default());
            let source = PartialSource::Complete(blob.clone());
            BlobStream::new(source, progress, None, cache.clone(), mapped)
        };
        // Overwritten in place, as only a test does to a store's file: a map shows the new
        // bytes, a copy keeps the old ones.
        let overwrite = |byte: u8| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(blob.path())
                .unwrap();
            file.write_all_at(&vec![byte; data.len()], 0).unwrap();
            vec![byte; data.len()]
        };
        let (copied, copied_behind, mapped) = (stream(false), stream(false), stream(true));
        assert_eq!(items(copied).await.concat(), data);
        let changed = overwrite(b'x');
        assert_eq!(
            items(copied_behind).await.concat(),
            data,
            "copies are shared"
        );
        let maps = items(mapped).await;
        assert_eq!(maps.concat(), changed, "a mapped stream took a copy");
        let changed = overwrite(b'y');
        assert_eq!(maps.concat(), changed, "a mapped stream's items are maps");
    }

    #[tokio::test]
    async fn a_partial_blob_is_read_ahead_as_its_pieces_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = bytes(3 << 20 | 17);
        let piece: u64 = 1536 << 10; // not a multiple of CHUNK: items end at pieces
        let meta = Arc::new(MetaInfo::from_bytes(&data, piece).unwrap());
        let download = store.begin_download(&meta).unwrap();
        let (tx, progress) = watch::channel(Progress::default());
        let stream = BlobStream::new(
            PartialSource::Partial(Arc::clone(&meta), download.clone()),
            progress,
            None,
            None,
            true,
        );
        let reader = tokio::spawn(items(stream));
        // Last piece first: the reader must wait for the first.
        let pieces: Vec<_> = meta.pieces().collect();
        for &index in pieces.iter().rev() {
            let range = meta.piece_range(index);
            download
                .write_piece(index, &data[range.start as usize..range.end as usize])
                .unwrap();
            tokio::task::yield_now().await;
            tx.send_modify(|p| p.have += 1);
        }
        let got = reader.await.unwrap();
        for item in &got {
            assert!(item.len() as u64 <= CHUNK);
        }
        let lengths: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(lengths, [1 << 20, 512 << 10, 1 << 20, 512 << 10, 17]);
        assert_eq!(got.concat(), data);
    }
}
