//! skopeo pushes a two-layer OCI image to a `LocalRegistry`, to a second repository (a
//! cross-repository mount), and pulls it back, digests intact.
//!
//! Needs `skopeo` (Debian: `apt-get install -y skopeo`). Without it the test is skipped,
//! unless `CI=true`, where it fails.

mod oci_common;
mod support;

use std::path::Path;

use kraken_core::Digest;
use oci_common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn skopeo_copies_an_image_in_and_out() {
    if !support::skopeo_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let image = write_layout(&layout, "v1");
    let host = registry.base.trim_start_matches("http://").to_owned();

    support::skopeo(&[
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
    support::skopeo(&[
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
    support::skopeo(&[
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

struct Image {
    manifest: Digest,
    blobs: Vec<Digest>,
}

/// Writes an OCI image layout with two uncompressed tar layers, tagged `tag`.
fn write_layout(dir: &Path, tag: &str) -> Image {
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).unwrap();
    let put = |data: &[u8]| {
        let digest = Digest::sha256_of(data);
        std::fs::write(blobs_dir.join(digest.hex()), data).unwrap();
        (digest, data.len())
    };
    let layer1 = tar(&[("hello.txt", b"hello from layer one\n".as_slice())]);
    let layer2 = tar(&[("etc/data.bin", &vec![42u8; 5000])]);
    let l1 = put(&layer1);
    let l2 = put(&layer2);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [l1.0.to_string(), l2.0.to_string()]},
    }))
    .unwrap();
    let config = put(&config);
    let manifest = put(&image_manifest(config, &[l1, l2]));
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest.0.to_string(),
            "size": manifest.1,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Image {
        manifest: manifest.0,
        blobs: vec![config.0, l1.0, l2.0],
    }
}

/// A ustar archive of regular files.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
