//! Shared set-up for the loopback tests: a tracker, nodes on distinct 127.0.0.x addresses.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kraken_core::{BlobStore, ByteSize};
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{TrackerClient, TrackerConfig, TrackerServer, TrackerService};

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
    TrackerServer::bind(addr, Arc::new(TrackerService::new(config)))
        .await
        .unwrap()
}

/// A node listening on 127.0.0.`host`, storing under `dir`, capped at `rate` bytes/s each
/// way if given.
pub async fn node(host: u8, dir: &Path, tracker: SocketAddr, rate: Option<u64>) -> Node {
    let mut config = NodeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.egress_rate = rate.map(ByteSize);
    config.ingress_rate = rate.map(ByteSize);
    config.swarm.announce_interval = std::time::Duration::from_millis(500);
    Node::builder(config)
        .store(BlobStore::open(dir).unwrap())
        .tracker(Arc::new(
            TrackerClient::new(&format!("http://{tracker}")).unwrap(),
        ))
        .spawn()
        .await
        .unwrap()
}

/// A file of `len` pseudo-random bytes.
pub fn random_file(dir: &Path, len: usize, seed: u64) -> std::path::PathBuf {
    let mut state = seed | 1;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let path = dir.join(format!("blob-{seed}"));
    std::fs::write(&path, data).unwrap();
    path
}
