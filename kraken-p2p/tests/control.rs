//! Controlling downloads and nodes: cancel, dropping the last waiter, dropping the last
//! handle, progress, eviction by the node; real nodes over real TCP.

mod support;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{BlobStatus, BlobStore, Digest, StoreConfig};
use kraken_p2p::Error;
use kraken_p2p::node::{Node, NodeConfig, Progress, Stage};
use kraken_p2p::tracker::TrackerClient;
use support::{TestSwarm, init_tracing, node, publisher, random_file, tracker};

/// Bound on anything awaited: a hang fails the test instead of blocking it.
const LIMIT: Duration = Duration::from_secs(60);

/// Waits (bounded) until `progress` satisfies `ready`.
async fn wait_for(
    progress: &mut tokio::sync::watch::Receiver<Progress>,
    ready: impl Fn(&Progress) -> bool,
) -> Progress {
    tokio::time::timeout(LIMIT, async {
        loop {
            let now = *progress.borrow_and_update();
            if ready(&now) {
                return now;
            }
            progress.changed().await.expect("progress ended early");
        }
    })
    .await
    .expect("progress in time")
}

/// Polls `check` (bounded) until it holds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition in time");
}

async fn node_with(
    host: u8,
    dir: &std::path::Path,
    tracker: SocketAddr,
    config: NodeConfig,
    store: StoreConfig,
) -> Node {
    let mut config = config;
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.swarm.announce_interval = Duration::from_millis(500);
    Node::builder(config)
        .store(BlobStore::open_with_config(dir, store).unwrap())
        .tracker(Arc::new(
            TrackerClient::new(&format!("http://{tracker}")).unwrap(),
        ))
        .spawn()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_download_that_resumes_later_and_progress_says_what_happens() {
    // A slow seeder: the download is surely cancelled half-way.
    let swarm = TestSwarm::start(16 << 20, 3, Some(2_000_000), 1, None).await;
    let (fetcher, meta, file) = (&swarm.fetchers[0], &swarm.meta, &swarm.file);

    let fetch = fetcher.download(meta.digest());
    let mut progress = fetch.progress();
    let seen = wait_for(&mut progress, |p| p.have >= 2).await;
    assert_eq!(seen.stage, Stage::Downloading);
    assert_eq!(seen.length, meta.length());
    assert!(seen.bytes >= 2 * meta.piece_length() && seen.bytes < meta.length());
    assert!(seen.peers >= 1, "{seen:?}");
    fetcher.cancel(meta.digest());
    let result = tokio::time::timeout(LIMIT, fetch.into_future())
        .await
        .expect("in time");
    assert!(
        matches!(result, Err(Error::Cancelled(d)) if d == *meta.digest()),
        "{result:?}"
    );
    assert!(fetcher.torrent_stats(meta.digest()).await.is_none());
    assert_eq!(
        fetcher.store().status(meta.digest()),
        BlobStatus::Downloading
    );

    // Downloading again resumes from the verified pieces and finishes.
    let again = fetcher.download(meta.digest());
    let mut progress = again.progress();
    let first = wait_for(&mut progress, |p| p.total > 0).await;
    assert!(first.bytes > 0, "nothing was kept: {first:?}");
    let blob = tokio::time::timeout(LIMIT, again.into_future())
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(file).unwrap()
    );
    let last = *progress.borrow();
    assert!(last.done && last.stage == Stage::Done && last.bytes == meta.length());

    // A blob already here reports its real size and piece count.
    let cached = fetcher.download(meta.digest());
    let progress = cached.progress();
    cached.await.unwrap();
    let p = *progress.borrow();
    assert_eq!(
        (p.total, p.length, p.bytes, p.done),
        (meta.piece_count(), meta.length(), meta.length(), true)
    );
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_waiter_cancels_unless_configured_otherwise() {
    let swarm = TestSwarm::start(8 << 20, 4, Some(2_000_000), 1, None).await;
    let (fetcher, meta) = (&swarm.fetchers[0], &swarm.meta);
    let fetch = fetcher.download(meta.digest());
    let mut progress = fetch.progress();
    wait_for(&mut progress, |p| p.have >= 1).await;
    // A second waiter keeps it going; dropping both cancels it.
    let second = fetcher.download(meta.digest());
    drop(fetch);
    drop(progress);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        fetcher.torrent_stats(meta.digest()).await.is_some(),
        "cancelled with a waiter left"
    );
    drop(second);
    eventually(async || fetcher.torrent_stats(meta.digest()).await.is_none()).await;

    // With cancel_on_drop off, a dropped download runs to the end.
    let mut config = NodeConfig::default();
    config.cancel_on_drop = false;
    let keeper = node_with(
        11,
        &swarm.dir.path().join("b"),
        swarm.tracker.local_addr(),
        config,
        StoreConfig::default(),
    )
    .await;
    drop(keeper.download(meta.digest()));
    eventually(async || {
        matches!(
            keeper.store().status(meta.digest()),
            BlobStatus::Cached { .. }
        )
    })
    .await;
    keeper.shutdown().await;
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_node() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let node = node(10, &dir.path().join("n"), tracker.local_addr(), None).await;
    let addr = node.local_addr();
    // A download waiting for metainfo nobody publishes (for a minute by default).
    let waiting = node.download(&Digest::sha256_of(b"nobody seeds this"));
    drop(node);
    let result = tokio::time::timeout(LIMIT, waiting.into_future())
        .await
        .expect("in time");
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
    // The listener is closed.
    eventually(async || tokio::net::TcpStream::connect(addr).await.is_err()).await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_evicts_by_its_stores_policy() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let mut config = NodeConfig::default();
    config.evict_interval = Some(Duration::from_millis(50));
    let mut store = StoreConfig::default();
    store.idle_ttl = Some(Duration::from_millis(200));
    let node = node_with(
        10,
        &dir.path().join("n"),
        tracker.local_addr(),
        config,
        store,
    )
    .await;
    let idle = node
        .store()
        .import(&b"idle blob"[..], 1 << 20, None)
        .unwrap();
    let pinned = node
        .store()
        .import(&b"pinned blob"[..], 1 << 20, None)
        .unwrap();
    node.store().pin(pinned.digest()).unwrap();
    eventually(async || node.store().status(idle.digest()) == BlobStatus::Absent).await;
    assert!(matches!(
        node.store().status(pinned.digest()),
        BlobStatus::Cached { .. }
    ));
    node.shutdown().await;
    tracker.shutdown().await;
}

/// Nodes in the tracker's own process use the service directly: no tracker listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_tracker_needs_no_listener() {
    use kraken_p2p::tracker::{TrackerConfig, TrackerService};
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrackerConfig::default();
    config.announce_interval = Duration::from_millis(500);
    let tracker = Arc::new(TrackerService::new(config));
    let mut nodes = Vec::new();
    for host in [2u8, 10] {
        let mut config = NodeConfig::default();
        config.listen = SocketAddr::from(([127, 0, 0, host], 0));
        config.swarm.announce_interval = Duration::from_millis(500);
        let node = Node::builder(config)
            .store(BlobStore::open(dir.path().join(host.to_string())).unwrap())
            .tracker(tracker.clone())
            .spawn()
            .await
            .unwrap();
        nodes.push(node);
    }
    let file = random_file(dir.path(), (2 << 20) + 3, 5);
    let meta = nodes[0].seed_file_in_place(&file).await.unwrap();
    let blob = tokio::time::timeout(LIMIT, nodes[1].download(meta.digest()).into_future())
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

/// An empty blob (an empty file of a model, say) downloads like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_blob_downloads() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    let file = dir.path().join("empty");
    std::fs::write(&file, b"").unwrap();
    let meta = seeder.seed_file_in_place(&file).await.unwrap();
    let fetcher = node(10, &dir.path().join("fetcher"), tracker.local_addr(), None).await;
    let blob = tokio::time::timeout(LIMIT, fetcher.download(meta.digest()).into_future())
        .await
        .expect("the empty blob in time")
        .unwrap();
    assert_eq!((blob.len(), blob.digest()), (0, &Digest::sha256_of(b"")));
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}
