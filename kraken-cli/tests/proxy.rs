//! `kraken proxy --config` as a real process in front of `kraken origin` and
//! `kraken build-index`: a blob and a manifest pushed with credentials, refused without,
//! and pulled back by tag.

mod support;

use kraken_core::Digest;
use kraken_registry::build_index::{BuildIndexClient, TagName};
use kraken_testkit::free_addr;
use support::start_role;

fn listen() -> String {
    format!("127.0.0.1:{}", free_addr("127.0.0.1").port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_the_proxy_process_is_tagged_and_pulled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, bi, proxy) = (listen(), listen(), listen());
    let _origin = start_role(
        "origin",
        &format!(
            "listen = \"{origin}\"\ndata_dir = \"{}\"\n\n[cluster]\nmembers = {{ static = [\"{origin}\"] }}\n\n\
             [[backends.routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = \"{}\" }}\n",
            dir.path().join("origin").display(),
            dir.path().join("backend").display(),
        ),
        dir.path(),
        &origin,
    );
    let _bi = start_role(
        "build-index",
        &format!(
            "listen = \"{bi}\"\ndata_dir = \"{}\"\n\n[origins]\nmembers = {{ static = [\"{origin}\"] }}\n",
            dir.path().join("bi").display(),
        ),
        dir.path(),
        &bi,
    );
    let token = "a-robot-token";
    let _proxy = start_role(
        "proxy",
        &format!(
            "listen = \"{proxy}\"\ndata_dir = \"{}\"\n\n[origins]\nmembers = {{ static = [\"{origin}\"] }}\n\n\
             [build_index]\naddresses = [\"{bi}\"]\n\n[auth]\ntokens_sha256 = [\"{}\"]\n",
            dir.path().join("proxy").display(),
            Digest::sha256_of(token.as_bytes()).hex(),
        ),
        dir.path(),
        &proxy,
    );
    kraken_backends::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{proxy}/v2/library/app");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = Digest::sha256_of(config);
    let upload = format!("{base}/blobs/uploads/?digest={config_digest}");
    let refused = http
        .post(&upload)
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let pushed = http
        .post(&upload)
        .bearer_auth(token)
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), reqwest::StatusCode::CREATED);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    let pushed = http
        .put(format!("{base}/manifests/1.0"))
        .bearer_auth(token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), reqwest::StatusCode::CREATED);
    let tag: TagName = "library/app:1.0".parse().unwrap();
    let tags = BuildIndexClient::new([bi]).unwrap();
    assert_eq!(
        tags.get_tag(&tag).await.unwrap(),
        Some(Digest::sha256_of(&manifest))
    );
    let pulled = http
        .get(format!("{base}/manifests/1.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), reqwest::StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), manifest);
}
