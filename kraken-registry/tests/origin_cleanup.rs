//! `POST /forcecleanup?ttl_hr=N`: idle blobs go, blobs awaiting write-back stay, and a
//! deleted blob comes back from the backend on the next read.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kraken_backends::Router;
use kraken_core::{BlobStatus, Digest};
use kraken_registry::origin::{CommitKind, Origin, OriginClient};
use kraken_testkit::backend::FaultyBackend;
use kraken_testkit::{free_addr, pseudo_random_bytes};
use reqwest::StatusCode;
use support::{eventually, origin_config};

const NS: &str = "library/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_cleanup_spares_blobs_awaiting_write_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr("127.0.0.1");
    let backend = Arc::new(FaultyBackend::failing_first(0));
    let router = Router::new().with_route(".*", backend.clone()).unwrap();
    let origin = Origin::builder(origin_config(addr, &[addr], dir.path()))
        .backend(Arc::new(router))
        .spawn()
        .await
        .unwrap();
    let client = OriginClient::new().unwrap();
    let entry = addr.to_string();
    let written = pseudo_random_bytes(200_000, 1);
    let written_digest = Digest::sha256_of(&written);
    client
        .upload_bytes(
            &entry,
            NS,
            &written_digest,
            written.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the first blob is written back",
        || async { origin.pending_write_backs() == 0 },
    )
    .await;
    // The backend goes down: the second blob stays pinned, awaiting write-back.
    backend.fail_next(u32::MAX);
    let pending = pseudo_random_bytes(100_000, 2);
    let pending_digest = Digest::sha256_of(&pending);
    client
        .upload_bytes(
            &entry,
            NS,
            &pending_digest,
            pending.into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    assert_eq!(origin.pending_write_backs(), 1);

    let http = reqwest::Client::new();
    let bad = http
        .post(format!("http://{addr}/forcecleanup?ttl_hr=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // Both blobs have been idle for more than 0 hours; only the written-back one may go.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let response = http
        .post(format!("http://{addr}/forcecleanup?ttl_hr=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        report["deleted"],
        serde_json::json!([written_digest.to_string()])
    );
    let kept = report["errors"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{report}");
    assert!(kept[0].as_str().unwrap().contains("awaiting write-back"));
    assert!(matches!(
        origin.store().status(&written_digest),
        BlobStatus::Absent
    ));
    assert!(matches!(
        origin.store().status(&pending_digest),
        BlobStatus::Cached { .. }
    ));

    // The backend returns: the deleted blob is fetched again on the next read.
    backend.fail_next(0);
    let read = http
        .get(format!(
            "http://{addr}/namespace/library%2Fapp/blobs/{written_digest}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap(), written);
    origin.shutdown().await;
}
