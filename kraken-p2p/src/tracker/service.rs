//! The tracker service: announces, peer handout and the metainfo registry, over HTTP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::http::{Method, Request, Response, StatusCode};
use kraken_core::{ByteSize, Digest, InfoHash, MetaInfo, PeerInfo};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::api::{AnnounceRequest, AnnounceResponse, FRESH_QUERY, decode_segment};
use super::auth::{Caller, PublishToken};
use super::source::{MetaInfoLookup, MetaInfoSource};
use super::{Announcer, CapReached, MemoryPeerStore, PeerStoreLimits};
use crate::error::{Error, Result};
use crate::http_server::{ServeConfig, Server};
use crate::tls::{Role, Roles};

/// Largest announce body accepted: 16 KiB.
const MAX_ANNOUNCE_BODY: usize = 16 << 10;

/// Settings of the tracker service.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Interval announcers are told to wait between announces. Default: 3s.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// Most peers handed out per announce. Default: 50.
    pub handout_limit: usize,
    /// A peer is forgotten this long after its last announce. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub peer_ttl: Duration,
    /// Caps on the announced peers, which bound the tracker's memory. Default: see
    /// [`PeerStoreLimits`].
    pub peers: PeerStoreLimits,
    /// Most metainfos kept in each of the two registries (the origins' and the published);
    /// the oldest are dropped beyond it. Default: 100000.
    pub max_metainfos: usize,
    /// Most bytes of encoded metainfo kept in each registry; the oldest are dropped beyond
    /// it, and one larger than this on its own is refused (`413`). A metainfo costs 32
    /// bytes a piece, so 256MiB holds a million gigabyte-sized blobs in 4 MiB pieces.
    /// Default: 256MiB.
    pub max_metainfo_bytes: ByteSize,
    /// The credential that lets a client publish metainfo and announce as an origin without
    /// an origin certificate (`Authorization: Bearer <token>`). Never serialised. Default:
    /// none.
    #[serde(skip_serializing)]
    pub publish_token: Option<PublishToken>,
    /// Accept metainfo from anyone, as before publishers were authenticated: for a
    /// tracker on a trusted network without TLS or a token. Default: false.
    pub allow_anonymous_publish: bool,
    /// Believe the address an announce declares instead of the connection's source
    /// address, for peers behind NAT whose listener is elsewhere. Origins' declared
    /// addresses are always believed. Default: false.
    pub trust_declared_addresses: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            announce_interval: Duration::from_secs(3),
            handout_limit: super::DEFAULT_HANDOUT_LIMIT,
            peer_ttl: super::DEFAULT_PEER_TTL,
            peers: PeerStoreLimits::default(),
            max_metainfos: 100_000,
            max_metainfo_bytes: ByteSize(256 << 20),
            publish_token: None,
            allow_anonymous_publish: false,
            trust_declared_addresses: false,
        }
    }
}

/// Where a tracker keeps announced peers. The in-memory [`SharedPeerStore`] is the default;
/// a shared store (Redis, say) lets several trackers answer for the same torrents.
#[async_trait]
pub trait PeerStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records an announce of `peer` sent by `announcer`; refuses a new entry beyond the
    /// store's caps ([`Error::PeerStoreFull`](crate::Error::PeerStoreFull)).
    async fn announce(
        &self,
        info_hash: InfoHash,
        announcer: Announcer,
        peer: PeerInfo,
    ) -> Result<()>;
    /// Up to `limit` peers of a torrent for `peer` (never itself; none if it is complete),
    /// complete peers and origins first, in time proportional to `limit`.
    async fn handout(
        &self,
        info_hash: &InfoHash,
        peer: &PeerInfo,
        limit: usize,
    ) -> Result<Vec<PeerInfo>>;

    /// How many torrents and entries it holds, if it can tell at once (for metrics).
    /// Default: `None`.
    fn counts(&self) -> Option<(usize, usize)> {
        None
    }
}

/// The in-memory [`MemoryPeerStore`] behind a lock, on the wall clock.
#[derive(Debug)]
pub struct SharedPeerStore {
    inner: Mutex<(MemoryPeerStore, StdRng)>,
}

impl SharedPeerStore {
    /// A store that forgets peers `ttl` after their last announce, holding at most `limits`.
    pub fn new(ttl: Duration, limits: PeerStoreLimits) -> Self {
        Self {
            inner: Mutex::new((MemoryPeerStore::with_limits(ttl, limits), rand::make_rng())),
        }
    }

    /// Number of entries (peers in torrents) held.
    pub fn entry_count(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.entry_count()
    }

    /// Number of torrents held.
    pub fn torrent_count(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.torrent_count()
    }
}

#[async_trait]
impl PeerStore for SharedPeerStore {
    async fn announce(
        &self,
        info_hash: InfoHash,
        announcer: Announcer,
        peer: PeerInfo,
    ) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .0
            .announce_from(Instant::now(), info_hash, announcer, peer)?;
        Ok(())
    }

    async fn handout(
        &self,
        info_hash: &InfoHash,
        peer: &PeerInfo,
        limit: usize,
    ) -> Result<Vec<PeerInfo>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (store, rng) = &mut *inner;
        Ok(store.handout(Instant::now(), info_hash, peer, limit, rng))
    }

    fn counts(&self) -> Option<(usize, usize)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Some((inner.0.torrent_count(), inner.0.entry_count()))
    }
}

/// The least time between two refreshes of one blob's metainfo from the origins: a fetcher
/// asking for a fresh copy more often gets the one just fetched, so nobody can turn the
/// tracker into a flood of requests to the origins.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Metainfos from one provenance, bounded in number and in bytes (oldest dropped first).
#[derive(Debug, Default)]
struct MetaInfoRegistry {
    /// Each metainfo and when it was kept.
    by_digest: HashMap<Digest, (Bytes, Instant)>,
    order: VecDeque<Digest>,
    /// Encoded bytes held in `by_digest`.
    bytes: usize,
}

impl MetaInfoRegistry {
    /// Keeps `encoded` for `digest`, then drops the oldest entries until at most `max_count`
    /// entries of at most `max_bytes` together remain.
    fn insert(&mut self, digest: Digest, encoded: Bytes, max_count: usize, max_bytes: usize) {
        self.bytes += encoded.len();
        match self.by_digest.insert(digest, (encoded, Instant::now())) {
            Some((old, _)) => self.bytes -= old.len(),
            None => self.order.push_back(digest),
        }
        while self.order.len() > max_count || self.bytes > max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((dropped, _)) = self.by_digest.remove(&oldest) {
                self.bytes -= dropped.len();
            }
        }
    }

    fn get(&self, digest: &Digest) -> Option<&(Bytes, Instant)> {
        self.by_digest.get(digest)
    }
}

/// The tracker's two metainfo registries: what the origins said (which always wins) and
/// what authenticated publishers posted (served only for blobs the origins do not know).
#[derive(Debug, Default)]
struct MetaInfos {
    origins: MetaInfoRegistry,
    published: MetaInfoRegistry,
}

/// What the tracker counts (see `docs/metrics.md`).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum TrackerEvent {
    /// An announce answered with peers.
    Announce,
    /// A metainfo served, `true` when the source was asked for it.
    MetaInfoServed { from_source: bool },
    /// A metainfo published by a seeder.
    MetaInfoPublished,
}

/// The tracker's request handling, independent of the listener.
#[derive(Debug)]
pub struct TrackerService {
    config: TrackerConfig,
    peers: Arc<dyn PeerStore>,
    metainfos: Arc<Mutex<MetaInfos>>,
    source: Option<Arc<dyn MetaInfoSource>>,
    /// The registry its listeners serve, and the tracker's counters in it.
    #[cfg(feature = "metrics")]
    metrics: Option<(crate::metrics::Metrics, crate::metrics::TrackerMetrics)>,
}

impl TrackerService {
    /// A service with an in-memory peer store.
    pub fn new(config: TrackerConfig) -> Self {
        let store = Arc::new(SharedPeerStore::new(config.peer_ttl, config.peers));
        Self::with_peer_store(config, store)
    }

    /// A service over any peer store.
    pub fn with_peer_store(config: TrackerConfig, peers: Arc<dyn PeerStore>) -> Self {
        Self {
            config,
            peers,
            metainfos: Arc::default(),
            source: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// The same service, counting announces and metainfo in `metrics` and reporting the
    /// peer store's and the metainfo registry's sizes at every scrape.
    #[cfg(feature = "metrics")]
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        let peers = Arc::clone(&self.peers);
        let metainfos = Arc::clone(&self.metainfos);
        let sizes = move || {
            let metainfos = metainfos.lock().unwrap_or_else(|e| e.into_inner());
            let (origins, published) = (&metainfos.origins, &metainfos.published);
            crate::metrics::TrackerSizes {
                peer_store: peers.counts(),
                metainfos: origins.by_digest.len() + published.by_digest.len(),
                metainfo_bytes: origins.bytes + published.bytes,
            }
        };
        let counters = crate::metrics::TrackerMetrics::register(metrics, sizes);
        self.metrics = Some((metrics.clone(), counters));
        self
    }

    /// Counts `what` if metrics are on.
    fn count(&self, what: TrackerEvent) {
        #[cfg(feature = "metrics")]
        if let Some((_, counters)) = &self.metrics {
            counters.count(what);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = what;
    }

    /// The same service, asking `source` (the origins) for metainfo: its answer is kept and
    /// wins over published metainfo, "still being made" answers `202 Accepted`, and a
    /// source that cannot be asked answers `502 Bad Gateway` unless a publisher's metainfo
    /// is there to fall back on.
    pub fn with_metainfo_source(mut self, source: Arc<dyn MetaInfoSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Handles one HTTP request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let segments: Vec<&str> = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .collect();
        let allowed = allowed_roles(&parts.method, &segments);
        if let Err(refused) = crate::http_server::authorize(&parts.extensions, allowed) {
            return text(StatusCode::FORBIDDEN, &refused.to_string());
        }
        let caller = Caller::of(&parts, self.config.publish_token.as_ref());
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["health"]) => text(StatusCode::OK, "OK"),
            (&Method::POST, ["announce", info_hash]) => {
                let Ok(info_hash) = info_hash.parse::<InfoHash>() else {
                    return text(StatusCode::BAD_REQUEST, "invalid info hash");
                };
                match read_body(body, MAX_ANNOUNCE_BODY).await {
                    Ok(body) => self.announce(info_hash, caller, &body).await,
                    Err(response) => response,
                }
            }
            (method, ["namespace", namespace, "blobs", digest, "metainfo"]) => {
                let (Some(namespace), Ok(digest)) =
                    (decode_segment(namespace), digest.parse::<Digest>())
                else {
                    return text(StatusCode::BAD_REQUEST, "invalid namespace or digest");
                };
                match *method {
                    Method::GET => {
                        let fresh = parts
                            .uri
                            .query()
                            .is_some_and(|q| q.split('&').any(|kv| kv == FRESH_QUERY));
                        self.metainfo(&namespace, &digest, fresh).await
                    }
                    Method::POST => {
                        if !caller.publisher && !self.config.allow_anonymous_publish {
                            return text(
                                StatusCode::FORBIDDEN,
                                "publishing metainfo needs an origin certificate or the \
                                 tracker's publish token",
                            );
                        }
                        let limit = (kraken_core::METAINFO_HEADER_LEN
                            + kraken_core::MAX_PIECE_COUNT as usize * 32)
                            .min(self.max_metainfo_bytes());
                        match read_body(body, limit).await {
                            Ok(body) => self.publish(&digest, body),
                            Err(response) => response,
                        }
                    }
                    _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn announce(
        &self,
        info_hash: InfoHash,
        caller: Caller,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let request: AnnounceRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid announce: {e}")),
        };
        let declared = request.peer;
        // What is recorded is what the tracker can vouch for: the socket's address (the
        // declared port is kept: the listener is not the connection's port) unless the
        // announcer is an authenticated origin or the operator trusts declared addresses,
        // and the origin and complete flags only from an authenticated origin.
        let mut recorded = declared.clone();
        let believe_address = caller.publisher || self.config.trust_declared_addresses;
        if let Some(source) = caller.source
            && !believe_address
        {
            recorded.ip = source;
        }
        recorded.origin &= caller.publisher;
        recorded.complete &= caller.publisher;
        let announcer = Announcer {
            ip: caller.source.unwrap_or(declared.ip),
            trusted: caller.publisher,
        };
        match self
            .peers
            .announce(info_hash, announcer, recorded.clone())
            .await
        {
            Ok(()) => {}
            Err(Error::PeerStoreFull(CapReached::Announcer)) => {
                return text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "this announcer holds the most torrents it may",
                );
            }
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, &format!("peer store: {e}")),
        }
        // The handout leaves out the announcer as recorded, and gives a complete one (as it
        // says: it only decides whether it dials) nobody.
        recorded.complete = declared.complete;
        let peers = match self
            .peers
            .handout(&info_hash, &recorded, self.config.handout_limit)
            .await
        {
            Ok(peers) => peers,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, &format!("peer store: {e}")),
        };
        self.count(TrackerEvent::Announce);
        let response = AnnounceResponse {
            peers,
            interval_ms: self.config.announce_interval.as_millis() as u64,
        };
        json(&response)
    }

    /// Answers a metainfo request: the origins' metainfo first (kept from an earlier
    /// answer unless `fresh` asks to look again), then a publisher's.
    async fn metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
        fresh: bool,
    ) -> Response<Full<Bytes>> {
        let (from_origins, published) = {
            let metainfos = self.metainfos.lock().unwrap_or_else(|e| e.into_inner());
            (
                metainfos.origins.get(digest).cloned(),
                metainfos
                    .published
                    .get(digest)
                    .map(|(bytes, _)| bytes.clone()),
            )
        };
        let recent = |(_, kept): &(Bytes, Instant)| kept.elapsed() < MIN_REFRESH_INTERVAL;
        match from_origins {
            Some((bytes, _)) if !fresh => {
                self.count(TrackerEvent::MetaInfoServed { from_source: false });
                return metainfo_response(bytes);
            }
            Some(entry) if recent(&entry) => {
                self.count(TrackerEvent::MetaInfoServed { from_source: false });
                return metainfo_response(entry.0);
            }
            _ => {}
        }
        let fallback = |status: StatusCode, message: &str| match &published {
            Some(bytes) => {
                self.count(TrackerEvent::MetaInfoServed { from_source: false });
                metainfo_response(bytes.clone())
            }
            None => text(status, message),
        };
        let Some(source) = &self.source else {
            return fallback(StatusCode::NOT_FOUND, "metainfo not found");
        };
        match source.metainfo(namespace, digest).await {
            Ok(MetaInfoLookup::Found(meta)) if meta.digest() == digest => {
                let bytes = Bytes::from(meta.encode());
                let (max_count, max_bytes) = (self.config.max_metainfos, self.max_metainfo_bytes());
                let mut metainfos = self.metainfos.lock().unwrap_or_else(|e| e.into_inner());
                metainfos
                    .origins
                    .insert(*digest, bytes.clone(), max_count, max_bytes);
                drop(metainfos);
                self.count(TrackerEvent::MetaInfoServed { from_source: true });
                metainfo_response(bytes)
            }
            Ok(MetaInfoLookup::Found(_)) => fallback(
                StatusCode::BAD_GATEWAY,
                "the metainfo source answered with another blob's metainfo",
            ),
            // The origins have the blob and are making its metainfo: theirs will win, so
            // nobody is handed another meanwhile.
            Ok(MetaInfoLookup::Pending) => text(
                StatusCode::ACCEPTED,
                "the blob is being fetched; ask again shortly",
            ),
            Ok(MetaInfoLookup::NotFound) => fallback(StatusCode::NOT_FOUND, "metainfo not found"),
            Err(e) => fallback(
                StatusCode::BAD_GATEWAY,
                &format!("metainfo source failed: {e}"),
            ),
        }
    }

    fn publish(&self, digest: &Digest, body: Bytes) -> Response<Full<Bytes>> {
        let meta = match MetaInfo::decode(&body) {
            Ok(meta) => meta,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid metainfo: {e}")),
        };
        if meta.digest() != digest {
            return text(StatusCode::BAD_REQUEST, "metainfo names another blob");
        }
        let (max_count, max_bytes) = (self.config.max_metainfos, self.max_metainfo_bytes());
        let mut metainfos = self.metainfos.lock().unwrap_or_else(|e| e.into_inner());
        metainfos
            .published
            .insert(*digest, body, max_count, max_bytes);
        drop(metainfos);
        self.count(TrackerEvent::MetaInfoPublished);
        text(StatusCode::CREATED, "created")
    }

    fn max_metainfo_bytes(&self) -> usize {
        usize::try_from(self.config.max_metainfo_bytes.bytes()).unwrap_or(usize::MAX)
    }
}

/// A running tracker HTTP server.
#[derive(Debug)]
pub struct TrackerServer(Server);

impl TrackerServer {
    /// Binds `addr` and serves `service` over plain HTTP until [`shutdown`](Self::shutdown).
    pub async fn bind(addr: SocketAddr, service: Arc<TrackerService>) -> Result<Self> {
        Self::bind_with(addr, service, ServeConfig::new("tracker")).await
    }

    /// Binds `addr` and serves `service` with `config` (TLS, limits, drain time) until
    /// [`shutdown`](Self::shutdown). A service [with metrics](TrackerService::with_metrics)
    /// serves them at `/metrics` unless `config` names other metrics.
    pub async fn bind_with(
        addr: SocketAddr,
        service: Arc<TrackerService>,
        config: ServeConfig,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut config = config.routes(route_name);
        #[cfg(feature = "metrics")]
        if config.metrics.is_none() {
            config.metrics = service.metrics.as_ref().map(|(metrics, _)| metrics.clone());
        }
        let handler = move |request| {
            let service = Arc::clone(&service);
            async move { service.handle(request).await }
        };
        Ok(Self(Server::spawn(listener, config, handler)?))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Stops accepting, lets in-flight requests finish, and returns when everything has.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

/// The tracker's route names for metrics and the access log: `announce`, `metainfo_get`,
/// `metainfo_publish`, `other`.
pub fn route_name(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["announce", _]) => "announce",
        (&Method::GET | &Method::HEAD, ["namespace", _, "blobs", _, "metainfo"]) => "metainfo_get",
        (&Method::POST, ["namespace", _, "blobs", _, "metainfo"]) => "metainfo_publish",
        _ => "other",
    }
}

/// Which client-certificate roles may call each endpoint (`docs/tls.md` has the matrix):
/// peers announce; only origins, which own a blob's metainfo, publish it; reads are open.
fn allowed_roles(method: &Method, segments: &[&str]) -> Roles {
    match (method, segments) {
        (&Method::POST, ["announce", _]) => Roles::of(&[Role::Agent, Role::Origin]),
        (&Method::POST, ["namespace", _, "blobs", _, "metainfo"]) => Roles::of(&[Role::Origin]),
        _ => Roles::ANYONE,
    }
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Err(_) => Err(text(StatusCode::BAD_REQUEST, "request body unreadable")),
    }
}

fn metainfo_response(encoded: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(Full::new(encoded))
        .expect("static response parts")
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(message.to_owned())))
        .expect("static response parts")
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("serialisable response");
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u8) -> Digest {
        Digest::sha256_of(&[i])
    }

    #[test]
    fn route_names_name_the_endpoint_never_the_path() {
        let d = digest(1);
        let metainfo = format!("/namespace/a%2Fb/blobs/{d}/metainfo");
        assert_eq!(route_name(&Method::POST, "/announce/00ff"), "announce");
        assert_eq!(route_name(&Method::GET, &metainfo), "metainfo_get");
        assert_eq!(route_name(&Method::POST, &metainfo), "metainfo_publish");
        assert_eq!(route_name(&Method::GET, "/announce/00ff"), "other");
    }

    #[test]
    fn the_metainfo_registry_is_bounded_in_bytes_and_in_count() {
        let mut registry = MetaInfoRegistry::default();
        for i in 0..10 {
            registry.insert(digest(i), Bytes::from(vec![i; 100]), 1000, 450);
            assert!(registry.bytes <= 450, "{} bytes held", registry.bytes);
        }
        // The four newest fit in 450 bytes; the oldest went first.
        assert_eq!(registry.by_digest.len(), 4);
        assert!(registry.by_digest.contains_key(&digest(9)));
        assert!(!registry.by_digest.contains_key(&digest(5)));
        assert_eq!(registry.bytes, 400);

        // Replacing an entry counts its new size only.
        registry.insert(digest(9), Bytes::from(vec![0; 10]), 1000, 450);
        assert_eq!(registry.bytes, 310);
        assert_eq!(registry.order.len(), 4);

        // The count bound still holds on its own.
        registry.insert(digest(20), Bytes::from(vec![0; 1]), 2, 450);
        assert_eq!(registry.by_digest.len(), 2);
        assert_eq!(
            registry.bytes,
            registry
                .by_digest
                .values()
                .map(|(b, _)| b.len())
                .sum::<usize>()
        );
    }

    #[tokio::test]
    async fn a_published_metainfo_larger_than_the_registry_is_refused() {
        let config = TrackerConfig {
            max_metainfo_bytes: ByteSize(64),
            allow_anonymous_publish: true,
            ..TrackerConfig::default()
        };
        let service = TrackerService::new(config);
        let data = vec![1u8; 1 << 20];
        let metainfo = MetaInfo::from_bytes(&data, 64 << 10).unwrap();
        let request = Request::post(format!(
            "/namespace/ns/blobs/{}/metainfo",
            metainfo.digest()
        ))
        .body(Full::new(Bytes::from(metainfo.encode())))
        .unwrap();
        let response = service.handle(request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
