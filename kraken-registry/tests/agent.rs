//! Agents on loopback in front of a real cluster — an origin on a filesystem backend, a
//! tracker that asks the origin for metainfo, a build-index — pulled from with a real HTTP
//! client following the OCI flow, and with skopeo.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use kraken_core::{BlobStatus, ByteSize, Digest};
use kraken_p2p::tracker::TrackerServer;
use kraken_registry::agent::{Agent, AgentConfig};
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, BuildIndexConfig, TagName};
use kraken_registry::origin::{MembersConfig, Origin};
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};
use kraken_testkit::oci::{
    INDEX_TYPE, MANIFEST_TYPE, OCI_MEDIA_TYPES, TestImage, artifact_manifest, two_layer_image,
};
use kraken_testkit::{free_addr, require_package};
use reqwest::StatusCode;
use support::oci::{Registry, get_blob_and_check, header};

const REPO: &str = "library/app";

/// An origin, a tracker over it, a build-index, and agents on 127.0.0.2, 127.0.0.3, ….
struct Cluster {
    _dir: tempfile::TempDir,
    tracker: Option<TrackerServer>,
    origin: Origin,
    build_index: BuildIndex,
    agents: Vec<Agent>,
}

impl Cluster {
    /// Starts the cluster with `agents` agents, each config adjusted by `configure`.
    async fn start(agents: u8, configure: impl Fn(usize, &mut AgentConfig)) -> Self {
        support::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (tracker, tracker_url, origin) = support::origin_with_tracker(dir.path()).await;
        let origin_addr = origin.local_addr();

        let mut config = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.path().join("bi"));
        config.origins.members = MembersConfig::Static(vec![origin_addr.to_string()]);
        let build_index = BuildIndex::spawn(config).await.unwrap();

        let mut started = Vec::new();
        for i in 0..agents {
            let mut config = AgentConfig::new(
                format!("127.0.0.{}:0", i + 2).parse().unwrap(),
                dir.path().join(format!("agent-{i}")),
                vec![tracker_url.clone()],
                vec![build_index.local_addr().to_string()],
            );
            config.p2p.metainfo_timeout = Duration::from_secs(5);
            configure(usize::from(i), &mut config);
            started.push(Agent::spawn(config).await.unwrap());
        }
        Self {
            _dir: dir,
            tracker: Some(tracker),
            origin,
            build_index,
            agents: started,
        }
    }

    /// Uploads a two-layer image (layers of `sizes`) to `REPO` and points `tag` at it.
    async fn push_image(&self, tag: &str, seed: u64, sizes: [usize; 2]) -> TestImage {
        self.push_image_to(REPO, tag, seed, sizes).await
    }

    /// Uploads a two-layer image (layers of `sizes`) to the origin under the namespace
    /// `repo` and points `repo:tag` at it.
    async fn push_image_to(
        &self,
        repo: &str,
        tag: &str,
        seed: u64,
        sizes: [usize; 2],
    ) -> TestImage {
        let image = two_layer_image(seed, sizes, &OCI_MEDIA_TYPES);
        for blob in image.layers.iter().chain([&image.config, &image.manifest]) {
            support::upload(&self.origin, repo, blob).await;
        }
        BuildIndexClient::new([self.build_index.local_addr().to_string()])
            .unwrap()
            .put_tag(&TagName::new(repo, tag).unwrap(), &image.digest, false)
            .await
            .unwrap();
        image
    }

    /// A proxy in front of the cluster's origin and build-index, and a registry client of it.
    async fn proxy(&self) -> (Proxy, Registry) {
        let mut config = ProxyConfig::new(free_addr("127.0.0.1"), self._dir.path().join("proxy"));
        config.origins.members = MembersConfig::Static(vec![self.origin.local_addr().to_string()]);
        config.build_index = BuildIndexTarget::new([self.build_index.local_addr().to_string()]);
        let proxy = Proxy::spawn(config).await.unwrap();
        let client = Registry::remote(
            format!("http://{}", proxy.local_addr()),
            tempfile::tempdir().unwrap(),
        );
        (proxy, client)
    }

    fn base(&self, agent: usize) -> String {
        format!("http://{}", self.agents[agent].local_addr())
    }

    async fn shutdown(mut self) {
        for agent in self.agents.drain(..) {
            agent.shutdown().await;
        }
        self.build_index.shutdown().await;
        self.origin.shutdown().await;
        if let Some(tracker) = self.tracker.take() {
            tracker.shutdown().await;
        }
    }
}

/// A client whose connections leave from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The body as JSON.
async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// The status and first error code of an OCI error answer.
async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body = json(response).await;
    (
        status,
        body["errors"][0]["code"].as_str().unwrap().to_owned(),
    )
}

/// Pulls `repo:tag` as containerd does: HEAD the tag, GET the manifest by digest, then the
/// config and layers; checks every digest and returns the manifest's.
async fn pull(client: &reqwest::Client, base: &str, tag: &str, image: &TestImage) -> Digest {
    let head = client
        .head(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let digest: Digest = header(&head, "docker-content-digest").parse().unwrap();
    let manifest = client
        .get(format!("{base}/v2/{REPO}/manifests/{digest}"))
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(header(&manifest, "content-type"), MANIFEST_TYPE);
    let bytes = manifest.bytes().await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes), digest);
    assert_eq!(bytes, image.manifest);
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut blobs = vec![parsed["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in parsed["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_owned());
    }
    let expected: Vec<&Vec<u8>> = [&image.config].into_iter().chain(&image.layers).collect();
    for (blob, data) in blobs.iter().zip(expected) {
        get_blob_and_check(client, base, REPO, blob, data).await;
    }
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_pulls_an_image_by_tag_and_head_downloads_nothing() {
    let cluster = Cluster::start(2, |_, _| {}).await;
    let image = cluster.push_image("v1", 1, [300_000, (1 << 20) + 7]).await;
    let client = client_from("127.0.0.1");

    // HEAD of a blob on agent B, before anything is pulled there: the size, no download.
    let b = &cluster.agents[1];
    let layer = Digest::sha256_of(&image.layers[1]);
    let head = client
        .head(format!("{}/v2/{REPO}/blobs/{layer}", cluster.base(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        header(&head, "content-length"),
        image.layers[1].len().to_string()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.node().store().status(&layer), BlobStatus::Absent);
    assert!(b.node().torrent_stats(&layer).await.is_none());

    for agent in 0..2 {
        assert_eq!(
            pull(&client, &cluster.base(agent), "v1", &image).await,
            image.digest
        );
        // The last bytes reach the client as the whole-blob check starts; then it is cached.
        let store = cluster.agents[agent].node().store().clone();
        support::eventually(Duration::from_secs(10), "the layer is cached", || async {
            store.status(&layer)
                == BlobStatus::Cached {
                    length: image.layers[1].len() as u64,
                }
        })
        .await;
    }

    let base = cluster.base(0);
    // Through a containerd mirror: `?ns=docker.io` is ignored by default.
    let mirrored = client
        .get(format!("{base}/v2/{REPO}/manifests/v1?ns=docker.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(mirrored.status(), StatusCode::OK);
    assert_eq!(
        header(&mirrored, "docker-content-digest"),
        image.digest.to_string()
    );
    let blob = client
        .get(format!("{base}/v2/{REPO}/blobs/{layer}?ns=docker.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.bytes().await.unwrap(), image.layers[1]);

    // A range of a cached blob.
    let range = client
        .get(format!("{base}/v2/{REPO}/blobs/{layer}"))
        .header("range", "bytes=1000-299999")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().await.unwrap(), image.layers[1][1000..300_000]);

    // tags/list through the build-index.
    let tags = json(
        client
            .get(format!("{base}/v2/{REPO}/tags/list"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(tags, serde_json::json!({"name": REPO, "tags": ["v1"]}));

    // Go Kraken's endpoints: the tag, and a blob by namespace (bare hex digest).
    let tag = client
        .get(format!("{base}/tags/library%2Fapp%3Av1"))
        .send()
        .await
        .unwrap();
    assert_eq!(tag.status(), StatusCode::OK);
    assert_eq!(tag.text().await.unwrap(), image.digest.to_string());
    let config = Digest::sha256_of(&image.config);
    let blob = client
        .get(format!(
            "{base}/namespace/library%2Fapp/blobs/{}",
            config.hex()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(blob.bytes().await.unwrap(), image.config);
    let missing = Digest::sha256_of(b"nobody has this");
    for path in [
        format!("/namespace/library%2Fapp/blobs/{missing}"),
        "/tags/library%2Fapp%3Anope".to_owned(),
    ] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_streams_before_its_download_ends() {
    // The agent receives at 4 MiB/s: a 12 MiB layer takes about three seconds. Its 48
    // pieces of 256 KiB are more than the scheduler's window (it picks among the first 16
    // missing pieces per connection), so the first piece comes in the first third of the
    // download; with fewer pieces than the window the order is random by design, and the
    // first piece could come last (this test once used 12 pieces and failed so, rarely).
    let cluster = Cluster::start(1, |_, config| {
        config.p2p.ingress_rate = Some(ByteSize(4 << 20));
    })
    .await;
    let image = cluster.push_image("big", 2, [1000, 12 << 20]).await;
    let layer = Digest::sha256_of(&image.layers[1]);
    let store = cluster.agents[0].node().store().clone();
    let mut response = client_from("127.0.0.1")
        .get(format!("{}/v2/{REPO}/blobs/{layer}", cluster.base(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), (12 << 20).to_string());
    let first = response.chunk().await.unwrap().expect("a first chunk");
    // The first bytes are here; the blob is not.
    assert_eq!(store.status(&layer), BlobStatus::Downloading);
    let mut received = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(Digest::sha256_of(&received), layer);
    support::eventually(Duration::from_secs(10), "the layer is cached", || async {
        matches!(store.status(&layer), BlobStatus::Cached { .. })
    })
    .await;
    cluster.shutdown().await;
}

/// The agent's in-memory cache of small blobs: the manifest and config read once from the
/// agent's store (after their download) are kept, hashed first, and served from memory —
/// right although the store's copies are corrupt by then; a large layer is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_read_once_are_served_from_memory() {
    let cluster = Cluster::start(1, |_, config| {
        config.cache.small_blob_max_size = ByteSize(64 << 10);
    })
    .await;
    let image = cluster.push_image("small", 3, [1000, 200_000]).await;
    let client = client_from("127.0.0.1");
    let base = cluster.base(0);
    let store = cluster.agents[0].node().store().clone();
    let small = [&image.manifest, &image.config, &image.layers[0]];
    let get = |blob: &[u8]| {
        let url = format!("{base}/v2/{REPO}/blobs/{}", Digest::sha256_of(blob));
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.bytes().await.unwrap()
        }
    };
    // The download, then a read of the store's copy, which fills the cache.
    for blob in small.iter().chain([&&image.layers[1]]) {
        assert_eq!(get(blob).await, blob[..]);
        let digest = Digest::sha256_of(blob);
        support::eventually(Duration::from_secs(10), "the blob is cached", || async {
            matches!(store.status(&digest), BlobStatus::Cached { .. })
        })
        .await;
        assert_eq!(get(blob).await, blob[..]);
    }
    for blob in small {
        let path = store
            .open_blob(&Digest::sha256_of(blob))
            .unwrap()
            .path()
            .to_owned();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    for blob in small {
        assert_eq!(get(blob).await, blob[..], "served from memory");
    }
    // Each small blob: one miss (the read that filled it), one hit; the large layer neither.
    assert_eq!(get(&image.layers[1]).await, image.layers[1][..]);
    let agent = cluster.agents[0].local_addr().to_string();
    let scraped = kraken_testkit::Exposition::scrape(&client, &agent).await;
    let lookups = |result| scraped.sum("kraken_small_blob_lookups_total", &[("result", result)]);
    assert_eq!((lookups("hit"), lookups("miss")), (3.0, 3.0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_fresh_and_writes_unknowns_and_strangers_are_refused() {
    // Agent B lets in only 127.0.0.1.
    let cluster = Cluster::start(2, |i, config| {
        if i == 1 {
            config.allowed_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
        }
    })
    .await;
    let v1 = cluster.push_image("latest", 3, [1000, 2000]).await;
    let client = client_from("127.0.0.1");
    let base = cluster.base(0);
    let digest_of = |response: &reqwest::Response| header(response, "docker-content-digest");
    let url = format!("{base}/v2/{REPO}/manifests/latest");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(digest_of(&first), v1.digest.to_string());
    // Re-pointed in the build-index: served at once.
    let v2 = cluster.push_image("latest", 4, [1500, 2500]).await;
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(digest_of(&second), v2.digest.to_string());
    assert_eq!(second.bytes().await.unwrap(), v2.manifest);

    let unknown = client
        .get(format!("{base}/v2/{REPO}/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    // A reference that is not a valid tag names no manifest: 404, not 400.
    let invalid = format!("{base}/v2/{REPO}/manifests/-bad");
    let invalid_get = client.get(&invalid).send().await.unwrap();
    assert_eq!(
        error_code(invalid_get).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let invalid_head = client.head(&invalid).send().await.unwrap();
    assert_eq!(invalid_head.status(), StatusCode::NOT_FOUND);
    let missing = Digest::sha256_of(b"missing");
    let unknown_blob = client
        .head(format!("{base}/v2/{REPO}/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_blob.status(), StatusCode::NOT_FOUND);

    // Writes: the agent is a pull cache, and answers them as the proxy answers an operation
    // it does not offer.
    // Each 405 names what the endpoint does allow (`Allow`): reads of manifests and blobs,
    // nothing on the upload endpoints nor the catalog.
    let refused = [
        (client.post(format!("{base}/v2/{REPO}/blobs/uploads/")), ""),
        (
            client.post(format!(
                "{base}/v2/{REPO}/blobs/uploads/?mount={}&from=other",
                v1.digest
            )),
            "",
        ),
        (
            client
                .patch(format!("{base}/v2/{REPO}/blobs/uploads/some-id"))
                .body("x"),
            "",
        ),
        (
            client.put(format!(
                "{base}/v2/{REPO}/blobs/uploads/some-id?digest={missing}"
            )),
            "",
        ),
        (
            client.delete(format!("{base}/v2/{REPO}/blobs/uploads/some-id")),
            "",
        ),
        (
            client
                .put(format!("{base}/v2/{REPO}/manifests/v9"))
                .header("content-type", MANIFEST_TYPE)
                .body(v1.manifest.clone()),
            "GET, HEAD",
        ),
        (
            client.delete(format!("{base}/v2/{REPO}/manifests/{}", v1.digest)),
            "GET, HEAD",
        ),
        (
            client.delete(format!("{base}/v2/{REPO}/blobs/{missing}")),
            "GET, HEAD",
        ),
        (client.get(format!("{base}/v2/_catalog")), ""),
    ];
    for (request, allow) in refused {
        let response = request.send().await.unwrap();
        let allowed = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allowed.as_deref(), Some(allow));
        assert_eq!(
            error_code(response).await,
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".into())
        );
    }

    // Allowed CIDRs on agent B: 127.0.0.5 is refused, except for the probes.
    let stranger = client_from("127.0.0.5");
    let b = cluster.base(1);
    for path in ["/v2/", "/tags/library%2Fapp%3Alatest"] {
        let response = stranger.get(format!("{b}{path}")).send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (StatusCode::FORBIDDEN, "DENIED".into()),
            "{path}"
        );
    }
    let health = stranger.get(format!("{b}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let allowed = client.get(format!("{b}/v2/")).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    // Agent A keeps the default (loopback): 127.0.0.5 is in 127.0.0.0/8.
    let response = stranger.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_pushed_through_the_proxy_are_listed_by_an_agent() {
    let cluster = Cluster::start(1, |_, _| {}).await;
    let (proxy, pushing) = cluster.proxy().await;
    let image = cluster.push_image("v1", 7, [1000, 2000]).await;
    let subject = (image.digest, image.manifest.len());
    let client = client_from("127.0.0.1");
    let referrers = format!("{}/v2/{REPO}/referrers/{}", cluster.base(0), subject.0);
    let list = |query: &'static str| {
        let request = client.get(format!("{referrers}{query}"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            assert_eq!(header(&response, "content-type"), INDEX_TYPE, "{query}");
            let filtered = header(&response, "oci-filters-applied");
            (filtered, json(response).await["manifests"].clone())
        }
    };
    // No referrers yet: an empty index, not an error.
    assert_eq!(list("").await, (String::new(), serde_json::json!([])));

    pushing.push_blob(REPO, b"{}").await;
    let mut pushed = Vec::new();
    for (artifact_type, data) in [
        ("application/vnd.example.signature", &b"a signature"[..]),
        ("application/vnd.example.sbom", b"an sbom"),
    ] {
        let blob = pushing.push_blob(REPO, data).await;
        let manifest = artifact_manifest(subject, artifact_type, (blob, data.len()));
        let digest = Digest::sha256_of(&manifest);
        let put = pushing
            .put_manifest(REPO, &digest.to_string(), MANIFEST_TYPE, &manifest)
            .await;
        assert_eq!(put.status(), StatusCode::CREATED);
        pushed.push((artifact_type, digest, manifest.len()));

        // Listed by the agent as soon as the proxy has answered: the index is looked up
        // afresh on every request.
        let (filtered, listed) = list("").await;
        assert_eq!(filtered, "");
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), pushed.len(), "{listed:?}");
        for (artifact_type, digest, size) in &pushed {
            let entry = listed
                .iter()
                .find(|d| d["digest"] == digest.to_string())
                .unwrap_or_else(|| panic!("{digest} not listed: {listed:?}"));
            assert_eq!(entry["artifactType"], *artifact_type);
            assert_eq!(entry["size"], *size);
            assert_eq!(entry["mediaType"], MANIFEST_TYPE);
        }
    }
    let (filtered, listed) = list("?artifactType=application/vnd.example.sbom").await;
    assert_eq!(filtered, "artifactType");
    let (_, sbom, _) = pushed[1];
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["digest"])
            .collect::<Vec<_>>(),
        [&serde_json::json!(sbom.to_string())]
    );
    // Another subject has none.
    let other = format!(
        "{}/v2/{REPO}/referrers/{}",
        cluster.base(0),
        Digest::sha256_of(b"no one refers to this")
    );
    let response = client.get(other).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["manifests"], serde_json::json!([]));
    proxy.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_as_prefix_serves_the_repository_under_the_upstream_registry_name() {
    // Agent 0 prefixes the repository with containerd's `ns`; agent 1 ignores it (default).
    let cluster = Cluster::start(2, |i, config| config.ns_as_prefix = i == 0).await;
    let mirrored = cluster
        .push_image_to(&format!("example.com/{REPO}"), "v1", 8, [1000, 2000])
        .await;
    let pushed = cluster.push_image("v1", 9, [1500, 2500]).await;
    let client = client_from("127.0.0.1");
    let manifest_digest = |agent: usize, query: &'static str| {
        let request = client.get(format!(
            "{}/v2/{REPO}/manifests/v1{query}",
            cluster.base(agent)
        ));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            header(&response, "docker-content-digest")
        }
    };
    assert_eq!(
        manifest_digest(0, "?ns=example.com").await,
        mirrored.digest.to_string()
    );
    // The blobs come from the prefixed repository's namespace, and so do its tags.
    let layer = Digest::sha256_of(&mirrored.layers[1]);
    let base = cluster.base(0);
    let blob = client
        .get(format!("{base}/v2/{REPO}/blobs/{layer}?ns=example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(blob.bytes().await.unwrap(), mirrored.layers[1]);
    let tags = client
        .get(format!("{base}/v2/{REPO}/tags/list?ns=example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(tags).await,
        serde_json::json!({"name": format!("example.com/{REPO}"), "tags": ["v1"]})
    );
    // Without `ns`, or on an agent without the option, the name in the path is the repository.
    assert_eq!(manifest_digest(0, "").await, pushed.digest.to_string());
    assert_eq!(
        manifest_digest(1, "?ns=example.com").await,
        pushed.digest.to_string()
    );
    // An `ns` that is no repository component (a port) is a bad name, not a silent fallback.
    let with_port = client
        .get(format!(
            "{base}/v2/{REPO}/manifests/v1?ns=registry.local:5000"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(with_port).await,
        (StatusCode::BAD_REQUEST, "NAME_INVALID".into())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_fills_the_cache_and_probes_see_the_cluster() {
    let mut cluster = Cluster::start(1, |_, _| {}).await;
    let image = cluster.push_image("v1", 5, [4000, 200_000]).await;
    let client = client_from("127.0.0.1");
    let base = cluster.base(0);
    let store = cluster.agents[0].node().store().clone();
    let blobs: Vec<Digest> = [&image.config]
        .into_iter()
        .chain(&image.layers)
        .map(|b| Digest::sha256_of(b))
        .collect();
    assert!(blobs.iter().all(|d| store.status(d) == BlobStatus::Absent));

    let preload = client
        .get(format!("{base}/preload/tags/library%2Fapp%3Av1"))
        .send()
        .await
        .unwrap();
    assert_eq!(preload.status(), StatusCode::OK);
    let report = json(preload).await;
    assert_eq!(report["digest"], image.digest.to_string());
    assert_eq!(report["manifests"], 1);
    assert_eq!(report["blobs"], 3);
    for (digest, data) in blobs
        .iter()
        .zip([&image.config].into_iter().chain(&image.layers))
    {
        assert_eq!(
            store.status(digest),
            BlobStatus::Cached {
                length: data.len() as u64
            }
        );
    }
    let unknown = client
        .get(format!("{base}/preload/tags/library/app:nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // DELETE drops a blob from the cache; a second time there is nothing to drop.
    let url = format!("{base}/blobs/{}", blobs[1]);
    assert_eq!(
        client.delete(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(store.status(&blobs[1]), BlobStatus::Absent);
    assert_eq!(
        client.delete(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    for path in ["/health", "/readiness"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Nobody misbehaved: the node's blacklist is an empty JSON list (its entries are
    // `kraken_p2p::swarm::BlacklistEntry`, tested in the swarm).
    let response = client
        .get(format!("{base}/x/blacklist"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(json(response).await, serde_json::json!([]));
    // Without the tracker the agent is not ready, and says why.
    cluster.tracker.take().unwrap().shutdown().await;
    let response = client
        .get(format!("{base}/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("tracker:"), "{body}");
    let response = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_an_image_out_of_an_agent() {
    if require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let cluster = Cluster::start(1, |_, _| {}).await;
    let image = cluster.push_image("v1", 6, [5000, 70_000]).await;
    let out = cluster._dir.path().join("out");
    let addr: SocketAddr = cluster.agents[0].local_addr();
    support::skopeo::skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{addr}/{REPO}:v1"),
        &format!("oci:{}:v1", out.display()),
    ])
    .await;
    check_layout(&out, &image);
    cluster.shutdown().await;
}

fn check_layout(out: &Path, image: &TestImage) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest.to_string());
    for data in [&image.manifest, &image.config]
        .into_iter()
        .chain(&image.layers)
    {
        let digest = Digest::sha256_of(data);
        let path = out.join("blobs/sha256").join(digest.hex());
        let copied = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(copied, *data, "{digest}");
    }
}
