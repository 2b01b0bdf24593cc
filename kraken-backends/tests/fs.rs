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
