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

/// A replayable body over `path`'s bytes that says so ([`UploadBody::with_file`]), as the
/// origin's write-back makes one; `stream_len` bytes of the file are streamed.
fn file_body(path: &std::path::Path, stream_len: usize) -> UploadBody {
    let bytes = bytes::Bytes::from(std::fs::read(path).unwrap()).slice(..stream_len);
    UploadBody::from_bytes(bytes).with_file(path)
}

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// The origin's write-back of a blob to a backend on the same file system as its store
/// links the file instead of writing its bytes again.
#[tokio::test]
async fn a_file_on_the_same_file_system_is_linked_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    let source = dir.path().join("store-blob");
    std::fs::write(&source, vec![7u8; 300_000]).unwrap();
    backend
        .upload("ns", "blob", file_body(&source, 300_000))
        .await
        .unwrap();
    let stored = dir.path().join("root/blob");
    assert_eq!(inode(&stored), inode(&source), "one file, two names");
    let stream = backend.download("ns", "blob", None).await.unwrap();
    assert_eq!(collect_bytes(stream, 1 << 20).await.unwrap().len(), 300_000);
    let uploads: Vec<_> = std::fs::read_dir(dir.path().join("root/_uploads"))
        .unwrap()
        .collect();
    assert!(uploads.is_empty(), "no temporary name left: {uploads:?}");
}

/// The body's stream is read before anything is linked: a stream that fails (the origin's
/// hash of what it uploads found rot) stores nothing, link or copy.
#[tokio::test]
async fn a_file_whose_stream_fails_is_not_linked() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    let source = dir.path().join("store-blob");
    std::fs::write(&source, b"rotten bytes").unwrap();
    let failing = futures::stream::iter([
        Ok(bytes::Bytes::from_static(b"rotten")),
        Err(kraken_backends::Error::InvalidResponse(
            "digest mismatch".into(),
        )),
    ]);
    let body = UploadBody::from_stream(Box::pin(failing), Some(12)).with_file(&source);
    assert!(backend.upload("ns", "blob", body).await.is_err());
    // A replayable one too: linking is tried only for those.
    let failing = move || {
        let chunks = [
            Ok(bytes::Bytes::from_static(b"rotten")),
            Err(kraken_backends::Error::InvalidResponse(
                "digest mismatch".into(),
            )),
        ];
        Box::pin(futures::stream::iter(chunks)) as kraken_backends::ByteStream
    };
    let body = UploadBody::replayable(Some(12), failing).with_file(&source);
    assert!(backend.upload("ns", "blob", body).await.is_err());
    assert!(backend.stat("ns", "blob").await.unwrap_err().is_not_found());
    assert!(!dir.path().join("root/blob").exists());
}

/// A file that does not hold exactly the streamed bytes is not linked: the stream's bytes
/// are written instead.
#[tokio::test]
async fn a_file_longer_than_its_body_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir);
    let source = dir.path().join("store-blob");
    std::fs::write(&source, b"body and more").unwrap();
    backend
        .upload("ns", "blob", file_body(&source, 4))
        .await
        .unwrap();
    let stored = dir.path().join("root/blob");
    assert_ne!(inode(&stored), inode(&source));
    assert_eq!(std::fs::read(&stored).unwrap(), b"body");
}

/// A file on another file system (here tmpfs) cannot be linked: its bytes are copied.
#[tokio::test]
async fn a_file_on_another_file_system_is_copied() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no /dev/shm to hold a file on another file system"
        );
        return;
    };
    let backend = backend(&dir);
    let source = shm.path().join("store-blob");
    std::fs::write(&source, b"elsewhere").unwrap();
    let devices = [&source, dir.path()].map(|p| std::fs::metadata(p).unwrap().dev());
    assert_ne!(
        devices[0], devices[1],
        "/dev/shm is on the root's file system"
    );
    backend
        .upload("ns", "blob", file_body(&source, 9))
        .await
        .unwrap();
    let stored = dir.path().join("root/blob");
    assert_ne!(inode(&stored), inode(&source));
    assert_eq!(std::fs::read(&stored).unwrap(), b"elsewhere");
}
