//! The tracker client, and the trait the node talks to a tracker through.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kraken_core::{Digest, InfoHash, MetaInfo};

use super::api::{AnnounceRequest, AnnounceResponse, encode_segment};
use crate::error::{Error, Result};
use crate::tls::ClientTls;

/// Largest tracker answer read: the largest metainfo plus slack.
const MAX_RESPONSE: usize =
    kraken_core::METAINFO_HEADER_LEN + kraken_core::MAX_PIECE_COUNT as usize * 32 + 4096;

/// What a node needs from a tracker. [`TrackerClient`] implements it over HTTP; tests and
/// embedders may implement it otherwise.
#[async_trait]
pub trait Tracker: Send + Sync + fmt::Debug + 'static {
    /// Announces a torrent and returns peers to connect to.
    async fn announce(
        &self,
        info_hash: InfoHash,
        request: AnnounceRequest,
    ) -> Result<AnnounceResponse>;
    /// The metainfo of a blob, if anyone published it.
    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>>;
    /// Publishes a blob's metainfo so fetchers can find it.
    async fn publish_metainfo(&self, namespace: &str, meta: &MetaInfo) -> Result<()>;
}

/// An HTTP client of one tracker.
#[derive(Clone)]
pub struct TrackerClient {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerClient")
            .field("base", &self.base)
            .finish()
    }
}

impl TrackerClient {
    /// A client of the tracker at `url` (`http://host:port`). Requests time out after 10 s.
    pub fn new(url: &str) -> Result<Self> {
        Self::connect(url, None)
    }

    /// A client of the tracker at `url` (`https://host:port`) over TLS with `tls` (the pinned
    /// CA, and a client certificate if the tracker asks for one). Requests time out after 10 s.
    pub fn with_tls(url: &str, tls: &ClientTls) -> Result<Self> {
        Self::connect(url, Some(tls))
    }

    /// [`with_tls`](Self::with_tls) when `tls` is given, else [`new`](Self::new). An
    /// `https://` URL needs `tls`.
    pub fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|_| Error::Config("tracker URL is not a valid URI"))?;
        let scheme = uri.scheme_str();
        if uri.host().is_none() || !matches!(scheme, Some("http" | "https")) {
            return Err(Error::Config(
                "tracker URL must be http://host:port or https://host:port",
            ));
        }
        if scheme == Some("https") && tls.is_none() {
            return Err(Error::Config(
                "an https tracker URL needs a client TLS configuration",
            ));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // Plain clients still go through the TLS connector (it passes http:// through), so
        // there is one client type; without a configuration nothing is trusted.
        let config = match tls {
            Some(tls) => tls.config().as_ref().clone(),
            None => untrusting_config(),
        };
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            base,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(10),
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| Error::TrackerUnreachable {
            url: url.clone(),
            reason,
        };
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", content_type)
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(kraken_core::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable("timed out".into()))?
    }
}

/// A TLS configuration that trusts no server: what a plain-HTTP client carries.
fn untrusting_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

fn status_error(status: StatusCode, body: &[u8]) -> Error {
    let message = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Error::Tracker {
        status: status.as_u16(),
        message,
    }
}

#[async_trait]
impl Tracker for TrackerClient {
    async fn announce(
        &self,
        info_hash: InfoHash,
        request: AnnounceRequest,
    ) -> Result<AnnounceResponse> {
        let body =
            serde_json::to_vec(&request).map_err(|_| Error::Internal("announce serialisation"))?;
        let (status, body) = self
            .request(
                Method::POST,
                &format!("/announce/{info_hash}"),
                body.into(),
                "application/json",
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::TrackerUnreachable {
            url: self.base.clone(),
            reason: format!("invalid announce response: {e}"),
        })
    }

    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        let path = format!(
            "/namespace/{}/blobs/{digest}/metainfo",
            encode_segment(namespace)
        );
        let (status, body) = self
            .request(Method::GET, &path, Bytes::new(), "application/octet-stream")
            .await?;
        match status {
            StatusCode::OK => {
                let meta = MetaInfo::decode(&body)?;
                if meta.digest() != digest {
                    return Err(Error::TrackerUnreachable {
                        url: self.base.clone(),
                        reason: "tracker returned the metainfo of another blob".into(),
                    });
                }
                Ok(Some(meta))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(status, &body)),
        }
    }

    async fn publish_metainfo(&self, namespace: &str, meta: &MetaInfo) -> Result<()> {
        let path = format!(
            "/namespace/{}/blobs/{}/metainfo",
            encode_segment(namespace),
            meta.digest()
        );
        let (status, body) = self
            .request(
                Method::POST,
                &path,
                meta.encode().into(),
                "application/octet-stream",
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status, &body))
        }
    }
}
