//! skopeo and OCI image layouts for the tests that drive skopeo.

use std::path::Path;
use std::process::Command;

use kraken_core::Digest;

use super::{OCI_MANIFEST, image_manifest};

/// Whether the test can run: true with skopeo installed; without it, a skip (`false`)
/// unless `CI=true`, where it fails with an install hint.
pub fn skopeo_required() -> bool {
    kraken_backends::testing::require_program("skopeo", "apt-get install -y skopeo").is_some()
}

/// skopeo copies `test/image:v1` of the registry at `host` to `copy/of/image:v1` (mounting
/// its blobs), then out of there into an OCI layout at `out`, and checks that `image` came
/// back unchanged. `creds` (`user:password`) are sent when given.
pub async fn copy_across_and_out(host: &str, creds: Option<&str>, out: &Path, image: &Image) {
    let dest_creds = creds.map(|c| format!("--dest-creds={c}"));
    let src_creds = creds.map(|c| format!("--src-creds={c}"));
    let source = format!("docker://{host}/test/image:v1");
    let copy = format!("docker://{host}/copy/of/image:v1");
    let layout = format!("oci:{}:v1", out.display());
    let mut across = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    across.extend(src_creds.as_deref());
    across.extend(dest_creds.as_deref());
    across.extend(["--preserve-digests", &source, &copy]);
    skopeo(&across).await;
    let mut back = vec!["copy", "--src-tls-verify=false"];
    back.extend(src_creds.as_deref());
    back.extend(["--preserve-digests", &copy, &layout]);
    skopeo(&back).await;

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
}

/// Runs skopeo on the blocking pool: the registry serves on this test's runtime.
pub async fn skopeo(args: &[&str]) {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || Command::new("skopeo").args(&owned).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct Image {
    pub manifest: Digest,
    pub blobs: Vec<Digest>,
}

/// Writes an OCI image layout with two uncompressed tar layers, tagged `tag`.
pub fn write_layout(dir: &Path, tag: &str) -> Image {
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
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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
