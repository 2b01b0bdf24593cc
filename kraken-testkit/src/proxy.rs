//! A reverse proxy tests put in front of a server (moto, CNCF Distribution) to count its
//! requests, play an outage, or add TLS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kraken_p2p::http_server::RequestBody;
use kraken_p2p::tls::ServerTls;

use crate::TestServer;

/// A reverse proxy on 127.0.0.1, plain HTTP or TLS, that counts the requests it gets per
/// method and path and can play an outage (every request answered `503`); stops when dropped.
///
/// The one test proxy: it merged the registry tests' counting proxy (counts, outages, optional
/// TLS) and the backend tests' TLS front (TLS, a total count, and a server answering `404`
/// to everything, see [`not_found`](Self::not_found)), so it does all of that.
#[derive(Debug)]
pub struct ForwardingProxy {
    server: TestServer,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    down: AtomicBool,
    /// (method, path) → requests seen.
    counts: Mutex<HashMap<(String, String), usize>>,
}

impl ForwardingProxy {
    /// A plain-HTTP proxy to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, None).await
    }

    /// A proxy to `upstream` that serves TLS with `tls` (clients reach it at `https://`).
    pub async fn start_with(upstream: &str, tls: Option<ServerTls>) -> Self {
        Self::bind(Some(upstream.trim_end_matches('/').into()), tls).await
    }

    /// A TLS server that answers every request `404 Not Found`: enough to tell "the request
    /// reached the server" from "the handshake failed" for any object store client.
    pub async fn not_found(tls: ServerTls) -> Self {
        Self::bind(None, Some(tls)).await
    }

    async fn bind(upstream: Option<Arc<str>>, tls: Option<ServerTls>) -> Self {
        // Before the client below is built: reqwest here has no default crypto provider.
        kraken_backends::install_crypto_provider();
        let shared = Arc::new(Shared::default());
        let client = reqwest::Client::new();
        let state = Arc::clone(&shared);
        let server = TestServer::start_with(tls, move |request| {
            let (state, client, upstream) = (Arc::clone(&state), client.clone(), upstream.clone());
            async move { forward(&state, &client, upstream.as_deref(), request).await }
        })
        .await;
        Self { server, shared }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Starts or ends an outage.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests with `method` whose path contains `needle` (say, a digest's hex).
    pub fn count(&self, method: &str, needle: &str) -> usize {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .filter(|((m, path), _)| m == method && path.contains(needle))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request so far (over TLS: that got through the handshake).
    pub fn requests(&self) -> usize {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.values().sum()
    }
}

async fn forward(
    state: &Shared,
    client: &reqwest::Client,
    upstream: Option<&str>,
    request: Request<RequestBody>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    *state
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((parts.method.to_string(), path))
        .or_default() += 1;
    if state.down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(503)
            .body(Full::new(Bytes::from_static(b"backend down (test)")))
            .expect("a static response");
    }
    let Some(upstream) = upstream else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .expect("a static response");
    };
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    forward_to_upstream(client, upstream, &parts, body)
        .await
        .map(Full::new)
}

/// Sends the request made of `parts` and `body` to `upstream` (`http://host:port`, the
/// request's path and query appended) and returns the answer whole; `502` with the error as
/// its body when the upstream cannot be reached. Headers that describe one connection's
/// framing are recomputed on each side, except an answer's `Content-Length`, which is a HEAD
/// answer's only content.
async fn forward_to_upstream(
    client: &reqwest::Client,
    upstream: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> http::Response<Bytes> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = client.request(
        parts.method.clone(),
        format!("{}{path_and_query}", upstream.trim_end_matches('/')),
    );
    for (name, value) in &parts.headers {
        if name != http::header::HOST && !is_hop_by_hop(name.as_str()) {
            request = request.header(name, value);
        }
    }
    let answer = match request.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            let mut response = http::Response::new(Bytes::from(e.to_string()));
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            return response;
        }
    };
    let mut response = http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name == http::header::CONTENT_LENGTH || !is_hop_by_hop(name.as_str()) {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(bytes)
        .expect("status and headers came from a valid response")
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}
