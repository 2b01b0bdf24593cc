//! Deletes and garbage collection on loopback (an origin, a build-index and a proxy, with
//! filesystem backends): registry deletes through the proxy when enabled (`202`, then
//! `404`, the tag list following) and `405` with `Allow` when not; a tag delete replicated
//! to a remote cluster's build-index and removed from the backend; the mark-and-sweep
//! collector's dry run, and its sweep of an old unreferenced blob from the origin's disk and
//! the backend while it keeps what tags reach (through an index too) and what is new; with
//! two origins, a purge and a sweep on each; and skopeo deleting an image.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kraken_core::Digest;
use kraken_registry::build_index::{
    BuildIndex, BuildIndexClient, BuildIndexConfig, RemoteConfig, TagName,
};
use kraken_registry::gc::{GcConfig, GcReport, collect_garbage};
use kraken_registry::origin::{Location, MembersConfig, Origin};
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};
use kraken_testkit::oci::{INDEX_TYPE, MANIFEST_TYPE};
use kraken_testkit::{free_addr, require_package};
use reqwest::{Method, StatusCode};
use support::oci::{JsonBody, Registry, error_of, header, push_image};
use support::skopeo::{skopeo, write_layout};
use support::{eventually, files_of, fs_backends, holds, origin_config};

/// How long the write-backs and replications these tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// Origins (sharing one backend directory, every blob on each), a build-index (tags written
/// back to a directory) and a proxy, and a registry client of the proxy.
struct Cluster {
    origins: Vec<Origin>,
    build_index: BuildIndex,
    proxy: Proxy,
    client: Registry,
    /// Each origin's blob store.
    stores: Vec<PathBuf>,
    /// The origins' backend.
    blobs: PathBuf,
    /// The build-index's backend.
    tags: PathBuf,
}

impl Cluster {
    async fn start(
        dir: &Path,
        remotes: Vec<RemoteConfig>,
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        Self::start_with_origins(dir, 1, remotes, configure).await
    }

    async fn start_with_origins(
        dir: &Path,
        count: usize,
        remotes: Vec<RemoteConfig>,
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        let (blobs, tags) = (dir.join("backend-blobs"), dir.join("backend-tags"));
        let addrs: Vec<_> = (0..count).map(|_| free_addr("127.0.0.1")).collect();
        let mut origins = Vec::new();
        let mut stores = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let data = dir.join(format!("origin-{i}"));
            let mut config = origin_config(*addr, &addrs, &data);
            config.backends = fs_backends(&blobs);
            config.cluster.replicas = count;
            // Replicas write back at once, so that nothing stays pinned for the sweep.
            config.cluster.replica_write_back_delay = Duration::from_millis(100);
            origins.push(Origin::spawn(config).await.unwrap());
            stores.push(data.join("store"));
        }
        let members =
            MembersConfig::Static(origins.iter().map(|o| o.local_addr().to_string()).collect());
        let mut bi = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.join("bi"));
        bi.origins.members = members.clone();
        bi.origins.replicas = count;
        bi.backends = fs_backends(&tags);
        bi.remotes = remotes;
        bi.write_back.initial_backoff = Duration::from_millis(100);
        bi.replication.initial_backoff = Duration::from_millis(100);
        bi.replication.max_backoff = Duration::from_millis(500);
        let build_index = BuildIndex::spawn(bi).await.unwrap();
        let mut config = ProxyConfig::new(free_addr("127.0.0.1"), dir.join("proxy"));
        config.origins.members = members;
        config.origins.replicas = count;
        config.origins.refresh_interval = Duration::from_millis(200);
        config.build_index = BuildIndexTarget::new([build_index.local_addr().to_string()]);
        configure(&mut config);
        let proxy = Proxy::builder(config).spawn().await.unwrap();
        let client = Registry::remote(
            format!("http://{}", proxy.local_addr()),
            tempfile::tempdir().unwrap(),
        );
        Self {
            origins,
            build_index,
            proxy,
            client,
            stores,
            blobs,
            tags,
        }
    }

    fn tags_client(&self) -> BuildIndexClient {
        BuildIndexClient::new([self.build_index.local_addr().to_string()]).unwrap()
    }

    fn gc_config(&self, dry_run: bool) -> GcConfig {
        let mut config = GcConfig::default();
        config.build_index = vec![self.build_index.local_addr().to_string()];
        config.origins = self
            .origins
            .iter()
            .map(|o| o.local_addr().to_string())
            .collect();
        config.replicas = self.origins.len();
        config.grace = Duration::from_secs(24 * 3600);
        config.dry_run = dry_run;
        config
    }

    async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.build_index.shutdown().await;
        for origin in self.origins {
            origin.shutdown().await;
        }
    }
}

/// Makes every file of `digest` under `dir` look written `by` ago.
fn age(dir: &Path, digest: &Digest, by: Duration) {
    let then = SystemTime::now() - by;
    let files = files_of(dir, digest);
    assert!(!files.is_empty(), "{digest} is not under {}", dir.display());
    for path in files {
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(then).unwrap();
    }
}

async fn send(client: &Registry, method: Method, path: &str) -> reqwest::Response {
    client.request(method, path).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_when_enabled_answer_202_then_404_and_the_tag_list_follows() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Vec::new(), |c| c.delete.enabled = true).await;
    let client = &cluster.client;
    let repo = "team/app";
    let first = push_image(client, repo, "first").await;
    let second = push_image(client, repo, "second").await;
    for (tag, manifest) in [("v1", &first), ("v2", &first), ("v3", &second)] {
        let pushed = client
            .put_manifest(repo, tag, MANIFEST_TYPE, manifest)
            .await;
        assert_eq!(pushed.status(), StatusCode::CREATED, "{tag}");
    }
    let digest = Digest::sha256_of(&first);
    let by_digest = format!("/v2/{repo}/manifests/{digest}");
    eventually(PATIENCE, "the manifest is written back", || async {
        holds(&cluster.blobs, &digest)
    })
    .await;

    // The manifest by digest: 202, then 404 by digest and by both tags, gone from the
    // origin's disk and its backend, and the tag list keeps only v3.
    assert_eq!(
        send(client, Method::DELETE, &by_digest).await.status(),
        StatusCode::ACCEPTED
    );
    for method in [Method::GET, Method::HEAD] {
        let response = send(client, method.clone(), &by_digest).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }
    let (status, code) = error_of(send(client, Method::GET, &by_digest).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    for tag in ["v1", "v2"] {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let (status, code) = error_of(send(client, Method::GET, &path).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        );
    }
    assert!(!holds(&cluster.stores[0], &digest));
    assert!(!holds(&cluster.blobs, &digest));
    let list = send(client, Method::GET, &format!("/v2/{repo}/tags/list")).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(
        list.json().await.unwrap()["tags"],
        serde_json::json!(["v3"])
    );
    // Deleting it again: it is unknown.
    let (status, code) = error_of(send(client, Method::DELETE, &by_digest).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // A tag: 202, the manifest stays, the repository has no tags left.
    let v3 = format!("/v2/{repo}/manifests/v3");
    assert_eq!(
        send(client, Method::DELETE, &v3).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(client, Method::GET, &v3).await.status(),
        StatusCode::NOT_FOUND
    );
    let second_digest = Digest::sha256_of(&second);
    let by_second = format!("/v2/{repo}/manifests/{second_digest}");
    assert_eq!(
        send(client, Method::GET, &by_second).await.status(),
        StatusCode::OK
    );
    let (status, code) =
        error_of(send(client, Method::GET, &format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    // A manifest no tag names is deleted by digest too.
    assert_eq!(
        send(client, Method::DELETE, &by_second).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(client, Method::HEAD, &by_second).await.status(),
        StatusCode::NOT_FOUND
    );

    // A blob: 202, then 404 BLOB_UNKNOWN, gone from the origin and the backend.
    let doc: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let layer: Digest = doc["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually(PATIENCE, "the layer is written back", || async {
        holds(&cluster.blobs, &layer)
    })
    .await;
    let blob = format!("/v2/{repo}/blobs/{layer}");
    assert_eq!(
        send(client, Method::HEAD, &blob).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(client, Method::DELETE, &blob).await.status(),
        StatusCode::ACCEPTED
    );
    let (status, code) = error_of(send(client, Method::GET, &blob).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    assert!(!holds(&cluster.stores[0], &layer));
    assert!(!holds(&cluster.blobs, &layer));
    let (status, code) = error_of(send(client, Method::DELETE, &blob).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_when_disabled_answer_405_with_allow_and_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Vec::new(), |_| {}).await;
    let client = &cluster.client;
    let repo = "team/app";
    let manifest = push_image(client, repo, "kept").await;
    let pushed = client
        .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest)
        .await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let digest = Digest::sha256_of(&manifest);
    let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = doc["layers"][0]["digest"].as_str().unwrap().to_owned();
    for (path, allow) in [
        (format!("/v2/{repo}/manifests/{digest}"), "GET, HEAD, PUT"),
        (format!("/v2/{repo}/manifests/v1"), "GET, HEAD, PUT"),
        (format!("/v2/{repo}/blobs/{layer}"), "GET, HEAD"),
    ] {
        let response = send(client, Method::DELETE, &path).await;
        assert_eq!(header(&response, "allow"), allow, "{path}");
        let (status, code) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            "{path}"
        );
        assert_eq!(
            send(client, Method::GET, &path).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // A method no endpoint has names what the endpoint has.
    let response = send(client, Method::PATCH, &format!("/v2/{repo}/tags/list")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), "GET");
    // With only `delete_tags`, tag deletes are allowed and listed, digest deletes are not.
    let dir = tempfile::tempdir().unwrap();
    let tags_only = Cluster::start(dir.path(), Vec::new(), |c| c.delete_tags = true).await;
    let response = send(
        &tags_only.client,
        Method::DELETE,
        &format!("/v2/{repo}/blobs/{layer}"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), "GET, HEAD");
    tags_only.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_delete_reaches_the_backend_and_a_remote_build_index() {
    let dir = tempfile::tempdir().unwrap();
    let there = Cluster::start(&dir.path().join("there"), Vec::new(), |_| {}).await;
    let remotes = vec![RemoteConfig::new(
        there.build_index.local_addr().to_string(),
        &["team/.*"],
    )];
    let here = Cluster::start(&dir.path().join("here"), remotes, |c| {
        c.delete.enabled = true;
    })
    .await;
    let repo = "team/app";
    let manifest = push_image(&here.client, repo, "replicated").await;
    let pushed = here
        .client
        .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest)
        .await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let tag = TagName::new(repo, "v1").unwrap();
    let digest = Digest::sha256_of(&manifest);
    eventually(PATIENCE, "the tag reaches the remote", || async {
        there.tags_client().get_tag(&tag).await.unwrap() == Some(digest)
    })
    .await;
    let tag_file = here.tags.join(tag.as_str());
    eventually(PATIENCE, "the tag is written back", || async {
        tag_file.exists()
    })
    .await;

    let path = format!("/v2/{repo}/manifests/v1");
    assert_eq!(
        send(&here.client, Method::DELETE, &path).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(here.tags_client().get_tag(&tag).await.unwrap(), None);
    eventually(PATIENCE, "the delete reaches the remote", || async {
        there.tags_client().get_tag(&tag).await.unwrap().is_none()
    })
    .await;
    eventually(PATIENCE, "the backend loses the tag", || async {
        !tag_file.exists()
    })
    .await;
    // The remote's manifest stays: a tag delete deletes only the tag.
    let by_digest = format!("/v2/{repo}/manifests/{digest}");
    assert_eq!(
        send(&there.client, Method::GET, &by_digest).await.status(),
        StatusCode::OK
    );
    here.shutdown().await;
    there.shutdown().await;
}

/// What [`seed`] made: blobs a tag reaches, and garbage.
struct Seeded {
    /// Every blob the tags reach: an image's manifest, config and layers, and an index,
    /// its child manifest and the child's config and layers.
    reachable: Vec<Digest>,
    /// An unreferenced blob made to look two days old, on the origin and in the backend.
    old: (Digest, u64),
    /// An unreferenced blob only in the backend, two days old.
    backend_only: (Digest, u64),
    /// An unreferenced blob just pushed.
    new: Digest,
}

/// Pushes a tagged image, a tagged index over an untagged image, two unreferenced blobs
/// and one straight into the backend, waits for their write-back, and makes all but one
/// unreferenced blob look two days old.
async fn seed(cluster: &Cluster) -> Seeded {
    let client = &cluster.client;
    let repo = "team/app";
    let image = push_image(client, repo, "tagged").await;
    let pushed = client.put_manifest(repo, "v1", MANIFEST_TYPE, &image).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let child = push_image(client, repo, "child").await;
    let child_digest = Digest::sha256_of(&child);
    let pushed = client
        .put_manifest(repo, &child_digest.to_string(), MANIFEST_TYPE, &child)
        .await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": child_digest.to_string(), "size": child.len()}],
    }))
    .unwrap();
    let pushed = client.put_manifest(repo, "multi", INDEX_TYPE, &index).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let mut reachable = vec![Digest::sha256_of(&index)];
    for manifest in [&image, &child] {
        reachable.push(Digest::sha256_of(manifest));
        let doc: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        for blob in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().unwrap()) {
            reachable.push(blob["digest"].as_str().unwrap().parse().unwrap());
        }
    }
    let old_data = b"an old blob nothing refers to".to_vec();
    let old = client.push_blob("team/junk", &old_data).await;
    let new = client
        .push_blob("team/junk", b"a new blob nothing refers to yet")
        .await;
    let backend_data = b"a blob only the backend holds".to_vec();
    let backend_only = Digest::sha256_of(&backend_data);
    std::fs::write(cluster.blobs.join(backend_only.to_string()), &backend_data).unwrap();
    for digest in reachable.iter().chain([&old, &new]) {
        eventually(PATIENCE, "write-back", || async {
            holds(&cluster.blobs, digest)
        })
        .await;
    }
    let two_days = Duration::from_secs(48 * 3600);
    for digest in reachable.iter().chain([&old, &backend_only]) {
        age(&cluster.blobs, digest, two_days);
        if *digest != backend_only {
            age(&cluster.stores[0], digest, two_days);
        }
    }
    Seeded {
        reachable,
        old: (old, old_data.len() as u64),
        backend_only: (backend_only, backend_data.len() as u64),
        new,
    }
}

/// The digests a report swept from `location`.
fn swept(report: &GcReport, location: Location) -> Vec<Digest> {
    let mut digests: Vec<Digest> = report
        .origins
        .iter()
        .flat_map(|o| &o.report.as_ref().expect("the origin swept").swept)
        .filter(|b| b.location == location)
        .map(|b| b.digest)
        .collect();
    digests.sort();
    digests
}

/// Runs dry collections until the old blob is swept in one (its write-back pin is released
/// just after the backend has it).
async fn dry_run_until_ready(cluster: &Cluster, old: &Digest) -> GcReport {
    let config = cluster.gc_config(true);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let report = collect_garbage(&config).await.unwrap();
        if swept(&report, Location::Store).contains(old) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old blob was never sweepable: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_what_it_would_sweep_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Vec::new(), |_| {}).await;
    let seeded = seed(&cluster).await;
    let (old, old_size) = seeded.old;
    let (backend_only, backend_size) = seeded.backend_only;
    let report = dry_run_until_ready(&cluster, &old).await;
    assert!(report.dry_run);
    assert_eq!(report.tags, 2);
    assert_eq!(report.marked, seeded.reachable.len());
    assert_eq!(swept(&report, Location::Store), vec![old]);
    let mut backend = vec![old, backend_only];
    backend.sort();
    assert_eq!(swept(&report, Location::Backend), backend);
    assert_eq!((report.swept_blobs, report.swept_bytes), (1, old_size));
    assert_eq!(
        (report.backend_swept_blobs, report.backend_swept_bytes),
        (2, old_size + backend_size)
    );
    // The JSON the CLI prints names the counts.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["swept_blobs"], 1);
    assert_eq!(
        json["origins"][0]["report"]["kept_marked"],
        seeded.reachable.len()
    );
    // Nothing was deleted.
    assert!(holds(&cluster.stores[0], &old));
    assert!(holds(&cluster.blobs, &old));
    assert!(holds(&cluster.blobs, &backend_only));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_old_garbage_and_keeps_what_tags_reach_and_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Vec::new(), |_| {}).await;
    let seeded = seed(&cluster).await;
    let (old, old_size) = seeded.old;
    let (backend_only, _) = seeded.backend_only;
    dry_run_until_ready(&cluster, &old).await;
    let report = collect_garbage(&cluster.gc_config(false)).await.unwrap();
    assert!(!report.dry_run && report.complete());
    assert_eq!(swept(&report, Location::Store), vec![old]);
    assert_eq!((report.swept_blobs, report.swept_bytes), (1, old_size));
    assert_eq!(report.backend_swept_blobs, 2);
    let store = &cluster.stores[0];
    assert!(!holds(store, &old), "swept from the origin");
    assert!(!holds(&cluster.blobs, &old), "swept from the backend");
    assert!(
        !holds(&cluster.blobs, &backend_only),
        "swept from the backend"
    );
    for digest in &seeded.reachable {
        assert!(holds(store, digest), "{digest} is kept on the origin");
        assert!(
            holds(&cluster.blobs, digest),
            "{digest} is kept in the backend"
        );
    }
    assert!(holds(store, &seeded.new), "a new blob is kept");
    assert!(holds(&cluster.blobs, &seeded.new), "a new blob is kept");
    // The tagged images still pull, the index's child by digest too.
    for tag in ["v1", "multi"] {
        let path = format!("/v2/team/app/manifests/{tag}");
        assert_eq!(
            send(&cluster.client, Method::GET, &path).await.status(),
            StatusCode::OK
        );
    }
    // A second collection finds nothing more.
    let again = collect_garbage(&cluster.gc_config(false)).await.unwrap();
    assert_eq!((again.swept_blobs, again.backend_swept_blobs), (0, 0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_origins_a_delete_purges_both_and_each_sweeps_its_own_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cluster =
        Cluster::start_with_origins(dir.path(), 2, Vec::new(), |c| c.delete.enabled = true).await;
    let client = &cluster.client;
    let on_both = |digest: Digest| {
        let cluster = &cluster;
        async move {
            eventually(
                PATIENCE,
                "a copy on each origin and in the backend",
                || async {
                    cluster.stores.iter().all(|s| holds(s, &digest))
                        && holds(&cluster.blobs, &digest)
                },
            )
            .await;
        }
    };
    let deleted = client
        .push_blob("team/junk", b"deleted on every origin")
        .await;
    on_both(deleted).await;
    let path = format!("/v2/team/junk/blobs/{deleted}");
    assert_eq!(
        send(client, Method::DELETE, &path).await.status(),
        StatusCode::ACCEPTED
    );
    for store in &cluster.stores {
        assert!(!holds(store, &deleted), "purged from {}", store.display());
    }
    assert!(!holds(&cluster.blobs, &deleted));
    assert_eq!(
        send(client, Method::HEAD, &path).await.status(),
        StatusCode::NOT_FOUND
    );

    let old = client
        .push_blob("team/junk", b"swept from every origin")
        .await;
    on_both(old).await;
    // Both origins write the blob back; the one that finds it missing uploads it, and when
    // both do (they race), the later upload renews the backend's copy. So age it only once
    // neither origin still has it pinned for write-back.
    let config = cluster.gc_config(true);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let report = collect_garbage(&config).await.unwrap();
        let pinned = report
            .origins
            .iter()
            .any(|o| o.report.as_ref().is_none_or(|r| r.kept_pinned > 0));
        if !pinned {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let two_days = Duration::from_secs(48 * 3600);
    for dir in cluster.stores.iter().chain([&cluster.blobs]) {
        age(dir, &old, two_days);
    }
    let report = collect_garbage(&cluster.gc_config(false)).await.unwrap();
    assert_eq!(
        (report.swept_blobs, report.backend_swept_blobs),
        (2, 1),
        "{report:?}"
    );
    for store in &cluster.stores {
        assert!(!holds(store, &old), "swept from {}", store.display());
    }
    assert!(!holds(&cluster.blobs, &old));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_deletes_an_image_through_the_proxy() {
    if require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Vec::new(), |c| c.delete.enabled = true).await;
    let layout = dir.path().join("image");
    let image = write_layout(&layout, "v1");
    let host = cluster.proxy.local_addr().to_string();
    let target = format!("docker://{host}/skopeo/app:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", layout.display()),
        &target,
    ])
    .await;
    let by_tag = "/v2/skopeo/app/manifests/v1";
    assert_eq!(
        send(&cluster.client, Method::GET, by_tag).await.status(),
        StatusCode::OK
    );
    // skopeo resolves the tag and deletes the manifest by digest.
    skopeo(&["delete", "--tls-verify=false", &target]).await;
    let by_digest = format!("/v2/skopeo/app/manifests/{}", image.manifest);
    for path in [by_tag, by_digest.as_str()] {
        let (status, code) = error_of(send(&cluster.client, Method::GET, path).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            "{path}"
        );
    }
    cluster.shutdown().await;
}

/// Repair passes `origin` has run, from its `/metrics`.
async fn repair_passes(origin: &Origin) -> f64 {
    let addr = origin.local_addr().to_string();
    kraken_testkit::Exposition::scrape(&reqwest::Client::new(), &addr)
        .await
        .sum("kraken_origin_repair_passes_total", &[])
}

/// Two origins each hold a blob; one purges it. The other's repair pass finds an owner
/// without it and pushes it a replica, which brings the blob back before the second purge
/// (or sweep) reaches the other origin — unless the first refuses repairs of what it just
/// deleted (`cluster.tombstone_ttl`). Shown both ways: with `0s`, the blob comes back. A
/// client's new push of it is accepted, and replicated, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_refuses_repairs_of_a_blob_it_just_deleted() {
    use kraken_registry::origin::{CommitKind, OriginClient};
    const NS: &str = "team/junk";
    for ttl in [Duration::ZERO, Duration::from_secs(3600)] {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("backend-blobs");
        let addrs: Vec<_> = (0..2).map(|_| free_addr("127.0.0.1")).collect();
        let mut origins = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut config = origin_config(*addr, &addrs, &dir.path().join(format!("o{i}")));
            config.backends = fs_backends(&blobs);
            config.cluster.replicas = 2;
            config.cluster.repair_interval = Duration::from_millis(100);
            config.cluster.tombstone_ttl = ttl;
            origins.push(Origin::spawn(config).await.unwrap());
        }
        let holds = |i: usize, digest: &Digest| {
            matches!(
                origins[i].store().status(digest),
                kraken_core::BlobStatus::Cached { .. }
            )
        };
        let data = bytes::Bytes::from(format!("purged, then repaired? ttl {ttl:?}"));
        let digest = Digest::sha256_of(&data);
        let client = OriginClient::new().unwrap();
        let first = origins[0].local_addr().to_string();
        let push = || client.upload_bytes(&first, NS, &digest, data.clone(), CommitKind::Primary);
        push().await.unwrap();
        eventually(PATIENCE, "both origins hold the blob", || async {
            holds(0, &digest) && holds(1, &digest)
        })
        .await;

        let purge = format!("http://{first}/internal/namespace/team%2Fjunk/blobs/{digest}");
        let purged = reqwest::Client::new().delete(&purge).send().await.unwrap();
        assert_eq!(purged.status(), StatusCode::ACCEPTED);
        assert!(!holds(0, &digest));
        if ttl.is_zero() {
            eventually(
                PATIENCE,
                "the other origin's repair brings it back",
                || async { holds(0, &digest) },
            )
            .await;
        } else {
            // Several repair passes of the origin that still holds it.
            let before = repair_passes(&origins[1]).await;
            eventually(PATIENCE, "three repair passes", || async {
                repair_passes(&origins[1]).await >= before + 3.0
            })
            .await;
            assert!(!holds(0, &digest), "a repair brought back a purged blob");
            assert!(holds(1, &digest));
            // Refused at a repair's first step, before any byte is sent.
            let start = format!("http://{first}/namespace/team%2Fjunk/blobs/{digest}/uploads");
            let http = reqwest::Client::new();
            let repair = http.post(format!("{start}?repair=true")).send().await;
            assert_eq!(repair.unwrap().status(), StatusCode::GONE);
            let primary = http.post(&start).send().await.unwrap();
            assert_eq!(primary.status(), StatusCode::OK);
            // A client pushes it again: taken, and replicated to the other owner.
            push().await.unwrap();
            assert!(holds(0, &digest));
        }
        for origin in origins {
            origin.shutdown().await;
        }
    }
}
