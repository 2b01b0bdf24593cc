//! Plain TCP between peers: [`TcpTransport`], zero-copy `sendfile` on Linux.

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::transport::{BoxStream, Listener, PeerStream, Transport};

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
