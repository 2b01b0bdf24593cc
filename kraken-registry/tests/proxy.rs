//! The proxy on loopback in front of an origin and a build-index (filesystem backends):
//! pushes and pulls through a real HTTP client and skopeo, blobs in the origins under the
//! repository's namespace, tags in the build-index read fresh, listings, image indexes,
//! referrers, mounts, refused manifests and authentication.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_core::Digest;
use kraken_p2p::tls::{ClientAuth, ClientTlsConfig};
use kraken_registry::build_index::{BuildIndex, BuildIndexClient, BuildIndexConfig, TagName};
use kraken_registry::origin::{MembersConfig, Origin};
use kraken_registry::proxy::{
    AccessLevel, AccessRule, BuildIndexTarget, Proxy, ProxyConfig, UserConfig,
};
use kraken_testkit::TestPki;
use kraken_testkit::oci::{INDEX_TYPE, MANIFEST_TYPE, artifact_manifest, image_manifest};
use kraken_testkit::{free_addr, pseudo_random_bytes, require_package};
use reqwest::{Method, StatusCode};
use support::oci::{JsonBody, Registry, error_of, header, push_image};
use support::skopeo::{copy_across_and_out, skopeo, write_layout};
use support::{eventually, holds, https_client, origin_config};

/// An origin (its backend routes `library/…` apart from the rest), a build-index and a
/// proxy, and a registry client of the proxy.
struct Cluster {
    origin: Origin,
    build_index: BuildIndex,
    proxy: Proxy,
    client: Registry,
    /// The origin's backend for namespaces `library/…`.
    library_backend: PathBuf,
    /// The origin's backend for every other namespace.
    other_backend: PathBuf,
    /// The origin's data directory (its store and its uploads in progress).
    origin_data: PathBuf,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut ProxyConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (library_backend, other_backend) = (
            dir.path().join("library-backend"),
            dir.path().join("other-backend"),
        );
        let origin_data = dir.path().join("origin");
        let addr = free_addr("127.0.0.1");
        let mut config = origin_config(addr, &[addr], &origin_data);
        config.backends = BackendsConfig::new(vec![
            RouteConfig::new(
                "library/.*",
                BackendConfig::Fs(FsConfig::new(&library_backend)),
            ),
            RouteConfig::new(".*", BackendConfig::Fs(FsConfig::new(&other_backend))),
        ]);
        let origin = Origin::spawn(config).await.unwrap();
        let members = MembersConfig::Static(vec![origin.local_addr().to_string()]);
        let mut bi = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.path().join("bi"));
        bi.origins.members = members.clone();
        let build_index = BuildIndex::spawn(bi).await.unwrap();
        let mut config = ProxyConfig::new(free_addr("127.0.0.1"), dir.path().join("proxy"));
        config.origins.members = members;
        config.origins.refresh_interval = Duration::from_millis(200);
        config.build_index = BuildIndexTarget::new([build_index.local_addr().to_string()]);
        configure(&mut config);
        let proxy = Proxy::builder(config).spawn().await.unwrap();
        let client = Registry::remote(format!("http://{}", proxy.local_addr()), dir);
        Self {
            origin,
            build_index,
            proxy,
            client,
            library_backend,
            other_backend,
            origin_data,
        }
    }

    fn tags(&self) -> BuildIndexClient {
        BuildIndexClient::new([self.build_index.local_addr().to_string()]).unwrap()
    }

    async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.build_index.shutdown().await;
        self.origin.shutdown().await;
    }
}

async fn get(client: &Registry, path: &str) -> reqwest::Response {
    client.request(Method::GET, path).send().await.unwrap()
}

fn digest_of(response: &reqwest::Response) -> Digest {
    header(response, "docker-content-digest").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_the_proxy_is_in_the_origins_and_the_build_index() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let repo = "library/app";
    let manifest = push_image(client, repo, "one").await;
    let pushed = client
        .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest)
        .await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let digest = Digest::sha256_of(&manifest);
    assert_eq!(digest_of(&pushed), digest);

    // The tag is in the build-index; the manifest and blobs are in the origins, written
    // back to the backend of the repository's namespace.
    let tag = TagName::new(repo, "v1").unwrap();
    assert_eq!(cluster.tags().get_tag(&tag).await.unwrap(), Some(digest));
    let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer: Digest = doc["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let config: Digest = doc["config"]["digest"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(10), "written back", || async {
        [digest, layer, config]
            .iter()
            .all(|d| holds(&cluster.library_backend, d))
    })
    .await;
    assert!(!holds(&cluster.other_backend, &layer));

    // Pulled back by tag and by digest.
    for reference in ["v1".to_owned(), digest.to_string()] {
        let pulled = get(client, &format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(pulled.status(), StatusCode::OK, "{reference}");
        assert_eq!(header(&pulled, "content-type"), MANIFEST_TYPE);
        assert_eq!(digest_of(&pulled), digest);
        assert_eq!(pulled.bytes().await.unwrap(), manifest);
    }
    let blob = get(client, &format!("/v2/{repo}/blobs/{layer}")).await;
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(blob.bytes().await.unwrap(), "layer one one".as_bytes());
    let part = client
        .request(Method::GET, &format!("/v2/{repo}/blobs/{layer}"))
        .header("range", "bytes=6-8")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&part, "content-range"), "bytes 6-8/13");
    assert_eq!(part.bytes().await.unwrap(), "one".as_bytes());
    let head = client
        .request(Method::HEAD, &format!("/v2/{repo}/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "content-length"), "13");
    // A blob of several chunks streams back whole and in parts, verified on the way.
    let big = pseudo_random_bytes(3 << 20, 7);
    let big_digest = client.push_blob(repo, &big).await;
    let whole = get(client, &format!("/v2/{repo}/blobs/{big_digest}")).await;
    assert_eq!(whole.bytes().await.unwrap(), big);
    let part = client
        .request(Method::GET, &format!("/v2/{repo}/blobs/{big_digest}"))
        .header("range", "bytes=1000000-2999999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), big[1_000_000..3_000_000]);
    let missing = Digest::sha256_of(b"never pushed");
    let (status, code) = error_of(get(client, &format!("/v2/{repo}/blobs/{missing}")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    // A layer is no manifest.
    let (status, code) =
        error_of(get(client, &format!("/v2/{repo}/manifests/{layer}")).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // Re-pointing the tag is seen at once.
    let manifest2 = push_image(client, repo, "two").await;
    let digest2 = Digest::sha256_of(&manifest2);
    let pushed = client
        .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest2)
        .await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let pulled = get(client, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(digest_of(&pulled), digest2);
    cluster.tags().put_tag(&tag, &digest, false).await.unwrap();
    let pulled = get(client, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(
        digest_of(&pulled),
        digest,
        "a tag put behind the proxy's back"
    );

    // A manifest whose layer was never pushed: refused, and nothing tagged.
    let broken = image_manifest((config, 15), &[(missing, 5)]);
    let refused = client
        .put_manifest(repo, "broken", MANIFEST_TYPE, &broken)
        .await;
    let (status, code) = error_of(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let broken_tag = TagName::new(repo, "broken").unwrap();
    assert_eq!(cluster.tags().get_tag(&broken_tag).await.unwrap(), None);
    let (status, _) = error_of(get(client, &format!("/v2/{repo}/manifests/broken")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A reference that is not a valid tag: 404 `MANIFEST_UNKNOWN` to a read, as OCI clients
    // expect, and 400 `MANIFEST_INVALID` to a push.
    let invalid = format!("/v2/{repo}/manifests/-bad");
    let (status, code) = error_of(get(client, &invalid).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    let head = client.request(Method::HEAD, &invalid).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let refused = client
        .put_manifest(repo, "-bad", MANIFEST_TYPE, &broken)
        .await;
    let (status, code) = error_of(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );

    // A cross-repository mount of a blob in the origins: 201, no upload.
    let mounted = client
        .request(
            Method::POST,
            &format!("/v2/other/app/blobs/uploads/?mount={layer}&from={repo}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), StatusCode::CREATED);
    assert_eq!(
        header(&mounted, "location"),
        format!("/v2/other/app/blobs/{layer}")
    );
    let unknown = client
        .request(
            Method::POST,
            &format!("/v2/other/app/blobs/uploads/?mount={missing}&from={repo}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        StatusCode::ACCEPTED,
        "an upload starts instead"
    );

    // An image index over two images.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {"mediaType": MANIFEST_TYPE, "digest": digest.to_string(), "size": manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": MANIFEST_TYPE, "digest": digest2.to_string(), "size": manifest2.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let pushed = client.put_manifest(repo, "multi", INDEX_TYPE, &index).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let pulled = get(client, &format!("/v2/{repo}/manifests/multi")).await;
    assert_eq!(header(&pulled, "content-type"), INDEX_TYPE);
    assert_eq!(pulled.bytes().await.unwrap(), index);
    // An index whose child is missing is refused.
    let orphan = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": missing.to_string(), "size": 5}],
    }))
    .unwrap();
    let (status, code) = error_of(
        client
            .put_manifest(repo, "orphan", INDEX_TYPE, &orphan)
            .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );

    // Deletes are off by default.
    let deleted = client
        .request(Method::DELETE, &format!("/v2/{repo}/manifests/v1"))
        .send()
        .await
        .unwrap();
    let (status, code) = error_of(deleted).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_and_catalog_paginate_and_tag_deletes_when_enabled() {
    let cluster = Cluster::start_with(|config| config.delete_tags = true).await;
    let client = &cluster.client;
    let manifest = push_image(client, "a/one", "x").await;
    for tag in ["t3", "t1", "t2"] {
        let pushed = client
            .put_manifest("a/one", tag, MANIFEST_TYPE, &manifest)
            .await;
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }
    for repo in ["a-b", "a/two", "b"] {
        let manifest = push_image(client, repo, repo).await;
        let pushed = client
            .put_manifest(repo, "latest", MANIFEST_TYPE, &manifest)
            .await;
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }

    let page = get(client, "/v2/a/one/tags/list?n=2").await;
    assert_eq!(
        header(&page, "link"),
        "</v2/a/one/tags/list?n=2&last=t2>; rel=\"next\""
    );
    let body = page.json().await.unwrap();
    assert_eq!(body["name"], "a/one");
    assert_eq!(body["tags"], serde_json::json!(["t1", "t2"]));
    let page = get(client, "/v2/a/one/tags/list?n=2&last=t2").await;
    assert_eq!(header(&page, "link"), "");
    assert_eq!(
        page.json().await.unwrap()["tags"],
        serde_json::json!(["t3"])
    );
    let (status, code) = error_of(get(client, "/v2/nothing/here/tags/list").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );

    let page = get(client, "/v2/_catalog?n=2").await;
    assert_eq!(
        header(&page, "link"),
        "</v2/_catalog?n=2&last=a/one>; rel=\"next\""
    );
    let body = page.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["a-b", "a/one"]));
    let page = get(client, "/v2/_catalog?n=2&last=a/one").await;
    assert_eq!(header(&page, "link"), "");
    let body = page.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["a/two", "b"]));
    let page = get(client, "/v2/_catalog?n=2&last=a-b").await;
    let body = page.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["a/one", "a/two"]));

    // With delete_tags, a tag can be deleted (the manifest stays); digests cannot.
    let deleted = client
        .request(Method::DELETE, "/v2/a/one/manifests/t1")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let (status, _) = error_of(get(client, "/v2/a/one/manifests/t1").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let digest = Digest::sha256_of(&manifest);
    assert_eq!(
        get(client, &format!("/v2/a/one/manifests/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    let by_digest = client
        .request(Method::DELETE, &format!("/v2/a/one/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), StatusCode::METHOD_NOT_ALLOWED);
    let again = client
        .request(Method::DELETE, "/v2/a/one/manifests/t1")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_listed_after_artifacts_with_a_subject_are_pushed() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let repo = "library/app";
    let manifest = push_image(client, repo, "base").await;
    let subject = (Digest::sha256_of(&manifest), manifest.len());
    let referrers = format!("/v2/{repo}/referrers/{}", subject.0);
    // None yet (the subject need not even exist).
    let empty = get(client, &referrers).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(
        empty.json().await.unwrap()["manifests"],
        serde_json::json!([])
    );
    assert_eq!(
        client
            .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest)
            .await
            .status(),
        StatusCode::CREATED
    );
    client.push_blob(repo, b"{}").await;
    let signature = client.push_blob(repo, b"a signature").await;
    let sbom = client.push_blob(repo, b"an sbom").await;

    // Three signatures pushed at once (serialised per subject), then an SBOM.
    let mut artifacts = Vec::new();
    for i in 0..3 {
        let mut doc: serde_json::Value = serde_json::from_slice(&artifact_manifest(
            subject,
            "application/vnd.example.signature",
            (signature, 11),
        ))
        .unwrap();
        doc["annotations"] = serde_json::json!({"n": i.to_string()});
        artifacts.push(serde_json::to_vec(&doc).unwrap());
    }
    let references: Vec<String> = artifacts
        .iter()
        .map(|bytes| Digest::sha256_of(bytes).to_string())
        .collect();
    let pushes = artifacts
        .iter()
        .zip(&references)
        .map(|(bytes, reference)| client.put_manifest(repo, reference, MANIFEST_TYPE, bytes));
    for pushed in futures::future::join_all(pushes).await {
        assert_eq!(pushed.status(), StatusCode::CREATED);
        assert_eq!(header(&pushed, "oci-subject"), subject.0.to_string());
    }
    let sbom_manifest = artifact_manifest(subject, "application/vnd.example.sbom", (sbom, 7));
    let sbom_reference = Digest::sha256_of(&sbom_manifest).to_string();
    // Pushing one twice lists it once.
    for _ in 0..2 {
        let pushed = client
            .put_manifest(repo, &sbom_reference, MANIFEST_TYPE, &sbom_manifest)
            .await;
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }

    let all = get(client, &referrers).await;
    assert_eq!(header(&all, "content-type"), INDEX_TYPE);
    let all = all.json().await.unwrap();
    let listed = all["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{all}");
    for bytes in artifacts.iter().chain([&sbom_manifest]) {
        let digest = Digest::sha256_of(bytes).to_string();
        let entry = listed
            .iter()
            .find(|d| d["digest"] == digest.as_str())
            .unwrap();
        assert_eq!(entry["size"], bytes.len());
        assert_eq!(entry["mediaType"], MANIFEST_TYPE);
    }
    let filtered = get(
        client,
        &format!("{referrers}?artifactType=application/vnd.example.sbom"),
    )
    .await;
    assert_eq!(header(&filtered, "oci-filters-applied"), "artifactType");
    let filtered = filtered.json().await.unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        filtered["manifests"][0]["digest"],
        Digest::sha256_of(&sbom_manifest).to_string()
    );
    assert_eq!(
        filtered["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );

    // The index lives in the origins behind the referrers tag schema's tag.
    let tag = TagName::new(repo, &format!("sha256-{}", subject.0.hex())).unwrap();
    let index_digest = cluster.tags().get_tag(&tag).await.unwrap().unwrap();
    let index = get(client, &format!("/v2/{repo}/manifests/{index_digest}")).await;
    assert_eq!(
        index.json().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    cluster.shutdown().await;
}

fn basic(name: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    format!("Basic {encoded}")
}

const REFUSED_LAYER: &[u8] = b"a layer nobody may push";
/// The tag of the manifest PUT that must be refused.
const REFUSED_TAG: &str = "refused";

/// What the refused writes of the authentication tests aim at, made by a client allowed to
/// write: an image tagged `v1` and an open upload session.
struct WriteTargets {
    repo: &'static str,
    manifest: Vec<u8>,
    /// The upload session's URL.
    location: String,
}

impl WriteTargets {
    async fn create(allowed: &Registry, repo: &'static str) -> Self {
        let manifest = push_image(allowed, repo, "allowed").await;
        let pushed = allowed
            .put_manifest(repo, "v1", MANIFEST_TYPE, &manifest)
            .await;
        assert_eq!(pushed.status(), StatusCode::CREATED);
        let session = allowed
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(session.status(), StatusCode::ACCEPTED);
        Self {
            repo,
            manifest,
            location: header(&session, "location"),
        }
    }

    /// A blob upload in one request.
    fn post_blob(&self, client: &Registry) -> reqwest::RequestBuilder {
        let digest = Digest::sha256_of(REFUSED_LAYER);
        client
            .request(
                Method::POST,
                &format!("/v2/{}/blobs/uploads/?digest={digest}", self.repo),
            )
            .body(REFUSED_LAYER)
    }

    /// Every kind of write, on `client`: uploads (in one request, opened, and the PATCH and
    /// closing PUT of the open session), a manifest PUT by tag, and deletes of the tag `v1`
    /// and of the session.
    fn writes(&self, client: &Registry) -> Vec<reqwest::RequestBuilder> {
        let (repo, location) = (self.repo, &self.location);
        let digest = Digest::sha256_of(REFUSED_LAYER);
        let separator = if location.contains('?') { '&' } else { '?' };
        vec![
            self.post_blob(client),
            client.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")),
            client
                .request(Method::PATCH, location)
                .header("content-type", "application/octet-stream")
                .body(REFUSED_LAYER),
            client
                .request(
                    Method::PUT,
                    &format!("{location}{separator}digest={digest}"),
                )
                .body(REFUSED_LAYER),
            client
                .request(Method::PUT, &format!("/v2/{repo}/manifests/{REFUSED_TAG}"))
                .header("content-type", MANIFEST_TYPE)
                .body(self.manifest.clone()),
            client.request(Method::DELETE, &format!("/v2/{repo}/manifests/v1")),
            client.request(Method::DELETE, location),
        ]
    }

    /// The refused writes left no trace: the blob is unknown, the session holds no bytes, the
    /// refused tag does not exist and `v1` still does. Read through `reader`.
    async fn assert_untouched(&self, cluster: &Cluster, reader: &Registry) {
        let repo = self.repo;
        let digest = Digest::sha256_of(REFUSED_LAYER);
        let head = reader
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        let session = get(reader, &self.location).await;
        assert_eq!(session.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&session, "range"), "0-0");
        let tag = |name: &str| TagName::new(repo, name).unwrap();
        assert_eq!(
            cluster.tags().get_tag(&tag(REFUSED_TAG)).await.unwrap(),
            None
        );
        assert_eq!(
            cluster.tags().get_tag(&tag("v1")).await.unwrap(),
            Some(Digest::sha256_of(&self.manifest))
        );
    }
}

/// Sends `request` on `client`; returns "METHOD URL" for messages, and the response.
async fn send(client: &Registry, request: reqwest::RequestBuilder) -> (String, reqwest::Response) {
    let request = request.build().unwrap();
    let what = format!("{} {}", request.method(), request.url());
    (what, client.http.execute(request).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_need_credentials_when_auth_is_configured() {
    let cluster = Cluster::start_with(|config| {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        config.auth.users = vec![UserConfig::new("ci", hash)];
        config.auth.tokens_sha256 = vec![Digest::sha256_of(b"robot-token").hex()];
        config.delete_tags = true;
    })
    .await;
    let client = &cluster.client;
    let authorized = basic("ci", "s3cret");
    let with =
        |request: reqwest::RequestBuilder, authorization: &Option<String>| match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
    let mut pushing = Registry::remote(client.base.clone(), tempfile::tempdir().unwrap());
    pushing.http = reqwest::Client::builder()
        .default_headers(
            [(reqwest::header::AUTHORIZATION, authorized.parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap();
    let targets = WriteTargets::create(&pushing, "library/app").await;

    for refused in [
        None,
        Some(basic("ci", "wrong")),
        Some(basic("nobody", "s3cret")),
        Some("Bearer nope".to_owned()),
    ] {
        for write in targets.writes(client) {
            let (what, response) = send(client, with(write, &refused)).await;
            assert_eq!(
                header(&response, "www-authenticate"),
                "Basic realm=\"kraken\"",
                "{what} with {refused:?}"
            );
            let (status, code) = error_of(response).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
                "{what} with {refused:?}"
            );
        }
    }
    targets.assert_untouched(&cluster, client).await;

    for allowed in [authorized.clone(), "Bearer robot-token".to_owned()] {
        let pushed = with(targets.post_blob(client), &Some(allowed))
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }
    // Reads are open; the ping asks for credentials so that clients send them.
    let blob = format!("/v2/library/app/blobs/{}", Digest::sha256_of(REFUSED_LAYER));
    assert_eq!(get(client, &blob).await.status(), StatusCode::OK);
    let ping = get(client, "/v2/").await;
    assert_eq!(ping.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(&pushing, "/v2/").await.status(), StatusCode::OK);
    assert_eq!(get(client, "/health").await.status(), StatusCode::OK);
    cluster.shutdown().await;
}

/// A registry client of `proxy` over HTTPS, presenting whatever certificate `tls` holds.
fn https_registry(proxy: &Proxy, tls: &ClientTlsConfig) -> Registry {
    let mut registry = Registry::remote(
        format!("https://{}", proxy.local_addr()),
        tempfile::tempdir().unwrap(),
    );
    registry.http = https_client(&tls.load().unwrap());
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_client_certificate_when_tls_asks_for_one_on_writes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path().join("pki"));
    let cluster =
        Cluster::start_with(|config| config.tls = Some(pki.server(ClientAuth::Writes))).await;
    let certified = https_registry(&cluster.proxy, &pki.client());
    let anonymous = https_registry(&cluster.proxy, &pki.anonymous_client());
    let targets = WriteTargets::create(&certified, "library/app").await;

    for write in targets.writes(&anonymous) {
        let (what, response) = send(&anonymous, write).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
    }
    // Reads are open to anyone who trusts the CA.
    targets.assert_untouched(&cluster, &anonymous).await;
    assert_eq!(get(&anonymous, "/v2/").await.status(), StatusCode::OK);
    let pulled = get(&anonymous, "/v2/library/app/manifests/v1").await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), targets.manifest);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_an_image_into_and_out_of_the_proxy() {
    if require_package("skopeo", "skopeo").is_none() {
        return;
    }
    let cluster = Cluster::start_with(|config| {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        config.auth.users = vec![UserConfig::new("ci", hash)];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let image = write_layout(&layout, "v1");
    let host = cluster.proxy.local_addr().to_string();
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds=ci:s3cret",
        "--preserve-digests",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/test/image:v1"),
    ])
    .await;
    let tag = TagName::new("test/image", "v1").unwrap();
    assert_eq!(
        cluster.tags().get_tag(&tag).await.unwrap(),
        Some(image.manifest)
    );
    // Into a second repository (mounting the blobs), and back out of it.
    let out = dir.path().join("out");
    copy_across_and_out(&host, Some("ci:s3cret"), &out, &image).await;
    cluster.shutdown().await;
}

/// A client of `cluster`'s proxy sending `authorization` with every request.
fn client_with(cluster: &Cluster, authorization: &str) -> Registry {
    let mut client = Registry::remote(cluster.client.base.clone(), tempfile::tempdir().unwrap());
    client.http = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                authorization.parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_a_repository_pattern_pushes_only_there() {
    let cluster = Cluster::start_with(|config| {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        config.auth.users = vec![
            UserConfig::new("team-a", hash.clone()),
            UserConfig::new("ops", hash),
        ];
        config.auth.access = vec![
            AccessRule::new("team-a", "team-a/.*", AccessLevel::Write),
            AccessRule::new("team-a", "base/.*", AccessLevel::Read),
        ];
        config.auth.anonymous_reads = false;
    })
    .await;
    let team_a = client_with(&cluster, &basic("team-a", "s3cret"));
    let ops = client_with(&cluster, &basic("ops", "s3cret"));

    team_a.push_blob("team-a/app", b"team a's layer").await;
    let refused = team_a
        .request(
            Method::POST,
            &format!(
                "/v2/team-b/x/blobs/uploads/?digest={}",
                Digest::sha256_of(b"intruder")
            ),
        )
        .body(&b"intruder"[..])
        .send()
        .await
        .unwrap();
    let (status, code) = error_of(refused).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // Readable but not writable; and a user without rules may do everything.
    let base = ops.push_blob("base/os", b"base layer").await;
    let read = get(&team_a, &format!("/v2/base/os/blobs/{base}")).await;
    assert_eq!(read.status(), StatusCode::OK);
    let write = team_a
        .request(Method::POST, "/v2/base/os/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    let other = get(&team_a, &format!("/v2/team-b/x/blobs/{base}")).await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    ops.push_blob("team-b/x", b"ops may").await;
    cluster.shutdown().await;
}

/// Hundreds of wrong passwords from one address: past the per-address limit they are
/// answered `429` with `Retry-After` without hashing, while anonymous blob reads and a push
/// with good (cached) credentials go on promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_is_limited_and_does_not_slow_blob_traffic() {
    let cluster = Cluster::start_with(|config| {
        // The cost real htpasswd files use: tens of milliseconds a check.
        let hash = bcrypt::hash("s3cret", 10).unwrap();
        config.auth.users = vec![UserConfig::new("ci", hash)];
        config.auth.max_failures_per_minute = 10;
    })
    .await;
    let pusher = client_with(&cluster, &basic("ci", "s3cret"));
    let data = pseudo_random_bytes(4 << 20, 11);
    let digest = pusher.push_blob("library/app", &data).await;
    let blob = format!("/v2/library/app/blobs/{digest}");

    let guessers: Vec<Registry> = (0..300)
        .map(|i| client_with(&cluster, &basic("ci", &format!("guess{i}"))))
        .collect();
    let flood = guessers.into_iter().map(|guesser| async move {
        let response = guesser
            .request(Method::POST, "/v2/library/app/blobs/uploads/")
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().contains_key("retry-after");
        (response.status(), retry_after)
    });
    let flood = tokio::spawn(
        futures::stream::iter(flood)
            .buffer_unordered(32)
            .collect::<Vec<_>>(),
    );
    let mut slowest = Duration::ZERO;
    for i in 0..10u8 {
        let started = std::time::Instant::now();
        let read = get(&cluster.client, &blob).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.bytes().await.unwrap().len(), data.len());
        pusher.push_blob("library/app", &[i; 1024]).await;
        slowest = slowest.max(started.elapsed());
    }
    let answers = flood.await.unwrap();
    let limited = answers
        .iter()
        .filter(|(status, retry_after)| *status == StatusCode::TOO_MANY_REQUESTS && *retry_after)
        .count();
    let refused = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused + limited, answers.len(), "{answers:?}");
    assert_eq!(refused, 10, "wrong passwords hashed");
    assert!(
        slowest < Duration::from_secs(2),
        "a read and push took {slowest:?}"
    );
    cluster.shutdown().await;
}

/// A blob pushed whole in one request goes on to the origin as it arrives (the proxy writes
/// it nowhere and does not hash it): across the proxy's chunks to the origin it arrives
/// intact, by a single `POST` and by `POST` + `PUT`. Bytes that do not hash to the digest
/// pushed — over more than one of the proxy's chunks to the origin, so that the origin
/// receives all of them and its commit is what refuses them — are answered
/// `DIGEST_INVALID` with the digest they have, and stored nowhere: not in the origin's store,
/// not in its backends, not left in its uploads. A body cut short, inside a chunk or right
/// after a whole one, is refused too and stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_blob_pushes_stream_through_the_proxy_verified() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let repo = "library/stream";
    // More than one 32 MiB chunk to the origin, in frames that do not line up with it.
    let big = pseudo_random_bytes((32 << 20) + 777_777, 11);
    let digest = client.push_blob(repo, &big).await;
    let pulled = get(client, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert!(
        pulled.bytes().await.unwrap() == big,
        "the blob came back different"
    );

    let small = pseudo_random_bytes(100_000, 12);
    let small_digest = Digest::sha256_of(&small);
    let started = client
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = header(&started, "location");
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = client
        .request(
            Method::PUT,
            &format!("{location}{separator}digest={small_digest}"),
        )
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let pulled = get(client, &format!("/v2/{repo}/blobs/{small_digest}")).await;
    assert_eq!(pulled.bytes().await.unwrap(), small);

    // Bytes that hash to something else, all of them sent on to the origin: refused with
    // the digest they have, and nowhere to be found.
    let lie = pseudo_random_bytes((32 << 20) + 4_321, 13);
    let actual = Digest::sha256_of(&lie);
    let claimed = Digest::sha256_of(b"something else");
    let refused = client
        .request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={claimed}"),
        )
        .body(lie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    let error = &body["errors"][0];
    assert_eq!(error["code"], "DIGEST_INVALID", "{body}");
    assert_eq!(error["detail"]["actual"], actual.to_string(), "{body}");
    assert_eq!(error["detail"]["expected"], claimed.to_string(), "{body}");
    for digest in [claimed, actual] {
        let (status, _) = error_of(get(client, &format!("/v2/{repo}/blobs/{digest}")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{digest} was stored");
        for dir in [
            &cluster.origin_data,
            &cluster.library_backend,
            &cluster.other_backend,
        ] {
            assert!(!holds(dir, &digest), "{digest} is under {}", dir.display());
        }
    }
    let uploads = cluster.origin_data.join("uploads");
    let left = std::fs::read_dir(&uploads)
        .unwrap_or_else(|e| panic!("{}: {e}", uploads.display()))
        .count();
    assert_eq!(
        left, 0,
        "the refused upload was left in the origin's uploads"
    );

    // Bodies shorter than their Content-Length, cut inside the first chunk to the origin and
    // right after it: the connection breaks, nothing is stored.
    let short = pseudo_random_bytes((32 << 20) + 1_000, 14);
    let short_digest = Digest::sha256_of(&short);
    for cut_at in [1 << 20, 32 << 20] {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        tx.unbounded_send(Ok(short[..cut_at].to_vec())).unwrap();
        tx.unbounded_send(Err(std::io::Error::other("client gave up")))
            .unwrap();
        let cut = client
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={short_digest}"),
            )
            .header("content-length", short.len())
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await;
        assert!(
            cut.is_err() || !cut.unwrap().status().is_success(),
            "a body cut at {cut_at} was accepted"
        );
        let (status, _) =
            error_of(get(client, &format!("/v2/{repo}/blobs/{short_digest}")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "cut at {cut_at}");
        assert!(
            !holds(&cluster.origin_data, &short_digest),
            "cut at {cut_at}"
        );
    }
    cluster.shutdown().await;
}
