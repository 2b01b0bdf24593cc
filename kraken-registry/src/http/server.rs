//! The services' listener: a handler over shared state behind the workspace's HTTP/TLS
//! listener ([`kraken_p2p::http_server`]).

use std::future::Future;
use std::sync::Arc;

use hyper::http::{Request, Response};
use kraken_p2p::http_server::RequestBody;
use kraken_p2p::http_server::{ServeConfig, serve as serve_http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Body;

/// Serves `handler` on `listener` with `config` (TLS, limits, drain time) until `shutdown`;
/// connections run on `tasks`.
pub(crate) async fn serve<S, H, F>(
    config: ServeConfig,
    listener: TcpListener,
    state: Arc<S>,
    handler: H,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<RequestBody>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handle = move |request| handler(Arc::clone(&state), request);
    serve_http(listener, config, handle, shutdown, tasks).await;
}
