//! An [`OciHandler`] behind the workspace's HTTP/TLS listener
//! ([`kraken_p2p::http_server`]): plain or TLS, graceful shutdown.

use std::net::SocketAddr;

use kraken_p2p::http_server::{ServeConfig, Server};
use tokio::net::TcpListener;

use super::handler::OciHandler;

/// An [`OciHandler`] served on a TCP listener.
///
/// ```no_run
/// # async fn example() -> kraken_registry::Result<()> {
/// use std::sync::Arc;
/// use kraken_registry::oci::{LocalRegistry, OciConfig, OciHandler, OciServer};
///
/// let storage = LocalRegistry::open("/var/lib/registry")?;
/// let handler = OciHandler::new(Arc::new(storage), OciConfig::new("/var/lib/registry-uploads"))?;
/// let server = OciServer::bind("127.0.0.1:5000".parse().unwrap(), handler).await?;
/// // ... until told to stop:
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct OciServer(Server);

impl OciServer {
    /// Binds `addr` and starts serving `handler` over plain HTTP.
    pub async fn bind(addr: SocketAddr, handler: OciHandler) -> crate::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, handler)
    }

    /// Serves `handler` on a bound listener over plain HTTP.
    pub fn serve(listener: TcpListener, handler: OciHandler) -> crate::Result<Self> {
        let config = ServeConfig::new("registry").metrics(kraken_p2p::metrics::Metrics::new());
        Self::serve_with(listener, handler, config)
    }

    /// Serves `handler` on a bound listener with `config` (TLS, client certificates for
    /// pushes, limits, drain time, metrics); routes are named by the OCI endpoint.
    pub fn serve_with(
        listener: TcpListener,
        handler: OciHandler,
        config: ServeConfig,
    ) -> crate::Result<Self> {
        let handle = move |request| {
            let handler = handler.clone();
            async move { handler.handle(request).await }
        };
        let config = config.routes(super::route_name);
        Ok(Self(Server::spawn(listener, config, handle)?))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Stops accepting, gives requests in flight their drain time (10 s by default) to
    /// finish, and returns when every connection task has ended.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}
