//! The services' listener: a handler over shared state behind the workspace's HTTP/TLS
//! listener ([`kraken_p2p::http_server`]).

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::http::{Request, Response};
use kraken_p2p::http_server::{ServeConfig, serve as serve_http};
use kraken_p2p::tls::ServerTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Body;

/// Serves `handler` on `listener` (over TLS with `tls`) until `shutdown`; connections run on
/// `tasks`; requests in flight then get 10 s (a blob download may be long). `service` names
/// the service in logs.
pub(crate) async fn serve<S, H, F>(
    service: &'static str,
    listener: TcpListener,
    tls: Option<ServerTls>,
    state: Arc<S>,
    handler: H,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handle = move |request| handler(Arc::clone(&state), request);
    serve_http(
        listener,
        ServeConfig::new(service).tls(tls),
        handle,
        shutdown,
        tasks,
    )
    .await;
}
