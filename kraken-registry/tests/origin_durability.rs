//! No acknowledged upload is lost: write-back per namespace, a commit interrupted between
//! its install and its write-back record, unroutable namespaces, and fetch failures kept per
//! namespace. The origins here write back to file-system backends, one per namespace.

mod support;

use std::path::Path;
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_core::{BlobStore, Digest};
use kraken_registry::origin::{CommitKind, Origin, OriginClient, OriginConfig};
use kraken_testkit::free_addr;
use support::{eventually, origin_config};

/// An origin whose namespace `a` writes back to `dir/backend-a` and `b` to `dir/backend-b`;
/// nothing else is routed.
fn config(dir: &Path) -> OriginConfig {
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], &dir.join("origin"));
    let route = |ns: &str| {
        RouteConfig::new(
            ns,
            BackendConfig::Fs(FsConfig::new(dir.join(format!("backend-{ns}")))),
        )
    };
    config.backends = BackendsConfig::new(vec![route("a"), route("b")]);
    config
}

fn in_backend(dir: &Path, ns: &str, digest: &Digest) -> bool {
    dir.join(format!("backend-{ns}"))
        .join(digest.to_string())
        .is_file()
}

async fn upload(origin: &Origin, ns: &str, data: &[u8]) -> kraken_registry::Result<Digest> {
    let digest = Digest::sha256_of(data);
    OriginClient::new()?
        .upload_bytes(
            &origin.local_addr().to_string(),
            ns,
            &digest,
            data.to_vec().into(),
            CommitKind::Primary,
        )
        .await?;
    Ok(digest)
}

#[tokio::test]
async fn a_blob_uploaded_to_a_second_namespace_is_written_back_there_too() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::spawn(config(dir.path())).await.unwrap();
    let digest = upload(&origin, "a", b"shared layer").await.unwrap();
    eventually(Duration::from_secs(10), "write-back to a", || async {
        in_backend(dir.path(), "a", &digest)
    })
    .await;
    // Already cached: the origin answers 409, which the client counts as success.
    upload(&origin, "b", b"shared layer").await.unwrap();
    eventually(Duration::from_secs(10), "write-back to b", || async {
        in_backend(dir.path(), "b", &digest)
    })
    .await;
    eventually(Duration::from_secs(10), "unpinned", || async {
        !origin.store().is_pinned(&digest)
    })
    .await;
    origin.shutdown().await;
}

#[tokio::test]
async fn an_upload_to_a_namespace_no_backend_serves_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::spawn(config(dir.path())).await.unwrap();
    let error = upload(&origin, "nowhere", b"orphan").await.unwrap_err();
    assert!(error.to_string().contains("400 Bad Request"), "{error}");
    let url = format!(
        "http://{}/namespace/nowhere/blobs/{}/uploads",
        origin.local_addr(),
        Digest::sha256_of(b"orphan")
    );
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("no backend serves namespace"), "{reason}");
    assert!(origin.store().cached().is_empty());
    assert_eq!(origin.pending_write_backs(), 0);
    origin.shutdown().await;
}

#[tokio::test]
async fn a_blob_installed_just_before_a_crash_is_written_back_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // What a crash after the install leaves: the namespace recorded, the blob cached and
    // pinned, no write-back record.
    let data = b"committed, then the power went";
    let digest = Digest::sha256_of(data);
    {
        let store = BlobStore::open(config.data_dir.join("store")).unwrap();
        let upload = dir.path().join("upload");
        std::fs::write(&upload, data).unwrap();
        store
            .import_file_pinned(&upload, 1 << 20, Some(&digest))
            .unwrap();
        std::fs::create_dir_all(config.data_dir.join("namespaces")).unwrap();
        std::fs::write(config.data_dir.join("namespaces").join(digest.hex()), "a").unwrap();
    }
    let origin = Origin::spawn(config).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "write-back after restart",
        || async { in_backend(dir.path(), "a", &digest) },
    )
    .await;
    eventually(Duration::from_secs(10), "unpinned", || async {
        !origin.store().is_pinned(&digest)
    })
    .await;
    origin.shutdown().await;
}

#[tokio::test]
async fn a_failed_fetch_in_one_namespace_leaves_the_blob_available_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = b"only b's backend has this";
    let digest = Digest::sha256_of(data);
    std::fs::create_dir_all(dir.path().join("backend-b")).unwrap();
    std::fs::write(dir.path().join("backend-b").join(digest.to_string()), data).unwrap();
    let origin = Origin::spawn(config).await.unwrap();
    let client = OriginClient::new().unwrap();
    let addr = origin.local_addr().to_string();
    assert!(client.download(&addr, "a", &digest, 1 << 20).await.is_err());
    // At once, within the failure memory of namespace a.
    let bytes = client.download(&addr, "b", &digest, 1 << 20).await.unwrap();
    assert_eq!(&bytes[..], data);
    origin.shutdown().await;
}
