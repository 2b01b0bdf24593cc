//! The HTTP/1 listener: accepts connections and serves each with a handler until shutdown,
//! then lets requests in flight finish. Kept apart from the handlers so that the transport
//! (TLS) can change in one place.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Body;

/// Serves `handler` on `listener` until `shutdown`; connections run on `tasks`. `service`
/// names the service in logs.
pub(crate) async fn serve<S, H, F>(
    service: &'static str,
    listener: TcpListener,
    state: Arc<S>,
    handler: H,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(service, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler_state = Arc::clone(&state);
        let service_fn = hyper::service::service_fn(move |request| {
            let state = Arc::clone(&handler_state);
            async move { Ok::<_, std::convert::Infallible>(handler(state, request).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service_fn);
        let conn = graceful.watch(conn);
        tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(service, error = %e, "connection ended with an error");
            }
        });
    }
    // Requests in flight get a bounded time to finish (a blob download may be long).
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}
