//! HTTP pieces every service of this crate shares: response bodies, the `Range` header,
//! plain-text responses, the listener (TLS included) and the client the services call each
//! other with.

pub(crate) mod body;
pub(crate) mod range;
mod server;

use bytes::Bytes;
use hyper::http::{Response, StatusCode, header};
use kraken_p2p::tls::ClientTls;

pub(crate) use self::body::Body;
pub(crate) use self::server::serve;

/// The HTTP client the services use to call each other: a 5 s connect timeout, a 5 min
/// timeout per request (a dependency check or a blob chunk may take long), no redirects; with
/// `tls`, only servers whose certificates chain to its CA are trusted and its certificate is
/// presented to servers that ask.
pub(crate) fn client(tls: Option<&ClientTls>) -> crate::Result<reqwest::Client> {
    kraken_backends::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls.config().as_ref().clone());
    }
    builder
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
