//! Peer links over TLS: [`TlsTransport`] wraps [`TcpTransport`] with the cluster CA's
//! certificates on both ends, and its streams name the peer id the other end's certificate
//! binds (see [`crate::tls::PeerTlsConfig`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use kraken_core::PeerId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::tcp::TcpTransport;
use super::transport::{BoxStream, Listener, PeerStream, Transport};
use crate::tls::{PeerTls, peer_id_of};

/// The first byte of every TLS connection (a handshake record); a plain peer connection
/// starts with a frame length, whose first byte is 0 for any frame a peer may send first.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Inbound TLS handshakes running at once; more wait for the TCP accept queue.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// Accepted streams waiting for the node's accept loop.
const ACCEPTED_QUEUE: usize = 64;

/// TLS over TCP between peers. Outbound connections always use TLS; inbound ones may be
/// plain unless [`PeerTls::required`]. Handshakes run in their own tasks, each bounded by
/// `handshake_timeout`, so a client that stalls its handshake holds up no one.
#[derive(Clone)]
pub struct TlsTransport {
    tcp: TcpTransport,
    tls: PeerTls,
    handshake_timeout: Duration,
}

impl TlsTransport {
    /// TLS over `tcp`, with handshakes bounded by `handshake_timeout`.
    pub fn new(tcp: TcpTransport, tls: PeerTls, handshake_timeout: Duration) -> Self {
        Self {
            tcp,
            tls,
            handshake_timeout,
        }
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("tls", &self.tls)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// A TLS stream and the peer id its certificate binds.
struct TlsPeerStream {
    stream: TlsStream<TcpStream>,
    peer: PeerId,
}

impl TlsPeerStream {
    fn new(stream: TlsStream<TcpStream>) -> io::Result<Self> {
        let (_, state) = stream.get_ref();
        // Both configurations demand a certificate, so a finished handshake has one.
        let leaf = state
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::PermissionDenied, "no peer certificate")
            })?;
        let peer = peer_id_of(leaf);
        Ok(Self { stream, peer })
    }
}

impl PeerStream for TlsPeerStream {
    fn peer_identity(&self) -> Option<PeerId> {
        Some(self.peer)
    }
}

impl AsyncRead for TlsPeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsPeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

struct TlsListener {
    accepted: mpsc::Receiver<(BoxStream, SocketAddr)>,
    local_addr: SocketAddr,
}

#[async_trait]
impl Listener for TlsListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        self.accepted
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the TLS listener stopped"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

#[async_trait]
impl Transport for TlsTransport {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn Listener>> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(listener, self.clone(), tx));
        Ok(Box::new(TlsListener {
            accepted: rx,
            local_addr,
        }))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<BoxStream> {
        let tcp = self.tcp.connect_tcp(addr).await?;
        let connector = TlsConnector::from(Arc::clone(self.tls.client_config()));
        let stream = tokio::time::timeout(
            self.handshake_timeout,
            connector.connect(ServerName::IpAddress(addr.ip().into()), tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Box::new(TlsPeerStream::new(TlsStream::Client(stream))?))
    }

    fn local_peer_id(&self) -> Option<PeerId> {
        Some(self.tls.local_peer_id())
    }
}

/// Accepts TCP connections until the listener is dropped, handing each to a task of its
/// own for the TLS handshake (or, when plain connections are allowed, the first byte).
async fn accept_loop(
    listener: TcpListener,
    transport: TlsTransport,
    accepted: mpsc::Sender<(BoxStream, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = accepted.closed() => return,
            permit = Arc::clone(&pending).acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            return;
        };
        let (tcp, addr) = tokio::select! {
            () = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let transport = transport.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(transport.handshake_timeout, transport.accept(tcp)).await;
            drop(permit);
            match result {
                Ok(Ok(stream)) => {
                    let _ = accepted.send((stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "inbound peer refused"),
                Err(_) => tracing::debug!(%addr, "inbound TLS handshake timed out"),
            }
        });
    }
}

impl TlsTransport {
    /// Finishes an inbound connection: TLS, or plain if it does not start with a TLS
    /// handshake and plain connections are allowed.
    async fn accept(&self, tcp: TcpStream) -> io::Result<BoxStream> {
        tcp.set_nodelay(true)?;
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if self.tls.required() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "plain connection refused: peer TLS is required",
                ));
            }
            return self.tcp.boxed(tcp);
        }
        let acceptor = TlsAcceptor::from(Arc::clone(self.tls.server_config()));
        let stream = acceptor.accept(tcp).await?;
        Ok(Box::new(TlsPeerStream::new(TlsStream::Server(stream))?))
    }
}
