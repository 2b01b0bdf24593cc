//! The tracker's shared peer store on a real `redis-server` (loopback, no persistence), with
//! real trackers over TCP: two trackers on one Redis hand out each other's peers, a restarted
//! tracker keeps its peers, the in-memory store's rules hold, and a Redis outage degrades to
//! the tracker's memory with `/readiness` saying so.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{Digest, InfoHash, PeerId, PeerInfo};
use kraken_p2p::tracker::api::AnnounceRequest;
use kraken_p2p::tracker::{
    Announcer, CapReached, PeerStore, PeerStoreConfig, PeerStoreLimits, RedisPeerStore, Tracker,
    TrackerClient, TrackerConfig, TrackerServer, TrackerService,
};
use kraken_p2p::{Error, Result};
use kraken_testkit::RedisServer;
use support::init_tracing;

fn store_config(redis: &RedisServer) -> PeerStoreConfig {
    let mut config = PeerStoreConfig::default();
    config.redis = Some(redis.url());
    config
}

fn store(redis: &RedisServer, ttl: Duration, limits: PeerStoreLimits) -> Arc<RedisPeerStore> {
    Arc::new(RedisPeerStore::new(&store_config(redis), ttl, limits).unwrap())
}

/// A tracker on a free loopback port whose peers are in `redis`.
async fn tracker(redis: &RedisServer) -> TrackerServer {
    let config = TrackerConfig::default();
    let peers = store(redis, config.peer_ttl, config.peers);
    let service = TrackerService::with_peer_store(config, peers);
    TrackerServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(service))
        .await
        .unwrap()
}

fn peer(id: u8, addr: &str, complete: bool) -> PeerInfo {
    PeerInfo::new(
        PeerId::from_bytes([id; 20]),
        addr.parse().unwrap(),
        false,
        complete,
    )
}

fn torrent(n: u8) -> (InfoHash, Digest) {
    (InfoHash::from_bytes([n; 32]), Digest::sha256_of(&[n]))
}

/// Announces peer `id` at `127.0.0.{id}:7000` from that address to `tracker`; returns the
/// ids of the peers handed out.
async fn announce(tracker: SocketAddr, n: u8, id: u8) -> Result<Vec<u8>> {
    let ip = format!("127.0.0.{id}");
    let client = TrackerClient::new(&format!("http://{tracker}"))?
        .bind_local(ip.parse::<IpAddr>().unwrap())?;
    let (info_hash, digest) = torrent(n);
    let request = AnnounceRequest::new(
        digest,
        String::new(),
        peer(id, &format!("{ip}:7000"), false),
    );
    let answer = client.announce(info_hash, request).await?;
    let mut ids: Vec<u8> = answer
        .peers
        .iter()
        .map(|p| p.peer_id.as_bytes()[0])
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `GET /readiness`: its status and body (plain HTTP/1.1 over a socket, bounded).
async fn readiness(tracker: SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(tracker).await.unwrap();
        let request = "GET /readiness HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n";
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("readiness answered");
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trackers_on_one_redis_share_peers_and_a_restarted_one_keeps_them() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(&dir.path().join("redis.log")) else {
        return;
    };
    let a = tracker(&redis).await;
    let b = tracker(&redis).await;
    for id in 1..=3 {
        announce(a.local_addr(), 1, id).await.unwrap();
    }
    // Tracker B never heard of them, yet hands them out.
    assert_eq!(announce(b.local_addr(), 1, 8).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(
        announce(a.local_addr(), 1, 9).await.unwrap(),
        vec![1, 2, 3, 8]
    );
    // Another torrent is its own.
    assert_eq!(
        announce(b.local_addr(), 2, 4).await.unwrap(),
        Vec::<u8>::new()
    );

    // Tracker A stops; a new one (another process, say) answers for everything A knew.
    a.shutdown().await;
    let restarted = tracker(&redis).await;
    assert_eq!(
        announce(restarted.local_addr(), 1, 10).await.unwrap(),
        vec![1, 2, 3, 8, 9]
    );
    assert_eq!(readiness(restarted.local_addr()).await, (200, "OK".into()));
    restarted.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_the_trackers_memory_and_readiness_says_so() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = RedisServer::start(&dir.path().join("redis.log")) else {
        return;
    };
    let a = tracker(&redis).await;
    announce(a.local_addr(), 1, 1).await.unwrap();
    redis.stop();

    let (status, body) = readiness(a.local_addr()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis") && body.contains("memory"), "{body}");
    // Announces are answered from what this tracker saw, before and during the outage.
    assert_eq!(announce(a.local_addr(), 1, 2).await.unwrap(), vec![1]);
    assert_eq!(announce(a.local_addr(), 1, 3).await.unwrap(), vec![1, 2]);

    // Redis back (empty): ready again, and announces reach it again once `retry_interval`
    // has passed since the last failure.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while readiness(a.local_addr()).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(PeerStoreConfig::default().retry_interval).await;
    announce(a.local_addr(), 1, 4).await.unwrap();
    let b = tracker(&redis).await;
    assert_eq!(announce(b.local_addr(), 1, 5).await.unwrap(), vec![4]);
    a.shutdown().await;
    b.shutdown().await;
}

fn announcer(ip: &str) -> Announcer {
    Announcer::at(ip.parse().unwrap())
}

async fn ids(store: &RedisPeerStore, n: u8, observer: u8) -> Vec<u8> {
    let observer = peer(observer, "127.0.0.99:7000", false);
    let mut ids: Vec<u8> = store
        .handout(&torrent(n).0, &observer, 50)
        .await
        .unwrap()
        .iter()
        .map(|p| p.peer_id.as_bytes()[0])
        .collect();
    ids.sort_unstable();
    ids
}

/// The in-memory store's rules, kept by the Redis one: entries are their announcer's (another
/// host can neither replace nor evict one), a restarted host replaces its old entry at the
/// same address, every cap refuses a new entry but not a refresh, complete peers come first,
/// and entries expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_rules_of_the_memory_store() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(&dir.path().join("redis.log")) else {
        return;
    };
    let limits = PeerStoreLimits::default();
    let store = store(&redis, Duration::from_secs(60), limits);
    let (t1, _) = torrent(1);
    let victim = peer(1, "127.0.0.1:7000", true);
    store
        .announce(t1, announcer("127.0.0.1"), victim.clone())
        .await
        .unwrap();
    // Another host claims the victim's id, then takes a new id at the victim's address.
    let mut forged = peer(66, "127.0.0.66:7000", false);
    forged.peer_id = victim.peer_id;
    store
        .announce(t1, announcer("127.0.0.66"), forged)
        .await
        .unwrap();
    store
        .announce(
            t1,
            announcer("127.0.0.66"),
            peer(67, "127.0.0.1:7000", false),
        )
        .await
        .unwrap();
    let handed = store
        .handout(&t1, &peer(99, "127.0.0.99:7000", false), 50)
        .await
        .unwrap();
    assert_eq!(handed.len(), 3, "{handed:?}");
    assert!(handed.contains(&victim), "{handed:?}");
    // Complete peers first.
    assert_eq!(handed[0], victim, "{handed:?}");

    // Host 127.0.0.2 restarts with a new id at the same address: the old entry is gone.
    store
        .announce(t1, announcer("127.0.0.2"), peer(2, "127.0.0.2:7000", false))
        .await
        .unwrap();
    store
        .announce(t1, announcer("127.0.0.2"), peer(3, "127.0.0.2:7000", false))
        .await
        .unwrap();
    assert_eq!(ids(&store, 1, 99).await, vec![1, 1, 3, 67]);

    // Caps: a fresh prefix so that the counts start at zero.
    let mut config = store_config(&redis);
    config.key_prefix = "capped:".into();
    let mut limits = PeerStoreLimits::default();
    limits.max_entries_per_announcer = 2;
    limits.max_peers_per_torrent = 2;
    let capped = RedisPeerStore::new(&config, Duration::from_secs(1), limits).unwrap();
    let flooder = announcer("127.0.0.9");
    let me = peer(9, "127.0.0.9:7000", false);
    for n in 1..=2 {
        capped
            .announce(torrent(n).0, flooder, me.clone())
            .await
            .unwrap();
    }
    let refused = capped.announce(torrent(3).0, flooder, me.clone()).await;
    assert!(
        matches!(refused, Err(Error::PeerStoreFull(CapReached::Announcer))),
        "{refused:?}"
    );
    // A refresh is no new entry.
    capped
        .announce(torrent(1).0, flooder, me.clone())
        .await
        .unwrap();
    for id in 10..=12 {
        let host = format!("127.0.0.{id}");
        let result = capped
            .announce(
                torrent(4).0,
                announcer(&host),
                peer(id, &format!("{host}:7000"), false),
            )
            .await;
        if id < 12 {
            result.unwrap();
        } else {
            assert!(
                matches!(result, Err(Error::PeerStoreFull(CapReached::TorrentPeers))),
                "{result:?}"
            );
        }
    }
    // Once expired (ttl 1 s), they free their room and are handed out no more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ids(&capped, 4, 99).await, Vec::<u8>::new());
    capped
        .announce(torrent(3).0, flooder, me.clone())
        .await
        .unwrap();
    capped
        .announce(
            torrent(4).0,
            announcer("127.0.0.12"),
            peer(12, "127.0.0.12:7000", false),
        )
        .await
        .unwrap();
}
