//! An origin's limit on backend fetches (`limits.max_backend_fetches`): a cold miss beyond it
//! is answered `503` with `Retry-After`, and the clients that read from origins (the origin
//! client the proxy and build-index use, the tracker's metainfo source agents go through)
//! wait it out and retry instead of failing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kraken_core::Digest;
use kraken_p2p::tracker::MetaInfoLookup;
use kraken_registry::origin::{Origin, OriginClient};
use kraken_testkit::backend::FaultyBackend;
use kraken_testkit::free_addr;
use support::{eventually, origin_config};

const NS: &str = "library/cold";

/// An origin over `backend` allowing `max` backend fetches at once.
async fn origin_over(backend: Arc<FaultyBackend>, max: usize, dir: &std::path::Path) -> Origin {
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], dir);
    config.limits.max_backend_fetches = max;
    Origin::builder(config)
        .backend(backend)
        .spawn()
        .await
        .unwrap()
}

/// `kraken_origin_fetches_total{outcome="busy"}` of `origin`.
fn busy_refusals(origin: &Origin) -> u64 {
    let text = origin.metrics().encode();
    text.lines()
        .find(|line| line.starts_with("kraken_origin_fetches_total{outcome=\"busy\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn a_fetch_beyond_the_limit_is_503_with_retry_after_and_a_retrying_client_succeeds() {
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let blobs: Vec<(Digest, Bytes)> = (0..3u8)
        .map(|i| {
            let data = Bytes::from(vec![i; 10_000 + usize::from(i)]);
            (Digest::sha256_of(&data), data)
        })
        .collect();
    for (digest, data) in &blobs {
        backend.insert(&digest.to_string(), data.clone());
    }
    backend.hold_downloads();
    let origin = origin_over(Arc::clone(&backend), 2, dir.path()).await;
    let addr = origin.local_addr().to_string();
    let http = reqwest::Client::new();
    let metainfo = |digest: &Digest| {
        format!(
            "http://{addr}/namespace/{}/blobs/{digest}/metainfo",
            NS.replace('/', "%2F")
        )
    };

    // Two cold fetches take the two slots; asking again joins them (no slot needed).
    for (digest, _) in &blobs[..2] {
        for _ in 0..2 {
            let response = http.get(metainfo(digest)).send().await.unwrap();
            assert_eq!(response.status(), 202);
        }
    }
    eventually(
        Duration::from_secs(10),
        "both fetches reach the backend",
        || {
            let held = backend.held_downloads();
            async move { held == 2 }
        },
    )
    .await;

    // The third is refused, on every endpoint that would start a fetch.
    let (third, third_data) = &blobs[2];
    let response = http.get(metainfo(third)).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let prefetch = metainfo(third).replace("/metainfo", "/prefetch");
    let response = http.post(&prefetch).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let blob = metainfo(third).replace("/metainfo", "");
    let response = http.get(&blob).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(busy_refusals(&origin), 3);
    assert_eq!(backend.held_downloads(), 2, "no third backend read started");

    // The tracker's way (agents): busy reads as "not yet", which agents poll for.
    let client = OriginClient::new().unwrap();
    let lookup = client.metainfo(&addr, NS, third).await.unwrap();
    assert!(matches!(lookup, MetaInfoLookup::Pending), "{lookup:?}");

    // A reader (the proxy's way) that meets the 503 waits and asks again.
    let reader = {
        let (client, addr, digest) = (client.clone(), addr.clone(), *third);
        tokio::spawn(async move { client.download(&addr, NS, &digest, 1 << 20).await })
    };
    let before = busy_refusals(&origin);
    eventually(
        Duration::from_secs(10),
        "the reader is refused once",
        || {
            let refused = busy_refusals(&origin);
            async move { refused > before }
        },
    )
    .await;
    assert!(!reader.is_finished(), "a 503 is not the reader's answer");
    backend.release();
    let bytes = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reader finishes")
        .unwrap()
        .expect("the retried read succeeds");
    assert_eq!(&bytes, third_data);

    // Every blob arrives; the slots are free again.
    for (digest, data) in &blobs {
        let got = client.download(&addr, NS, digest, 1 << 20).await.unwrap();
        assert_eq!(&got, data);
    }
    origin.shutdown().await;
}
