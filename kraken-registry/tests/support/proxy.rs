//! A reverse proxy in front of moto that counts requests per method and object, and can
//! play a backend outage (every request answered `503`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use kraken_p2p::http_server::{ServeConfig, serve};
use kraken_p2p::tls::ServerTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Default)]
struct Shared {
    down: AtomicBool,
    /// (method, path) → requests seen.
    counts: Mutex<HashMap<(String, String), usize>>,
}

pub struct CountingProxy {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, None).await
    }

    /// A proxy that serves TLS with `tls` (clients reach it at `https://`).
    pub async fn start_with(upstream: &str, tls: Option<ServerTls>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client = reqwest::Client::new();
        let state = Arc::clone(&shared);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let handler = move |request| {
            let (state, client, upstream) =
                (Arc::clone(&state), client.clone(), Arc::clone(&upstream));
            async move { forward(&state, &client, &upstream, request).await }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            ServeConfig::new("counting-proxy").tls(tls),
            handler,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Self {
            addr,
            scheme,
            shared,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Starts or ends an outage.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests with `method` whose path contains `needle` (say, a digest's hex).
    pub fn count(&self, method: &str, needle: &str) -> usize {
        let counts = self.shared.counts.lock().unwrap();
        counts
            .iter()
            .filter(|((m, path), _)| m == method && path.contains(needle))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward(
    state: &Shared,
    client: &reqwest::Client,
    upstream: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    *state
        .counts
        .lock()
        .unwrap()
        .entry((parts.method.to_string(), path))
        .or_default() += 1;
    if state.down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(503)
            .body(Full::new(Bytes::from_static(b"backend down (test)")))
            .unwrap();
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream_request = client.request(
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
        format!("{upstream}{path_and_query}"),
    );
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && !is_hop_by_hop(name.as_str()) {
            upstream_request = upstream_request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match upstream_request.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(e.to_string())))
                .unwrap();
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        // Content-Length stays: a HEAD answer's length is its only content.
        if name == hyper::header::CONTENT_LENGTH || !is_hop_by_hop(name.as_str()) {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Full::new(bytes)).unwrap()
}

/// Headers that describe one connection's framing, recomputed on each side of the proxy.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}
