//! `kraken build-index --config` as a real process beside `kraken origin`: a tag put and read
//! back, a missing dependency refused, and tags that survive the process being killed
//! (SIGKILL) and reach the backend afterwards.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kraken_backends::{BackendConfig, FsConfig};
use kraken_core::Digest;
use kraken_registry::Error;
use kraken_registry::build_index::{BuildIndexClient, TagName};
use kraken_registry::origin::{CommitKind, OriginClient};
use kraken_testkit::free_addr;
use support::start_role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_put_through_the_process_survive_a_kill_and_reach_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let origin = format!("127.0.0.1:{}", free_addr("127.0.0.1").port());
    let _origin = start_role(
        "origin",
        &format!(
            "listen = \"{origin}\"\ndata_dir = \"{}\"\n\n[cluster]\nmembers = {{ static = [\"{origin}\"] }}\n\n\
             [[backends.routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = \"{}\" }}\n",
            dir.path().join("origin").display(),
            dir.path().join("blobs-backend").display()
        ),
        dir.path(),
        &origin,
    );
    let listen = format!("127.0.0.1:{}", free_addr("127.0.0.1").port());
    let tags_dir = dir.path().join("tags-backend");
    let config = |backend_root: &Path| {
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\n\n[origins]\nmembers = {{ static = [\"{origin}\"] }}\n\n\
             [write_back]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n\n\
             [[backends.routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = \"{}\" }}\n",
            dir.path().join("bi").display(),
            backend_root.display(),
        )
    };
    // First life: where the backend would make the repository's directory there is a
    // file, so every write-back fails.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("library"), b"").unwrap();
    let mut bi = start_role("build-index", &config(&blocked), dir.path(), &listen);

    let data = b"an image".to_vec();
    let digest = Digest::sha256_of(&data);
    let client = BuildIndexClient::new([listen.clone()]).unwrap();
    let tag: TagName = "library/app:1.0".parse().unwrap();
    let missing = client.put_tag(&tag, &digest, false).await;
    assert!(
        matches!(missing, Err(Error::MissingDependency(d)) if d == digest),
        "{missing:?}"
    );
    OriginClient::new()
        .unwrap()
        .upload_bytes(
            &origin,
            "library/app",
            &digest,
            data.into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    client.put_tag(&tag, &digest, false).await.unwrap();
    assert_eq!(client.get_tag(&tag).await.unwrap(), Some(digest));

    // A crash right after the acknowledgement.
    let child = bi.child().expect("running");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(bi);
    let _bi = start_role("build-index", &config(&tags_dir), dir.path(), &listen);
    assert_eq!(client.get_tag(&tag).await.unwrap(), Some(digest));
    let fs = BackendConfig::Fs(FsConfig::new(&tags_dir)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stream) = fs.download(tag.as_str(), tag.as_str(), None).await {
            let value = kraken_backends::collect_bytes(stream, 1024).await.unwrap();
            assert_eq!(value, digest.to_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tag never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
