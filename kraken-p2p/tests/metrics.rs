//! The node's and the tracker's metrics over real sockets: a download from an origin while a
//! lying peer serves corrupt pieces is counted by the other side's kind, the corrupt pieces
//! and the blacklisting are counted, and so are the tracker's announces and metainfo.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{BlobStore, ByteSize};
use kraken_p2p::metrics::{Metrics, NodeMetrics};
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{TrackerClient, TrackerConfig, TrackerServer, TrackerService};
use kraken_testkit::Exposition;
use support::{init_tracing, publish_token, random_file};

/// A node on 127.0.0.`host` counting into `metrics`, an origin if `origin`; each holds the
/// publishing credential, as the seeders here publish metainfo.
async fn node(
    host: u8,
    dir: &std::path::Path,
    tracker: SocketAddr,
    origin: bool,
    rate: Option<u64>,
    metrics: &Metrics,
) -> Node {
    let mut config = NodeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.swarm.announce_interval = Duration::from_millis(500);
    config.swarm.origin = origin;
    config.egress_rate = rate.map(ByteSize);
    Node::builder(config)
        .store(BlobStore::open(dir).unwrap())
        .tracker(Arc::new(
            TrackerClient::new(&format!("http://{tracker}"))
                .unwrap()
                .with_publish_token(publish_token()),
        ))
        .metrics(NodeMetrics::register(metrics))
        .spawn()
        .await
        .unwrap()
}

fn parse(metrics: &Metrics) -> Exposition {
    let text = metrics.encode();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_pieces_blacklistings_and_announces_are_counted() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker_metrics = Metrics::new();
    let mut tracker_config = TrackerConfig::default();
    tracker_config.announce_interval = Duration::from_millis(500);
    tracker_config.publish_token = Some(publish_token());
    let service = TrackerService::new(tracker_config).with_metrics(&tracker_metrics);
    let tracker = TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
        .await
        .unwrap();
    let tracker_addr = tracker.local_addr();

    // An origin seeds the blob, slowly enough that the fetcher also asks the liar.
    let origin_metrics = Metrics::new();
    let origin = node(
        2,
        &dir.path().join("origin"),
        tracker_addr,
        true,
        Some(4_000_000),
        &origin_metrics,
    )
    .await;
    let file = random_file(dir.path(), 8 << 20, 11);
    let meta = origin.seed_file(&file).await.unwrap();
    // A peer seeds the same blob, then its disk rots: every piece it serves is corrupt.
    let liar = node(
        3,
        &dir.path().join("liar"),
        tracker_addr,
        false,
        None,
        &Metrics::new(),
    )
    .await;
    liar.seed_file(&file).await.unwrap();
    let cached = liar.store().open_blob(meta.digest()).unwrap();
    let mut rotten = std::fs::read(cached.path()).unwrap();
    for byte in rotten.iter_mut().step_by(4096) {
        *byte ^= 0x5a;
    }
    std::fs::write(cached.path(), rotten).unwrap();

    let fetcher_metrics = Metrics::new();
    let fetcher = node(
        10,
        &dir.path().join("fetcher"),
        tracker_addr,
        false,
        None,
        &fetcher_metrics,
    )
    .await;
    let blob = tokio::time::timeout(Duration::from_secs(120), fetcher.download(meta.digest()))
        .await
        .expect("the download finishes in time")
        .expect("the download succeeds");
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let stats = fetcher.torrent_stats(meta.digest()).await.unwrap();

    let m = parse(&fetcher_metrics);
    let from_origin = m.sum("kraken_p2p_received_bytes_total", &[("remote", "origin")]);
    let from_peers = m.sum("kraken_p2p_received_bytes_total", &[("remote", "peer")]);
    assert!(
        from_origin >= meta.length() as f64 - from_peers,
        "origin {from_origin}, peers {from_peers}, blob {}",
        meta.length()
    );
    assert_eq!(
        m.sum("kraken_p2p_pieces_verified_total", &[]),
        f64::from(meta.piece_count()),
        "every piece verified once"
    );
    let corrupt = m.sum("kraken_p2p_pieces_failed_total", &[("reason", "corrupt")]);
    assert_eq!(corrupt, stats.corrupt_pieces as f64, "as the swarm counted");
    assert!(corrupt > 0.0, "the liar was never asked for a piece");
    assert!(from_peers > 0.0, "the corrupt pieces came from the peer");
    assert!(m.sum("kraken_p2p_blacklistings_total", &[]) >= 1.0);
    assert_eq!(
        m.sum("kraken_p2p_downloads_total", &[("outcome", "completed")]),
        1.0
    );
    assert_eq!(
        m.sum("kraken_p2p_download_duration_seconds_count", &[]),
        1.0
    );
    // Gauges are refreshed once a second: wait for the finished torrent (bounded).
    let mut seeding = false;
    for _ in 0..50 {
        let now = parse(&fetcher_metrics);
        if now.sum("kraken_p2p_torrents", &[("state", "seeding")]) == 1.0
            && now.sum("kraken_p2p_torrents", &[("state", "downloading")]) == 0.0
        {
            seeding = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seeding,
        "the fetcher's torrent gauge never showed it seeding"
    );

    let o = parse(&origin_metrics);
    assert!(o.sum("kraken_p2p_sent_bytes_total", &[("remote", "peer")]) >= from_origin);
    assert_eq!(o.sum("kraken_p2p_received_bytes_total", &[]), 0.0);

    let t = parse(&tracker_metrics);
    assert!(t.sum("kraken_tracker_announces_total", &[]) >= 3.0);
    assert!(t.sum("kraken_tracker_metainfo_published_total", &[]) >= 1.0);
    assert!(
        t.sum(
            "kraken_tracker_metainfo_served_total",
            &[("from", "registry")]
        ) >= 1.0,
        "the fetcher's metainfo came from the registry"
    );
    assert!(t.sum("kraken_tracker_torrents", &[]) >= 1.0);
    assert!(t.sum("kraken_tracker_peers", &[]) >= 3.0);
    assert!(t.sum("kraken_tracker_metainfos", &[]) >= 1.0);

    fetcher.shutdown().await;
    liar.shutdown().await;
    origin.shutdown().await;
    tracker.shutdown().await;
}
