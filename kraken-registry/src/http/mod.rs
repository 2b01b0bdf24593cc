//! HTTP pieces every service of this crate shares: response bodies, the `Range` header,
//! plain-text and JSON responses, the listener (TLS included) and the client the services
//! call each other with.

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

/// An `application/json` response of `value`.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Time a readiness check may take before it counts as a failure.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers `/readiness`: `200 OK` when every check passes within 5 s, else `503` listing
/// what failed, one line per check.
pub(crate) async fn readiness<F>(checks: Vec<(&'static str, F)>) -> Response<Body>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let results = futures::future::join_all(checks.into_iter().map(|(what, check)| async move {
        match tokio::time::timeout(READINESS_TIMEOUT, check).await {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(format!("{what}: {reason}")),
            Err(_) => Some(format!("{what}: no answer within {READINESS_TIMEOUT:?}")),
        }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().flatten().collect();
    if failures.is_empty() {
        text(StatusCode::OK, "OK")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &(failures.join("\n") + "\n"),
        )
    }
}

/// A backend's readiness as a [`readiness`] check.
pub(crate) async fn backend_ready(backend: &dyn kraken_backends::Backend) -> Result<(), String> {
    backend
        .check_ready()
        .await
        .map_err(|e| kraken_core::error_chain(&e))
}
