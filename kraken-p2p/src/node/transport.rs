//! How nodes reach each other: a [`Transport`] makes listeners and outbound streams.
//!
//! TCP (`super::tcp`) is the default; TLS (`super::tls`) and in-memory or simulated
//! networks plug in behind the same trait.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use async_trait::async_trait;
use kraken_core::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

/// A bidirectional byte stream between two peers.
///
/// A stream that can hand file bytes to the kernel without copying them through user space
/// (`sendfile` on a plain TCP socket) says so with [`supports_send_file`] and implements
/// [`poll_send_file`]; the node then sends pieces that way. Every other stream (TLS, in-memory
/// pipes) keeps the defaults and gets pieces read into a buffer and written.
///
/// [`supports_send_file`]: PeerStream::supports_send_file
/// [`poll_send_file`]: PeerStream::poll_send_file
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The peer id the transport authenticated the other end as (TLS: the id its
    /// certificate binds), if it did; the node then refuses a handshake claiming another.
    fn peer_identity(&self) -> Option<PeerId> {
        None
    }

    /// Whether [`poll_send_file`](PeerStream::poll_send_file) works on this stream.
    fn supports_send_file(&self) -> bool {
        false
    }

    /// Writes up to `len` bytes of `file` from `offset`, returning how many were written
    /// (fewer when the socket's buffer fills). Only called when
    /// [`supports_send_file`](PeerStream::supports_send_file) is true; the default fails with
    /// [`io::ErrorKind::Unsupported`].
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let _ = (cx, file, offset, len);
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// In-memory pipes, for tests and embedders that simulate a network.
impl PeerStream for DuplexStream {}

/// A boxed [`PeerStream`].
pub type BoxStream = Box<dyn PeerStream>;

/// Accepts inbound peer streams.
#[async_trait]
pub trait Listener: Send + 'static {
    /// The next inbound stream and the address it came from.
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)>;
    /// The address the listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Makes listeners and outbound streams.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Listens on `addr`.
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>>;
    /// Opens a stream to `addr`.
    async fn connect(&self, addr: SocketAddr) -> io::Result<BoxStream>;
    /// The peer id this transport proves the node to be (TLS: the one its certificate
    /// binds), which the node must then use. Default: none.
    fn local_peer_id(&self) -> Option<PeerId> {
        None
    }
}
