//! A small HTTP/1 server on loopback whose answers the test writes: to play a protocol no
//! real server is installed for (WebHDFS, registry token auth), a misbehaving server, or a
//! TLS server demanding client certificates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use hyper::{Request, Response};
use kraken_p2p::http_server::RequestBody;
use kraken_p2p::http_server::{ServeConfig, serve};
use kraken_p2p::tls::ServerTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A server on 127.0.0.1 answering every request with `handler`; stops when dropped.
///
/// The one test server: the backend tests' fake HTTP server, their TLS server and the
/// reverse proxies ([`ForwardingProxy`](crate::ForwardingProxy)) all run on it, over the
/// same [`serve`] loop as the kraken services (so TLS and client certificates work as there).
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    scheme: &'static str,
    shutdown: CancellationToken,
}

impl TestServer {
    /// A plain-HTTP server.
    pub async fn start<H, F, B>(handler: H) -> Self
    where
        H: Fn(Request<RequestBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self::start_with(None, handler).await
    }

    /// A server speaking TLS with `tls` when given (clients reach it at `https://`).
    pub async fn start_with<H, F, B>(tls: Option<ServerTls>, handler: H) -> Self
    where
        H: Fn(Request<RequestBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        kraken_backends::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test server");
        let addr = listener.local_addr().expect("the test server's address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        // `serve` clones its handler for each connection; a closure over an `Arc` is `Clone`.
        let handler = Arc::new(handler);
        let handler = move |request| handler(request);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            ServeConfig::new("test-server").tls(tls),
            handler,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Self {
            addr,
            scheme,
            shutdown,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
