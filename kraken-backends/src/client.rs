//! The HTTP client that the HTTP, WebHDFS and registry backends share, and helpers to read
//! its answers strictly.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap};
use reqwest::{Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::backend::{ByteRange, ByteStream, exact_length};
use crate::error::{Error, Result};

/// Timeouts and TLS of an HTTP client.
///
/// ```toml
/// connect_timeout = "10s"  # default
/// read_timeout = "60s"     # default
/// ca = "/etc/kraken/tls/storage-ca.pem"        # optional: trust only this CA
/// cert = "/etc/kraken/tls/kraken-client.pem"   # optional: client certificate...
/// key = "/etc/kraken/tls/kraken-client.key"    # ...and its key
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClientConfig {
    /// Longest wait for a connection. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for any read of a response, headers or body; a large blob that keeps
    /// flowing never times out. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// CA certificates (PEM) that `https` servers must chain to; the system's roots are then
    /// not trusted (the CA is pinned). Default: none (the system's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to servers that ask. Default: none.
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM). Required with `cert`.
    pub key: Option<PathBuf>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ca: None,
            cert: None,
            key: None,
        }
    }
}

impl HttpClientConfig {
    /// A client with these timeouts that follows no redirects (the backends that need
    /// redirects follow them themselves, a bounded number of times).
    pub(crate) fn build(&self) -> Result<reqwest::Client> {
        install_crypto_provider();
        let tls = ClientTls::load(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )?;
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .redirect(reqwest::redirect::Policy::none());
        tls.apply(builder)
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))
    }
}

/// The TLS settings of a reqwest client: a pinned CA and a client certificate, loaded by
/// [`kraken_p2p::tls::ClientTls`] (the workspace's one client-TLS loader, so the files mean
/// what they mean in `[client_tls]`, except that `ca` is optional). [`HttpClientConfig`] and
/// the S3, GCS and Azure backends' clients (see `cloud_client`) both load theirs here.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientTls {
    /// `None` when no file is configured: reqwest's own TLS with the system's roots.
    loaded: Option<kraken_p2p::tls::ClientTls>,
}

impl ClientTls {
    /// Reads `ca` (PEM certificates, at least one; they become the only trusted roots) and
    /// `cert` + `key` (a PEM certificate chain and its key; both or neither).
    pub(crate) fn load(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Self> {
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(Self::default());
        }
        let loaded = kraken_p2p::tls::ClientTls::load(ca, cert, key)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            loaded: Some(loaded),
        })
    }

    /// `builder` trusting only the pinned CA (if any) and presenting the client certificate
    /// (if any).
    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match &self.loaded {
            Some(tls) => builder.tls_backend_preconfigured(tls.config().as_ref().clone()),
            None => builder,
        }
    }
}

/// Parses the base URL of a `backend`, which must be `http(s)://` and able to take a path.
pub(crate) fn parse_base_url(backend: &str, address: &str) -> Result<Url> {
    match Url::parse(address) {
        Ok(url) if !url.cannot_be_a_base() && matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(_) => Err(Error::Config(format!(
            "{backend} backend: {address:?} is not an http(s) URL"
        ))),
        Err(e) => Err(Error::Config(format!(
            "{backend} backend: {address:?}: {e}"
        ))),
    }
}

/// `base` with `segments` appended to its path, each percent-encoded (a segment cannot add
/// a `/`, `?` or `#`). Empty segments are skipped.
pub(crate) fn url_with_path<'a>(base: &Url, segments: impl IntoIterator<Item = &'a str>) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(segments.into_iter().filter(|s| !s.is_empty()));
    }
    url
}

/// Makes ring the process's default TLS crypto provider, unless one is installed already.
///
/// reqwest and object_store are built here without a provider of their own (ring is
/// chosen instead of aws-lc-rs, which needs a C toolchain build). Every backend constructor
/// calls this; call it yourself before building other reqwest clients in the same process
/// before any backend exists.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sends a request, turning a transport failure into [`Error::Transport`] or
/// [`Error::Timeout`].
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Response> {
    request.send().await.map_err(transport_error)
}

pub(crate) fn transport_error(error: reqwest::Error) -> Error {
    Error::transport(error.without_url())
}

/// The error for an unexpected status.
pub(crate) fn status_error(method: &'static str, response: &Response) -> Error {
    let mut url = response.url().clone();
    let _ = url.set_password(None);
    url.set_query(None);
    Error::Status {
        method,
        url: url.to_string(),
        status: response.status().as_u16(),
    }
}

/// The `Content-Length` of a response.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The body of a successful GET for `range`: checks that a ranged request got the bytes it
/// asked for (206 with a matching `Content-Range`) and that the body is exactly as long as
/// announced, so a short or oversized answer is an error, not a corrupt blob. A body that
/// announces no length (chunked) is held to `size`, the blob's size from a stat (see
/// [`size_if_unannounced`]), and refused without one: nothing is read unbounded.
pub(crate) fn body_stream(
    response: Response,
    range: Option<ByteRange>,
    size: Option<u64>,
) -> Result<ByteStream> {
    let expected = match range {
        Some(range) if range.offset() > 0 || range.length().is_some() => {
            if response.status() != StatusCode::PARTIAL_CONTENT {
                return Err(Error::InvalidResponse(format!(
                    "asked for {}, got HTTP {} instead of 206",
                    range.http_header(),
                    response.status()
                )));
            }
            let (first, last) = content_range(response.headers())?;
            if first != range.offset()
                || range.length().is_some_and(|length| last - first >= length)
            {
                return Err(Error::InvalidResponse(format!(
                    "asked for {}, got bytes {first}-{last}",
                    range.http_header()
                )));
            }
            Some(last - first + 1)
        }
        _ => content_length(response.headers()),
    };
    let Some(length) = expected.or(size) else {
        return Err(Error::InvalidResponse(
            "a body without Content-Length, and no size to hold it to".into(),
        ));
    };
    let stream = response.bytes_stream().map_err(transport_error).boxed();
    Ok(exact_length(stream, length, "response body"))
}

/// Whether [`body_stream`] needs the blob's size to bound `response`: its body announces
/// no length (no `Content-Length`; a 206 has its `Content-Range`).
pub(crate) fn size_if_unannounced(response: &Response) -> bool {
    response.status() != StatusCode::PARTIAL_CONTENT && content_length(response.headers()).is_none()
}

/// The size a 416 answer reports in `Content-Range: bytes */SIZE`, if any.
pub(crate) fn unsatisfiable(range: Option<ByteRange>, headers: &HeaderMap) -> Error {
    let size = headers
        .get(CONTENT_RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("bytes */"))
        .and_then(|size| size.parse().ok())
        .unwrap_or(0);
    Error::RangeNotSatisfiable {
        offset: range.map_or(0, |range| range.offset()),
        size,
    }
}

/// First and last byte of `Content-Range: bytes FIRST-LAST/SIZE`.
fn content_range(headers: &HeaderMap) -> Result<(u64, u64)> {
    let invalid = || Error::InvalidResponse("206 without a valid Content-Range".into());
    let value = headers
        .get(CONTENT_RANGE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(invalid)?;
    let (span, _size) = value
        .strip_prefix("bytes ")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(invalid)?;
    let (first, last) = span.split_once('-').ok_or_else(invalid)?;
    let first: u64 = first.parse().map_err(|_| invalid())?;
    let last: u64 = last.parse().map_err(|_| invalid())?;
    if last < first {
        return Err(invalid());
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn content_range_is_parsed_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 5-9/100"));
        assert_eq!(content_range(&headers).unwrap(), (5, 9));
        for bad in ["bytes 9-5/100", "bytes x-9/100", "5-9/100", "bytes 5-9"] {
            headers.insert(CONTENT_RANGE, HeaderValue::from_static(bad));
            assert!(content_range(&headers).is_err(), "{bad}");
        }
        headers.insert(CONTENT_RANGE, HeaderValue::from_static("bytes */42"));
        let error = unsatisfiable(Some(ByteRange::new(50, 1).unwrap()), &headers);
        assert!(matches!(
            error,
            Error::RangeNotSatisfiable {
                offset: 50,
                size: 42
            }
        ));
    }
}
