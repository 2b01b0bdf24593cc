//! The filesystem backend passes the conformance suite and keeps names inside its root.

mod support;

use kraken_backends::{Backend, FsBackend, FsConfig, NameLayout, UploadBody, collect_bytes};
use kraken_testkit::backend::{self as conformance, SuiteOptions};

fn backend(dir: &tempfile::TempDir) -> FsBackend {
    FsBackend::new(FsConfig::new(dir.path().join("root"))).expect("fs backend")
}

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_suite(&backend(&dir), SuiteOptions::default()).await;
}

#[tokio::test]
async fn large_blob_streams() {
    let dir = tempfile::tempdir().unwrap();
    conformance::large_blob_streams(&backend(&dir), conformance::LARGE_BLOB_SIZE).await;
}

#[tokio::test]
async fn nothing_is_written_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    for name in ["../outside", "_uploads/x", "a/../../outside"] {
        let result = backend
            .upload("ns", name, UploadBody::from_bytes("x"))
            .await;
        assert!(result.is_err(), "{name} accepted");
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the root itself is in the temp dir");
}

#[tokio::test]
async fn docker_blob_layout_reads_a_registry_tree() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"layer bytes";
    let digest = kraken_core::Digest::sha256_of(content);
    let hex = digest.hex();
    // As CNCF Distribution's filesystem driver lays it out.
    let path = dir.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();

    let mut config = FsConfig::new(dir.path());
    config.layout = NameLayout::DockerBlob;
    let backend = FsBackend::new(config).unwrap();
    let name = digest.to_string();
    let stream = backend.download("library/x", &name, None).await.unwrap();
    assert_eq!(collect_bytes(stream, 1024).await.unwrap(), &content[..]);
    let page = backend
        .list("library/x", "sha256:", &Default::default())
        .await
        .unwrap();
    assert_eq!(page.names, [name]);
    let not_digest = backend.stat("library/x", "latest").await;
    assert!(matches!(
        not_digest,
        Err(kraken_backends::Error::InvalidName { .. })
    ));
}

/// A root that cannot be created at start (its parent is a file here; a mount that is down
/// in production) does not stop the backend from opening: reads fail until it exists, and
/// the first upload once it can be made creates it.
#[tokio::test]
async fn a_root_missing_at_start_is_created_at_the_first_upload() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("mount");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let backend = FsBackend::new(FsConfig::new(blocker.join("root"))).expect("opens anyway");
    assert!(backend.stat("ns", "blob").await.is_err());
    assert!(
        backend
            .upload("ns", "blob", UploadBody::from_bytes("x"))
            .await
            .is_err(),
        "nowhere to write yet"
    );
    std::fs::remove_file(&blocker).unwrap();
    backend
        .upload("ns", "blob", UploadBody::from_bytes("x"))
        .await
        .expect("the root is created now");
    let stream = backend.download("ns", "blob", None).await.unwrap();
    assert_eq!(collect_bytes(stream, 16).await.unwrap(), &b"x"[..]);
}

#[tokio::test]
async fn stat_says_when_a_blob_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    backend
        .upload("ns", "blob", UploadBody::from_bytes("abc"))
        .await
        .unwrap();
    let info = backend.stat("ns", "blob").await.unwrap();
    assert_eq!(info.size, 3);
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("root/blob"))
        .unwrap()
        .set_modified(then)
        .unwrap();
    let info = backend.stat("ns", "blob").await.unwrap();
    assert_eq!(
        info.modified,
        Some(then),
        "the garbage collector reads a blob's age here"
    );
}

/// An upload leaves the page cache once durable: nothing reads a blob from its backend soon
/// after writing it, and an origin's write-back of a large blob would otherwise take as much
/// fresh memory as the blob is large while the pulls that follow a push run.
#[tokio::test]
async fn an_upload_leaves_the_page_cache_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    let len = 40usize << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 4093) as u8).collect();
    backend
        .upload("ns", "blob", UploadBody::from_bytes(data.clone()))
        .await
        .unwrap();
    let file = std::fs::File::open(dir.path().join("root/blob")).unwrap();
    let len = len as u64;
    for at in [0, 20 << 20, len - 4096] {
        assert!(
            !kraken_core::store::is_cached(&file, at..at + 4096),
            "byte {at} still in the page cache"
        );
    }
    let stream = backend.download("ns", "blob", None).await.unwrap();
    assert!(collect_bytes(stream, 64 << 20).await.unwrap() == data[..]);
}

#[tokio::test]
async fn a_failing_body_stores_nothing_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    conformance::a_failing_body_stores_nothing(&backend(&dir), 40 << 20).await;
    let uploads = dir.path().join("root").join("_uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(
        left.is_empty(),
        "temporary files left in {uploads:?}: {left:?}"
    );
}
