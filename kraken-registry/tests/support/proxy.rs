//! A reverse proxy in front of moto that counts requests per method and object, and can
//! play a backend outage (every request answered `503`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kraken_p2p::http_server::RequestBody;
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
    request: Request<RequestBody>,
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
    kraken_backends::testing::forward_to_upstream(client, upstream, &parts, body)
        .await
        .map(Full::new)
}
