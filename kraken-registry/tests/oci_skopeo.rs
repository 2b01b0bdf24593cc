//! skopeo pushes a two-layer OCI image to a `LocalRegistry`, to a second repository (a
//! cross-repository mount), and pulls it back, digests intact.
//!
//! Needs `skopeo` (Debian: `apt-get install -y skopeo`). Without it the test is skipped,
//! unless `CI=true`, where it fails.

mod support;

use kraken_testkit::oci::MANIFEST_TYPE;
use kraken_testkit::require_package;
use reqwest::{Method, StatusCode};
use support::oci::*;
use support::skopeo::*;

#[tokio::test]
async fn skopeo_copies_an_image_in_and_out() {
    if require_package("skopeo", "skopeo").is_none() {
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
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    assert_eq!(
        header(&manifest, "docker-content-digest"),
        image.manifest.to_string()
    );
    for blob in image.blobs().iter() {
        let head = registry
            .request(Method::HEAD, &format!("/v2/test/image/blobs/{blob}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{blob}");
    }

    // A second repository (skopeo mounts the blobs from the first), and back out.
    copy_across_and_out(&host, None, &dir.path().join("out"), &image).await;
    registry.shutdown().await;
}
