//! The connection's byte stream under the listener's clocks: a client that sends no request
//! head, or stops reading its response, loses its connection.
//!
//! hyper's own header timer re-arms whenever a keep-alive connection goes idle, so it cannot
//! tell "idle between requests" (long) from "in the middle of a request head" (short), and it
//! has no write timeout at all. [`GuardedIo`] keeps both clocks itself, using the [`Phase`]
//! that the service and the response body keep up to date.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where a connection is between requests, shared by its IO, its service and the body of
/// the response in flight.
#[derive(Debug)]
pub(super) struct Phase {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    state: Mutex<PhaseState>,
}

#[derive(Debug)]
struct PhaseState {
    /// Requests handed to the service whose response has not been sent yet.
    in_flight: usize,
    /// When the connection last had no request in flight.
    idle_since: Instant,
    /// When the first byte of the next request head arrived.
    head_started: Option<Instant>,
    /// A read waiting without a deadline while a request was in flight: woken when the
    /// request finishes, so that it starts the idle clock.
    reader: Option<Waker>,
}

impl Phase {
    /// A new connection: its first request head is due within `header_read_timeout`.
    pub(super) fn new(header_read_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            header_read_timeout,
            idle_timeout,
            state: Mutex::new(PhaseState {
                in_flight: 0,
                idle_since: now,
                head_started: Some(now),
                reader: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PhaseState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request head was parsed and handed to the service.
    pub(super) fn request_started(&self) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_started = None;
    }

    /// A response was sent (or abandoned): with none left, the idle clock starts.
    pub(super) fn request_finished(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_started = None;
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }

    /// Bytes of a response went out. hyper lets go of a response body when it takes its last
    /// frame, not when that frame has reached the client, so the idle clock restarts with
    /// every write until the connection is really idle: a slow reader of a long response is
    /// not cut off by the idle timeout while the last bytes drain.
    fn bytes_written(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.idle_since = Instant::now();
        }
    }

    /// Bytes arrived: between requests, they begin the next head.
    fn bytes_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
        }
    }

    /// When a read that is waiting must give up: the head's deadline, or the idle one;
    /// `None` while a request is in flight (its body has its own stall clock), in which case
    /// `reader` is woken when the last request finishes.
    fn read_deadline(&self, reader: &Waker) -> Option<Instant> {
        let mut state = self.lock();
        if state.in_flight > 0 {
            state.reader = Some(reader.clone());
            return None;
        }
        Some(match state.head_started {
            Some(started) => started + self.header_read_timeout,
            None => state.idle_since + self.idle_timeout,
        })
    }
}

/// A connection's stream with a read deadline between requests and a write-stall timeout.
#[derive(Debug)]
pub(super) struct GuardedIo<S> {
    inner: S,
    phase: Arc<Phase>,
    write_stall_timeout: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> GuardedIo<S> {
    pub(super) fn new(inner: S, phase: Arc<Phase>, write_stall_timeout: Duration) -> Self {
        Self {
            inner,
            phase,
            write_stall_timeout,
            read_timer: None,
            write_timer: None,
        }
    }

    /// The write side made no progress: `Pending` until the stall timeout, then an error.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_stall_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {timeout:?}"),
        ))
    }

    /// The write side answered: `Pending` arms the stall timer, anything else disarms it.
    /// Only bytes that went out restart the idle clock: hyper flushes whenever its task is
    /// woken, the idle timer's own wake-up among them, so a flush with nothing to send
    /// would keep an idle connection open for ever.
    fn wrote<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        sent: impl FnOnce(&T) -> bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.write_stalled(cx).map(Err),
            ready => {
                self.write_timer = None;
                if matches!(&ready, Poll::Ready(Ok(value)) if sent(value)) {
                    self.phase.bytes_written();
                }
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.phase.bytes_read();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some(deadline) = this.phase.read_deadline(cx.waker()) else {
                    this.read_timer = None;
                    return Poll::Pending;
                };
                let timer = this
                    .read_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request head in time",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(result, |&n| n > 0, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(result, |&n| n > 0, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(result, |()| false, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.wrote(result, |()| false, cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const HEADER: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(1500);

    /// A connection that has answered one request and now waits for the next, with what
    /// happens to its write side one second into the wait; returns how long the wait lasted
    /// before the read gave up.
    async fn idle_wait_with(
        one_second_in: impl AsyncFnOnce(&mut GuardedIo<tokio::io::DuplexStream>),
    ) -> Duration {
        let (server, _client) = tokio::io::duplex(1024);
        let phase = Phase::new(HEADER, IDLE);
        phase.request_started();
        phase.request_finished();
        let mut io = GuardedIo::new(server, Arc::clone(&phase), HEADER);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        one_second_in(&mut io).await;
        let error = io.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_with_nothing_to_send_does_not_restart_the_idle_clock() {
        let waited = idle_wait_with(async |io| io.flush().await.unwrap()).await;
        assert_eq!(waited, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_that_go_out_restart_the_idle_clock() {
        let waited = idle_wait_with(async |io| io.write_all(b"x").await.unwrap()).await;
        assert_eq!(waited, Duration::from_secs(1) + IDLE);
    }
}
