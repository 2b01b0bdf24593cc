//! CNCF Distribution as upstream: an image that exists only in a `docker-registry` is pulled
//! through an agent. The origin's backend and the build-index's backend are both `registry`
//! backends pointing at that Distribution; nothing is pushed to the cluster. The agent
//! resolves the tag at the build-index (which reads it from Distribution), and downloads the
//! manifest, config and layers over P2P from the origin (which fetches them from
//! Distribution on a miss).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, RegistryConfig, RouteConfig};
use kraken_core::Digest;
use kraken_p2p::tracker::TrackerServer;
use kraken_registry::agent::{Agent, AgentConfig};
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, BuildIndexConfig, TagName};
use kraken_registry::origin::{MembersConfig, Origin};
use kraken_testkit::Distribution;
use kraken_testkit::oci::{
    DOCKER_MANIFEST_TYPE, MANIFEST_TYPE, MediaTypes, OCI_MEDIA_TYPES, push_blob, push_manifest,
    two_layer_image,
};
use kraken_testkit::{free_addr, require_package};
use reqwest::StatusCode;
use support::oci::{get_blob_and_check, header};
use support::origin_config;

const REPO: &str = "upstream/app";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image as pushed to Distribution.
struct Image {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: Digest,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

impl Image {
    /// A two-layer image whose manifest is OCI (`docker = false`) or Docker schema 2.
    fn new(seed: u64, sizes: [usize; 2], docker: bool) -> Self {
        let types = if docker {
            MediaTypes {
                manifest: DOCKER_MANIFEST_TYPE,
                config: DOCKER_CONFIG,
                layer: DOCKER_LAYER,
            }
        } else {
            OCI_MEDIA_TYPES
        };
        let image = two_layer_image(seed, sizes, &types);
        Self {
            media_type: types.manifest,
            digest: image.digest,
            manifest: image.manifest,
            config: image.config,
            layers: image.layers,
        }
    }

    /// The config and the layers, in manifest order.
    fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        [&self.config].into_iter().chain(&self.layers)
    }

    /// Pushes the blobs and the manifest to `registry` with the plain OCI API, tagged `tag`.
    async fn push(&self, client: &reqwest::Client, registry: &str, tag: &str) {
        for blob in self.blobs() {
            push_blob(client, registry, REPO, blob).await;
        }
        let pushed =
            push_manifest(client, registry, REPO, tag, self.media_type, &self.manifest).await;
        assert_eq!(
            pushed["docker-content-digest"].to_str().unwrap_or_default(),
            self.digest.to_string()
        );
    }
}

/// Routes every namespace to Distribution.
fn registry_backends(url: &str) -> BackendsConfig {
    BackendsConfig::new(vec![RouteConfig::new(
        ".*",
        BackendConfig::Registry(RegistryConfig::new(url)),
    )])
}

/// An origin and a build-index whose backends are Distribution, a tracker asking the origin
/// for metainfo, and one agent.
struct Cluster {
    tracker: TrackerServer,
    origin: Origin,
    build_index: BuildIndex,
    agent: Agent,
}

impl Cluster {
    async fn start(dir: &Path, upstream: &str) -> Self {
        let origin_addr = free_addr("127.0.0.1");
        let (tracker, tracker_url) = support::tracker_for_origins(&[origin_addr]).await;

        let mut config = origin_config(origin_addr, &[origin_addr], &dir.join("origin"));
        config.backends = registry_backends(upstream);
        config.trackers = vec![tracker_url.clone()];
        let origin = Origin::spawn(config).await.unwrap();

        let mut config = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.join("bi"));
        config.origins.members = MembersConfig::Static(vec![origin_addr.to_string()]);
        config.backends = registry_backends(upstream);
        let build_index = BuildIndex::spawn(config).await.unwrap();

        let mut config = AgentConfig::new(
            "127.0.0.2:0".parse().unwrap(),
            dir.join("agent"),
            vec![tracker_url],
            vec![build_index.local_addr().to_string()],
        );
        config.p2p.metainfo_timeout = Duration::from_secs(10);
        let agent = Agent::spawn(config).await.unwrap();
        Self {
            tracker,
            origin,
            build_index,
            agent,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.agent.local_addr())
    }

    async fn shutdown(self) {
        self.agent.shutdown().await;
        self.build_index.shutdown().await;
        self.origin.shutdown().await;
        self.tracker.shutdown().await;
    }
}

/// Pulls `REPO:tag` from the agent as containerd does — HEAD the manifest by tag, GET it by
/// digest, then the config and layers by digest — and checks every byte and digest against
/// what was pushed upstream.
async fn pull(client: &reqwest::Client, base: &str, tag: &str, image: &Image) {
    let accept = format!("{MANIFEST_TYPE}, {DOCKER_MANIFEST_TYPE}");
    let head = client
        .head(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .header("accept", &accept)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD manifest {tag}");
    assert_eq!(
        header(&head, "docker-content-digest"),
        image.digest.to_string()
    );
    assert_eq!(header(&head, "content-type"), image.media_type);
    assert_eq!(
        header(&head, "content-length"),
        image.manifest.len().to_string()
    );

    // GET by tag, too: what a client without HEAD does.
    let by_tag = client
        .get(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .header("accept", &accept)
        .send()
        .await
        .unwrap();
    assert_eq!(by_tag.status(), StatusCode::OK);
    assert_eq!(header(&by_tag, "content-type"), image.media_type);
    assert_eq!(by_tag.bytes().await.unwrap(), image.manifest);

    let manifest = client
        .get(format!("{base}/v2/{REPO}/manifests/{}", image.digest))
        .header("accept", &accept)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(header(&manifest, "content-type"), image.media_type);
    assert_eq!(
        header(&manifest, "docker-content-digest"),
        image.digest.to_string()
    );
    let bytes = manifest.bytes().await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes), image.digest);
    assert_eq!(bytes, image.manifest);

    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut digests = vec![parsed["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in parsed["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests.len(), 3, "a config and two layers");
    for (digest, data) in digests.iter().zip(image.blobs()) {
        let head = client
            .head(format!("{base}/v2/{REPO}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {digest}");
        assert_eq!(header(&head, "content-length"), data.len().to_string());
        get_blob_and_check(client, base, REPO, digest, data).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pulls_an_image_that_exists_only_in_cncf_distribution() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let Some(upstream) = Distribution::start_if_installed() else {
        return;
    };
    kraken_backends::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let oci = Image::new(11, [300_000, (1 << 20) + 7], false);
    oci.push(&http, &upstream.url(), "v1").await;
    let docker = Image::new(21, [4000, 70_000], true);
    docker.push(&http, &upstream.url(), "docker").await;

    let cluster = Cluster::start(dir.path(), &upstream.url()).await;
    let base = cluster.base();
    // Nothing was pushed to the cluster: the agent, the origin and the build-index start
    // empty, and every byte below comes from Distribution.
    pull(&http, &base, "v1", &oci).await;
    pull(&http, &base, "docker", &docker).await;
    // A second pull is served from the agent's cache, and still matches.
    pull(&http, &base, "v1", &oci).await;

    // Go Kraken's tag endpoint on the agent, through the build-index's backend.
    let tag = http
        .get(format!("{base}/tags/upstream%2Fapp%3Av1"))
        .send()
        .await
        .unwrap();
    assert_eq!(tag.status(), StatusCode::OK);
    assert_eq!(tag.text().await.unwrap(), oci.digest.to_string());

    // A tag put through the cluster: the build-index keeps it, and drops its write-back (the
    // registry backend is read-only) instead of retrying it forever.
    BuildIndexClient::new([cluster.build_index.local_addr().to_string()])
        .unwrap()
        .put_tag(&TagName::new(REPO, "copied").unwrap(), &oci.digest, false)
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(10),
        "the write-back to a read-only backend is dropped",
        || async { cluster.build_index.pending_write_backs() == 0 },
    )
    .await;
    pull(&http, &base, "copied", &oci).await;

    // What Distribution lacks, the agent lacks.
    let unknown = http
        .get(format!("{base}/v2/{REPO}/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let missing = Digest::sha256_of(b"never pushed upstream");
    let blob = http
        .head(format!("{base}/v2/{REPO}/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), StatusCode::NOT_FOUND);

    // skopeo copies the OCI image out of the agent, digests preserved.
    if require_package("skopeo", "skopeo").is_some() {
        let out = dir.path().join("skopeo-out");
        let addr: SocketAddr = cluster.agent.local_addr();
        support::skopeo::skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{addr}/{REPO}:v1"),
            &format!("oci:{}:v1", out.display()),
        ])
        .await;
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], oci.digest.to_string());
        for data in [&oci.manifest].into_iter().chain(oci.blobs()) {
            let digest = Digest::sha256_of(data);
            let path = out.join("blobs/sha256").join(digest.hex());
            let copied = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(copied, *data, "{digest}");
        }
    }
    cluster.shutdown().await;
}
