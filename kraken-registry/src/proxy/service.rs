//! [`Proxy`]: the `/v2/` handler over [`ProxyStorage`], behind authentication, on the
//! workspace's HTTP/TLS listener.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::http::{Method, Request, Response, StatusCode};
use kraken_p2p::http_server::{ConnectionInfo, RequestBody, ServeConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Authenticator;
use super::config::ProxyConfig;
use super::notifications;
use super::prefetch::{Prefetcher, Version};
use super::storage::{ProxyStorage, StorageOptions};
use crate::build_index::BuildIndexClient;
use crate::error::Result;
use crate::http::{Body, serve, text};
use crate::metrics::spawn_listener;
use crate::oci::OciHandler;
use crate::origin::{OriginClient, OriginCluster};
use kraken_p2p::metrics::Metrics;

/// Builds a [`Proxy`].
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct ProxyBuilder {
    config: ProxyConfig,
}

impl ProxyBuilder {
    /// Checks the config, reads the htpasswd file, starts watching the origin ring, binds
    /// the listener and starts serving.
    pub async fn spawn(self) -> Result<Proxy> {
        let config = self.config;
        config.validate()?;
        let auth = Authenticator::load(&config.auth)?;
        let server_tls = config.tls.as_ref().map(|tls| tls.load()).transpose()?;
        let client_tls = config
            .client_tls
            .as_ref()
            .map(|tls| tls.load())
            .transpose()?;
        crate::startup::data_dir(&config.data_dir)?;
        let listener = crate::startup::bind("proxy", config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let origin_client = OriginClient::with_tls(client_tls.as_ref())?;
        let origins =
            OriginCluster::start(&config.origins, origin_client, &tasks, shutdown.clone()).await?;
        let build_index =
            BuildIndexClient::with_tls(config.build_index.addresses.clone(), client_tls.as_ref())?;
        let storage = Arc::new(ProxyStorage::new(
            origins,
            build_index,
            StorageOptions {
                replicate: config.build_index.replicate,
                delete_tags: config.delete_tags || config.delete.enabled,
                delete: config.delete.enabled,
                max_manifest: config.limits.max_manifest_size.bytes(),
                max_catalog_scan: config.limits.max_catalog_scan,
            },
        ));
        let handler = OciHandler::new(Arc::clone(&storage) as _, config.oci())?;
        let prefetcher = Arc::new(Prefetcher::new(
            Arc::clone(&storage),
            config.prefetch.clone(),
            config.limits.max_manifest_size.bytes(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let frontend = Arc::new(Frontend {
            handler,
            auth,
            storage: Arc::clone(&storage),
            prefetcher,
        });
        let metrics = Metrics::new();
        spawn_listener(&config.metrics, "proxy", &metrics, &tasks, shutdown.clone()).await?;
        tasks.spawn(serve(
            ServeConfig::new("proxy")
                .tls(server_tls)
                .limits(config.http.clone())
                .routes(route_name)
                .metrics(metrics.clone()),
            listener,
            frontend,
            handle,
            tasks.clone(),
            shutdown.clone(),
        ));
        tracing::info!(addr = %local_addr, "proxy started");
        Ok(Proxy {
            local_addr,
            metrics,
            storage,
            shutdown,
            tasks,
        })
    }
}

/// A running proxy: the OCI distribution API for pushes (and pulls) over the origin
/// cluster and the build-index. See the [module docs](super).
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    metrics: Metrics,
    storage: Arc<ProxyStorage>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Proxy {
    /// A builder with `config`.
    pub fn builder(config: ProxyConfig) -> ProxyBuilder {
        ProxyBuilder { config }
    }

    /// Starts a proxy with `config`.
    pub async fn spawn(config: ProxyConfig) -> Result<Self> {
        Self::builder(config).spawn().await
    }

    /// The address the registry API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The proxy's metrics, as `/metrics` serves them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The storage behind the API, for embedders that serve it in their own
    /// [`OciHandler`].
    pub fn storage(&self) -> &Arc<ProxyStorage> {
        &self.storage
    }

    /// Stops accepting requests, lets those in flight finish (up to 10 s), stops watching
    /// the ring and returns when every task has ended. Uploads in progress are lost.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What the listener serves: `/health`, `/readiness`, and `/v2/…` behind authentication.
#[derive(Debug)]
struct Frontend {
    handler: OciHandler,
    auth: Option<Authenticator>,
    /// For `/readiness`: the origins and build-indexes behind the API.
    storage: Arc<ProxyStorage>,
    /// Prefetches and notifications.
    prefetcher: Arc<Prefetcher>,
}

/// The proxy's route names for metrics and the access log: the OCI API's, and the
/// cold-start endpoints'.
fn route_name(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::POST, PREFETCH_V1) => "prefetch_v1",
        (&Method::POST, PREFETCH_V2) => "prefetch_v2",
        (&Method::POST, NOTIFICATIONS) => "notifications",
        _ => crate::oci::route_name(method, path),
    }
}

/// Go Kraken's asynchronous prefetch.
const PREFETCH_V1: &str = "/proxy/v1/registry/prefetch";
/// Go Kraken's trigger prefetch.
const PREFETCH_V2: &str = "/proxy/v2/registry/prefetch";
/// The registry notifications sink.
const NOTIFICATIONS: &str = "/registry/notifications";

async fn handle(frontend: Arc<Frontend>, request: Request<RequestBody>) -> Response<Body> {
    let path = request.uri().path();
    if path == "/health" || path == "/readiness" {
        return match *request.method() {
            // Ready only when pushes can land: an origin passes its health checks and a
            // build-index answers. `/health` is this process alone.
            Method::GET | Method::HEAD if path == "/readiness" => {
                crate::http::readiness(vec![
                    (
                        "origins",
                        futures::future::Either::Left(frontend.storage.origins_ready()),
                    ),
                    (
                        "build-index",
                        futures::future::Either::Right(frontend.storage.build_index_ready()),
                    ),
                ])
                .await
            }
            Method::GET | Method::HEAD => text(StatusCode::OK, "OK\n"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        };
    }
    let cold_start = matches!(path, PREFETCH_V1 | PREFETCH_V2 | NOTIFICATIONS);
    if !cold_start && path != "/v2" && !path.starts_with("/v2/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if cold_start && request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    if let Some(auth) = &frontend.auth {
        let client = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.remote.ip());
        let (method, query) = (request.method(), request.uri().query());
        let allowed = match auth.check(method, path, request.headers(), client).await {
            Ok(principal) => auth.authorize(&principal, method, path, query),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = allowed {
            return *refusal;
        }
    }
    if cold_start {
        let version = match request.uri().path() {
            PREFETCH_V1 => Version::V1,
            PREFETCH_V2 => Version::V2,
            _ => return notifications::handle(&frontend.prefetcher, request.into_body()).await,
        };
        return frontend
            .prefetcher
            .handle(version, request.into_body())
            .await;
    }
    frontend.handler.handle(request).await
}
