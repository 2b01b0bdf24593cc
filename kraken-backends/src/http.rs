//! A backend on a plain HTTP server: GET (with `Range`), HEAD, PUT and DELETE, as nginx
//! serves them with its WebDAV module.

use async_trait::async_trait;
use reqwest::header::{CONTENT_LENGTH, RANGE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody};
use crate::client::{
    HttpClientConfig, body_stream, content_length, parse_base_url, send, size_if_unannounced,
    status_error, unsatisfiable, url_with_path,
};
use crate::error::{Error, Result};
use crate::layout::NameLayout;

/// Configuration of an [`HttpBackend`].
///
/// ```toml
/// type = "http"
/// url = "http://blobs.internal:8080/kraken/"
/// layout = "identity"         # default
/// username = "kraken"          # optional, HTTP basic auth
/// password = "secret"          # optional
/// [client]
/// connect_timeout = "10s"      # default
/// read_timeout = "60s"         # default
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Base URL; a blob's path is appended to it. Required.
    pub url: String,
    /// How names map to paths below the URL. Default: `identity`.
    #[serde(default)]
    pub layout: NameLayout,
    /// User for HTTP basic auth. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for HTTP basic auth. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Timeouts. Default: see [`HttpClientConfig`].
    #[serde(default)]
    pub client: HttpClientConfig,
}

impl HttpConfig {
    /// Blobs below `url`, named by the identity layout, without auth.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            layout: NameLayout::default(),
            username: None,
            password: None,
            client: HttpClientConfig::default(),
        }
    }
}

/// Blobs as resources on an HTTP server. Cannot list ([`Error::Unsupported`]): plain HTTP
/// has no listing that servers agree on.
#[derive(Debug)]
pub struct HttpBackend {
    base: Url,
    layout: NameLayout,
    credentials: Option<(String, Option<String>)>,
    client: reqwest::Client,
}

impl HttpBackend {
    /// A backend for the server in `config`; sends no request yet.
    pub fn new(config: HttpConfig) -> Result<Self> {
        let base = parse_base_url("http", &config.url)?;
        Ok(Self {
            base,
            layout: config.layout,
            credentials: config.username.map(|user| (user, config.password)),
            client: config.client.build()?,
        })
    }

    fn url(&self, name: &str) -> Result<Url> {
        let path = self.layout.path(name)?;
        Ok(url_with_path(&self.base, path.split('/')))
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, password.as_ref()),
            None => request,
        }
    }
}

#[async_trait]
impl Backend for HttpBackend {
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo> {
        let response = send(self.request(reqwest::Method::HEAD, self.url(name)?)).await?;
        match response.status() {
            StatusCode::OK => content_length(response.headers())
                .map(BlobInfo::new)
                .ok_or_else(|| Error::InvalidResponse("HEAD without Content-Length".into())),
            StatusCode::NOT_FOUND => Err(Error::not_found(namespace, name)),
            _ => Err(status_error("HEAD", &response)),
        }
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let mut request = self.request(reqwest::Method::GET, self.url(name)?);
        if let Some(range) = range {
            request = request.header(RANGE, range.http_header());
        }
        let response = send(request).await?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                let size = if size_if_unannounced(&response) {
                    Some(self.stat(namespace, name).await?.size)
                } else {
                    None
                };
                body_stream(response, range, size)
            }
            StatusCode::NOT_FOUND => Err(Error::not_found(namespace, name)),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(unsatisfiable(range, response.headers())),
            _ => Err(status_error("GET", &response)),
        }
    }

    async fn upload(&self, _namespace: &str, name: &str, body: UploadBody) -> Result<()> {
        let mut request = self.request(reqwest::Method::PUT, self.url(name)?);
        if let Some(size) = body.size() {
            request = request.header(CONTENT_LENGTH, size);
        }
        let response = send(request.body(reqwest::Body::wrap_stream(body.into_stream()))).await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            _ => Err(status_error("PUT", &response)),
        }
    }

    async fn list(
        &self,
        _namespace: &str,
        _prefix: &str,
        _options: &ListOptions,
    ) -> Result<ListPage> {
        Err(Error::Unsupported {
            backend: "http",
            operation: "list",
        })
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let response = send(self.request(reqwest::Method::DELETE, self.url(name)?)).await?;
        match response.status() {
            StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::ACCEPTED => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::not_found(namespace, name)),
            _ => Err(status_error("DELETE", &response)),
        }
    }
}
