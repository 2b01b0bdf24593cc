//! Bad input to the `/v2/` API: each request gets the spec's status and error code, and
//! nothing is stored.

mod support;

use kraken_core::ByteSize;
use kraken_core::Digest;
use kraken_testkit::oci::{INDEX_TYPE, MANIFEST_TYPE, image_manifest};
use reqwest::{Method, StatusCode};
use support::oci::*;

struct Case {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(method: Method, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        status,
        code,
    }
}

impl Case {
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[tokio::test]
async fn bad_requests_get_spec_errors_and_store_nothing() {
    let registry = Registry::start_with(|c| c.max_blob_size = ByteSize(1 << 20)).await;
    // Something to refer to: a blob and an image in `seed`.
    let blob = registry.push_blob("seed", b"seed blob").await;
    let image = push_image(&registry, "seed", "x").await;
    assert_eq!(
        registry
            .put_manifest("seed", "v1", MANIFEST_TYPE, &image)
            .await
            .status(),
        StatusCode::CREATED
    );
    let before = registry.snapshot();
    let unknown = Digest::sha256_of(b"unknown");
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let missing_blob_manifest = image_manifest((unknown, 3), &[(blob, 9)]);
    let get = Method::GET;
    let (post, put, patch) = (Method::POST, Method::PUT, Method::PATCH);
    let cases = vec![
        // Names.
        case(get.clone(), "/v2/Upper/tags/list", 400, "NAME_INVALID"),
        case(
            get.clone(),
            "/v2/a..b/manifests/latest",
            400,
            "NAME_INVALID",
        ),
        case(
            get.clone(),
            "/v2/a//b/manifests/latest",
            400,
            "NAME_INVALID",
        ),
        case(
            get.clone(),
            format!("/v2/{}/tags/list", "a".repeat(256)),
            400,
            "NAME_INVALID",
        ),
        case(post.clone(), "/v2/_x/blobs/uploads/", 400, "NAME_INVALID"),
        case(get.clone(), "/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        case(get.clone(), "/v2/seed/nothing/here", 404, "NAME_UNKNOWN"),
        // References and digests.
        // A reference no tag can have names no manifest: 404 to a read or a delete (a
        // `PUT` to it, below, is 400). A `HEAD` answer has no body, hence no code.
        case(
            get.clone(),
            "/v2/seed/manifests/-bad",
            404,
            "MANIFEST_UNKNOWN",
        ),
        case(Method::HEAD, "/v2/seed/manifests/-bad", 404, ""),
        case(
            Method::DELETE,
            "/v2/seed/manifests/-bad",
            404,
            "MANIFEST_UNKNOWN",
        ),
        case(
            get.clone(),
            "/v2/seed/manifests/latest",
            404,
            "MANIFEST_UNKNOWN",
        ),
        case(
            get.clone(),
            "/v2/seed/manifests/sha256:abc",
            400,
            "DIGEST_INVALID",
        ),
        case(
            get.clone(),
            "/v2/seed/blobs/sha256:xyz",
            400,
            "DIGEST_INVALID",
        ),
        case(get.clone(), "/v2/seed/blobs/md5", 400, "DIGEST_INVALID"),
        case(
            get.clone(),
            format!("/v2/seed/blobs/{sha512}"),
            400,
            "UNSUPPORTED",
        ),
        case(
            get.clone(),
            format!("/v2/seed/blobs/{unknown}"),
            404,
            "BLOB_UNKNOWN",
        ),
        case(
            get.clone(),
            format!("/v2/other/blobs/{blob}"),
            404,
            "BLOB_UNKNOWN",
        ),
        case(
            get.clone(),
            "/v2/seed/referrers/sha256:00",
            400,
            "DIGEST_INVALID",
        ),
        // Ranges.
        case(
            get.clone(),
            format!("/v2/seed/blobs/{blob}"),
            416,
            "RANGE_INVALID",
        )
        .header("range", "bytes=9-"),
        case(
            get.clone(),
            format!("/v2/seed/blobs/{blob}"),
            416,
            "RANGE_INVALID",
        )
        .header("range", "bytes=-0"),
        // Pagination.
        case(
            get.clone(),
            "/v2/seed/tags/list?n=abc",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        case(
            get.clone(),
            "/v2/_catalog?n=-1",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        // Single-request uploads.
        case(
            post.clone(),
            "/v2/seed/blobs/uploads/?digest=sha256:bad",
            400,
            "DIGEST_INVALID",
        )
        .body("hello"),
        case(
            post.clone(),
            format!("/v2/seed/blobs/uploads/?digest={unknown}"),
            400,
            "DIGEST_INVALID",
        )
        .body("not the content of that digest"),
        case(
            post.clone(),
            format!("/v2/seed/blobs/uploads/?digest={sha512}"),
            400,
            "UNSUPPORTED",
        )
        .body("hello"),
        case(
            post.clone(),
            format!(
                "/v2/new/blobs/uploads/?digest={}",
                Digest::sha256_of(&vec![7u8; (1 << 20) + 1])
            ),
            413,
            "SIZE_INVALID",
        )
        .body(vec![7u8; (1 << 20) + 1]),
        // (A Content-Length that is not a number never reaches the handler: hyper refuses it.)
        case(
            post.clone(),
            "/v2/new/blobs/uploads/?mount=sha256:bad&from=seed",
            400,
            "DIGEST_INVALID",
        ),
        case(
            post.clone(),
            format!("/v2/new/blobs/uploads/?mount={blob}&from=Bad"),
            400,
            "NAME_INVALID",
        ),
        // Sessions that do not exist.
        case(
            patch.clone(),
            "/v2/seed/blobs/uploads/0123456789abcdef0123456789abcdef",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .body("x"),
        case(
            put.clone(),
            format!("/v2/seed/blobs/uploads/../../x?digest={blob}"),
            404,
            "NAME_UNKNOWN",
        ),
        case(
            put.clone(),
            format!("/v2/seed/blobs/uploads/nope?digest={blob}"),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        case(
            Method::DELETE,
            "/v2/seed/blobs/uploads/nope",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        // Manifests.
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            400,
            "MANIFEST_INVALID",
        )
        .header("content-type", MANIFEST_TYPE)
        .body("{not json"),
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            400,
            "MANIFEST_INVALID",
        )
        .header("content-type", "application/vnd.example.unknown")
        .body(image.clone()),
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            400,
            "MANIFEST_INVALID",
        )
        .header("content-type", INDEX_TYPE)
        .body(image.clone()),
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            400,
            "MANIFEST_INVALID",
        )
        .body(br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.to_vec()),
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            400,
            "MANIFEST_BLOB_UNKNOWN",
        )
        .header("content-type", MANIFEST_TYPE)
        .body(missing_blob_manifest),
        case(
            put.clone(),
            "/v2/seed/manifests/bad",
            413,
            "MANIFEST_INVALID",
        )
        .header("content-type", MANIFEST_TYPE)
        .body(vec![b' '; 5 << 20]),
        case(
            put.clone(),
            "/v2/seed/manifests/-bad",
            400,
            "MANIFEST_INVALID",
        )
        .header("content-type", MANIFEST_TYPE)
        .body(image.clone()),
        case(
            put.clone(),
            "/v2/seed/manifests/v2?tag=.bad",
            400,
            "MANIFEST_INVALID",
        )
        .header("content-type", MANIFEST_TYPE)
        .body(image.clone()),
        // Methods.
        case(post.clone(), "/v2/seed/manifests/v1", 405, "UNSUPPORTED"),
        case(Method::DELETE, "/v2/seed/tags/list", 405, "UNSUPPORTED"),
    ];
    for case in cases {
        let mut request = registry
            .request(case.method.clone(), &case.path)
            .body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let what = format!("{} {}", case.method, case.path);
        assert_eq!(
            error_of(response).await,
            (
                StatusCode::from_u16(case.status).unwrap(),
                case.code.to_owned()
            ),
            "{what}"
        );
        assert_eq!(registry.snapshot(), before, "{what} stored something");
        assert_eq!(registry.upload_files(), 0, "{what} left an upload");
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn bad_chunks_leave_the_session_as_it_was() {
    let registry = Registry::start_with(|c| c.max_blob_size = ByteSize(1000)).await;
    let before = registry.snapshot();
    let post = registry
        .request(Method::POST, "/v2/chunks/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = header(&post, "location");
    let good = registry
        .request(Method::PATCH, &location)
        .header("content-range", "0-4")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::ACCEPTED);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("5-", b"x".to_vec(), 400, "BLOB_UPLOAD_INVALID"),
        ("five-six", b"x".to_vec(), 400, "BLOB_UPLOAD_INVALID"),
        ("9-5", b"x".to_vec(), 400, "BLOB_UPLOAD_INVALID"),
        ("0-4", b"again".to_vec(), 416, "RANGE_INVALID"),
        ("6-7", b"xy".to_vec(), 416, "RANGE_INVALID"),
        ("5-9", b"abc".to_vec(), 400, "SIZE_INVALID"),
        ("5-6", b"abcdef".to_vec(), 400, "SIZE_INVALID"),
        ("5-1004", vec![1; 1000], 413, "SIZE_INVALID"),
    ];
    for (range, body, status, code) in cases {
        let response = registry
            .request(Method::PATCH, &location)
            .header("content-range", range)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::from_u16(status).unwrap(), code.to_owned()),
            "Content-Range {range}"
        );
        let status = registry
            .request(Method::GET, &location)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&status, "range"),
            "0-4",
            "after Content-Range {range}"
        );
    }
    // A streamed chunk past the size limit.
    let response = registry
        .request(Method::PATCH, &location)
        .body(vec![0u8; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID".into())
    );
    // Finishing without a digest keeps the session; with a wrong one ends it, storing nothing.
    let response = registry
        .request(Method::PUT, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let wrong = Digest::sha256_of(b"not hello");
    let response = registry
        .request(Method::PUT, &format!("{location}?digest={wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let gone = registry
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(registry.snapshot(), before);
    assert_eq!(registry.upload_files(), 0);
    registry.shutdown().await;
}

#[tokio::test]
async fn too_many_uploads_is_toomanyrequests() {
    let registry = Registry::start_with(|c| c.max_uploads = 2).await;
    for _ in 0..2 {
        let post = registry
            .request(Method::POST, "/v2/busy/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), StatusCode::ACCEPTED);
    }
    let third = registry
        .request(Method::POST, "/v2/busy/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(third).await,
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS".into())
    );
    registry.shutdown().await;
}
