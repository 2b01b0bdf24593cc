//! The HTTP/1 listener every Kraken service uses: plain or TLS, client certificates for
//! writes, connection facts for handlers, and graceful, awaited shutdown.
//!
//! The tracker here and the origin, build-index, proxy and agent in `kraken-registry` all
//! serve through [`serve`], so TLS and the write rule hold on every listener alike.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::{ClientAuth, ServerTls};

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Facts about the connection a request came on, in the request's extensions.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the client presented a certificate that chains to the listener's client CA.
    pub client_certificate: bool,
}

/// A listener's settings.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Name in logs (`"tracker"`, `"origin"`, …).
    pub name: &'static str,
    /// TLS, or plain HTTP when `None`. Default: plain.
    pub tls: Option<ServerTls>,
    /// Time requests in flight get to finish after shutdown begins. Default: 10 s.
    pub drain_timeout: Duration,
}

impl ServeConfig {
    /// Plain HTTP, 10 s drain, logging as `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            tls: None,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// Serves TLS.
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// The body of a response: the handler's, or the listener's own refusal.
pub type ServedBody<B> = Either<B, Full<Bytes>>;

/// Accepts connections on `listener` and serves each with `handler` until `shutdown` is
/// cancelled; then lets requests in flight finish for [`ServeConfig::drain_timeout`] and
/// returns. Connection tasks are spawned on `tasks`.
///
/// With TLS whose [`client_auth`](ServerTls::client_auth) is [`ClientAuth::Writes`], a
/// request other than `GET`, `HEAD` or `OPTIONS` from a client without a certificate is
/// answered `403 Forbidden` and never reaches `handler`.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    config: ServeConfig,
    handler: H,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let name = config.name;
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        match &config.tls {
            None => {
                let info = ConnectionInfo {
                    remote,
                    tls: false,
                    client_certificate: false,
                };
                let watcher = graceful.watcher();
                tasks.spawn(serve_connection(
                    stream,
                    info,
                    ClientAuth::None,
                    handler,
                    watcher,
                    name,
                ));
            }
            Some(tls) => {
                // The handshake runs in the connection's task so a slow client cannot hold
                // up the accept loop; connections still handshaking at shutdown are dropped.
                let tls = tls.clone();
                let watcher = graceful.watcher();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream));
                    let stream = tokio::select! {
                        () = shutdown.cancelled() => return,
                        result = handshake => match result {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(listener = name, %remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(listener = name, %remote, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    let info = ConnectionInfo {
                        remote,
                        tls: true,
                        client_certificate: stream.get_ref().1.peer_certificates().is_some(),
                    };
                    serve_connection(stream, info, tls.client_auth(), handler, watcher, name)
                        .await;
                });
            }
        }
    }
    let _ = tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await;
}

/// Serves one connection until it closes or the listener's graceful shutdown ends it.
async fn serve_connection<S, H, F, B>(
    stream: S,
    info: ConnectionInfo,
    client_auth: ClientAuth,
    handler: H,
    watcher: Watcher,
    name: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            if needs_certificate(client_auth, request.method()) && !info.client_certificate {
                return Ok::<_, Infallible>(forbidden(request.method()));
            }
            request.extensions_mut().insert(info);
            Ok(handler(request).await.map(Either::Left))
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(listener = name, error = %e, "connection ended with an error");
    }
}

/// Whether a request with `method` needs a client certificate under `auth`. (`All` is
/// enforced by the handshake itself.)
fn needs_certificate(auth: ClientAuth, method: &Method) -> bool {
    auth == ClientAuth::Writes && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn forbidden<B>(method: &Method) -> Response<ServedBody<B>> {
    let message = format!("a client certificate is required for {method} requests\n");
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        hyper::http::header::CONTENT_TYPE,
        hyper::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_need_a_certificate_under_writes() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!needs_certificate(ClientAuth::Writes, &method), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(needs_certificate(ClientAuth::Writes, &method), "{method}");
            assert!(!needs_certificate(ClientAuth::None, &method), "{method}");
            assert!(!needs_certificate(ClientAuth::All, &method), "{method}");
        }
    }
}
