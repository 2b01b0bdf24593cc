//! The two halves of a connection's stream, shared by its reader and writer, and the
//! writer's stall bound.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::SEND_CHUNK;
use super::rate::RateLimiter;
use super::transport::BoxStream;

/// The reading side of a connection's stream. The reader and the writer run in the same task
/// and each holds the lock only for one poll, so they never wait on each other; unlike
/// `tokio::io::split`, the writer keeps access to [`PeerStream::poll_send_file`].
///
/// [`PeerStream::poll_send_file`]: super::transport::PeerStream::poll_send_file
pub(super) struct ReadSide<'a>(pub(super) &'a Mutex<BoxStream>);

/// The writing side; see [`ReadSide`].
pub(super) struct WriteSide<'a>(pub(super) &'a Mutex<BoxStream>);

fn lock_stream(stream: &Mutex<BoxStream>) -> MutexGuard<'_, BoxStream> {
    // A panic while polling would have ended the task that shares this lock.
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncRead for ReadSide<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut **lock_stream(self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteSide<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **lock_stream(self.0)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **lock_stream(self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **lock_stream(self.0)).poll_shutdown(cx)
    }
}

/// Runs one write, failing with [`io::ErrorKind::TimedOut`] if it makes no progress for
/// `stall`: a peer that stops reading must not hold the connection (and its slot) forever.
pub(super) async fn unless_stalled<T>(
    stall: Duration,
    write: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(stall, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            ))
        })
}

impl WriteSide<'_> {
    pub(super) fn supports_send_file(&self) -> bool {
        lock_stream(self.0).supports_send_file()
    }

    /// Sends exactly `range` of `file`, in chunks that each pass the egress limiter first.
    pub(super) async fn send_file(
        &mut self,
        file: &File,
        range: std::ops::Range<u64>,
        egress: Option<&RateLimiter>,
        stall: Duration,
    ) -> io::Result<()> {
        let mut offset = range.start;
        while offset < range.end {
            let chunk_end = range.end.min(offset + SEND_CHUNK as u64);
            if let Some(limiter) = egress {
                limiter.acquire((chunk_end - offset) as usize).await;
            }
            while offset < chunk_end {
                let len = (chunk_end - offset) as usize;
                let sent = unless_stalled(
                    stall,
                    std::future::poll_fn(|cx| {
                        lock_stream(self.0).poll_send_file(cx, file, offset, len)
                    }),
                )
                .await?;
                if sent == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before the piece",
                    ));
                }
                offset += sent as u64;
            }
        }
        Ok(())
    }
}
