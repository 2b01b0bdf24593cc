//! The origin's listener: the API handler behind the shared HTTP/TLS listener.

use std::sync::Arc;

use kraken_p2p::http_server::{ServeConfig, serve as serve_http};
use kraken_p2p::tls::ServerTls;
use tokio::net::TcpListener;

use super::api;
use super::state::OriginState;

/// Serves the blob API until the origin shuts down; requests in flight then get 10 s (a
/// blob download may be long).
pub(crate) async fn serve(listener: TcpListener, tls: Option<ServerTls>, state: Arc<OriginState>) {
    let handler = {
        let state = Arc::clone(&state);
        move |request| api::handle(Arc::clone(&state), request)
    };
    serve_http(
        listener,
        ServeConfig::new("origin").tls(tls),
        handler,
        state.shutdown.clone(),
        state.tasks.clone(),
    )
    .await;
}
