//! The agent's preload with Go Kraken's runtime semantics: `GET
//! /preload/tags/{repo:tag}?runtime=containerd&namespace=NS` and `?runtime=docker` fill the
//! agent's cache over P2P, then make a real containerd (`ctr`) or Docker engine (its API
//! socket) pull the image through the agent.

mod support;

use std::time::Duration;

use kraken_core::{BlobStatus, Digest};
use kraken_p2p::tracker::TrackerServer;
use kraken_registry::agent::{Agent, AgentConfig};
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, BuildIndexConfig, TagName};
use kraken_registry::origin::{MembersConfig, Origin};
use kraken_testkit::containerd::{Containerd, NAMESPACE};
use kraken_testkit::docker::{Dockerd, DockerdOptions};
use kraken_testkit::oci::{Image, ImageSpec, OciLayout};
use kraken_testkit::{free_addr, require_packages};
use reqwest::StatusCode;

const REPO: &str = "library/runtime";

/// A tracker, an origin and a build-index holding `REPO:v1`, a real image (tar layers, a
/// linux/amd64 config) that runtimes can unpack; then one agent.
struct Setup {
    _dir: tempfile::TempDir,
    tracker: TrackerServer,
    origin: Origin,
    build_index: BuildIndex,
    agent: Agent,
    image: Image,
}

impl Setup {
    async fn start(configure: impl FnOnce(&mut AgentConfig)) -> Self {
        support::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (tracker, tracker_url, origin) = support::origin_with_tracker(dir.path()).await;
        let mut config = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.path().join("bi"));
        config.origins.members = MembersConfig::Static(vec![origin.local_addr().to_string()]);
        let build_index = BuildIndex::spawn(config).await.unwrap();

        let mut layout = OciLayout::create(&dir.path().join("layout")).unwrap();
        let image = layout
            .add_image(
                "v1",
                &ImageSpec::new(&[3_000, 20_000], 41).without_busybox(),
            )
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

        let mut config = AgentConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("agent"),
            vec![tracker_url],
            vec![build_index.local_addr().to_string()],
        );
        config.p2p.metainfo_timeout = Duration::from_secs(10);
        configure(&mut config);
        let agent = Agent::spawn(config).await.unwrap();
        Self {
            _dir: dir,
            tracker,
            origin,
            build_index,
            agent,
            image,
        }
    }

    /// `GET /preload/tags/REPO:v1?QUERY`: the status and body.
    async fn preload(&self, query: &str) -> (StatusCode, String) {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/preload/tags/{REPO}:v1?{query}",
                self.agent.local_addr()
            ))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// The agent's reference of the image, as runtimes pull it.
    fn reference(&self) -> String {
        format!("{}/{REPO}:v1", self.agent.local_addr())
    }

    /// Checks the preload's report and that the agent's cache holds every blob.
    fn check(&self, status: StatusCode, body: &str, runtime: &str) {
        assert_eq!(status, StatusCode::OK, "{body}");
        let report: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(report["runtime"], runtime);
        assert_eq!(report["digest"], self.image.manifest.to_string());
        let store = self.agent.node().store();
        for digest in self.image.blobs() {
            assert!(
                matches!(store.status(&digest), BlobStatus::Cached { .. }),
                "{digest} cached"
            );
        }
    }

    async fn shutdown(self) {
        self.agent.shutdown().await;
        self.build_index.shutdown().await;
        self.origin.shutdown().await;
        self.tracker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_with_runtime_containerd_makes_containerd_pull_through_the_agent() {
    if !require_packages(&[("containerd", "containerd"), ("ctr", "containerd")]) {
        return;
    }
    let containerd = tokio::task::spawn_blocking(Containerd::start)
        .await
        .unwrap()
        .expect("start containerd");
    let socket = containerd.socket().to_owned();
    let setup = Setup::start(|config| config.container_runtime.containerd.address = socket).await;

    // An unknown runtime is refused before anything is fetched.
    let (status, body) = setup.preload("runtime=podman").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown runtime"), "{body}");

    let (status, body) = setup
        .preload(&format!("runtime=containerd&namespace={NAMESPACE}"))
        .await;
    setup.check(status, &body, "containerd");
    // containerd holds (and has unpacked) the image under the agent's reference, at the
    // pushed digest.
    let reference = setup.reference();
    let recorded: Digest = tokio::task::spawn_blocking(move || containerd.image_digest(&reference))
        .await
        .unwrap()
        .expect("containerd lists the image");
    assert_eq!(recorded, setup.image.manifest);
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_with_runtime_docker_makes_the_docker_engine_pull_through_the_agent() {
    if !require_packages(&[("dockerd", "docker.io"), ("docker", "docker.io")]) {
        return;
    }
    let dockerd = tokio::task::spawn_blocking(|| Dockerd::start(&DockerdOptions::default()))
        .await
        .unwrap()
        .expect("start dockerd");
    let host = format!("unix://{}", dockerd.socket().display());
    let setup = Setup::start(|config| config.container_runtime.docker.host = host).await;

    let (status, body) = setup.preload("runtime=docker").await;
    setup.check(status, &body, "docker");
    // The engine recorded the image under the agent's repository at the pushed digest.
    let reference = setup.reference();
    let digests = tokio::task::spawn_blocking(move || dockerd.repo_digests(&reference))
        .await
        .unwrap()
        .expect("docker inspects the image");
    let expected = format!(
        "{}/{REPO}@{}",
        setup.agent.local_addr(),
        setup.image.manifest
    );
    assert_eq!(digests, vec![expected]);
    setup.shutdown().await;
}
