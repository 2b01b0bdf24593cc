//! Every flow of the `/v2/` API over real TCP with a real client, against `LocalRegistry`.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use kraken_core::Digest;
use kraken_registry::oci::{
    ByteStream, LocalRegistry, Operation, Reference, RegistryStorage, RepoName, StorageError,
    StorageResult, StoredManifest,
};
use kraken_testkit::oci::{INDEX_TYPE, MANIFEST_TYPE};
use reqwest::{Method, StatusCode};
use support::oci::*;

#[tokio::test]
async fn base_endpoint_answers_with_the_api_version() {
    let registry = Registry::start().await;
    for method in [Method::GET, Method::HEAD] {
        let response = registry.request(method, "/v2/").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn monolithic_uploads_single_request_and_post_put() {
    let registry = Registry::start().await;
    let data = b"a monolithic blob".to_vec();
    let digest = registry.push_blob("lib/mono", &data).await;

    let head = registry
        .request(Method::HEAD, &format!("/v2/lib/mono/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), data.len().to_string());
    assert_eq!(header(&head, "docker-content-digest"), digest.to_string());
    let get = registry
        .request(Method::GET, &format!("/v2/lib/mono/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.bytes().await.unwrap(), data);

    // POST, then PUT with the whole body.
    let other = b"post then put".to_vec();
    let post = registry
        .request(Method::POST, "/v2/lib/mono/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&post, "range"), "0-0");
    assert!(!header(&post, "docker-upload-uuid").is_empty());
    let location = header(&post, "location");
    assert!(location.starts_with("/v2/lib/mono/blobs/uploads/"));
    let other_digest = Digest::sha256_of(&other);
    let put = registry
        .request(Method::PUT, &format!("{location}?digest={other_digest}"))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(
        header(&put, "location"),
        format!("/v2/lib/mono/blobs/{other_digest}")
    );
    assert_eq!(registry.upload_files(), 0, "the session is gone");
    registry.shutdown().await;
}

#[tokio::test]
async fn chunked_upload_in_order_with_status_and_an_out_of_order_chunk() {
    let registry = Registry::start().await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let post = registry
        .request(Method::POST, "/v2/chunked/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = header(&post, "location");
    let patch = |range: String, body: Vec<u8>| {
        registry
            .request(Method::PATCH, &location)
            .header("content-range", range)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let first = patch("0-999".into(), data[..1000].to_vec()).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&first, "range"), "0-999");
    let location = header(&first, "location");

    let status = registry
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), "0-999");

    // A chunk that skips ahead is refused and changes nothing.
    let skip = patch("2000-2999".into(), data[2000..].to_vec())
        .await
        .unwrap();
    assert_eq!(skip.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&skip, "range"), "0-999");
    assert_eq!(error_of(skip).await.1, "RANGE_INVALID");

    let second = patch("1000-1999".into(), data[1000..2000].to_vec())
        .await
        .unwrap();
    assert_eq!(header(&second, "range"), "0-1999");
    // The last chunk comes with the PUT.
    let put = registry
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = registry
        .request(Method::GET, &format!("/v2/chunked/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.bytes().await.unwrap(), data);
    registry.shutdown().await;
}

#[tokio::test]
async fn streamed_patch_without_content_range_then_cancel_another() {
    let registry = Registry::start().await;
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..50)
        .map(|i| Ok(Bytes::from(vec![i as u8; 10_000])))
        .collect();
    let data: Vec<u8> = (0..50).flat_map(|i| vec![i as u8; 10_000]).collect();
    let digest = Digest::sha256_of(&data);
    let post = registry
        .request(Method::POST, "/v2/streamed/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = header(&post, "location");
    let patch = registry
        .request(Method::PATCH, &location)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&patch, "range"), format!("0-{}", data.len() - 1));
    let put = registry
        .request(
            Method::PUT,
            &format!("{}?digest={digest}", header(&patch, "location")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    // Cancel: the session and its file go away.
    let post = registry
        .request(Method::POST, "/v2/streamed/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = header(&post, "location");
    registry
        .request(Method::PATCH, &location)
        .body(b"abandoned".to_vec())
        .send()
        .await
        .unwrap();
    let delete = registry
        .request(Method::DELETE, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let status = registry
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(status).await,
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into())
    );
    assert_eq!(registry.upload_files(), 0);
    registry.shutdown().await;
}

#[tokio::test]
async fn blob_ranges() {
    let registry = Registry::start().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let digest = registry.push_blob("ranged", &data).await;
    let path = format!("/v2/ranged/blobs/{digest}");
    for (range, start, end) in [
        ("bytes=0-9", 0, 10),
        ("bytes=500-", 500, 1000),
        ("bytes=-500", 500, 1000),
        ("bytes=990-5000", 990, 1000),
    ] {
        let response = registry
            .request(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes {start}-{}/1000", end - 1)
        );
        assert_eq!(response.bytes().await.unwrap(), data[start..end], "{range}");
    }
    let unsatisfiable = registry
        .request(Method::GET, &path)
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&unsatisfiable, "content-range"), "bytes */1000");
    assert_eq!(
        error_of(unsatisfiable).await,
        (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID".into())
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn cross_repository_mount_and_its_fallback() {
    let registry = Registry::start().await;
    let digest = registry.push_blob("source/repo", b"shared layer").await;
    let mount = registry
        .request(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=source/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), StatusCode::CREATED);
    assert_eq!(
        header(&mount, "location"),
        format!("/v2/target/blobs/{digest}")
    );
    let head = registry
        .request(Method::HEAD, &format!("/v2/target/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // The source lacks the blob: an ordinary upload starts instead.
    let missing = Digest::sha256_of(b"nowhere");
    let fallback = registry
        .request(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={missing}&from=source/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fallback.status(), StatusCode::ACCEPTED);
    assert!(header(&fallback, "location").starts_with("/v2/target/blobs/uploads/"));
    registry.shutdown().await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest_tags_and_deletes() {
    let registry = Registry::start().await;
    let manifest = push_image(&registry, "app", "one").await;
    let digest = Digest::sha256_of(&manifest);
    let put = registry
        .put_manifest("app", "v1", MANIFEST_TYPE, &manifest)
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(header(&put, "docker-content-digest"), digest.to_string());
    assert_eq!(
        header(&put, "location"),
        format!("/v2/app/manifests/{digest}")
    );

    let get = registry
        .request(Method::GET, "/v2/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "content-type"), MANIFEST_TYPE);
    assert_eq!(header(&get, "docker-content-digest"), digest.to_string());
    assert_eq!(get.bytes().await.unwrap(), manifest);
    let head = registry
        .request(Method::HEAD, &format!("/v2/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), manifest.len().to_string());

    // By digest, with extra tags; and a wrong digest.
    let put = registry
        .put_manifest(
            "app",
            &format!("{digest}?tag=v2&tag=latest"),
            MANIFEST_TYPE,
            &manifest,
        )
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let wrong = Digest::sha256_of(b"other");
    let put = registry
        .put_manifest("app", &wrong.to_string(), MANIFEST_TYPE, &manifest)
        .await;
    assert_eq!(
        error_of(put).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // An index over the image: children must exist.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": digest.to_string(), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let put = registry
        .put_manifest("app", "multi", INDEX_TYPE, &index)
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);

    let tags: serde_json::Value = registry
        .request(Method::GET, "/v2/app/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "app", "tags": ["latest", "multi", "v1", "v2"]})
    );

    // Deleting a tag keeps the manifest; deleting the manifest drops its tags.
    let delete = registry
        .request(Method::DELETE, "/v2/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::ACCEPTED);
    let gone = registry
        .request(Method::GET, "/v2/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(gone).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let delete = registry
        .request(Method::DELETE, &format!("/v2/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::ACCEPTED);
    for reference in ["v1", "latest", &digest.to_string()] {
        let response = registry
            .request(Method::GET, &format!("/v2/app/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{reference}");
    }

    // Blob delete.
    let blob = registry.push_blob("app", b"to delete").await;
    let delete = registry
        .request(Method::DELETE, &format!("/v2/app/blobs/{blob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::ACCEPTED);
    let head = registry
        .request(Method::HEAD, &format!("/v2/app/blobs/{blob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    registry.shutdown().await;
}

#[tokio::test]
async fn tag_list_and_catalog_paginate_with_link_headers() {
    let registry = Registry::start().await;
    let manifest = push_image(&registry, "paged", "p").await;
    for tag in ["e", "a", "d", "b", "c"] {
        let put = registry
            .put_manifest("paged", tag, MANIFEST_TYPE, &manifest)
            .await;
        assert_eq!(put.status(), StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut next = Some("/v2/paged/tags/list?n=2".to_owned());
    while let Some(path) = next {
        let response = registry.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let link = header(&response, "link");
        next = (!link.is_empty()).then(|| {
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        let body: serde_json::Value = response.json().await.unwrap();
        let tags = body["tags"].as_array().unwrap();
        assert!(tags.len() <= 2);
        seen.extend(tags.iter().map(|t| t.as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let after: serde_json::Value = registry
        .request(Method::GET, "/v2/paged/tags/list?last=c")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["tags"], serde_json::json!(["d", "e"]));

    for repo in ["x/one", "x/two", "y"] {
        registry.push_blob(repo, b"catalogued").await;
    }
    let first = registry
        .request(Method::GET, "/v2/_catalog?n=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&first, "link"),
        "</v2/_catalog?n=2&last=x/one>; rel=\"next\""
    );
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["paged", "x/one"]));
    let rest: serde_json::Value = registry
        .request(Method::GET, "/v2/_catalog?n=2&last=x/one")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["repositories"], serde_json::json!(["x/two", "y"]));
    registry.shutdown().await;
}

#[tokio::test]
async fn referrers_list_manifests_with_a_subject_and_filter_by_artifact_type() {
    let registry = Registry::start().await;
    let image = push_image(&registry, "signed", "s").await;
    let image_digest = Digest::sha256_of(&image);
    registry
        .put_manifest("signed", "v1", MANIFEST_TYPE, &image)
        .await;
    let empty = registry.push_blob("signed", b"{}").await;
    let signature = registry.push_blob("signed", b"signature bytes").await;
    let artifact = |artifact_type: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": signature.to_string(), "size": 15}],
            "subject": {"mediaType": MANIFEST_TYPE, "digest": image_digest.to_string(), "size": image.len()},
            "annotations": {"purpose": artifact_type},
        }))
        .unwrap()
    };
    let sig = artifact("application/vnd.example.signature");
    let sbom = artifact("application/vnd.example.sbom");
    for doc in [&sig, &sbom] {
        let put = registry
            .put_manifest(
                "signed",
                &Digest::sha256_of(doc).to_string(),
                MANIFEST_TYPE,
                doc,
            )
            .await;
        assert_eq!(put.status(), StatusCode::CREATED);
        assert_eq!(header(&put, "oci-subject"), image_digest.to_string());
    }
    let response = registry
        .request(Method::GET, &format!("/v2/signed/referrers/{image_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), INDEX_TYPE);
    assert_eq!(header(&response, "oci-filters-applied"), "");
    let index: serde_json::Value = response.json().await.unwrap();
    assert_eq!(index["mediaType"], INDEX_TYPE);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let sig_entry = manifests
        .iter()
        .find(|m| m["digest"] == Digest::sha256_of(&sig).to_string())
        .unwrap();
    assert_eq!(
        sig_entry["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(
        sig_entry["annotations"]["purpose"],
        "application/vnd.example.signature"
    );

    let filtered = registry
        .request(
            Method::GET,
            &format!(
                "/v2/signed/referrers/{image_digest}?artifactType=application%2Fvnd.example.sbom"
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&filtered, "oci-filters-applied"), "artifactType");
    let index: serde_json::Value = filtered.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["digest"],
        Digest::sha256_of(&sbom).to_string()
    );

    // A subject nobody refers to: an empty index, not a 404.
    let none = registry
        .request(
            Method::GET,
            &format!("/v2/signed/referrers/{}", Digest::sha256_of(b"x")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::OK);
    let index: serde_json::Value = none.json().await.unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));

    // Deleting a referrer removes it from the list.
    registry
        .request(
            Method::DELETE,
            &format!("/v2/signed/manifests/{}", Digest::sha256_of(&sig)),
        )
        .send()
        .await
        .unwrap();
    let index: serde_json::Value = registry
        .request(Method::GET, &format!("/v2/signed/referrers/{image_digest}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    registry.shutdown().await;
}

/// A pull-only storage as the agent's will be: reads from a `LocalRegistry`, writes denied
/// by policy, deletes and listings left to the trait's `Unsupported` defaults.
#[derive(Debug)]
struct PullOnly(LocalRegistry);

#[async_trait::async_trait]
impl RegistryStorage for PullOnly {
    fn allows(&self, operation: Operation) -> StorageResult<()> {
        match operation {
            Operation::PushBlob | Operation::PushManifest | Operation::MountBlob => {
                Err(StorageError::Denied(operation))
            }
            _ => Ok(()),
        }
    }

    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64> {
        self.0.blob_stat(repo, digest).await
    }

    async fn blob_read(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream> {
        self.0.blob_read(repo, digest, range).await
    }

    async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<StoredManifest> {
        self.0.manifest_get(repo, reference).await
    }
}

#[tokio::test]
async fn a_pull_only_storage_denies_pushes_and_lacks_deletes_and_listings() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalRegistry::open(dir.path().join("registry")).unwrap();
    // Content pushed beforehand through a read-write registry on the same directory.
    let writer = Registry::start_storage(
        tempfile::tempdir().unwrap(),
        Arc::new(local.clone()),
        |_| {},
    )
    .await;
    let manifest = push_image(&writer, "pull/only", "r").await;
    writer
        .put_manifest("pull/only", "v1", MANIFEST_TYPE, &manifest)
        .await;
    writer.shutdown().await;

    let registry = Registry::start_storage(dir, Arc::new(PullOnly(local)), |_| {}).await;
    let get = registry
        .request(Method::GET, "/v2/pull/only/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(get.bytes().await.unwrap(), manifest);
    let before = registry.snapshot();
    let cases = [
        (
            Method::POST,
            "/v2/pull/only/blobs/uploads/".to_owned(),
            StatusCode::FORBIDDEN,
            "DENIED",
        ),
        (
            Method::PUT,
            "/v2/pull/only/manifests/v2".to_owned(),
            StatusCode::FORBIDDEN,
            "DENIED",
        ),
        (
            Method::DELETE,
            "/v2/pull/only/manifests/v1".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::DELETE,
            format!("/v2/pull/only/blobs/{}", Digest::sha256_of(b"x")),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::GET,
            "/v2/pull/only/tags/list".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::GET,
            "/v2/_catalog".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
    ];
    for (method, path, status, code) in cases {
        let response = registry
            .request(method.clone(), &path)
            .body(manifest.clone())
            .header("content-type", MANIFEST_TYPE)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (status, code.into()),
            "{method} {path}"
        );
    }
    assert_eq!(registry.snapshot(), before);
    assert_eq!(registry.upload_files(), 0);
    registry.shutdown().await;
}
