//! Real nodes over real TCP on loopback, each on its own 127.0.0.x address.

mod support;

use std::future::IntoFuture;
use std::time::Duration;

use futures::StreamExt;
use kraken_core::Digest;

use support::{TestSwarm, init_tracing, node, publisher, random_file, tracker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_and_three_fetchers() {
    let swarm = TestSwarm::start(5 << 20 | 12345, 1, None, 3, None).await;
    let expected = std::fs::read(&swarm.file).unwrap();
    assert_eq!(*swarm.meta.digest(), Digest::sha256_of(&expected));
    for blob in swarm.download_all(Duration::from_secs(60)).await {
        assert_eq!(std::fs::read(blob.path()).unwrap(), expected);
    }
    // Streaming a blob that is already here.
    let mut stream = swarm.fetchers[0].read(swarm.meta.digest()).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(streamed, expected);
    swarm.shutdown().await;
}

/// Pieces sent by copying (the path of TLS and of `send_file(false)`) and by `sendfile` (the
/// fetchers relaying to each other, which the seeder's cap makes worth their while) arrive
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_that_copies_pieces_feeds_fetchers_that_send_files() {
    let swarm = TestSwarm::start_with(3 << 20 | 777, 9, Some(4_000_000), 3, None, false).await;
    let expected = std::fs::read(&swarm.file).unwrap();
    for blob in swarm.download_all(Duration::from_secs(60)).await {
        assert_eq!(std::fs::read(blob.path()).unwrap(), expected);
    }
    let mut relayed = 0;
    for f in &swarm.fetchers {
        let stats = f.torrent_stats(swarm.meta.digest()).await.unwrap();
        relayed += stats
            .received_from
            .iter()
            .filter(|(peer, _)| **peer != swarm.seeder.peer_id())
            .map(|(_, bytes)| bytes)
            .sum::<u64>();
    }
    assert!(relayed > 0, "no fetcher sent a piece to another");
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_capped_fetchers_mostly_feed_each_other() {
    const RATE: u64 = 16_000_000;
    let swarm = TestSwarm::start(64 << 20, 2, Some(RATE), 12, Some(RATE)).await;
    let meta = &swarm.meta;
    for blob in swarm.download_all(Duration::from_secs(120)).await {
        // Every copy was verified against the digest by the store; check the bytes anyway.
        assert_eq!(
            Digest::sha256_of(&std::fs::read(blob.path()).unwrap()),
            *meta.digest()
        );
    }
    let mut from_seeder = 0;
    let mut total = 0;
    for f in &swarm.fetchers {
        let stats = f
            .torrent_stats(meta.digest())
            .await
            .expect("torrent still seeding");
        for (peer, bytes) in stats.received_from {
            total += bytes;
            if peer == swarm.seeder.peer_id() {
                from_seeder += bytes;
            }
        }
    }
    assert_eq!(total, 12 * meta.length());
    assert!(
        from_seeder * 2 < total,
        "{from_seeder} of {total} bytes came from the seeder: more than half"
    );
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_blacklisted_and_downloads_complete() {
    let swarm = TestSwarm::start(8 << 20, 3, Some(8_000_000), 4, None).await;
    let meta = &swarm.meta;
    // The liar seeds the same blob, then its disk rots: every piece it serves is corrupt.
    let liar = publisher(
        3,
        &swarm.dir.path().join("liar"),
        swarm.tracker.local_addr(),
        None,
    )
    .await;
    liar.seed_file(&swarm.file).await.unwrap();
    let cached = liar.store().open_blob(meta.digest()).unwrap();
    let mut rotten = std::fs::read(cached.path()).unwrap();
    for byte in rotten.iter_mut().step_by(4096) {
        *byte ^= 0x5a;
    }
    std::fs::write(cached.path(), rotten).unwrap();

    let blobs = swarm.download_all(Duration::from_secs(120)).await;
    let expected = std::fs::read(&swarm.file).unwrap();
    let mut corrupt_seen = 0;
    for (blob, f) in blobs.iter().zip(&swarm.fetchers) {
        assert_eq!(std::fs::read(blob.path()).unwrap(), expected);
        let stats = f.torrent_stats(meta.digest()).await.unwrap();
        corrupt_seen += stats.corrupt_pieces;
        assert!(
            !stats.received_from.contains_key(&liar.peer_id()),
            "a piece from the liar was accepted"
        );
    }
    assert!(corrupt_seen > 0, "the liar was never asked for a piece");
    liar.shutdown().await;
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_restart_fails_no_download() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let first = tracker("127.0.0.1:0".parse().unwrap()).await;
    let addr = first.local_addr();
    let seeder = publisher(2, &dir.path().join("seeder"), addr, Some(4_000_000)).await;
    let file = random_file(dir.path(), 16 << 20, 4);
    let meta = seeder.seed_file(&file).await.unwrap();
    let mut fetchers = Vec::new();
    for i in 0..4 {
        fetchers.push(
            node(
                10 + i,
                &dir.path().join(format!("f{i}")),
                addr,
                Some(4_000_000),
            )
            .await,
        );
    }
    let downloads: Vec<_> = fetchers
        .iter()
        .map(|f| tokio::spawn(f.download(meta.digest()).into_future()))
        .collect();
    // Let the swarm form, then take the tracker away for a while and bring up a fresh one
    // (empty peer store, empty metainfo registry) on the same address.
    let mut progress = fetchers[0].download(meta.digest()).progress();
    while progress.borrow_and_update().have == 0 {
        progress.changed().await.unwrap();
    }
    first.shutdown().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = tracker(addr).await;
    for d in downloads {
        let blob = tokio::time::timeout(Duration::from_secs(120), d)
            .await
            .expect("download finishes")
            .unwrap()
            .expect("download succeeds");
        assert_eq!(blob.digest(), meta.digest());
    }
    for n in fetchers.iter().chain([&seeder]) {
        n.shutdown().await;
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_bytes_in_order_before_the_download_ends() {
    // 8 MiB of small pieces at 4 MB/s: about two seconds to download.
    let swarm = TestSwarm::start(8 << 20, 5, Some(4_000_000), 1, None).await;
    let reader = &swarm.fetchers[0];
    let digest = swarm.meta.digest();
    let mut stream = reader.read(digest).await.unwrap();
    let mut received = Vec::new();
    let mut pieces_when_first_chunk_arrived = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the stream makes progress")
    {
        received.extend_from_slice(&chunk.unwrap());
        if pieces_when_first_chunk_arrived.is_none() {
            let stats = reader.torrent_stats(digest).await.unwrap();
            pieces_when_first_chunk_arrived = Some((stats.have, stats.total));
        }
    }
    assert_eq!(received, std::fs::read(&swarm.file).unwrap());
    let (have, total) = pieces_when_first_chunk_arrived.unwrap();
    assert!(
        have < total,
        "the first bytes came only after all {total} pieces"
    );
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_limit_holds_across_connections() {
    const RATE: u64 = 8_000_000;
    let swarm = TestSwarm::start(12 << 20, 6, Some(RATE), 4, None).await;
    let start = std::time::Instant::now();
    swarm.download_all(Duration::from_secs(60)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let sent = swarm
        .seeder
        .torrent_stats(swarm.meta.digest())
        .await
        .unwrap()
        .sent as f64;
    // The uncapped fetchers may swap among themselves, but the seeder, serving four of them
    // at once, may not exceed its cap, plus the limiter's burst (50 ms worth).
    assert!(sent >= swarm.meta.length() as f64);
    assert!(
        sent <= RATE as f64 * (elapsed + 0.05),
        "the seeder sent {sent} bytes in {elapsed:.2}s, over {RATE} B/s"
    );
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_already_in_the_store_is_seeded_until_unseeded() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    // The blob arrives in the store some other way (an origin's upload), not by seed_file.
    let file = random_file(dir.path(), 3 << 20, 41);
    let meta = seeder
        .store()
        .import(std::fs::File::open(&file).unwrap(), 1 << 20, None)
        .unwrap();
    assert!(seeder.torrent_stats(meta.digest()).await.is_none());
    let seeded = seeder.seed("models", meta.digest()).await.unwrap();
    assert_eq!(seeded.info_hash(), meta.info_hash());
    // Seeding again is harmless.
    seeder.seed("models", meta.digest()).await.unwrap();
    assert!(seeder.torrent_stats(meta.digest()).await.is_some());

    let fetcher = node(3, &dir.path().join("fetcher"), tracker.local_addr(), None).await;
    let blob = tokio::time::timeout(
        Duration::from_secs(30),
        fetcher.download_in("models", meta.digest()).into_future(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        std::fs::read(blob.path()).unwrap(),
        std::fs::read(&file).unwrap()
    );

    seeder.unseed(meta.digest());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seeder.torrent_stats(meta.digest()).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "still seeding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A blob that is not in the store cannot be seeded.
    assert!(
        seeder
            .seed("models", &Digest::sha256_of(b"absent"))
            .await
            .is_err()
    );
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

/// Reads `stream` to its end.
async fn collect(mut stream: kraken_p2p::node::BlobStream) -> Vec<u8> {
    let mut received = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the stream makes progress")
    {
        received.extend_from_slice(&chunk.unwrap());
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_read_exact_bytes_while_downloading_and_after() {
    // 4 MiB of 256 KiB pieces at 4 MB/s: about a second to download.
    let swarm = TestSwarm::start(4 << 20, 7, Some(4_000_000), 1, None).await;
    let reader = &swarm.fetchers[0];
    let digest = swarm.meta.digest();
    let expected = std::fs::read(&swarm.file).unwrap();
    reader.ping().await.unwrap();
    // Across a piece boundary, while the blob downloads.
    let across = (256 << 10) - 100..(512 << 10) + 100;
    let stream = reader
        .read_in("", digest, Some(across.clone()))
        .await
        .unwrap();
    let while_downloading = reader.torrent_stats(digest).await.unwrap();
    assert!(while_downloading.have < while_downloading.total);
    let received = collect(stream).await;
    assert_eq!(
        received,
        expected[across.start as usize..across.end as usize]
    );
    // The rest of the blob arrives anyway.
    tokio::time::timeout(
        Duration::from_secs(60),
        reader.download(digest).into_future(),
    )
    .await
    .unwrap()
    .unwrap();
    // From a complete blob: a range in the middle, and one cut at the blob's end.
    let len = expected.len() as u64;
    let middle = 3..len - 3;
    let stream = reader
        .read_in("", digest, Some(middle.clone()))
        .await
        .unwrap();
    assert_eq!(collect(stream).await, expected[3..expected.len() - 3]);
    let stream = reader
        .read_in("", digest, Some(len - 10..len + 1000))
        .await
        .unwrap();
    assert_eq!(collect(stream).await, expected[expected.len() - 10..]);
    let stream = reader
        .read_in("", digest, Some(len + 5..len + 10))
        .await
        .unwrap();
    assert!(collect(stream).await.is_empty());
    let node = reader.clone();
    swarm.shutdown().await;
    assert!(node.ping().await.is_err(), "a stopped node does not answer");
}
