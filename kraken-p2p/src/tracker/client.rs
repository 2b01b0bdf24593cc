//! The tracker client, and the trait the node talks to a tracker through.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use kraken_core::{Digest, InfoHash, MetaInfo};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use super::api::{AnnounceRequest, AnnounceResponse, FRESH_QUERY, encode_segment};
use super::auth::PublishToken;
use crate::error::{Error, Result};
#[cfg(feature = "tls")]
use crate::tls::ClientTls;

/// A client TLS configuration: [`ClientTls`] with feature `tls`; without it, none can exist
/// (an uninhabited type), so the code below is the same in both builds.
#[cfg(feature = "tls")]
type Tls = ClientTls;
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum Tls {}

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
    /// The metainfo of a blob as its owners (the origins) have it, not as the tracker kept
    /// it: asked when the metainfo in hand does not match the bytes anyone holds. A tracker
    /// without a better source answers as [`metainfo`](Self::metainfo) does.
    async fn refresh_metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        self.metainfo(namespace, digest).await
    }
    /// The same tracker with its requests sent from the local address `ip` (a node's
    /// listening address, which the tracker then sees as the announcer's); `None` for a
    /// tracker without sockets of its own to bind, such as a test double.
    fn bound_to(&self, ip: std::net::IpAddr) -> Result<Option<std::sync::Arc<dyn Tracker>>> {
        let _ = ip;
        Ok(None)
    }
}

/// Time to establish a connection (TCP, and TLS for `https://`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole exchange, from connecting to the last byte of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client of one tracker.
#[derive(Clone)]
pub struct TrackerClient {
    base: String,
    client: reqwest::Client,
    tls: Option<Tls>,
    token: Option<PublishToken>,
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
        Self::build(url, None, None)
    }

    /// A client of the tracker at `url` (`https://host:port`) over TLS with `tls` (the pinned
    /// CA, and a client certificate if the tracker asks for one). Requests time out after 10 s.
    /// Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn with_tls(url: &str, tls: &ClientTls) -> Result<Self> {
        Self::connect(url, Some(tls))
    }

    /// [`with_tls`](Self::with_tls) when `tls` is given, else [`new`](Self::new). An
    /// `https://` URL needs `tls`. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Self> {
        Self::build(url, tls, None)
    }

    /// Presents `token` (the tracker's publishing credential) on every request, so this
    /// client may publish metainfo and announce as an origin.
    pub fn with_publish_token(mut self, token: PublishToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Sends requests from `ip`: the address this node advertises, so the tracker, which
    /// records an announcer at the address its connection comes from, records the same
    /// one (on a host with several addresses, or nodes on 127.0.0.x).
    pub fn bind_local(self, ip: std::net::IpAddr) -> Result<Self> {
        let mut rebuilt = Self::build(&self.base, self.tls.as_ref(), Some(ip))?;
        rebuilt.token = self.token;
        Ok(rebuilt)
    }

    fn build(url: &str, tls: Option<&Tls>, local: Option<std::net::IpAddr>) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed =
            Url::parse(&base).map_err(|_| Error::Config("tracker URL is not a valid URI"))?;
        let scheme = parsed.scheme();
        if !parsed.has_host() || !matches!(scheme, "http" | "https") {
            return Err(Error::Config(
                "tracker URL must be http://host:port or https://host:port",
            ));
        }
        if scheme == "https" && tls.is_none() {
            return Err(Error::Config(if cfg!(feature = "tls") {
                "an https tracker URL needs a client TLS configuration"
            } else {
                "an https tracker URL needs kraken-p2p's feature `tls`"
            }));
        }
        let builder = reqwest::Client::builder();
        // The TLS configuration carries its crypto provider (ring), so nothing depends on a
        // process-wide default. Without a configuration nothing is trusted: plain http only.
        #[cfg(feature = "tls")]
        let builder = builder.tls_backend_preconfigured(match tls {
            Some(tls) => tls.config().as_ref().clone(),
            None => untrusting_config(),
        });
        let client = builder
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A tracker answers itself: no redirects, and no proxy from the environment
            // between a node and its tracker.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .local_address(local)
            .build()
            .map_err(|_| Error::Config("the tracker's HTTP client could not be built"))?;
        Ok(Self {
            base,
            client,
            tls: tls.cloned(),
            token: None,
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<(StatusCode, Bytes)> {
        let url = format!("{}{path}", self.base);
        let unreachable = |error: reqwest::Error| {
            let reason = if error.is_timeout() {
                "timed out".to_owned()
            } else {
                kraken_core::error_chain(&error.without_url())
            };
            Error::TrackerUnreachable {
                url: url.clone(),
                reason,
            }
        };
        let mut request = self
            .client
            .request(method, &url)
            .header(CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.header_value());
        }
        let mut response = request.body(body).send().await.map_err(unreachable)?;
        let status = response.status();
        let too_large = || Error::TrackerUnreachable {
            url: url.clone(),
            reason: format!("answer larger than {MAX_RESPONSE} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body.freeze()))
    }
}

/// A TLS configuration that trusts no server: what a plain-HTTP client carries.
#[cfg(feature = "tls")]
fn untrusting_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

/// The path of an announce for `info_hash`.
pub(super) fn announce_path(info_hash: &InfoHash) -> String {
    format!("/announce/{info_hash}")
}

/// The path of a blob's metainfo; `fresh` asks the tracker to look at the origins again.
pub(super) fn metainfo_path(namespace: &str, digest: &Digest, fresh: bool) -> String {
    let query = if fresh {
        format!("?{FRESH_QUERY}")
    } else {
        String::new()
    };
    format!(
        "/namespace/{}/blobs/{digest}/metainfo{query}",
        encode_segment(namespace)
    )
}

/// A tracker's refusal, with the start of what it said.
pub(super) fn status_error(status: StatusCode, body: &[u8]) -> Error {
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
                &announce_path(&info_hash),
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
        self.get_metainfo(namespace, digest, false).await
    }

    async fn refresh_metainfo(&self, namespace: &str, digest: &Digest) -> Result<Option<MetaInfo>> {
        self.get_metainfo(namespace, digest, true).await
    }

    fn bound_to(&self, ip: std::net::IpAddr) -> Result<Option<std::sync::Arc<dyn Tracker>>> {
        Ok(Some(std::sync::Arc::new(self.clone().bind_local(ip)?)))
    }

    async fn publish_metainfo(&self, namespace: &str, meta: &MetaInfo) -> Result<()> {
        let path = metainfo_path(namespace, meta.digest(), false);
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

impl TrackerClient {
    async fn get_metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
        fresh: bool,
    ) -> Result<Option<MetaInfo>> {
        let path = metainfo_path(namespace, digest, fresh);
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
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// The URL of a server that reads each request and answers it with `answer`, or never
    /// answers when `answer` is `None`.
    async fn server(answer: Option<String>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = [0; 4096];
                    let _ = stream.read(&mut request).await;
                    match answer {
                        Some(answer) => stream.write_all(answer.as_bytes()).await.unwrap(),
                        None => std::future::pending().await,
                    }
                });
            }
        });
        url
    }

    fn digest() -> Digest {
        Digest::sha256_of(b"x")
    }

    #[tokio::test]
    async fn error_statuses_carry_the_answer() {
        let url = server(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".into(),
        ))
        .await;
        let error = TrackerClient::new(&url)
            .unwrap()
            .metainfo("ns", &digest())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Tracker { status: 503, message } if message == "busy"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn answers_larger_than_any_metainfo_are_refused() {
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_RESPONSE + 1
        );
        let url = server(Some(answer)).await;
        let error = TrackerClient::new(&url)
            .unwrap()
            .metainfo("ns", &digest())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::TrackerUnreachable { reason, .. } if reason.contains("larger")),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tracker_times_out() {
        let url = server(None).await;
        let client = TrackerClient::new(&url).unwrap();
        let started = tokio::time::Instant::now();
        let error = client.metainfo("ns", &digest()).await.unwrap_err();
        assert!(
            matches!(&error, Error::TrackerUnreachable { reason, .. } if reason == "timed out"),
            "{error:?}"
        );
        assert_eq!(started.elapsed().as_secs(), REQUEST_TIMEOUT.as_secs());
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        for bad in ["", "tracker:15003", "ftp://tracker", "http://", "not a url"] {
            let error = TrackerClient::new(bad).unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{bad:?}: {error:?}");
        }
        assert!(TrackerClient::new("http://tracker:15003/").is_ok());
    }
}
