//! TLS servers on 127.0.0.1 for the cloud backends' TLS tests: a reverse proxy that serves TLS
//! in front of a plain-HTTP server (moto), and a server that answers `404` to everything, which
//! is enough to tell "the request reached the server" from "the handshake failed" for any
//! object store client. Both count the requests that got through the handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kraken_p2p::http_server::RequestBody;
use kraken_p2p::http_server::{ServeConfig, serve};
use kraken_p2p::tls::ServerTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A TLS server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    url: String,
    requests: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl TlsFront {
    /// Forwards every request to `upstream` (`http://host:port`) and its answer back.
    pub async fn proxy(upstream: &str, tls: ServerTls) -> Self {
        kraken_backends::install_crypto_provider();
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client = reqwest::Client::new();
        Self::start(tls, move |request| {
            let (client, upstream) = (client.clone(), Arc::clone(&upstream));
            async move { forward(&client, &upstream, request).await }
        })
        .await
    }

    /// Answers every request `404 Not Found`.
    pub async fn not_found(tls: ServerTls) -> Self {
        Self::start(tls, |_request| async {
            Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
        .await
    }

    async fn start<H, F>(tls: ServerTls, handler: H) -> Self
    where
        H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let handler = move |request| {
            counted.fetch_add(1, Ordering::SeqCst);
            handler(request)
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            ServeConfig::new("tls-front").tls(Some(tls)),
            handler,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Self {
            url,
            requests,
            shutdown,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests that got through the TLS handshake so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    request: Request<RequestBody>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    kraken_backends::testing::forward_to_upstream(client, upstream, &parts, body)
        .await
        .map(Full::new)
}
