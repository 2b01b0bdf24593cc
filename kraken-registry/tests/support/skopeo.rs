//! skopeo round trips through the registry under test.

use std::path::Path;

use kraken_core::Digest;
use kraken_testkit::Skopeo;
use kraken_testkit::oci::{Image, ImageSpec, OciLayout};

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
    for blob in image.blobs().iter().chain([&image.manifest]) {
        let path = out.join("blobs/sha256").join(blob.hex());
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(Digest::sha256_of(&data), *blob);
    }
}

/// Runs skopeo on the blocking pool: the registry serves on this test's runtime.
pub async fn skopeo(args: &[&str]) {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        Skopeo::new().run(&args)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Writes an OCI image layout of a small image (two data layers, nothing to run), tagged
/// `tag`.
pub fn write_layout(dir: &Path, tag: &str) -> Image {
    let spec = ImageSpec::new(&[21, 5000], 1).without_busybox();
    OciLayout::create(dir)
        .unwrap()
        .add_image(tag, &spec)
        .unwrap()
}
