//! HTTP pieces every service shares: response bodies, plain-text responses, and the listener
//! that serves a handler until shutdown.

pub(crate) mod body;
mod server;

use bytes::Bytes;
use hyper::http::{Response, StatusCode, header};

pub(crate) use self::body::Body;
pub(crate) use self::server::serve;

/// The HTTP client the services use to call each other: a 5 s connect timeout, a 5 min
/// timeout per request (a dependency check or a blob chunk may take long), no redirects.
pub(crate) fn client() -> crate::Result<reqwest::Client> {
    kraken_backends::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(Bytes::from(message.to_owned())))
        .expect("valid response parts")
}
