//! skopeo pushes a two-layer OCI image to a `LocalRegistry`, to a second repository (a
//! cross-repository mount), and pulls it back, digests intact.
//!
//! Needs `skopeo` (Debian: `apt-get install -y skopeo`). Without it the test is skipped,
//! unless `CI=true`, where it fails.

mod oci_common;

use kraken_core::Digest;
use oci_common::skopeo::*;
use oci_common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn skopeo_copies_an_image_in_and_out() {
    if !skopeo_required() {
        return;
    }
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let image = write_layout(&layout, "v1");
    let host = registry.base.trim_start_matches("http://").to_owned();

    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/test/image:v1"),
    ])
    .await;
    let manifest = registry
        .request(Method::GET, "/v2/test/image/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(
        header(&manifest, "docker-content-digest"),
        image.manifest.to_string()
    );
    for blob in image.blobs.iter() {
        let head = registry
            .request(Method::HEAD, &format!("/v2/test/image/blobs/{blob}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{blob}");
    }

    // A second repository: skopeo mounts the blobs from the first.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{host}/test/image:v1"),
        &format!("docker://{host}/copy/of/image:v1"),
    ])
    .await;

    // And back out.
    let out = dir.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{host}/copy/of/image:v1"),
        &format!("oci:{}:v1", out.display()),
    ])
    .await;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        image.manifest.to_string(),
        "the manifest came back unchanged"
    );
    for blob in image.blobs.iter().chain([&image.manifest]) {
        let path = out.join("blobs/sha256").join(blob.hex());
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(Digest::sha256_of(&data), *blob);
    }
    registry.shutdown().await;
}
