//! Request and response bodies as the listener hands them on: a request body that gives up
//! when the client stops sending, and a response body that tells the connection when it is
//! done, so the idle clock starts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

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

/// A response body that marks its request finished on the connection when it is dropped:
/// hyper drops it once it has been written, or abandoned.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    phase: Arc<Phase>,
}

impl<B> TrackedBody<B> {
    pub(super) fn new(inner: B, phase: Arc<Phase>) -> Self {
        Self {
            inner: Box::pin(inner),
            phase,
        }
    }
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        self.phase.request_finished();
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.get_mut().inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
