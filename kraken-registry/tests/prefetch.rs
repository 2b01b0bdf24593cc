//! Cold-start control on the proxy, against a real upstream: CNCF Distribution holds the
//! images; the origin's and the build-index's backends are `registry` backends reading it,
//! so nothing is on the origin until something asks. Prefetch v1 (answer at once, warm in
//! the background) and v2 (trigger, then answer) warm the origin for a tag, through an
//! image index; the size filters leave blobs out; bad requests get clear refusals; and a
//! Distribution configured to notify the proxy preheats the origin on every push.

mod support;

use std::path::Path;
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, RegistryConfig, RouteConfig};
use kraken_core::{ByteSize, Digest};
use kraken_registry::build_index::{BuildIndex, BuildIndexConfig};
use kraken_registry::origin::{MembersConfig, Origin};
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};
use kraken_testkit::Distribution;
use kraken_testkit::oci::{
    DOCKER_MANIFEST_TYPE, INDEX_TYPE, MediaTypes, OCI_MEDIA_TYPES, TestImage, descriptor,
    push_blob, push_manifest, two_layer_image,
};
use kraken_testkit::{free_addr, require_package};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{eventually, origin_config};

const REPO: &str = "upstream/app";

/// Distribution upstream; an origin and a build-index reading it; a proxy in front.
struct Cluster {
    upstream: Distribution,
    origin: Origin,
    build_index: BuildIndex,
    proxy: Proxy,
    http: reqwest::Client,
}

fn registry_backends(url: &str) -> BackendsConfig {
    BackendsConfig::new(vec![RouteConfig::new(
        ".*",
        BackendConfig::Registry(RegistryConfig::new(url)),
    )])
}

impl Cluster {
    /// `None` (the test skips) without `docker-registry`, unless `CI=true`. With `notify`,
    /// Distribution sends its notifications to the proxy.
    async fn start(
        dir: &Path,
        notify: bool,
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> Option<Self> {
        support::init_tracing();
        require_package("docker-registry", "docker-registry")?;
        let proxy_addr = free_addr("127.0.0.1");
        let upstream = if notify {
            Distribution::start_notifying(&format!("http://{proxy_addr}/registry/notifications"))
        } else {
            Distribution::start()
        }
        .expect("start docker-registry");

        let origin_addr = free_addr("127.0.0.1");
        let mut config = origin_config(origin_addr, &[origin_addr], &dir.join("origin"));
        config.backends = registry_backends(&upstream.url());
        let origin = Origin::spawn(config).await.unwrap();
        let members = MembersConfig::Static(vec![origin_addr.to_string()]);

        let mut config = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.join("bi"));
        config.origins.members = members.clone();
        config.backends = registry_backends(&upstream.url());
        let build_index = BuildIndex::spawn(config).await.unwrap();

        let mut config = ProxyConfig::new(proxy_addr, dir.join("proxy"));
        config.origins.members = members;
        config.origins.refresh_interval = Duration::from_millis(200);
        config.build_index = BuildIndexTarget::new([build_index.local_addr().to_string()]);
        configure(&mut config);
        let proxy = Proxy::builder(config).spawn().await.unwrap();
        Some(Self {
            upstream,
            origin,
            build_index,
            proxy,
            http: reqwest::Client::new(),
        })
    }

    /// Pushes `image` to Distribution (blobs, then the manifest as `reference`).
    async fn push(&self, image: &TestImage, types: &MediaTypes, reference: &str) {
        for blob in [&image.config].into_iter().chain(&image.layers) {
            push_blob(&self.http, &self.upstream.url(), REPO, blob).await;
        }
        push_manifest(
            &self.http,
            &self.upstream.url(),
            REPO,
            reference,
            types.manifest,
            &image.manifest,
        )
        .await;
    }

    /// Whether the origin holds `digest` on its disk (not merely in its backend).
    async fn held(&self, digest: &Digest) -> bool {
        let url = format!(
            "http://{}/namespace/{}/blobs/{digest}?local=true",
            self.origin.local_addr(),
            REPO.replace('/', "%2F")
        );
        let response = self.http.head(url).send().await.unwrap();
        response.status() == StatusCode::OK
    }

    /// Waits until the origin holds every one of `digests`.
    async fn wait_held(&self, digests: &[Digest], what: &str) {
        eventually(Duration::from_secs(20), what, || async {
            for digest in digests {
                if !self.held(digest).await {
                    return false;
                }
            }
            true
        })
        .await;
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("http://{}{path}", self.proxy.local_addr()))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.build_index.shutdown().await;
        self.origin.shutdown().await;
    }
}

/// The blobs of `image`: config, layers and manifest.
fn parts(image: &TestImage) -> Vec<Digest> {
    let mut all: Vec<Digest> = [&image.config]
        .into_iter()
        .chain(&image.layers)
        .map(|blob| Digest::sha256_of(blob))
        .collect();
    all.push(image.digest);
    all
}

#[tokio::test]
async fn v1_prefetch_answers_at_once_and_warms_every_blob_of_every_platform() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), false, |_| {}).await else {
        return;
    };
    let images = [
        two_layer_image(10, [20_000, 30_000], &OCI_MEDIA_TYPES),
        two_layer_image(20, [25_000, 35_000], &OCI_MEDIA_TYPES),
    ];
    for image in &images {
        cluster
            .push(image, &OCI_MEDIA_TYPES, &image.digest.to_string())
            .await;
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": images.iter().map(|image| descriptor(
            OCI_MEDIA_TYPES.manifest, &image.digest, image.manifest.len() as u64)).collect::<Vec<_>>(),
    }))
    .unwrap();
    push_manifest(
        &cluster.http,
        &cluster.upstream.url(),
        REPO,
        "multi",
        INDEX_TYPE,
        &index,
    )
    .await;
    let mut everything: Vec<Digest> = images.iter().flat_map(parts).collect();
    everything.push(Digest::sha256_of(&index));
    for digest in &everything {
        assert!(!cluster.held(digest).await, "cold before the prefetch");
    }

    // Go Kraken's tag format: <registry host>/<repository>:<tag>.
    let tag = format!("{}/{REPO}:multi", cluster.upstream.host());
    let body = json!({"tag": tag, "trace_id": "trace-1"}).to_string();
    let (status, answer) = cluster.post("/proxy/v1/registry/prefetch", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["tag"], tag.as_str());
    assert_eq!(answer["prefetched"], true);
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["trace_id"], "trace-1");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("6 blobs") && message.contains("3 manifests"),
        "{message}"
    );

    cluster
        .wait_held(
            &everything,
            "every manifest, config and layer of both platforms",
        )
        .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn v2_prefetch_triggers_the_blobs_within_the_size_filters() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), false, |config| {
        // The config (a few hundred bytes) and the 90 kB layer are filtered out.
        config.prefetch.min_blob_size = ByteSize(1_000);
        config.prefetch.max_blob_size = ByteSize(50_000);
    })
    .await
    else {
        return;
    };
    let image = two_layer_image(30, [40_000, 90_000], &OCI_MEDIA_TYPES);
    cluster.push(&image, &OCI_MEDIA_TYPES, "v2").await;

    let body = json!({"tag": format!("{REPO}:v2")}).to_string();
    let (status, answer) = cluster.post("/proxy/v2/registry/prefetch", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "success");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("1 blobs (40000 bytes)") && message.contains("2 skipped by size"),
        "{message}"
    );

    let small_layer = Digest::sha256_of(&image.layers[0]);
    cluster
        .wait_held(&[small_layer, image.digest], "the layer within the filters")
        .await;
    // Nothing else asks the origin for these: the filters kept them out.
    assert!(!cluster.held(&Digest::sha256_of(&image.config)).await);
    assert!(!cluster.held(&Digest::sha256_of(&image.layers[1])).await);

    // v2 again: everything in the filters is held now.
    let body = json!({"tag": format!("{REPO}:v2")}).to_string();
    let (status, answer) = cluster.post("/proxy/v2/registry/prefetch", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("1 already on the origins"), "{message}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_prefetches_and_notifications_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), false, |_| {}).await else {
        return;
    };
    for (path, body, status, says) in [
        (
            "/proxy/v1/registry/prefetch",
            "not json".to_owned(),
            400,
            "JSON",
        ),
        ("/proxy/v2/registry/prefetch", "{}".to_owned(), 400, "tag"),
        (
            "/proxy/v1/registry/prefetch",
            json!({"tag": "upstream/app"}).to_string(),
            400,
            "<repository>:<tag>",
        ),
        (
            "/proxy/v1/registry/prefetch",
            json!({"tag": "Bad Repo:x", "trace_id": "t"}).to_string(),
            400,
            "invalid tag",
        ),
        (
            "/proxy/v2/registry/prefetch",
            json!({"tag": "upstream/app:missing"}).to_string(),
            404,
            "not found",
        ),
        (
            "/proxy/v1/registry/prefetch",
            format!("{{\"tag\": \"{}\"}}", "a".repeat(70_000)),
            413,
            "larger than",
        ),
        (
            "/registry/notifications",
            "[1,2".to_owned(),
            400,
            "envelope",
        ),
        (
            "/registry/notifications",
            format!("{{\"events\": [], \"pad\": \"{}\"}}", "a".repeat(1 << 20)),
            413,
            "larger than",
        ),
    ] {
        let (got, answer) = cluster.post(path, body).await;
        assert_eq!(got.as_u16(), status, "{path}: {answer}");
        assert_eq!(answer["status"], "failure", "{answer}");
        assert_eq!(answer["prefetched"], false, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
    let response = cluster
        .http
        .get(format!(
            "http://{}/proxy/v1/registry/prefetch",
            cluster.proxy.local_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Events that are not pushes of manifests are accepted and ignored.
    let ignored = json!({"events": [
        {"action": "pull", "target": {"mediaType": DOCKER_MANIFEST_TYPE,
            "digest": Digest::sha256_of(b"x").to_string(), "repository": REPO}},
        {"action": "push", "target": {"mediaType": "application/octet-stream",
            "digest": Digest::sha256_of(b"y").to_string(), "repository": REPO}},
    ]});
    let (status, answer) = cluster
        .post("/registry/notifications", ignored.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"events": 2, "warming": 0, "ignored": 2}));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_push_to_distribution_preheats_the_origins_through_its_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), true, |_| {}).await else {
        return;
    };
    let docker = MediaTypes {
        manifest: DOCKER_MANIFEST_TYPE,
        config: "application/vnd.docker.container.image.v1+json",
        layer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    };
    let image = two_layer_image(40, [30_000, 50_000], &docker);
    cluster.push(&image, &docker, "pushed").await;
    // Nobody asks the origin for anything: only the notification can warm it.
    cluster
        .wait_held(&parts(&image), "the pushed image on the origin")
        .await;
    cluster.shutdown().await;
}
