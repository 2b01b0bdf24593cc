//! Build-indexes and origins on loopback with filesystem backends: mutable tags read fresh on
//! every build-index, restarts and backend outages, dependency checks through manifests and
//! indexes, listings, bad input, and replication of a tag and its blobs to another cluster.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kraken_backends::{Backend, FsBackend, FsConfig, collect_bytes};
use kraken_core::Digest;
use kraken_registry::Error;
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, PageOptions, TagName};
use kraken_registry::origin::{CommitKind, Origin, OriginClient};
use kraken_testkit::backend::FaultyBackend;
use kraken_testkit::{ClientAuth, TestPki};
use kraken_testkit::{free_addr, pseudo_random_bytes};
use reqwest::StatusCode;
use support::{
    TwoClusters, bi_config, eventually, fs_backends, https_client, origin_config, start_origin,
};

const REPO: &str = "library/app";

fn tag(name: &str) -> TagName {
    TagName::new(REPO, name).unwrap()
}

/// One origin and one build-index without neighbours.
async fn start_cluster(dir: &Path) -> (Origin, BuildIndex) {
    let origin = start_origin(dir).await;
    let config = bi_config(free_addr("127.0.0.1"), &dir.join("bi"), &origin, &[]);
    (origin, BuildIndex::spawn(config).await.unwrap())
}

/// Uploads `data` to the origin and returns its digest.
async fn push_blob(origin: &Origin, data: &[u8]) -> Digest {
    support::upload(origin, REPO, data).await
}

fn client(bi: &BuildIndex) -> BuildIndexClient {
    BuildIndexClient::new([bi.local_addr().to_string()]).unwrap()
}

/// The value a backend holds for a tag, if any.
async fn backend_value(backend: &dyn Backend, tag: &TagName) -> Option<String> {
    let stream = backend
        .download(tag.as_str(), tag.as_str(), None)
        .await
        .ok()?;
    let bytes = collect_bytes(stream, 1024).await.ok()?;
    Some(String::from_utf8(bytes.to_vec()).unwrap())
}

/// An image manifest (OCI) with a config and layers, as JSON bytes.
fn manifest(config: &Digest, layers: &[Digest]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": layers,
    }))
    .unwrap()
}

fn index(manifests: &[Digest]) -> Vec<u8> {
    let manifests: Vec<_> = manifests
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.to_string(), "size": 1}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_mutable_and_every_build_index_reads_the_latest_write() {
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin(dir.path()).await;
    let (a_addr, b_addr) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let backend_dir = dir.path().join("tags-backend");
    let start = |listen, data: &str| {
        let mut config = bi_config(listen, &dir.path().join(data), &origin, &[a_addr, b_addr]);
        config.backends = fs_backends(&backend_dir);
        BuildIndex::spawn(config)
    };
    let a = start(a_addr, "a").await.unwrap();
    let mut b = start(b_addr, "b").await.unwrap();
    let (on_a, on_b) = (client(&a), client(&b));
    let both = BuildIndexClient::new([a_addr.to_string(), b_addr.to_string()]).unwrap();
    let latest = tag("latest");
    assert_eq!(on_a.get_tag(&latest).await.unwrap(), None);
    assert!(!on_a.head_tag(&latest).await.unwrap());

    let v1 = push_blob(&origin, b"version one").await;
    on_a.put_tag(&latest, &v1, false).await.unwrap();
    assert_eq!(on_a.get_tag(&latest).await.unwrap(), Some(v1));
    assert_eq!(on_b.get_tag(&latest).await.unwrap(), Some(v1));
    assert!(on_b.head_tag(&latest).await.unwrap());

    // Re-pointed through the other build-index: both read the new digest at once.
    let v2 = push_blob(&origin, b"version two").await;
    on_b.put_tag(&latest, &v2, false).await.unwrap();
    assert_eq!(on_a.get_tag(&latest).await.unwrap(), Some(v2));
    assert_eq!(both.get_tag(&latest).await.unwrap(), Some(v2));

    // b misses a write while it is down, and still reads it as soon as it is back.
    b.shutdown().await;
    let v3 = push_blob(&origin, b"version three").await;
    on_a.put_tag(&latest, &v3, false).await.unwrap();
    // The client fails over to a when b cannot be reached.
    let b_first = BuildIndexClient::new([b_addr.to_string(), a_addr.to_string()]).unwrap();
    assert_eq!(b_first.get_tag(&latest).await.unwrap(), Some(v3));
    b = start(b_addr, "b").await.unwrap();
    assert_eq!(on_b.get_tag(&latest).await.unwrap(), Some(v3));

    // The backend ends with the last write, not the first.
    let fs = FsBackend::new(FsConfig::new(&backend_dir)).unwrap();
    eventually(Duration::from_secs(10), "the backend holds v3", || async {
        backend_value(&fs, &latest).await == Some(v3.to_string())
    })
    .await;

    // Deleted through b: gone on both, and from the backend.
    assert!(on_b.delete_tag(&latest).await.unwrap());
    assert!(!on_b.delete_tag(&latest).await.unwrap());
    assert_eq!(on_a.get_tag(&latest).await.unwrap(), None);
    assert_eq!(on_b.get_tag(&latest).await.unwrap(), None);
    eventually(
        Duration::from_secs(10),
        "the backend lost the tag",
        || async { backend_value(&fs, &latest).await.is_none() },
    )
    .await;
    // A tag only the backend has (written by another system) is found.
    fs.upload(
        "library/app:old",
        "library/app:old",
        kraken_backends::UploadBody::from_bytes(v1.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(on_b.get_tag(&tag("old")).await.unwrap(), Some(v1));
    a.shutdown().await;
    b.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_tags_and_queued_write_backs_finish_once_the_backend_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin(dir.path()).await;
    let listen = free_addr("127.0.0.1");
    let down = Arc::new(FaultyBackend::failing_first(u32::MAX));
    let bi = BuildIndex::builder(bi_config(listen, &dir.path().join("bi"), &origin, &[]))
        .backend(down.clone())
        .spawn()
        .await
        .unwrap();
    let tags: Vec<TagName> = (0..3).map(|i| tag(&format!("v{i}"))).collect();
    let mut digests = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let digest = push_blob(&origin, format!("blob {i}").as_bytes()).await;
        // Acknowledged although the backend is down: the write is durable here.
        client(&bi).put_tag(t, &digest, false).await.unwrap();
        digests.push(digest);
    }
    eventually(
        Duration::from_secs(5),
        "write-backs were attempted",
        || async { down.calls() >= 3 },
    )
    .await;
    assert_eq!(bi.pending_write_backs(), 3);
    bi.shutdown().await;

    // Second life: same data directory, a working backend.
    let backend_dir = dir.path().join("tags-backend");
    let fs: Arc<dyn Backend> = Arc::new(FsBackend::new(FsConfig::new(&backend_dir)).unwrap());
    let bi = BuildIndex::builder(bi_config(listen, &dir.path().join("bi"), &origin, &[]))
        .backend(fs.clone())
        .spawn()
        .await
        .unwrap();
    for (t, digest) in tags.iter().zip(&digests) {
        assert_eq!(client(&bi).get_tag(t).await.unwrap(), Some(*digest));
    }
    eventually(
        Duration::from_secs(10),
        "the write-backs finished",
        || async { bi.pending_write_backs() == 0 },
    )
    .await;
    for (t, digest) in tags.iter().zip(&digests) {
        assert_eq!(backend_value(&*fs, t).await, Some(digest.to_string()));
    }
    bi.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_wait_for_every_blob_of_the_image_through_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, bi) = start_cluster(dir.path()).await;
    let bi_client = client(&bi);

    // An image whose layer is not in the origins yet.
    let config = push_blob(&origin, b"{\"architecture\":\"amd64\"}").await;
    let layer = pseudo_random_bytes(100_000, 1);
    let layer_digest = Digest::sha256_of(&layer);
    let image = push_blob(&origin, &manifest(&config, &[layer_digest])).await;
    let missing = bi_client.put_tag(&tag("one"), &image, false).await;
    assert!(
        matches!(missing, Err(Error::MissingDependency(d)) if d == layer_digest),
        "{missing:?}"
    );
    assert_eq!(bi_client.get_tag(&tag("one")).await.unwrap(), None);
    push_blob(&origin, &layer).await;
    bi_client.put_tag(&tag("one"), &image, false).await.unwrap();
    assert_eq!(bi_client.get_tag(&tag("one")).await.unwrap(), Some(image));

    // An index of two images: the second child's layer is missing, deep below the root.
    let arm_layer = pseudo_random_bytes(50_000, 2);
    let arm_layer_digest = Digest::sha256_of(&arm_layer);
    let arm_config = push_blob(&origin, b"{\"architecture\":\"arm64\"}").await;
    let arm_image = push_blob(&origin, &manifest(&arm_config, &[arm_layer_digest])).await;
    let multi = push_blob(&origin, &index(&[image, arm_image])).await;
    let missing = bi_client.put_tag(&tag("multi"), &multi, false).await;
    assert!(
        matches!(missing, Err(Error::MissingDependency(d)) if d == arm_layer_digest),
        "{missing:?}"
    );
    // A child manifest missing altogether is named too.
    let absent_child = Digest::sha256_of(b"never pushed");
    let broken = push_blob(&origin, &index(&[image, absent_child])).await;
    let missing = bi_client.put_tag(&tag("broken"), &broken, false).await;
    assert!(
        matches!(missing, Err(Error::MissingDependency(d)) if d == absent_child),
        "{missing:?}"
    );
    push_blob(&origin, &arm_layer).await;
    bi_client
        .put_tag(&tag("multi"), &multi, false)
        .await
        .unwrap();
    assert_eq!(bi_client.get_tag(&tag("multi")).await.unwrap(), Some(multi));
    // A tag may name any blob; an absent one is refused.
    let unknown = Digest::sha256_of(b"nothing");
    let missing = bi_client.put_tag(&tag("blob"), &unknown, false).await;
    assert!(matches!(missing, Err(Error::MissingDependency(d)) if d == unknown));
    bi.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_across_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin(dir.path()).await;
    let (a_addr, b_addr) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
    let a = BuildIndex::spawn(bi_config(a_addr, &dir.path().join("a"), &origin, &[b_addr]))
        .await
        .unwrap();
    let mut b = BuildIndex::spawn(bi_config(b_addr, &dir.path().join("b"), &origin, &[a_addr]))
        .await
        .unwrap();
    let digest = push_blob(&origin, b"any").await;
    for name in ["1", "2", "3"] {
        client(&a)
            .put_tag(&tag(name), &digest, false)
            .await
            .unwrap();
    }
    // Two tags land on a while b is down; b's listings still show them.
    b.shutdown().await;
    for name in ["4", "5"] {
        client(&a)
            .put_tag(&tag(name), &digest, false)
            .await
            .unwrap();
    }
    let other = TagName::new("library/apple", "x").unwrap();
    client(&a).put_tag(&other, &digest, false).await.unwrap();
    b = BuildIndex::spawn(bi_config(b_addr, &dir.path().join("b"), &origin, &[a_addr]))
        .await
        .unwrap();
    client(&b).delete_tag(&tag("2")).await.unwrap();

    for bi in [&a, &b] {
        let c = client(bi);
        let mut names = Vec::new();
        let mut options = PageOptions::with_limit(2);
        let mut pages = 0;
        loop {
            let page = c.list_repo_tags(REPO, &options).await.unwrap();
            assert!(page.names.len() <= 2);
            names.extend(page.names);
            pages += 1;
            match page.next {
                Some(next) => options = options.after(Some(next)),
                None => break,
            }
        }
        assert_eq!(names, ["1", "3", "4", "5"]);
        assert!(pages >= 2);
        let all = c
            .list("library/app", &PageOptions::default())
            .await
            .unwrap();
        assert_eq!(
            all.names,
            [
                "library/app:1",
                "library/app:3",
                "library/app:4",
                "library/app:5",
                "library/apple:x"
            ]
        );
        assert_eq!(all.next, None);
    }
    // Go Kraken's JSON, with links.
    let body = reqwest::get(format!(
        "http://{a_addr}/repositories/library%2Fapp/tags?limit=3"
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["size"], 3);
    assert_eq!(body["result"], serde_json::json!(["1", "3", "4"]));
    assert!(body["links"]["next"].as_str().unwrap().contains("offset="));
    assert_eq!(
        body["links"]["self"],
        "/repositories/library%2Fapp/tags?limit=3"
    );
    a.shutdown().await;
    b.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_client_certificate_when_tls_asks_for_one_on_writes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let origin = start_origin(dir.path()).await;
    let mut config = bi_config(free_addr("127.0.0.1"), &dir.path().join("bi"), &origin, &[]);
    config.tls = Some(pki.server(ClientAuth::Writes));
    let bi = BuildIndex::spawn(config).await.unwrap();
    let address = [bi.local_addr().to_string()];
    let anonymous_tls = pki.anonymous_client().load().unwrap();
    let anonymous = BuildIndexClient::with_tls(address.clone(), Some(&anonymous_tls)).unwrap();
    let certified =
        BuildIndexClient::with_tls(address, Some(&pki.client().load().unwrap())).unwrap();
    let (v1, v2) = (
        push_blob(&origin, b"version one").await,
        push_blob(&origin, b"version two").await,
    );
    let (latest, other) = (tag("latest"), tag("other"));
    certified.put_tag(&latest, &v1, false).await.unwrap();

    let refused = anonymous.put_tag(&latest, &v2, false).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let refused = anonymous.put_tag(&other, &v2, false).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let refused = anonymous.delete_tag(&latest).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    // The replication endpoint other clusters write to is a write too.
    let duplicate = https_client(&anonymous_tls)
        .put(format!(
            "https://{}/internal/duplicate/tags/{}/digest/{v2}",
            bi.local_addr(),
            other.as_str().replace('/', "%2F"),
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), StatusCode::FORBIDDEN);

    // Nothing changed, and anonymous clients still read.
    assert_eq!(anonymous.get_tag(&latest).await.unwrap(), Some(v1));
    assert_eq!(anonymous.get_tag(&other).await.unwrap(), None);
    certified.put_tag(&latest, &v2, false).await.unwrap();
    assert_eq!(anonymous.get_tag(&latest).await.unwrap(), Some(v2));
    bi.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_outside_the_cluster_cannot_freeze_a_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, bi) = start_cluster(dir.path()).await;
    let base = format!("http://{}", bi.local_addr());
    let v1 = push_blob(&origin, b"v1").await;
    let v2 = push_blob(&origin, b"v2").await;
    let http = reqwest::Client::new();
    let copy = |digest: Digest, body: serde_json::Value| {
        http.put(format!(
            "{base}/internal/duplicate/tags/library%2Fapp:1/digest/{digest}"
        ))
        .body(body.to_string())
        .send()
    };
    // The highest version there is, from a writer no build-index is: refused.
    let forged = copy(v2, serde_json::json!({"version": u64::MAX, "writer": "zz"}))
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // From this build-index's own name, but far beyond its clock: refused.
    let ahead = copy(
        v2,
        serde_json::json!({"version": u64::MAX, "writer": bi.name()}),
    )
    .await
    .unwrap();
    assert_eq!(ahead.status(), StatusCode::BAD_REQUEST);
    assert!(ahead.text().await.unwrap().contains("ahead"));
    // The tag still takes writes.
    let tag = tag("1");
    client(&bi).put_tag(&tag, &v1, false).await.unwrap();
    assert_eq!(client(&bi).get_tag(&tag).await.unwrap(), Some(v1));
    // An older copy loses, and says so with the version held.
    let older = copy(v2, serde_json::json!({"version": 1, "writer": bi.name()}))
        .await
        .unwrap();
    assert_eq!(older.status(), StatusCode::CONFLICT);
    let held: serde_json::Value = serde_json::from_str(&older.text().await.unwrap()).unwrap();
    assert!(held["version"].as_u64().unwrap() > 1, "{held}");
    assert_eq!(held["writer"], bi.name());
    assert_eq!(client(&bi).get_tag(&tag).await.unwrap(), Some(v1));
    bi.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, bi) = start_cluster(dir.path()).await;
    let base = format!("http://{}", bi.local_addr());
    let digest = Digest::sha256_of(b"x");
    let http = reqwest::Client::new();
    let cases: Vec<(reqwest::Method, String, &str, &str)> = vec![
        (reqwest::Method::GET, "/tags/ubuntu".into(), "", "no ':'"),
        (
            reqwest::Method::GET,
            "/tags/Ubuntu:1".into(),
            "",
            "repository",
        ),
        (reqwest::Method::GET, "/tags/a:%ZZ".into(), "", "percent"),
        (reqwest::Method::GET, "/tags/a:%FF".into(), "", "percent"),
        (reqwest::Method::HEAD, "/tags/a:.x".into(), "", ""),
        (
            reqwest::Method::PUT,
            "/tags/a:1/digest/sha256:abc".into(),
            "",
            "invalid digest",
        ),
        (
            reqwest::Method::PUT,
            "/tags/a:1/digest/md5:00".into(),
            "",
            "invalid digest",
        ),
        (
            reqwest::Method::PUT,
            format!("/tags/a:1/digest/{digest}?replicate=yes"),
            "",
            "replicate",
        ),
        (
            reqwest::Method::GET,
            "/repositories/UP/tags".into(),
            "",
            "repository",
        ),
        (reqwest::Method::GET, "/list/a?limit=0".into(), "", "limit"),
        (reqwest::Method::GET, "/list/a?limit=-1".into(), "", "limit"),
        (
            reqwest::Method::PUT,
            format!("/internal/duplicate/tags/a:1/digest/{digest}"),
            "{not json",
            "JSON",
        ),
        (
            reqwest::Method::PUT,
            format!("/internal/duplicate/tags/a:1/digest/{digest}"),
            "{\"version\":\"x\"}",
            "JSON",
        ),
    ];
    for (method, path, body, reason) in cases {
        let response = http
            .request(method.clone(), format!("{base}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{method} {path}: {text}");
    }
    // An oversized body is refused, not read whole. (On a client of its own: the server
    // closes that connection, which a pooled client could otherwise reuse in a race.)
    let huge = vec![b' '; 1 << 20];
    let response = reqwest::Client::new()
        .put(format!(
            "{base}/internal/duplicate/tags/a:1/digest/{digest}"
        ))
        .body(huge)
        .send()
        .await;
    assert!(response.is_err() || response.unwrap().status() == StatusCode::BAD_REQUEST);
    let response = http.post(format!("{base}/tags/a:1")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Health, and the origin cluster's address for remote build-indexes.
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        client(&bi).origin().await.unwrap(),
        vec![origin.local_addr().to_string()]
    );
    bi.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_tag_reaches_the_remote_cluster_with_all_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let TwoClusters {
        here,
        there,
        local,
        remote,
    } = TwoClusters::start(dir.path()).await;

    // A two-platform image.
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    for platform in 0..2u64 {
        let config = format!("{{\"platform\":{platform}}}").into_bytes();
        let layer = pseudo_random_bytes(200_000, 10 + platform);
        let child = manifest(&Digest::sha256_of(&config), &[Digest::sha256_of(&layer)]);
        children.push(Digest::sha256_of(&child));
        blobs.extend([config, layer, child]);
    }
    let root = index(&children);
    let root_digest = Digest::sha256_of(&root);
    blobs.push(root);
    for blob in &blobs {
        push_blob(&here, blob).await;
    }
    let release = tag("release");
    client(&local)
        .put_tag(&release, &root_digest, true)
        .await
        .unwrap();
    // Not replicated without asking: a repository no remote pattern matches.
    let private = TagName::new("private/app", "1").unwrap();
    let private_blob = b"private".to_vec();
    let private_digest = Digest::sha256_of(&private_blob);
    OriginClient::new()
        .unwrap()
        .upload_bytes(
            &here.local_addr().to_string(),
            "private/app",
            &private_digest,
            private_blob.into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    client(&local)
        .put_tag(&private, &private_digest, true)
        .await
        .unwrap();

    let remote_client = client(&remote);
    eventually(
        Duration::from_secs(20),
        "the remote has the tag",
        || async { remote_client.get_tag(&release).await.unwrap() == Some(root_digest) },
    )
    .await;
    for blob in &blobs {
        let digest = Digest::sha256_of(blob);
        assert!(
            matches!(
                there.store().status(&digest),
                kraken_core::BlobStatus::Cached { .. }
            ),
            "{digest} missing from the remote origin"
        );
    }
    eventually(Duration::from_secs(5), "the queue drained", || async {
        local.pending_replications() == 0
    })
    .await;
    assert_eq!(remote_client.get_tag(&private).await.unwrap(), None);
    local.shutdown().await;
    remote.shutdown().await;
    here.shutdown().await;
    there.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_backends_and_the_origins() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr("127.0.0.1");
    let faulty = Arc::new(FaultyBackend::failing_first(0));
    let router = kraken_backends::Router::new()
        .with_route(".*", faulty.clone())
        .unwrap();
    let origin = Origin::builder(origin_config(addr, &[addr], &dir.path().join("origin")))
        .backend(Arc::new(router))
        .spawn()
        .await
        .unwrap();
    let mut config = bi_config(free_addr("127.0.0.1"), &dir.path().join("bi"), &origin, &[]);
    config.origins.refresh_interval = Duration::from_millis(200);
    config.origins.health_timeout = Duration::from_millis(500);
    config.origins.fails = 1;
    let bi = BuildIndex::spawn(config).await.unwrap();
    let http = reqwest::Client::new();
    let readiness = |addr: SocketAddr| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{addr}/readiness"))
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    eventually(
        Duration::from_secs(10),
        "the build-index is ready",
        || async { readiness(bi.local_addr()).await.0 == StatusCode::OK },
    )
    .await;
    assert_eq!(readiness(origin.local_addr()).await.0, StatusCode::OK);

    // A backend that fails makes the origin unready, naming the route.
    faulty.fail_next(1);
    let (status, text) = readiness(origin.local_addr()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("backends") && text.contains(".*"), "{text}");
    assert_eq!(readiness(origin.local_addr()).await.0, StatusCode::OK);

    // Without a healthy origin the build-index is not ready.
    origin.shutdown().await;
    eventually(
        Duration::from_secs(10),
        "the build-index notices",
        || async {
            let (status, text) = readiness(bi.local_addr()).await;
            status == StatusCode::SERVICE_UNAVAILABLE && text.contains("origins")
        },
    )
    .await;
    bi.shutdown().await;
}

/// Roles in client certificates: an agent's certificate cannot write tags or neighbours'
/// copies (403); a proxy's writes tags, a build-index's writes copies, and a certificate
/// without a role (an operator, as before roles) writes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_writes_need_a_proxy_build_index_or_operator_certificate() {
    use kraken_p2p::tls::Role;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let origin = start_origin(dir.path()).await;
    let mut config = bi_config(free_addr("127.0.0.1"), &dir.path().join("bi"), &origin, &[]);
    config.tls = Some(pki.server(ClientAuth::Writes));
    let bi = BuildIndex::spawn(config).await.unwrap();
    let address = [bi.local_addr().to_string()];
    let as_role = |role: Role| {
        let tls = pki.client_with_role(role).load().unwrap();
        BuildIndexClient::with_tls(address.clone(), Some(&tls)).unwrap()
    };
    let digest = push_blob(&origin, b"roles").await;
    let latest = tag("latest");
    let duplicate = |tls: kraken_p2p::tls::ClientTlsConfig| {
        let url = format!(
            "https://{}/internal/duplicate/tags/{}/digest/{digest}",
            bi.local_addr(),
            latest.as_str().replace('/', "%2F"),
        );
        async move {
            https_client(&tls.load().unwrap())
                .put(url)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    let agent = as_role(Role::Agent);
    let refused = agent.put_tag(&latest, &digest, false).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let refused = agent.delete_tag(&latest).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    assert_eq!(
        duplicate(pki.client_with_role(Role::Agent)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        duplicate(pki.client_with_role(Role::Proxy)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(agent.get_tag(&latest).await.unwrap(), None);

    as_role(Role::Proxy)
        .put_tag(&latest, &digest, false)
        .await
        .unwrap();
    as_role(Role::Operator).delete_tag(&latest).await.unwrap();
    assert_eq!(
        duplicate(pki.client_with_role(Role::BuildIndex)).await,
        StatusCode::OK
    );
    assert_eq!(duplicate(pki.client()).await, StatusCode::OK);
    assert_eq!(agent.get_tag(&latest).await.unwrap(), Some(digest));
    bi.shutdown().await;
    origin.shutdown().await;
}
