//! Shared set-up for the loopback tests: a tracker, nodes on distinct 127.0.0.x addresses.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kraken_core::{BlobStore, ByteSize};
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{
    PublishToken, TrackerClient, TrackerConfig, TrackerServer, TrackerService,
};

/// The test trackers' publishing credential: seeders hold it, fetchers do not.
pub const PUBLISH_TOKEN: &str = "kraken-test-publish-token";

pub fn publish_token() -> PublishToken {
    PublishToken::new(PUBLISH_TOKEN).unwrap()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn tracker(addr: SocketAddr) -> TrackerServer {
    let mut config = TrackerConfig::default();
    config.announce_interval = std::time::Duration::from_millis(500);
    config.publish_token = Some(publish_token());
    TrackerServer::bind(addr, Arc::new(TrackerService::new(config)))
        .await
        .unwrap()
}

/// A node listening on 127.0.0.`host`, storing under `dir`, capped at `rate` bytes/s each
/// way if given.
pub async fn node(host: u8, dir: &Path, tracker: SocketAddr, rate: Option<u64>) -> Node {
    node_sending_files(host, dir, tracker, rate, true).await
}

/// [`node`] holding the publishing credential, so it may seed (publish metainfo).
pub async fn publisher(host: u8, dir: &Path, tracker: SocketAddr, rate: Option<u64>) -> Node {
    node_with(host, dir, tracker, rate, true, true).await
}

/// [`node`], sending pieces with `sendfile` or, if `send_file` is false, by copying them.
pub async fn node_sending_files(
    host: u8,
    dir: &Path,
    tracker: SocketAddr,
    rate: Option<u64>,
    send_file: bool,
) -> Node {
    node_with(host, dir, tracker, rate, send_file, false).await
}

/// A node as [`node_sending_files`] makes it, holding the publishing credential if
/// `publishes`.
pub async fn node_with(
    host: u8,
    dir: &Path,
    tracker: SocketAddr,
    rate: Option<u64>,
    send_file: bool,
    publishes: bool,
) -> Node {
    let mut client = TrackerClient::new(&format!("http://{tracker}")).unwrap();
    if publishes {
        client = client.with_publish_token(publish_token());
    }
    let mut config = NodeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.egress_rate = rate.map(ByteSize);
    config.ingress_rate = rate.map(ByteSize);
    config.swarm.announce_interval = std::time::Duration::from_millis(500);
    config.send_file = send_file;
    Node::builder(config)
        .store(BlobStore::open(dir).unwrap())
        .tracker(Arc::new(client))
        .spawn()
        .await
        .unwrap()
}

/// A file of `len` pseudo-random bytes.
pub fn random_file(dir: &Path, len: usize, seed: u64) -> std::path::PathBuf {
    let path = dir.join(format!("blob-{seed}"));
    kraken_testkit::write_pseudo_random_file(&path, len, seed);
    path
}

/// A tracker, a seeder of one random blob, and fetchers, each node on its own address.
#[derive(Debug)]
pub struct TestSwarm {
    pub dir: tempfile::TempDir,
    pub tracker: TrackerServer,
    pub seeder: Node,
    pub fetchers: Vec<Node>,
    pub file: std::path::PathBuf,
    pub meta: kraken_core::MetaInfo,
}

impl TestSwarm {
    /// Seeds a blob of `len` bytes (content from `seed`) capped at `seeder_rate`, and starts
    /// `fetchers` nodes capped at `fetcher_rate`.
    pub async fn start(
        len: usize,
        seed: u64,
        seeder_rate: Option<u64>,
        fetchers: u8,
        fetcher_rate: Option<u64>,
    ) -> Self {
        Self::start_with(len, seed, seeder_rate, fetchers, fetcher_rate, true).await
    }

    /// [`start`](Self::start), with a seeder that sends pieces by copying them if
    /// `seeder_sends_files` is false.
    pub async fn start_with(
        len: usize,
        seed: u64,
        seeder_rate: Option<u64>,
        fetchers: u8,
        fetcher_rate: Option<u64>,
        seeder_sends_files: bool,
    ) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
        let seeder = node_with(
            2,
            &dir.path().join("seeder"),
            tracker.local_addr(),
            seeder_rate,
            seeder_sends_files,
            true,
        )
        .await;
        let file = random_file(dir.path(), len, seed);
        let meta = seeder.seed_file(&file).await.unwrap();
        let mut nodes = Vec::new();
        for i in 0..fetchers {
            let store = dir.path().join(format!("f{i}"));
            nodes.push(node(10 + i, &store, tracker.local_addr(), fetcher_rate).await);
        }
        Self {
            dir,
            tracker,
            seeder,
            fetchers: nodes,
            file,
            meta,
        }
    }

    /// Every fetcher downloads the blob; returns their blobs.
    pub async fn download_all(&self, limit: std::time::Duration) -> Vec<kraken_core::Blob> {
        let downloads = self
            .fetchers
            .iter()
            .map(|n| std::future::IntoFuture::into_future(n.download(self.meta.digest())));
        tokio::time::timeout(limit, futures::future::try_join_all(downloads))
            .await
            .expect("downloads finish in time")
            .expect("downloads succeed")
    }

    /// Shuts every node and the tracker down.
    pub async fn shutdown(self) {
        for node in self.fetchers.iter().chain([&self.seeder]) {
            node.shutdown().await;
        }
        self.tracker.shutdown().await;
    }
}
