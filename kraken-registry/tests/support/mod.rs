//! Shared parts of the registry tests: moto behind a counting proxy, origins on loopback,
//! uploads, a registry served on loopback ([`oci`]), skopeo round trips ([`skopeo`]), and
//! bounded waiting. What other crates' tests need too lives in `kraken_testkit`.
#![allow(dead_code, unreachable_pub, unused_imports)] // each test binary uses a different part

pub mod oci;
pub mod skopeo;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kraken_backends::{Backend, BackendConfig, BackendsConfig, FsConfig, RetryConfig, RouteConfig};
use kraken_core::Digest;
use kraken_registry::origin::{CommitKind, MembersConfig, Origin, OriginClient, OriginConfig};
use kraken_testkit::{ForwardingProxy, MotoServer, free_addr};

pub const BUCKET: &str = "kraken-origin-test";
pub const ROOT: &str = "blobs";

/// moto with a counting proxy in front; origins talk to the proxy.
pub struct S3 {
    pub moto: MotoServer,
    pub proxy: ForwardingProxy,
    _dir: tempfile::TempDir,
}

impl S3 {
    pub async fn start() -> Option<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let moto = MotoServer::start(BUCKET, &dir.path().join("moto.log")).await?;
        let proxy = ForwardingProxy::start(moto.endpoint()).await;
        Some(Self {
            moto,
            proxy,
            _dir: dir,
        })
    }

    /// The backends config origins use: everything to S3 through the proxy, no retries in
    /// the backend layer (the write-back queue retries).
    pub fn backends(&self) -> BackendsConfig {
        let s3 = self.moto.s3_config(&self.proxy.url(), ROOT);
        let mut route = RouteConfig::new(".*", BackendConfig::S3(s3));
        let mut retry = RetryConfig::default();
        retry.max_attempts = 1;
        route.retry = retry;
        BackendsConfig::new(vec![route])
    }

    /// A client of moto itself (not counted by the proxy).
    pub fn direct(&self) -> Arc<dyn Backend> {
        let s3 = self.moto.s3_config(self.moto.endpoint(), ROOT);
        BackendConfig::S3(s3).build().unwrap()
    }
}

/// A one-origin cluster on 127.0.0.1 whose backend is `s3`.
pub async fn single_origin(s3: &S3, dir: &Path) -> (Origin, OriginConfig) {
    single_origin_with(s3, dir, |_| {}).await
}

/// [`single_origin`] with `configure` applied to its config first.
pub async fn single_origin_with(
    s3: &S3,
    dir: &Path,
    configure: impl FnOnce(&mut OriginConfig),
) -> (Origin, OriginConfig) {
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], dir);
    config.backends = s3.backends();
    configure(&mut config);
    (Origin::spawn(config.clone()).await.unwrap(), config)
}

/// The publish token of the test trackers, which the test origins hold.
pub const PUBLISH_TOKEN: &str = "kraken-registry-test-publish-token";

/// A tracker on 127.0.0.1 that asks the origins at `origins` for metainfo, and its URL.
pub async fn tracker_for_origins(
    origins: &[SocketAddr],
) -> (kraken_p2p::tracker::TrackerServer, String) {
    use kraken_p2p::tracker::{TrackerConfig, TrackerServer, TrackerService};
    let mut cluster = kraken_registry::origin::ClusterConfig::default();
    cluster.members = MembersConfig::Static(origins.iter().map(ToString::to_string).collect());
    cluster.refresh_interval = Duration::from_millis(200);
    let source = kraken_registry::origin::OriginMetaInfoSource::start(cluster)
        .await
        .unwrap();
    let mut config = TrackerConfig::default();
    config.publish_token = kraken_p2p::tracker::PublishToken::new(PUBLISH_TOKEN);
    let service = TrackerService::new(config).with_metainfo_source(Arc::new(source));
    let tracker = TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
        .await
        .unwrap();
    let url = format!("http://{}", tracker.local_addr());
    (tracker, url)
}

/// The tracing subscriber of a test, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// One origin on 127.0.0.1 over a filesystem backend under `dir`, seeding through a tracker
/// that asks it for metainfo: the tracker, its URL, the origin.
pub async fn origin_with_tracker(
    dir: &Path,
) -> (kraken_p2p::tracker::TrackerServer, String, Origin) {
    let origin_addr = free_addr("127.0.0.1");
    let (tracker, tracker_url) = tracker_for_origins(&[origin_addr]).await;
    let mut config = origin_config(origin_addr, &[origin_addr], &dir.join("origin"));
    config.backends = BackendsConfig::new(vec![RouteConfig::new(
        ".*",
        BackendConfig::Fs(kraken_backends::FsConfig::new(dir.join("backend"))),
    )]);
    config.trackers = vec![tracker_url.clone()];
    let origin = Origin::spawn(config).await.unwrap();
    (tracker, tracker_url, origin)
}

/// An origin config for a loopback cluster with fast health checks and repair, holding the
/// test trackers' publish token.
pub fn origin_config(listen: SocketAddr, members: &[SocketAddr], data: &Path) -> OriginConfig {
    let mut config = OriginConfig::new(listen, data);
    config.tracker_publish_token = kraken_p2p::tracker::PublishToken::new(PUBLISH_TOKEN);
    config.cluster.members =
        MembersConfig::Static(members.iter().map(ToString::to_string).collect());
    config.cluster.refresh_interval = Duration::from_millis(200);
    config.cluster.health_timeout = Duration::from_millis(500);
    config.cluster.fails = 2;
    config.cluster.passes = 1;
    config.cluster.repair_interval = Duration::from_secs(2);
    config.write_back.initial_backoff = Duration::from_millis(200);
    config.write_back.max_backoff = Duration::from_secs(1);
    config
}

/// An HTTPS client that trusts the test CA and presents whatever certificate `tls` holds.
pub fn https_client(tls: &kraken_p2p::tls::ClientTls) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.config().as_ref().clone())
        .build()
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads `data` to `origin` under `namespace` (a client's upload) and returns its digest.
pub async fn upload(origin: &Origin, namespace: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    OriginClient::new()
        .unwrap()
        .upload_bytes(
            &origin.local_addr().to_string(),
            namespace,
            &digest,
            data.to_vec().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    digest
}

/// Routes every namespace to a filesystem backend under `dir`.
pub fn fs_backends(dir: &Path) -> BackendsConfig {
    BackendsConfig::new(vec![RouteConfig::new(
        ".*",
        BackendConfig::Fs(kraken_backends::FsConfig::new(dir)),
    )])
}

/// A one-origin cluster whose backend is a directory.
pub async fn start_origin(dir: &Path) -> Origin {
    let addr = kraken_testkit::free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], &dir.join("origin"));
    config.backends = fs_backends(&dir.join("origin-backend"));
    Origin::spawn(config).await.unwrap()
}

/// A build-index config over `origin`, with `neighbours`, and fast retries of write-backs
/// and replication.
pub fn bi_config(
    listen: SocketAddr,
    dir: &Path,
    origin: &Origin,
    neighbours: &[SocketAddr],
) -> kraken_registry::build_index::BuildIndexConfig {
    let mut config = kraken_registry::build_index::BuildIndexConfig::new(listen, dir);
    config.origins.members = MembersConfig::Static(vec![origin.local_addr().to_string()]);
    config.neighbours = neighbours.iter().map(ToString::to_string).collect();
    config.write_back.initial_backoff = Duration::from_millis(100);
    config.write_back.max_backoff = Duration::from_millis(500);
    config.replication.initial_backoff = Duration::from_millis(100);
    config.replication.max_backoff = Duration::from_millis(500);
    config.limits.neighbour_timeout = Duration::from_secs(1);
    config
}

/// Two clusters, each an origin and a build-index: `local` (over `here`) replicates tags of
/// `library/…` to `remote` (over `there`).
pub struct TwoClusters {
    pub here: Origin,
    pub there: Origin,
    pub local: kraken_registry::build_index::BuildIndex,
    pub remote: kraken_registry::build_index::BuildIndex,
}

impl TwoClusters {
    /// Starts both under `dir` (`here/`, `there/`).
    pub async fn start(dir: &Path) -> Self {
        use kraken_registry::build_index::{BuildIndex, RemoteConfig};
        let here = start_origin(&dir.join("here")).await;
        let there = start_origin(&dir.join("there")).await;
        let remote_config = bi_config(
            kraken_testkit::free_addr("127.0.0.1"),
            &dir.join("there/bi"),
            &there,
            &[],
        );
        let remote = BuildIndex::spawn(remote_config).await.unwrap();
        let mut config = bi_config(
            kraken_testkit::free_addr("127.0.0.1"),
            &dir.join("here/bi"),
            &here,
            &[],
        );
        config.remotes = vec![RemoteConfig::new(
            remote.local_addr().to_string(),
            &["library/.*"],
        )];
        let local = BuildIndex::spawn(config).await.unwrap();
        Self {
            here,
            there,
            local,
            remote,
        }
    }
}

/// Every file under `dir` whose path holds `digest`'s hex (a store's entry, a backend's
/// object).
pub fn files_of(dir: &Path, digest: &Digest) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, hex: &str, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, hex, out);
            } else if path.to_string_lossy().contains(hex) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &digest.hex(), &mut out);
    out
}

/// Whether a file whose path holds `digest`'s hex is under `dir`.
pub fn holds(dir: &Path, digest: &Digest) -> bool {
    !files_of(dir, digest).is_empty()
}
