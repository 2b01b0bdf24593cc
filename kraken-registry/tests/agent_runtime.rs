//! The agent's preload with Go Kraken's runtime semantics: `GET
//! /preload/tags/{repo:tag}?runtime=containerd&namespace=NS` fills the agent's cache over P2P,
//! then makes a real containerd pull (and unpack) the image through the agent, into NS.

mod support;

use std::time::Duration;

use kraken_core::{BlobStatus, Digest};
use kraken_registry::agent::{Agent, AgentConfig};
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, BuildIndexConfig, TagName};
use kraken_registry::origin::MembersConfig;
use kraken_testkit::containerd::{Containerd, NAMESPACE};
use kraken_testkit::oci::{ImageSpec, OciLayout};
use kraken_testkit::{free_addr, require_packages};
use reqwest::StatusCode;

const REPO: &str = "library/runtime";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_with_runtime_containerd_makes_containerd_pull_through_the_agent() {
    if !require_packages(&[("containerd", "containerd"), ("ctr", "containerd")]) {
        return;
    }
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (tracker, tracker_url, origin) = support::origin_with_tracker(dir.path()).await;
    let mut config = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.path().join("bi"));
    config.origins.members = MembersConfig::Static(vec![origin.local_addr().to_string()]);
    let build_index = BuildIndex::spawn(config).await.unwrap();

    // A real image (tar layers, a linux/amd64 config) that containerd can unpack, pushed
    // into the cluster: blobs to the origin, the tag to the build-index.
    let mut layout = OciLayout::create(&dir.path().join("layout")).unwrap();
    let image = layout
        .add_image("v1", &ImageSpec::new(&[3_000, 20_000], 41).without_busybox())
        .unwrap();
    for digest in image.blobs().into_iter().chain([image.manifest]) {
        let path = layout.dir().join("blobs/sha256").join(digest.hex());
        let data = std::fs::read(path).unwrap();
        assert_eq!(support::upload(&origin, REPO, &data).await, digest);
    }
    let tag = TagName::new(REPO, "v1").unwrap();
    BuildIndexClient::new([build_index.local_addr().to_string()])
        .unwrap()
        .put_tag(&tag, &image.manifest, false)
        .await
        .unwrap();

    let containerd = tokio::task::spawn_blocking(Containerd::start)
        .await
        .unwrap()
        .expect("start containerd");
    let mut config = AgentConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("agent"),
        vec![tracker_url],
        vec![build_index.local_addr().to_string()],
    );
    config.p2p.metainfo_timeout = Duration::from_secs(10);
    config.container_runtime.containerd.address = containerd.socket().to_owned();
    let agent = Agent::spawn(config).await.unwrap();
    let base = format!("http://{}", agent.local_addr());
    let http = reqwest::Client::new();

    // An unknown runtime is refused before anything is fetched.
    let response = http
        .get(format!("{base}/preload/tags/{REPO}:v1?runtime=podman"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("unknown runtime"));

    let response = http
        .get(format!(
            "{base}/preload/tags/{REPO}:v1?runtime=containerd&namespace={NAMESPACE}"
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["runtime"], "containerd");
    assert_eq!(report["digest"], image.manifest.to_string());

    // containerd holds the image under the agent's reference, at the pushed digest, and the
    // agent's cache holds every blob.
    let reference = format!("{}/{REPO}:v1", agent.local_addr());
    let recorded: Digest = tokio::task::spawn_blocking(move || {
        let digest = containerd.image_digest(&reference);
        drop(containerd);
        digest
    })
    .await
    .unwrap()
    .expect("containerd lists the image");
    assert_eq!(recorded, image.manifest);
    let store = agent.node().store().clone();
    for digest in image.blobs() {
        assert!(
            matches!(store.status(&digest), BlobStatus::Cached { .. }),
            "{digest} cached"
        );
    }

    agent.shutdown().await;
    build_index.shutdown().await;
    origin.shutdown().await;
    tracker.shutdown().await;
}
