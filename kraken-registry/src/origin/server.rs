//! The HTTP/1 listener: accepts connections and serves each with the API handler until
//! shutdown, then lets requests in flight finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::api;
use super::state::OriginState;

pub(crate) async fn serve(listener: TcpListener, state: Arc<OriginState>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "origin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler_state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |request| {
            let state = Arc::clone(&handler_state);
            async move { Ok::<_, std::convert::Infallible>(api::handle(state, request).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        state.tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended with an error");
            }
        });
    }
    // Requests in flight get a bounded time to finish (a blob download may be long).
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}
