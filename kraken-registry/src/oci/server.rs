//! The plain-TCP HTTP/1 listener of an [`OciHandler`]: accepts connections and serves each
//! until shutdown, then lets requests in flight finish. Kept apart from the handler so that
//! a TLS listener can take its place.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::OciHandler;

/// How long requests in flight may run after shutdown starts (a blob download can be long).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
pub struct OciServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl OciServer {
    /// Binds `addr` and starts serving `handler`.
    pub async fn bind(addr: SocketAddr, handler: OciHandler) -> crate::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, handler)
    }

    /// Serves `handler` on a bound listener.
    pub fn serve(listener: TcpListener, handler: OciHandler) -> crate::Result<Self> {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            handler,
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(Self {
            local_addr,
            shutdown,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, gives requests in flight up to 10 s to finish, and returns when
    /// every connection task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: OciHandler,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "registry accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(handler.handle(request).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "registry connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("registry requests still running after the drain timeout");
    }
}
