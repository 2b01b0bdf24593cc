//! The [`Backend`] trait and the values that cross it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::io::AsyncRead;

use crate::error::{Error, Result};

/// A stream of blob bytes, as downloads return them and uploads take them.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// Durable remote storage for blobs.
///
/// A blob is named by a `(namespace, name)` pair. Path-based backends (filesystem, HTTP,
/// object stores, WebHDFS) map the name to a path through their
/// [`NameLayout`](crate::NameLayout) and use the namespace only for routing (see
/// [`Router`](crate::Router)); the registry backend reads the namespace as the repository.
///
/// Every method tells a missing blob ([`Error::NotFound`]) from a failure. Bodies are
/// streamed both ways: no implementation holds a whole blob in memory.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync {
    /// Size and existence of a blob.
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo>;

    /// Streams a blob, or the part of it that `range` selects. A range whose offset is at or
    /// past the end fails with [`Error::RangeNotSatisfiable`]; a length that reaches past the
    /// end is cut at the end, as HTTP does.
    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream>;

    /// Stores a blob, replacing any blob of the same name. The body is streamed; a reader
    /// sees either the old blob or the whole new one, never a part.
    async fn upload(&self, namespace: &str, name: &str, body: UploadBody) -> Result<()>;

    /// One page of the names that start with `prefix`, in ascending order. Pass the returned
    /// [`ListPage::continuation_token`] in [`ListOptions`] to get the next page.
    async fn list(&self, namespace: &str, prefix: &str, options: &ListOptions) -> Result<ListPage>;

    /// Removes a blob; [`Error::NotFound`] if there was none.
    async fn delete(&self, namespace: &str, name: &str) -> Result<()>;

    /// Whether the backend answers, for services' `/readiness`: a stat of
    /// [`READINESS_NAME`], a name nobody stores, where [`Error::NotFound`] is the healthy
    /// answer (Go Kraken's readiness digest). Decorators check their inner backend without
    /// retrying; a [`Router`](crate::Router) checks every route.
    async fn check_ready(&self) -> Result<()> {
        match self.stat("", READINESS_NAME).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The name [`Backend::check_ready`] looks up: the SHA-256 of "kraken readiness check", in
/// digest form so that every name layout accepts it.
pub const READINESS_NAME: &str =
    "sha256:999cf22668b590c7276105ed624a841306a57d7cb8f846522b88154fed0b5efe";

/// What [`Backend::stat`] knows about a blob.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct BlobInfo {
    /// Size in bytes.
    pub size: u64,
    /// When the blob was last written, where the backend says (`fs`: the file's mtime;
    /// object stores: `Last-Modified`); `None` where it does not. The origins' garbage
    /// collector never sweeps a blob of unknown age from a backend.
    pub modified: Option<std::time::SystemTime>,
}

impl BlobInfo {
    /// Info for a blob of `size` bytes, of unknown age.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            modified: None,
        }
    }

    /// The same info, written at `modified`.
    #[must_use]
    pub fn with_modified(mut self, modified: std::time::SystemTime) -> Self {
        self.modified = Some(modified);
        self
    }
}

/// A non-empty byte range of a blob: `length` bytes from `offset`, or to the end.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ByteRange {
    offset: u64,
    /// Never `Some(0)`: an empty range asks for nothing and has no HTTP form.
    length: Option<u64>,
}

impl ByteRange {
    /// `length` bytes from `offset`; `None` when `length` is 0, as there is nothing to read.
    pub fn new(offset: u64, length: u64) -> Option<Self> {
        (length > 0).then_some(Self {
            offset,
            length: Some(length),
        })
    }

    /// Everything from `offset` to the end.
    pub fn from_offset(offset: u64) -> Self {
        Self {
            offset,
            length: None,
        }
    }

    /// First byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of bytes; `None` reads to the end.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The last byte (inclusive), as an HTTP `Range` header writes it; `None` when the range
    /// is open or empty.
    pub fn last_byte(&self) -> Option<u64> {
        self.length
            .map(|length| self.offset.saturating_add(length.saturating_sub(1)))
    }

    /// The value of an HTTP `Range` header for this range.
    pub fn http_header(&self) -> String {
        match self.last_byte() {
            Some(last) => format!("bytes={}-{last}", self.offset),
            None => format!("bytes={}-", self.offset),
        }
    }

    /// The byte count this range selects from a blob of `size` bytes, or
    /// [`Error::RangeNotSatisfiable`] when it starts at or past the end.
    pub fn clamp_to(&self, size: u64) -> Result<u64> {
        if self.offset >= size {
            return Err(Error::RangeNotSatisfiable {
                offset: self.offset,
                size,
            });
        }
        let available = size - self.offset;
        Ok(self
            .length
            .map_or(available, |length| length.min(available)))
    }
}

/// Per-call options of [`Backend::list`].
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ListOptions {
    /// Where the previous page stopped; `None` starts at the beginning.
    pub continuation_token: Option<String>,
    /// Most names per page; `None` lets the backend choose (1000 for most).
    pub limit: Option<usize>,
}

impl ListOptions {
    /// Pages of at most `limit` names.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            continuation_token: None,
            limit: Some(limit),
        }
    }

    /// The same options, continuing after `token`.
    pub fn after(&self, token: Option<String>) -> Self {
        Self {
            continuation_token: token,
            limit: self.limit,
        }
    }

    /// The page size to use: the caller's limit (at least 1) or `default`.
    pub(crate) fn page_size(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).max(1)
    }
}

/// One page of [`Backend::list`].
#[non_exhaustive]
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ListPage {
    /// Names on this page, ascending.
    pub names: Vec<String>,
    /// Pass this to get the next page; `None` on the last page.
    pub continuation_token: Option<String>,
}

impl ListPage {
    /// A page with these names and token.
    pub fn new(names: Vec<String>, continuation_token: Option<String>) -> Self {
        Self {
            names,
            continuation_token,
        }
    }
}

/// The body of an upload: a stream of bytes, its size when known, and, when the bytes can be
/// produced again, a way to replay them.
///
/// Only a replayable body ([`UploadBody::from_bytes`], [`UploadBody::replayable`]) can be
/// retried by [`RetryBackend`](crate::RetryBackend); a body built from a one-shot stream or
/// reader is uploaded once.
pub struct UploadBody {
    size: Option<u64>,
    source: Source,
}

enum Source {
    /// In a mutex only to make the body `Sync`, so that `&UploadBody` may cross `.await`s;
    /// it is never locked, only taken apart.
    Once(std::sync::Mutex<ByteStream>),
    Replay(Arc<dyn Fn() -> ByteStream + Send + Sync>),
}

impl UploadBody {
    /// A body held in memory (replayable).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        let size = bytes.len() as u64;
        Self::replayable(Some(size), move || {
            let bytes = bytes.clone();
            futures::stream::once(async move { Ok(bytes) }).boxed()
        })
    }

    /// A one-shot stream of `size` bytes (`None`: unknown until the stream ends).
    pub fn from_stream(stream: ByteStream, size: Option<u64>) -> Self {
        Self {
            size,
            source: Source::Once(std::sync::Mutex::new(stream)),
        }
    }

    /// A one-shot reader of `size` bytes (`None`: unknown until it ends).
    pub fn from_reader(reader: impl AsyncRead + Send + 'static, size: Option<u64>) -> Self {
        let stream = tokio_util::io::ReaderStream::new(reader).map_err(Error::from);
        Self::from_stream(stream.boxed(), size)
    }

    /// A body that `make_stream` can produce again from the start, e.g. by reopening a file:
    /// uploads of it can be retried.
    pub fn replayable(
        size: Option<u64>,
        make_stream: impl Fn() -> ByteStream + Send + Sync + 'static,
    ) -> Self {
        Self {
            size,
            source: Source::Replay(Arc::new(make_stream)),
        }
    }

    /// The size in bytes, when known up front.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// A copy that replays the same bytes, or `None` for a one-shot body.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.source {
            Source::Once(_) => None,
            Source::Replay(make) => Some(Self {
                size: self.size,
                source: Source::Replay(Arc::clone(make)),
            }),
        }
    }

    /// The bytes. When the size is known, a stream that ends early or runs long fails with
    /// [`Error::InvalidResponse`] instead of storing a truncated or padded blob.
    pub fn into_stream(self) -> ByteStream {
        let stream = match self.source {
            Source::Once(stream) => into_inner(stream),
            Source::Replay(make) => make(),
        };
        match self.size {
            Some(size) => exact_length(stream, size, "upload body"),
            None => stream,
        }
    }

    /// The same body with each chunk passed through `map` (used by decorators that count or
    /// pace bytes). Replayable bodies stay replayable.
    pub(crate) fn map_stream(
        self,
        map: impl Fn(ByteStream) -> ByteStream + Send + Sync + 'static,
    ) -> Self {
        let size = self.size;
        match self.source {
            Source::Once(stream) => Self::from_stream(map(into_inner(stream)), size),
            Source::Replay(make) => Self::replayable(size, move || map(make())),
        }
    }
}

impl fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadBody")
            .field("size", &self.size)
            .field("replayable", &matches!(self.source, Source::Replay(_)))
            .finish()
    }
}

fn into_inner(stream: std::sync::Mutex<ByteStream>) -> ByteStream {
    stream
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks that `stream` yields exactly `expected` bytes: an error as soon as it yields more,
/// or when it ends with fewer. `what` names the stream in the error.
pub(crate) fn exact_length(stream: ByteStream, expected: u64, what: &'static str) -> ByteStream {
    let mut seen = 0u64;
    checked(stream, move |chunk| match chunk {
        Some(chunk) => {
            seen += chunk.len() as u64;
            if seen > expected {
                return Err(Error::InvalidResponse(format!(
                    "{what} is longer than the expected {expected} bytes"
                )));
            }
            Ok(())
        }
        None if seen < expected => Err(Error::InvalidResponse(format!(
            "{what} ended after {seen} of {expected} bytes"
        ))),
        None => Ok(()),
    })
}

/// `stream` with `check` run on every chunk (`Some`) and once at the end (`None`); the first
/// error `check` returns ends the stream with that error.
pub(crate) fn checked(
    mut stream: ByteStream,
    mut check: impl FnMut(Option<&Bytes>) -> Result<()> + Send + 'static,
) -> ByteStream {
    let mut done = false;
    futures::stream::poll_fn(move |cx| {
        if done {
            return Poll::Ready(None);
        }
        let last = match std::task::ready!(stream.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => match check(Some(&chunk)) {
                Ok(()) => return Poll::Ready(Some(Ok(chunk))),
                Err(error) => Some(Err(error)),
            },
            Some(Err(error)) => Some(Err(error)),
            None => check(None).err().map(Err),
        };
        // After an error or the end, the stream is over: never poll the inner one again.
        done = true;
        Poll::Ready(last)
    })
    .boxed()
}

/// Reads a whole stream into memory, failing once it exceeds `limit` bytes. For small
/// bodies only (manifests, JSON, tests).
pub async fn collect_bytes(mut stream: ByteStream, limit: usize) -> Result<Bytes> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buffer.len() + chunk.len() > limit {
            return Err(Error::InvalidResponse(format!(
                "body is larger than the {limit}-byte limit"
            )));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(items).boxed()
    }

    #[tokio::test]
    async fn exact_length_rejects_short_and_long_streams() {
        let ok = collect_bytes(exact_length(chunks(&[b"ab", b"c"]), 3, "t"), 10).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"abc"));
        let short = collect_bytes(exact_length(chunks(&[b"ab"]), 3, "t"), 10).await;
        assert!(matches!(short, Err(Error::InvalidResponse(_))));
        let long = collect_bytes(exact_length(chunks(&[b"ab", b"cd"]), 3, "t"), 10).await;
        assert!(matches!(long, Err(Error::InvalidResponse(_))));
    }

    #[tokio::test]
    async fn collect_bytes_enforces_its_limit() {
        let result = collect_bytes(chunks(&[b"abc", b"def"]), 5).await;
        assert!(matches!(result, Err(Error::InvalidResponse(_))));
    }

    #[test]
    fn ranges_clamp_at_the_end_and_reject_offsets_past_it() {
        assert_eq!(ByteRange::new(2, 10).unwrap().clamp_to(5).unwrap(), 3);
        assert_eq!(ByteRange::from_offset(1).clamp_to(5).unwrap(), 4);
        assert!(matches!(
            ByteRange::new(5, 1).unwrap().clamp_to(5),
            Err(Error::RangeNotSatisfiable { offset: 5, size: 5 })
        ));
        assert_eq!(ByteRange::new(2, 3).unwrap().http_header(), "bytes=2-4");
        assert_eq!(ByteRange::new(2, 0), None);
        assert_eq!(ByteRange::from_offset(7).http_header(), "bytes=7-");
    }

    #[test]
    fn only_replayable_bodies_clone() {
        assert!(UploadBody::from_bytes("abc").try_clone().is_some());
        let once = UploadBody::from_stream(chunks(&[b"a"]), Some(1));
        assert!(once.try_clone().is_none());
    }
}
