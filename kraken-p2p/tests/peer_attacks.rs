//! Hostile peers against real nodes over real TCP on loopback (each on its own 127.0.0.x
//! address): peers that ask and never read, say nothing, never handshake, crowd in from one
//! address, or claim another peer's id. Honest downloads still finish with the right bytes.
//! Every bound below is a generous liveness limit, not a measurement.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kraken_core::{Bitfield, Digest, MetaInfo, PeerId, PieceLengthPolicy};
use kraken_p2p::node::{BoxStream, Node, NodeConfig, TcpTransport, TlsTransport, Transport};
use kraken_p2p::tracker::{Tracker, TrackerClient};
use kraken_p2p::wire::{self, FrameDecoder, Handshake, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{init_tracing, node_with, random_file, tracker};

/// Generous: long enough for any loaded machine, short enough to fail a broken build.
const LIVENESS: Duration = Duration::from_secs(90);
const NEVER: Duration = Duration::from_secs(600);

/// A TCP connection from 127.0.0.`host` to `to`, with a small receive buffer so that a peer
/// that does not read fills it quickly.
async fn connect_from(host: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, host], 0)))
        .unwrap();
    socket.connect(to).await.unwrap()
}

fn frame(message: &Message) -> BytesMut {
    let mut buf = BytesMut::new();
    wire::encode(message, &mut buf);
    buf
}

/// A handshake for `meta` claiming to be `peer`, holding nothing.
fn handshake(meta: &MetaInfo, peer: PeerId) -> BytesMut {
    let have = Bitfield::new(meta.piece_count());
    frame(&Message::Handshake(Handshake::new(
        peer,
        meta.info_hash(),
        *meta.digest(),
        String::new(),
        Bytes::copy_from_slice(have.as_bytes()),
    )))
}

/// The next message on `stream`, or `None` once it is closed (or fails).
async fn next_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
) -> Option<Message> {
    loop {
        if let Ok(Some(message)) = decoder.decode(buf) {
            return Some(message);
        }
        buf.reserve(64 << 10);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Whether the other end closes `stream` within `limit` (whatever it sends first is read
/// and dropped).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut sink = vec![0; 64 << 10];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A tracker, a seeder on 127.0.0.2 configured by `configure`, a blob of `len` bytes in
/// 4 MiB pieces, and the directory it all lives in.
async fn seeded(
    len: usize,
    configure: impl FnOnce(&mut NodeConfig),
) -> (
    tempfile::TempDir,
    kraken_p2p::tracker::TrackerServer,
    Node,
    MetaInfo,
) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = node_with(2, &dir.path().join("seeder"), tracker.local_addr(), |c| {
        c.piece_lengths = PieceLengthPolicy::fixed(4 << 20).unwrap();
        configure(c);
    })
    .await;
    let file = random_file(dir.path(), len, 7);
    let meta = seeder.seed_file(&file).await.unwrap();
    (dir, tracker, seeder, meta)
}

/// Downloads `meta` on `node` within [`LIVENESS`] and checks the bytes.
async fn fetch_and_check(node: &Node, dir: &std::path::Path, meta: &MetaInfo) {
    let blob = tokio::time::timeout(
        LIVENESS,
        std::future::IntoFuture::into_future(node.download(meta.digest())),
    )
    .await
    .expect("the honest download finishes in time")
    .expect("the honest download succeeds");
    let bytes = std::fs::read(blob.path()).unwrap();
    assert_eq!(Digest::sha256_of(&bytes), *meta.digest());
    assert_eq!(bytes, std::fs::read(dir.join("blob-7")).unwrap());
}

/// Polls until the seeder holds no connection for the torrent (its slots are back).
async fn slots_freed(seeder: &Node, meta: &MetaInfo) -> bool {
    tokio::time::timeout(LIVENESS, async {
        loop {
            match seeder.torrent_stats(meta.digest()).await {
                Some(stats) if stats.conns > 0 => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .is_ok()
}

/// A raw connection from 127.0.0.`host` to `seeder` that has sent a handshake for `meta`
/// under the id `[host; 20]`.
async fn attacker(host: u8, seeder: &Node, meta: &MetaInfo) -> TcpStream {
    let mut stream = connect_from(host, seeder.local_addr()).await;
    stream
        .write_all(&handshake(meta, PeerId::from_bytes([host; 20])))
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_that_ask_and_never_read_lose_their_slots_to_an_honest_fetcher() {
    let (dir, tracker, seeder, meta) = seeded(40 << 20, |c| {
        c.write_stall_timeout = Duration::from_secs(2);
        // Only the stall timeout may free these slots: no replacement, no idle close.
        c.swarm.stale_link_after = NEVER;
        c.swarm.conn_idle_timeout = NEVER;
    })
    .await;
    let mut attackers = Vec::new();
    for i in 0..10u8 {
        let mut stream = attacker(100 + i, &seeder, &meta).await;
        // As many pieces as the seeder queues per peer (8 × 4 MiB), then silence: the
        // seeder's writer fills the socket and waits for a reader that never comes.
        for index in 0..8 {
            stream
                .write_all(&frame(&Message::PieceRequest { index }))
                .await
                .unwrap();
        }
        attackers.push(stream);
    }
    let fetcher = node_with(20, &dir.path().join("f"), tracker.local_addr(), |_| {}).await;
    fetch_and_check(&fetcher, dir.path(), &meta).await;
    assert!(
        slots_freed(&seeder, &meta).await,
        "the seeder still holds connections of peers that never read"
    );
    drop(attackers);
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_silent_peers_holding_every_slot_are_replaced_by_an_honest_fetcher() {
    let (dir, tracker, seeder, meta) = seeded(8 << 20, |c| {
        c.swarm.stale_link_after = Duration::from_secs(2);
        c.swarm.conn_idle_timeout = NEVER;
    })
    .await;
    let mut attackers = Vec::new();
    for i in 0..10u8 {
        let mut stream = attacker(100 + i, &seeder, &meta).await;
        let (mut decoder, mut buf) = (FrameDecoder::new(), BytesMut::new());
        let reply = next_message(&mut stream, &mut decoder, &mut buf).await;
        assert!(
            matches!(reply, Some(Message::Handshake(_))),
            "attacker {i} got {reply:?}"
        );
        attackers.push(stream);
    }
    let fetcher = node_with(20, &dir.path().join("f"), tracker.local_addr(), |_| {}).await;
    fetch_and_check(&fetcher, dir.path(), &meta).await;
    drop(attackers);
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_handshakes_is_timed_out() {
    let (_dir, tracker, seeder, _meta) = seeded(1 << 20, |c| {
        c.swarm.handshake_timeout = Duration::from_secs(1);
        c.swarm.conn_idle_timeout = NEVER;
    })
    .await;
    let mut stream = connect_from(100, seeder.local_addr()).await;
    assert!(
        closed_within(&mut stream, LIVENESS).await,
        "a connection that never handshakes stays open"
    );
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_per_address_are_capped() {
    let (_dir, tracker, seeder, meta) = seeded(1 << 20, |c| {
        c.swarm.max_inbound_per_ip = 2;
        c.swarm.handshake_timeout = NEVER;
        c.swarm.conn_idle_timeout = NEVER;
    })
    .await;
    let mut crowd = Vec::new();
    for _ in 0..4 {
        crowd.push(connect_from(70, seeder.local_addr()).await);
    }
    // The seeder takes them in order: the first two are let in, the rest closed at once.
    for (i, stream) in crowd.iter_mut().enumerate().skip(2) {
        assert!(
            closed_within(stream, LIVENESS).await,
            "connection {i} from one address beyond the cap stays open"
        );
    }
    // The first two, and another address, still get the seeder's handshake.
    let mut other = connect_from(71, seeder.local_addr()).await;
    for (i, stream) in crowd.iter_mut().take(2).chain([&mut other]).enumerate() {
        stream
            .write_all(&handshake(&meta, PeerId::from_bytes([i as u8 + 1; 20])))
            .await
            .unwrap();
        let (mut decoder, mut buf) = (FrameDecoder::new(), BytesMut::new());
        let reply = tokio::time::timeout(LIVENESS, next_message(stream, &mut decoder, &mut buf))
            .await
            .expect("a reply in time");
        assert!(
            matches!(reply, Some(Message::Handshake(_))),
            "connection {i} got {reply:?}"
        );
    }
    seeder.shutdown().await;
    tracker.shutdown().await;
}

/// Publishes `meta` to the tracker at `tracker` without seeding it.
async fn publish(tracker: SocketAddr, meta: &MetaInfo) {
    TrackerClient::new(&format!("http://{tracker}"))
        .unwrap()
        .with_publish_token(support::publish_token())
        .publish_metainfo("", meta)
        .await
        .unwrap();
}

/// Sends a handshake for `meta` claiming `claimed` on `stream` until the other end answers
/// with its own (it may not have added the torrent yet); returns whether it ever did. A
/// refused attempt needs a new connection, made by `reconnect`.
async fn claim<S, F, Fut>(mut reconnect: F, meta: &MetaInfo, claimed: PeerId) -> (S, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    for _ in 0..100 {
        let mut stream = reconnect().await;
        stream.write_all(&handshake(meta, claimed)).await.unwrap();
        let (mut decoder, mut buf) = (FrameDecoder::new(), BytesMut::new());
        match next_message(&mut stream, &mut decoder, &mut buf).await {
            Some(Message::Handshake(_)) => return (stream, true),
            Some(Message::Error {
                code: wire::ErrorCode::UnknownTorrent,
                ..
            }) => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return (stream, false),
        }
    }
    panic!("the fetcher never added the torrent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_the_seeders_id_cannot_get_the_seeder_blacklisted() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let file = random_file(dir.path(), 6 << 20, 7);
    let meta = MetaInfo::from_file(&file, &PieceLengthPolicy::fixed(1 << 20).unwrap()).unwrap();
    publish(tracker.local_addr(), &meta).await;
    let fetcher = node_with(20, &dir.path().join("f"), tracker.local_addr(), |c| {
        c.swarm.blacklist_duration = NEVER;
    })
    .await;
    let download = tokio::spawn(std::future::IntoFuture::into_future(
        fetcher.download(meta.digest()),
    ));
    // The impostor, on its own address, claims the id the seeder will have and breaks the
    // protocol at once (a request for a piece that does not exist).
    let seeder_id = PeerId::from_bytes([42; 20]);
    let to = fetcher.local_addr();
    let (mut impostor, accepted) = claim(|| connect_from(66, to), &meta, seeder_id).await;
    assert!(
        accepted,
        "without TLS the fetcher takes the claimed id on trust"
    );
    impostor
        .write_all(&frame(&Message::PieceRequest { index: 1 << 30 }))
        .await
        .unwrap();
    assert!(closed_within(&mut impostor, LIVENESS).await);
    // The real seeder comes up under that id: the fetcher must still dial it.
    let seeder = Node::builder({
        let mut c = NodeConfig::default();
        c.listen = SocketAddr::from(([127, 0, 0, 2], 0));
        c.piece_lengths = PieceLengthPolicy::fixed(1 << 20).unwrap();
        c
    })
    .peer_id(seeder_id)
    .store(kraken_core::BlobStore::open(dir.path().join("seeder")).unwrap())
    .tracker(Arc::new(
        TrackerClient::new(&format!("http://{}", tracker.local_addr()))
            .unwrap()
            .with_publish_token(support::publish_token()),
    ))
    .spawn()
    .await
    .unwrap();
    seeder.seed_file(&file).await.unwrap();
    let blob = tokio::time::timeout(LIVENESS, download)
        .await
        .expect("the download finishes in time")
        .unwrap()
        .expect("the download succeeds");
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_peer_tls_required_plain_peers_and_impostors_are_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pki = kraken_testkit::TestPki::create(dir.path().join("pki"));
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let file = random_file(dir.path(), 6 << 20, 7);
    let meta = MetaInfo::from_file(&file, &PieceLengthPolicy::fixed(1 << 20).unwrap()).unwrap();
    publish(tracker.local_addr(), &meta).await;
    let fetcher = node_with(20, &dir.path().join("f"), tracker.local_addr(), |c| {
        c.tls = Some(pki.peer(1, true));
        c.swarm.blacklist_duration = NEVER;
    })
    .await;
    assert_eq!(
        fetcher.peer_id(),
        pki.peer(1, true).load().unwrap().local_peer_id(),
        "a node's peer id is the one its certificate binds"
    );
    let download = tokio::spawn(std::future::IntoFuture::into_future(
        fetcher.download(meta.digest()),
    ));
    let seeder_id = pki.peer(0, true).load().unwrap().local_peer_id();

    // A plain connection gets nothing back, not even a refusal.
    let mut plain = connect_from(65, fetcher.local_addr()).await;
    plain.write_all(&handshake(&meta, seeder_id)).await.unwrap();
    let (mut decoder, mut buf) = (FrameDecoder::new(), BytesMut::new());
    assert_eq!(next_message(&mut plain, &mut decoder, &mut buf).await, None);

    // A peer with a certificate of its own, signed by the cluster's CA, claiming the
    // seeder's id is refused, however long it tries.
    let impostor = TlsTransport::new(
        TcpTransport::with_source_ip([127, 0, 0, 66].into()),
        pki.peer(2, true).load().unwrap(),
        Duration::from_secs(10),
    );
    let to = fetcher.local_addr();
    let connect = || async { impostor.connect(to).await.expect("TLS to the fetcher") };
    let (_stream, accepted): (BoxStream, bool) = claim(connect, &meta, seeder_id).await;
    assert!(!accepted, "an impostor's handshake was accepted");

    // The real seeder, over TLS, is dialed and serves the fetcher.
    let seeder = node_with(2, &dir.path().join("seeder"), tracker.local_addr(), |c| {
        c.tls = Some(pki.peer(0, true));
        c.piece_lengths = PieceLengthPolicy::fixed(1 << 20).unwrap();
    })
    .await;
    assert_eq!(seeder.peer_id(), seeder_id);
    seeder.seed_file(&file).await.unwrap();
    let blob = tokio::time::timeout(LIVENESS, download)
        .await
        .expect("the download finishes in time")
        .unwrap()
        .expect("the download succeeds");
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}
