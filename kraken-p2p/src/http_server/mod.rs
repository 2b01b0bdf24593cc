//! The HTTP/1 listener every Kraken service uses: plain or TLS, client certificates for
//! writes, connection facts for handlers, and graceful, awaited shutdown.
//!
//! The tracker here and the origin, build-index, proxy and agent in `kraken-registry` all
//! serve through [`serve`], so TLS and the write rule hold on every listener alike.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use self::access::{Finished, route_name};
pub use self::access::{RouteNames, common_route};
use self::admission::PerClient;
pub use self::body::RequestBody;
use self::body::TrackedBody;
use self::io::{GuardedIo, Phase};
pub use self::limits::{AccessLog, HttpLimits};
use crate::tls::{ClientAuth, Role, Roles, ServerTls};

mod access;
mod admission;
mod body;
mod io;
mod limits;
#[cfg(test)]
mod tests;

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
    /// The role that certificate names (see [`ServerTls::client_role`]): `None` without a
    /// certificate, or when it names no usable role.
    pub role: Option<Role>,
}

impl ConnectionInfo {
    /// `Ok` when a request that `allowed` roles may make may come on this connection; the
    /// reason to answer `403 Forbidden` otherwise.
    ///
    /// A client with a certificate is held to its role. A client without one is not: the
    /// listener's [`ClientAuth`] already decided whether it may send the request (with
    /// `writes`, only reads reach a handler without a certificate; without a client CA
    /// there are no identities, as before roles).
    pub fn authorize(&self, allowed: Roles) -> Result<(), RoleRefused> {
        if allowed.is_anyone() || !self.client_certificate {
            return Ok(());
        }
        match self.role {
            Some(role) if allowed.contains(role) => Ok(()),
            role => Err(RoleRefused { role, allowed }),
        }
    }
}

/// Applies [`ConnectionInfo::authorize`] to the connection a request came on. A request
/// without [`ConnectionInfo`] (handed to a handler directly, not through [`serve`]) is
/// allowed: it never crossed a listener.
pub fn authorize(extensions: &hyper::http::Extensions, allowed: Roles) -> Result<(), RoleRefused> {
    extensions
        .get::<ConnectionInfo>()
        .map_or(Ok(()), |info| info.authorize(allowed))
}

/// A client certificate's role may not make a request.
#[derive(Clone, Copy, Debug)]
pub struct RoleRefused {
    role: Option<Role>,
    allowed: Roles,
}

impl std::fmt::Display for RoleRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Some(role) => write!(f, "a client certificate of role {role}")?,
            None => write!(f, "a client certificate without a usable role")?,
        }
        write!(f, " may not make this request (allowed: {})", self.allowed)
    }
}

impl std::error::Error for RoleRefused {}

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
    /// Timeouts, header bounds, connection limits and the access log. Default:
    /// [`HttpLimits::default`].
    pub limits: HttpLimits,
    /// Names the endpoint of each request in metrics and the access log. Default:
    /// [`common_route`] (the probes, `/metrics`, and `other`).
    pub routes: RouteNames,
    /// The service's metrics: requests are counted in them, and `GET /metrics` answers
    /// them. Default: none (`/metrics` goes to the handler like any path).
    #[cfg(feature = "metrics")]
    pub metrics: Option<crate::metrics::Metrics>,
}

impl ServeConfig {
    /// Plain HTTP, 10 s drain, default limits, logging as `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            tls: None,
            drain_timeout: Duration::from_secs(10),
            limits: HttpLimits::default(),
            routes: common_route,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Names routes with `routes` (which [`common_route`]'s names take precedence over).
    pub fn routes(mut self, routes: RouteNames) -> Self {
        self.routes = routes;
        self
    }

    /// Counts requests in `metrics` and answers `GET /metrics` with them.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves TLS.
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Applies `limits` to every connection.
    pub fn limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The body of a response: the handler's, or the listener's own refusal.
pub type ServedBody<B> = Either<B, Full<Bytes>>;

/// Accepts connections on `listener` and serves each with `handler` until `shutdown` is
/// cancelled; then lets requests in flight finish for [`ServeConfig::drain_timeout`] and
/// returns. Connection tasks are spawned on `tasks`.
///
/// Every connection is held to [`ServeConfig::limits`]: at most
/// [`max_connections`](HttpLimits::max_connections) at once (the rest wait in the kernel's
/// accept queue) and [`max_connections_per_client`](HttpLimits::max_connections_per_client)
/// per client address; a request head within the header timeout, the next request within the
/// idle timeout; a request body that stalls and a client that stops reading its response are
/// cut off. A handler that stops reading a body, or waits on something slow, is not.
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
    H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let name = config.name;
    let limits = Arc::new(config.limits.clone());
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::new(limits.max_connections_per_client);
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &config.metrics {
        metrics.listener_started(name);
    }
    loop {
        // A permit first: at the limit, clients wait in the accept queue, costing nothing.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
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
        let Some(slot) = per_client.admit(remote.ip()) else {
            tracing::debug!(listener = name, %remote, "too many connections from this client");
            refuse_busy(&stream, config.tls.is_some());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            handler: handler.clone(),
            watcher: graceful.watcher(),
            limits: Arc::clone(&limits),
            name,
            routes: config.routes,
            #[cfg(feature = "metrics")]
            metrics: config.metrics.clone(),
        };
        let tls = config.tls.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            // Held for the connection's life: its share of the listener's limits.
            let _permit = permit;
            let _slot = slot;
            match tls {
                None => {
                    let info = ConnectionInfo {
                        remote,
                        tls: false,
                        client_certificate: false,
                        role: None,
                    };
                    connection.serve(stream, info, ClientAuth::None).await;
                }
                Some(tls) => {
                    // The handshake runs in the connection's task so a slow client cannot
                    // hold up the accept loop; connections still handshaking at shutdown
                    // are dropped.
                    let handshake = tokio::time::timeout(
                        connection.limits.tls_handshake_timeout,
                        tls.acceptor().accept(stream),
                    );
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
                    let chain = stream.get_ref().1.peer_certificates();
                    let info = ConnectionInfo {
                        remote,
                        tls: true,
                        client_certificate: chain.is_some(),
                        role: tls.client_role(chain),
                    };
                    connection.serve(stream, info, tls.client_auth()).await;
                }
            }
        });
    }
    let _ = tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await;
}

/// A listener serving in the background until [`shutdown`](Self::shutdown): what the
/// tracker's and the registry's servers are made of.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Serves `handler` on `listener` with `config` on a task of its own.
    pub fn spawn<H, F, B>(
        listener: TcpListener,
        config: ServeConfig,
        handler: H,
    ) -> std::io::Result<Self>
    where
        H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(serve(
            listener,
            config,
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

    /// Stops accepting, gives requests in flight the drain time to finish, and returns when
    /// every connection task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Tells a plain-HTTP client over its per-address limit to come back later, if the socket
/// takes the few bytes at once, and closes the connection.
fn refuse_busy(stream: &TcpStream, tls: bool) {
    if !tls {
        let _ = stream.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

/// What one connection's task needs to serve it.
struct Connection<H> {
    handler: H,
    watcher: Watcher,
    limits: Arc<HttpLimits>,
    name: &'static str,
    routes: RouteNames,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
}

impl<H> Connection<H> {
    /// Serves one connection until it closes, a limit ends it, or the listener's graceful
    /// shutdown does.
    async fn serve<S, F, B>(self, stream: S, info: ConnectionInfo, client_auth: ClientAuth)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Self {
            handler,
            watcher,
            limits,
            name,
            routes,
            #[cfg(feature = "metrics")]
            metrics,
        } = self;
        let access_log = limits.access_log;
        let phase = Phase::new(limits.header_read_timeout, limits.idle_timeout);
        let io = GuardedIo::new(stream, Arc::clone(&phase), limits.write_stall_timeout);
        let body_stall_timeout = limits.body_stall_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            phase.request_started();
            let handler = handler.clone();
            let phase = Arc::clone(&phase);
            let route = route_name(routes, request.method(), request.uri().path());
            #[cfg(feature = "metrics")]
            let metrics = metrics.clone();
            let span = tracing::debug_span!(
                "request",
                listener = name,
                method = %request.method(),
                route,
                path = %request.uri().path(),
                remote = %info.remote,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            async move {
                let started = Instant::now();
                let (parts, body) = request.into_parts();
                let mut request =
                    Request::from_parts(parts, RequestBody::new(body, body_stall_timeout));
                let method = request.method().clone();
                let response = if needs_certificate(client_auth, request.method())
                    && !info.client_certificate
                {
                    forbidden(request.method())
                } else if let Some(scrape) = scrape(
                    #[cfg(feature = "metrics")]
                    metrics.as_ref(),
                    &request,
                ) {
                    scrape
                } else {
                    request.extensions_mut().insert(info);
                    handler(request).await.map(Either::Left)
                };
                let span = tracing::Span::current();
                span.record("status", response.status().as_u16());
                span.record("duration_ms", started.elapsed().as_millis() as u64);
                tracing::debug!("answered");
                let declared = if method == Method::HEAD {
                    Some(0)
                } else {
                    response
                        .headers()
                        .get(hyper::header::CONTENT_LENGTH)
                        .and_then(|value| value.to_str().ok()?.parse().ok())
                };
                let finished = Finished {
                    listener: name,
                    route,
                    method,
                    status: response.status().as_u16(),
                    remote: info.remote,
                    started,
                    access_log,
                    #[cfg(feature = "metrics")]
                    metrics,
                };
                Ok::<_, Infallible>(
                    response.map(|body| TrackedBody::new(body, phase, finished, declared)),
                )
            }
            .instrument(span)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .max_header_size(
                limits
                    .max_header_size
                    .bytes()
                    .try_into()
                    .unwrap_or(usize::MAX),
            )
            .max_headers(limits.max_headers);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(listener = name, error = %e, "connection ended with an error");
        }
    }
}

/// Whether a request with `method` needs a client certificate under `auth`. (`All` is
/// enforced by the handshake itself.)
fn needs_certificate(auth: ClientAuth, method: &Method) -> bool {
    auth == ClientAuth::Writes && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The answer to `GET /metrics` (or `HEAD`) when the listener has metrics.
#[cfg(feature = "metrics")]
fn scrape<T, B>(
    metrics: Option<&crate::metrics::Metrics>,
    request: &Request<T>,
) -> Option<Response<ServedBody<B>>> {
    let metrics = metrics?;
    if request.uri().path() != crate::metrics::PATH
        || !matches!(*request.method(), Method::GET | Method::HEAD)
    {
        return None;
    }
    let text = if request.method() == Method::HEAD {
        String::new()
    } else {
        metrics.encode()
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    response.headers_mut().insert(
        hyper::http::header::CONTENT_TYPE,
        hyper::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Some(response)
}

#[cfg(not(feature = "metrics"))]
fn scrape<T, B>(_: &Request<T>) -> Option<Response<ServedBody<B>>> {
    None
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
