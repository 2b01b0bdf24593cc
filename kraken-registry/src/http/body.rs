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
        move |position, buf| {
            blob.read_exact_at(position, buf)
                .map_err(std::io::Error::other)
        },
        offset,
        length,
    );
    stream(chunks)
}

/// `length` bytes from `offset` of whatever `read_exact_at` reads (a file, a blob), as a
/// stream of chunks read on the blocking pool at most [`READ_AHEAD`] chunks ahead of the
/// consumer, so memory stays bounded however large the range. Reading stops when the stream
/// is dropped.
pub(crate) fn read_chunks<F>(
    read_exact_at: F,
    offset: u64,
    length: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static
where
    F: Fn(u64, &mut [u8]) -> std::io::Result<()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let end = offset + length;
        let mut position = offset;
        while position < end {
            let n = (end - position).min(READ_CHUNK) as usize;
            let mut buf = vec![0; n];
            let chunk = read_exact_at(position, &mut buf).map(|()| Bytes::from(buf));
            let failed = chunk.is_err();
            // A closed channel means the client went away: stop reading.
            if sender.blocking_send(chunk).is_err() || failed {
                return;
            }
            position += n as u64;
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk, receiver))
    })
}
