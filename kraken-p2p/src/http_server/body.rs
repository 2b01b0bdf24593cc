//! Request and response bodies as the listener hands them on: a request body that gives up
//! when the client stops sending, and a response body that tells the connection when it is
//! done, so the idle clock starts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::access::Finished;
use super::io::Phase;

/// The body of a request: hyper's, with a stall timeout. While the service waits for the
/// next frame and the client sends nothing for the listener's
/// [`body_stall_timeout`](super::HttpLimits::body_stall_timeout), the body ends with an
/// error of kind [`io::ErrorKind::TimedOut`]. Time the service spends not reading does not
/// count.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    stall_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, stall_timeout: Duration) -> Self {
        Self {
            inner,
            stall_timeout,
            timer: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|frame| frame.map_err(io::Error::other)))
            }
            Poll::Pending => {
                let timeout = this.stall_timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the request body sent nothing for {timeout:?}"),
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its request finished on the connection when it is dropped
/// (hyper drops it once it has been written, or abandoned), and then logs and counts the
/// request with the bytes that went out.
#[derive(Debug)]
pub(super) struct TrackedBody<B: Body> {
    inner: Pin<Box<B>>,
    phase: Arc<Phase>,
    finished: Finished,
    bytes: u64,
    complete: bool,
    /// The body's length as the response declares it (`Content-Length`; 0 for a `HEAD`):
    /// hyper stops polling a body once that many bytes are out, so the body's end is never
    /// seen, and the count tells instead.
    declared: Option<u64>,
}

impl<B: Body> TrackedBody<B> {
    pub(super) fn new(
        inner: B,
        phase: Arc<Phase>,
        finished: Finished,
        declared: Option<u64>,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            phase,
            finished,
            bytes: 0,
            complete: false,
            declared,
        }
    }
}

impl<B: Body> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        self.phase.request_finished();
        let complete =
            self.complete || self.inner.is_end_stream() || self.declared == Some(self.bytes);
        self.finished.report(self.bytes, complete);
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.remaining() as u64;
                }
            }
            None => this.complete = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // hyper stops polling a body that says it has ended (an empty one, say): it is
        // complete then too.
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
