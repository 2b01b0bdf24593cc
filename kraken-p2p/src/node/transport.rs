//! How nodes reach each other: a [`Transport`] makes listeners and outbound streams.
//!
//! TCP is the default; TLS and in-memory or simulated networks plug in behind the same trait.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};

/// A bidirectional byte stream between two peers.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerStream for T {}

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
}

/// Plain TCP with `TCP_NODELAY`. Outbound connections leave from `source_ip` when set, so
/// nodes on distinct loopback addresses (127.0.0.x) look like distinct hosts to each other.
#[derive(Clone, Debug, Default)]
pub struct TcpTransport {
    source_ip: Option<IpAddr>,
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
        }
    }
}

struct TcpPeerListener(TcpListener);

#[async_trait]
impl Listener for TcpPeerListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, addr) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((Box::new(stream), addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TcpPeerListener(TcpListener::bind(addr).await?)))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
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
        Ok(Box::new(stream))
    }
}
