//! Lying to the tracker, with real nodes and a real tracker over TCP on loopback: foreign
//! addresses and origin claims, another peer's id and address, a flood of announces, and
//! metainfo claiming an enormous blob. Honest downloads finish with the right bytes, and
//! the tracker's memory stays within its caps.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{BlobStore, ByteSize, Digest, InfoHash, MetaInfo, PeerId, PeerInfo};
use kraken_p2p::Error;
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::api::AnnounceRequest;
use kraken_p2p::tracker::{
    PeerStoreLimits, SharedPeerStore, Tracker, TrackerClient, TrackerConfig, TrackerServer,
    TrackerService,
};
use support::{TestSwarm, init_tracing, publish_token, publisher, random_file};

/// A client of the tracker at `tracker` whose connections leave from `ip`.
fn client_from(tracker: SocketAddr, ip: &str) -> TrackerClient {
    TrackerClient::new(&format!("http://{tracker}"))
        .unwrap()
        .bind_local(ip.parse::<IpAddr>().unwrap())
        .unwrap()
}

fn peer(id: u8, addr: &str, origin: bool, complete: bool) -> PeerInfo {
    PeerInfo::new(
        PeerId::from_bytes([id; 20]),
        addr.parse().unwrap(),
        origin,
        complete,
    )
}

/// The peers the tracker hands a fresh leecher announcing from 127.0.0.8.
async fn handout(tracker: SocketAddr, meta: &MetaInfo) -> Vec<PeerInfo> {
    let observer = client_from(tracker, "127.0.0.8");
    let request = AnnounceRequest::new(
        *meta.digest(),
        String::new(),
        peer(88, "127.0.0.8:7800", false, false),
    );
    observer
        .announce(meta.info_hash(), request)
        .await
        .unwrap()
        .peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_addresses_origin_claims_and_another_peers_identity_are_not_believed() {
    let swarm = TestSwarm::start(2 << 20 | 99, 21, None, 2, None).await;
    let tracker = swarm.tracker.local_addr();
    let info_hash = swarm.meta.info_hash();
    let seeder = swarm.seeder.advertise_addr();
    // The seeder announces from its actor after `seed_file` returns: wait for its entry
    // (bounded), so that what follows tests the lies, not a race with that first announce.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !handout(tracker, &swarm.meta)
        .await
        .iter()
        .any(|p| p.peer_id == swarm.seeder.peer_id())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the seeder never announced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let liar = client_from(tracker, "127.0.0.7");
    // The liar claims to be an origin at a foreign address, then claims the seeder's id at
    // the seeder's address, then a new id at the seeder's address: each an attempt to be
    // dialed instead of the seeder, or to push the seeder out of the tracker.
    let mut impostor = peer(0, &seeder.to_string(), true, true);
    impostor.peer_id = swarm.seeder.peer_id();
    for lie in [
        peer(77, "10.66.0.1:7100", true, true),
        impostor,
        peer(78, &seeder.to_string(), true, true),
    ] {
        let request = AnnounceRequest::new(*swarm.meta.digest(), String::new(), lie);
        liar.announce(info_hash, request).await.unwrap();
    }
    let peers = handout(tracker, &swarm.meta).await;
    assert!(
        peers
            .iter()
            .any(|p| p.peer_id == swarm.seeder.peer_id() && p.addr() == seeder && p.complete),
        "the seeder's own entry is gone: {peers:?}"
    );
    let lies: Vec<&PeerInfo> = peers
        .iter()
        .filter(|p| p.ip == "127.0.0.7".parse::<IpAddr>().unwrap())
        .collect();
    // Two: the last lie names the address of the one before from the same host, which it
    // replaces (a restart, as far as the tracker can tell); the seeder is not touched.
    assert_eq!(lies.len(), 2, "{peers:?}");
    for lie in &lies {
        assert!(
            !lie.origin && !lie.complete,
            "a claim was believed: {lie:?}"
        );
    }
    assert!(
        peers
            .iter()
            .all(|p| p.ip != "10.66.0.1".parse::<IpAddr>().unwrap()),
        "the declared foreign address was recorded: {peers:?}"
    );
    // An origin holding the credential is believed, address and all.
    let origin = client_from(tracker, "127.0.0.9").with_publish_token(publish_token());
    let request = AnnounceRequest::new(
        *swarm.meta.digest(),
        String::new(),
        peer(99, "10.0.0.9:7300", true, true),
    );
    origin.announce(info_hash, request).await.unwrap();
    let peers = handout(tracker, &swarm.meta).await;
    assert!(
        peers
            .iter()
            .any(|p| p.addr() == "10.0.0.9:7300".parse().unwrap() && p.origin),
        "{peers:?}"
    );

    let expected = std::fs::read(&swarm.file).unwrap();
    for blob in swarm.download_all(Duration::from_secs(60)).await {
        assert_eq!(std::fs::read(blob.path()).unwrap(), expected);
    }
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_announces_for_random_info_hashes_stays_within_the_caps() {
    init_tracing();
    let mut limits = PeerStoreLimits::default();
    limits.max_entries_per_announcer = 64;
    limits.max_torrents = 1_000;
    let mut config = TrackerConfig::default();
    config.announce_interval = Duration::from_millis(500);
    config.peers = limits;
    config.publish_token = Some(publish_token());
    let store = Arc::new(SharedPeerStore::new(config.peer_ttl, limits));
    let service = TrackerService::with_peer_store(config, store.clone());
    let tracker = TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
        .await
        .unwrap();
    let addr = tracker.local_addr();

    let flooder = client_from(addr, "127.0.0.7");
    let mut refused = 0;
    for n in 0..500u32 {
        let info_hash = InfoHash::from_bytes(
            *Digest::sha256_of(&n.to_be_bytes())
                .as_bytes()
                .first_chunk()
                .unwrap(),
        );
        let request = AnnounceRequest::new(
            Digest::sha256_of(&n.to_le_bytes()),
            String::new(),
            peer(7, "127.0.0.7:7000", false, false),
        );
        match flooder.announce(info_hash, request).await {
            Ok(_) => {}
            Err(Error::Tracker { status: 429, .. }) => refused += 1,
            Err(e) => panic!("announce {n}: {e:?}"),
        }
    }
    assert_eq!(refused, 500 - 64);
    assert_eq!(store.entry_count(), 64);
    assert_eq!(store.torrent_count(), 64);

    // Honest nodes still meet and move bytes.
    let dir = tempfile::tempdir().unwrap();
    let seeder = publisher(2, &dir.path().join("seeder"), addr, None).await;
    let file = random_file(dir.path(), 1 << 20, 5);
    let meta = seeder.seed_file(&file).await.unwrap();
    let fetcher = support::node(3, &dir.path().join("fetcher"), addr, None).await;
    let blob = tokio::time::timeout(
        Duration::from_secs(30),
        std::future::IntoFuture::into_future(fetcher.download(meta.digest())),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );
    assert!(store.entry_count() <= 64 + 2);
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metainfo_claiming_more_than_max_blob_size_is_refused_before_allocating() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = support::tracker("127.0.0.1:0".parse().unwrap()).await;
    let addr = tracker.local_addr();
    // A publisher's metainfo for a 256 MiB blob (256 pieces of 1 MiB, a chain that ends at
    // the digest, so it decodes), against a fetcher that takes blobs up to 16 MiB. (Small
    // enough that the test does not fill a disk when it runs against a build without the
    // limit, where it fails by stalling.)
    let digest = Digest::sha256_of(b"a blob that is not that long");
    let mut hashes = vec![[7u8; 32]; 256];
    *hashes.last_mut().unwrap() = *digest.as_bytes().first_chunk().unwrap();
    let huge = MetaInfo::from_parts(digest, 256 << 20, 1 << 20, hashes).unwrap();
    TrackerClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_publish_token(publish_token())
        .publish_metainfo("", &huge)
        .await
        .unwrap();

    let mut config = NodeConfig::default();
    config.listen = "127.0.0.3:0".parse().unwrap();
    config.max_blob_size = ByteSize(16 << 20);
    let store_dir = dir.path().join("fetcher");
    let fetcher = Node::builder(config)
        .store(BlobStore::open(&store_dir).unwrap())
        .tracker(Arc::new(
            TrackerClient::new(&format!("http://{addr}")).unwrap(),
        ))
        .spawn()
        .await
        .unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        std::future::IntoFuture::into_future(fetcher.download(&digest)),
    )
    .await
    .expect("refused at once")
    .unwrap_err();
    assert!(
        matches!(error, Error::BlobTooLarge { length, .. } if length == 256 << 20),
        "{error:?}"
    );
    // Nothing was allocated for it.
    let allocated: u64 = walk(&store_dir).iter().sum();
    assert!(allocated < 1 << 20, "{allocated} bytes under the store");
    fetcher.shutdown().await;
    tracker.shutdown().await;
}

/// The lengths of the files under `dir`.
fn walk(dir: &std::path::Path) -> Vec<u64> {
    let mut lengths = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            lengths.extend(walk(&entry.path()));
        } else {
            lengths.push(meta.len());
        }
    }
    lengths
}
