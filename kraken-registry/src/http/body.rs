//! Response bodies: short texts, and blob bytes streamed from disk.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use kraken_core::Blob;

/// The body type of every response of this crate's services.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Bytes read from disk per chunk handed to the connection.
const READ_CHUNK: u64 = 1 << 20;
/// Chunks read ahead of the connection: bounds memory per response at 4 MiB.
const READ_AHEAD: usize = 4;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of the chunks of `stream`; an error aborts the response.
pub(crate) fn stream<S>(stream: S) -> Body
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data)).boxed()
}

/// `length` bytes of `blob` from `offset`, read with positional reads on the blocking pool
/// a bounded number of chunks ahead of the client.
pub(crate) fn blob_range(blob: Blob, offset: u64, length: u64) -> Body {
    let chunks = read_chunks(
        move |position, n| blob.read_vec_at(position, n).map_err(std::io::Error::other),
        offset,
        length,
    );
    stream(chunks)
}

/// `length` bytes from `offset` of whatever `read_vec_at` reads (a file, a blob: `n` bytes
/// at a position, in a new buffer), as a stream of chunks. Each chunk is read on the blocking pool, at most [`READ_AHEAD`] of them
/// ahead of the consumer, so memory stays bounded however large the range; and a blocking
/// thread is held only while it reads, never while the consumer (a client's socket) is slow
/// to take the bytes, so clients that stop reading cannot starve commits, journal syncs and
/// piece reads of threads. Reading stops when the stream is dropped.
pub(crate) fn read_chunks<F>(
    read_vec_at: F,
    offset: u64,
    length: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static
where
    F: Fn(u64, usize) -> std::io::Result<Vec<u8>> + Send + Sync + 'static,
{
    let read_vec_at = std::sync::Arc::new(read_vec_at);
    let end = offset + length;
    let chunks = (offset..end)
        .step_by(READ_CHUNK as usize)
        .map(move |position| (position, (end - position).min(READ_CHUNK) as usize));
    futures::StreamExt::buffered(
        futures::StreamExt::map(futures::stream::iter(chunks), move |(position, n)| {
            let read_vec_at = std::sync::Arc::clone(&read_vec_at);
            let read =
                tokio::task::spawn_blocking(move || read_vec_at(position, n).map(Bytes::from));
            async move { read.await.map_err(std::io::Error::other)? }
        }),
        READ_AHEAD,
    )
}
