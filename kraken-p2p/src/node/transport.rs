//! How nodes reach each other: a [`Transport`] makes listeners and outbound streams.
//!
//! TCP is the default; TLS and in-memory or simulated networks plug in behind the same trait.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use kraken_core::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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

/// Zero-copy on Linux: `sendfile` moves page-cache pages into the socket, which saves the
/// sender two copies per byte (page cache to buffer, buffer to socket). Other systems copy.
impl PeerStream for TcpStream {
    fn supports_send_file(&self) -> bool {
        cfg!(target_os = "linux")
    }

    #[cfg(target_os = "linux")]
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                let mut offset = offset;
                rustix::fs::sendfile(&*self, file, Some(&mut offset), len).map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// In-memory pipes, for tests and embedders that simulate a network.
impl PeerStream for DuplexStream {}

/// A TCP stream that always copies (see [`TcpTransport::send_file`]).
struct CopyingTcpStream(TcpStream);

impl PeerStream for CopyingTcpStream {}

impl AsyncRead for CopyingTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CopyingTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

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

/// Plain TCP with `TCP_NODELAY`. Outbound connections leave from `source_ip` when set, so
/// nodes on distinct loopback addresses (127.0.0.x) look like distinct hosts to each other.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    source_ip: Option<IpAddr>,
    send_file: bool,
}

impl Default for TcpTransport {
    fn default() -> Self {
        Self {
            source_ip: None,
            send_file: true,
        }
    }
}

impl TcpTransport {
    /// Outbound connections leave from whatever address the OS picks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Outbound connections leave from `ip`.
    pub fn with_source_ip(ip: IpAddr) -> Self {
        Self {
            source_ip: Some(ip),
            ..Self::default()
        }
    }

    /// Whether pieces leave by `sendfile`, straight from the page cache (Linux only; default
    /// true). Turn it off where the page cache does not reflect the file — some network and
    /// FUSE file systems — as nginx's `sendfile off` does; pieces are then read and written.
    pub fn send_file(mut self, enabled: bool) -> Self {
        self.send_file = enabled;
        self
    }

    /// Opens a TCP connection to `addr` (from `source_ip`, with `TCP_NODELAY`).
    pub(crate) async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = self.source_ip
            && ip.is_ipv4() == addr.is_ipv4()
        {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    pub(crate) fn boxed(&self, stream: TcpStream) -> io::Result<BoxStream> {
        stream.set_nodelay(true)?;
        Ok(if self.send_file {
            Box::new(stream)
        } else {
            Box::new(CopyingTcpStream(stream))
        })
    }
}

struct TcpPeerListener {
    listener: TcpListener,
    transport: TcpTransport,
}

#[async_trait]
impl Listener for TcpPeerListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, addr) = self.listener.accept().await?;
        Ok((self.transport.boxed(stream)?, addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TcpPeerListener {
            listener: TcpListener::bind(addr).await?,
            transport: self.clone(),
        }))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
        self.boxed(self.connect_tcp(addr).await?)
    }
}
