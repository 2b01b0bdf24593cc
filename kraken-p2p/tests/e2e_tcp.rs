//! Real nodes over real TCP on loopback, each on its own 127.0.0.x address.

mod common;

use std::time::Duration;

use futures::StreamExt;
use kraken_core::Digest;

use common::{init_tracing, node, random_file, tracker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_and_three_fetchers() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = node(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    let file = random_file(dir.path(), 5 << 20 | 12345, 1);
    let meta = seeder.seed_file(&file).await.unwrap();
    assert_eq!(
        *meta.digest(),
        Digest::sha256_of(&std::fs::read(&file).unwrap())
    );
    let mut fetchers = Vec::new();
    for i in 0..3 {
        fetchers.push(
            node(
                10 + i,
                &dir.path().join(format!("f{i}")),
                tracker.local_addr(),
                None,
            )
            .await,
        );
    }
    let downloads = fetchers
        .iter()
        .map(|f| f.download(meta.digest()).into_future());
    let blobs = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::try_join_all(downloads),
    )
    .await
    .expect("downloads finish")
    .unwrap();
    let expected = std::fs::read(&file).unwrap();
    for blob in &blobs {
        assert_eq!(std::fs::read(blob.path()).unwrap(), expected);
    }
    // Streaming a blob that is already here.
    let mut stream = fetchers[0].read(meta.digest()).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(streamed, expected);
    for f in &fetchers {
        f.shutdown().await;
    }
    seeder.shutdown().await;
    tracker.shutdown().await;
}
