//! The registry backend against a real CNCF Distribution (`docker-registry`), and against
//! in-test registries for the auth flows: docker-registry's token auth needs a real token
//! issuer with signing certificates, and its htpasswd needs bcrypt, neither installed here.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kraken_backends::{
    Backend, ByteRange, Error, ListOptions, RegistryBackend, RegistryConfig, UploadBody,
    collect_bytes,
};
use kraken_core::Digest;
use kraken_testkit::oci::{MANIFEST_TYPE, push_blob, push_manifest};
use kraken_testkit::{Distribution, TestServer};
use support::response;

const REPO: &str = "kraken/test";

async fn read(backend: &dyn Backend, name: &str, range: Option<ByteRange>) -> Vec<u8> {
    let stream = backend.download(REPO, name, range).await.expect("download");
    collect_bytes(stream, 1 << 20).await.expect("read").to_vec()
}

#[tokio::test]
async fn reads_blobs_and_tags_from_cncf_distribution() {
    let Some(registry) = Distribution::start_if_installed() else {
        return;
    };
    kraken_backends::install_crypto_provider();
    let client = reqwest::Client::new();
    let layer: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_digest = push_blob(&client, &registry.url(), REPO, &layer).await;
    let config_digest = push_blob(&client, &registry.url(), REPO, config).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let url = registry.url();
    push_manifest(
        &client,
        &url,
        REPO,
        "v1",
        MANIFEST_TYPE,
        manifest.as_bytes(),
    )
    .await;
    let manifest_digest = Digest::sha256_of(manifest.as_bytes());
    push_manifest(
        &client,
        &url,
        REPO,
        "v2",
        MANIFEST_TYPE,
        manifest.as_bytes(),
    )
    .await;

    let backend = RegistryBackend::new(RegistryConfig::new(registry.url())).unwrap();
    let layer_name = layer_digest.to_string();
    assert_eq!(backend.stat(REPO, &layer_name).await.unwrap().size, 5000);
    assert_eq!(read(&backend, &layer_name, None).await, layer);
    let range = ByteRange::new(1000, 24);
    assert_eq!(read(&backend, &layer_name, range).await, &layer[1000..1024]);
    let past_end = backend
        .download(REPO, &layer_name, ByteRange::new(5000, 1))
        .await;
    assert!(
        matches!(past_end, Err(Error::RangeNotSatisfiable { .. })),
        "{:?}",
        past_end.map(|_| ())
    );

    // Tags resolve to the manifest's digest, which reads back as the manifest.
    assert_eq!(
        backend.resolve_tag(REPO, "v1").await.unwrap(),
        manifest_digest
    );
    assert_eq!(
        read(&backend, "v1", None).await,
        manifest_digest.to_string().as_bytes()
    );
    assert_eq!(
        read(&backend, &manifest_digest.to_string(), None).await,
        manifest.as_bytes()
    );
    // A build-index names a tag `repo:tag` (namespace and name alike); the repository
    // then comes from the name, whatever the namespace.
    let tag_name = format!("{REPO}:v1");
    let stream = backend.download(&tag_name, &tag_name, None).await.unwrap();
    assert_eq!(
        collect_bytes(stream, 1 << 10).await.unwrap(),
        manifest_digest.to_string().as_bytes()
    );
    assert_eq!(
        backend.stat(&tag_name, &tag_name).await.unwrap().size,
        manifest_digest.to_string().len() as u64
    );
    let absent = format!("{REPO}:v9");
    assert!(
        backend
            .stat(&absent, &absent)
            .await
            .unwrap_err()
            .is_not_found()
    );

    let missing = Digest::sha256_of(b"never pushed").to_string();
    assert!(
        backend
            .stat(REPO, &missing)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        backend
            .download(REPO, "nope", None)
            .await
            .err()
            .unwrap()
            .is_not_found()
    );
    assert!(
        backend
            .stat("kraken/absent", "v1")
            .await
            .unwrap_err()
            .is_not_found()
    );

    let first = backend
        .list(REPO, "", &ListOptions::with_limit(1))
        .await
        .unwrap();
    assert_eq!(first.names, ["v1"]);
    let options = ListOptions::with_limit(1).after(first.continuation_token);
    let second = backend.list(REPO, "", &options).await.unwrap();
    assert_eq!(second.names, ["v2"]);
    assert_eq!(second.continuation_token, None, "two tags make two pages");

    let upload = backend
        .upload(REPO, "v3", UploadBody::from_bytes("x"))
        .await;
    assert!(matches!(upload, Err(Error::Unsupported { .. })));
    let delete = backend.delete(REPO, &layer_name).await;
    assert!(matches!(delete, Err(Error::Unsupported { .. })));
}

/// A registry that demands a bearer token from its own `/token` endpoint, which demands
/// basic credentials. Counts the tokens it issues.
async fn token_registry(lifetime_secs: u64, tokens_issued: Arc<AtomicUsize>) -> TestServer {
    let blob = Arc::new(b"secret layer".to_vec());
    TestServer::start(move |request| {
        let (blob, issued) = (Arc::clone(&blob), Arc::clone(&tokens_issued));
        async move {
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let host = request.headers()["host"].to_str().unwrap().to_owned();
            let path = request.uri().path().to_owned();
            if path == "/token" {
                // "user:pass" in base64.
                if auth != "Basic dXNlcjpwYXNz" {
                    return response(401, &[], "bad credentials");
                }
                let query = request.uri().query().unwrap_or_default();
                assert!(query.contains("scope=repository%3Akraken%2Ftest%3Apull"), "{query}");
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!(r#"{{"token":"tok-{n}","expires_in":{lifetime_secs}}}"#);
                return response(200, &[], body);
            }
            let current = format!("Bearer tok-{}", issued.load(Ordering::SeqCst));
            if auth != current {
                let challenge = format!(
                    r#"Bearer realm="http://{host}/token",service="fake",scope="repository:{REPO}:pull""#
                );
                return response(401, &[("www-authenticate", challenge.as_str())], "");
            }
            let digest = Digest::sha256_of(&blob).to_string();
            if path == format!("/v2/{REPO}/blobs/{digest}") {
                let length = blob.len().to_string();
                return response(200, &[("content-length", length.as_str())], blob.to_vec());
            }
            response(404, &[], "")
        }
    })
    .await
}

fn authenticated(url: String) -> RegistryBackend {
    let mut config = RegistryConfig::new(url);
    config.username = Some("user".into());
    config.password = Some("pass".into());
    RegistryBackend::new(config).unwrap()
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_and_renewed_after_expiry() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = token_registry(1, Arc::clone(&issued)).await;
    let backend = authenticated(server.url());
    let digest = Digest::sha256_of(b"secret layer").to_string();
    for _ in 0..3 {
        assert_eq!(read(&backend, &digest, None).await, b"secret layer");
    }
    assert_eq!(backend.stat(REPO, &digest).await.unwrap().size, 12);
    assert_eq!(issued.load(Ordering::SeqCst), 1, "the token was not cached");
    // The token lives one second: after that a new one is fetched.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(&backend, &digest, None).await, b"secret layer");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn wrong_credentials_fail_without_looping() {
    let issued = Arc::new(AtomicUsize::new(0));
    let server = token_registry(300, Arc::clone(&issued)).await;
    let mut config = RegistryConfig::new(server.url());
    config.username = Some("user".into());
    config.password = Some("wrong".into());
    let backend = RegistryBackend::new(config).unwrap();
    let digest = Digest::sha256_of(b"secret layer").to_string();
    let error = backend.stat(REPO, &digest).await.unwrap_err();
    assert!(
        matches!(error, Error::Status { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn basic_auth_challenges_are_answered() {
    let server = TestServer::start(|request| async move {
        let auth = request.headers().get("authorization").cloned();
        match auth {
            Some(value) if value == "Basic dXNlcjpwYXNz" => response(
                200,
                &[(
                    "docker-content-digest",
                    &*format!("sha256:{}", "b".repeat(64)),
                )],
                "",
            ),
            _ => response(401, &[("www-authenticate", r#"Basic realm="fake""#)], ""),
        }
    })
    .await;
    let backend = authenticated(server.url());
    let digest = backend.resolve_tag(REPO, "latest").await.unwrap();
    assert_eq!(digest.hex(), "b".repeat(64));
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_rejected() {
    let claimed = Digest::sha256_of(b"the real content");
    let server = TestServer::start(|_| async { response(200, &[], "tampered content") }).await;
    let backend = RegistryBackend::new(RegistryConfig::new(server.url())).unwrap();
    let stream = backend
        .download(REPO, &claimed.to_string(), None)
        .await
        .unwrap();
    let result = collect_bytes(stream, 1024).await;
    assert!(
        matches!(result, Err(Error::InvalidResponse(_))),
        "{result:?}"
    );
}
