//! `kraken gc` against a cluster of real processes (`kraken devcluster --processes`): a dry
//! run reports an unreferenced blob and deletes nothing; a collection then sweeps it from
//! the origin and its backend and keeps the tagged image.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kraken_core::Digest;
use kraken_testkit::ProcessCluster;
use kraken_testkit::oci::{OCI_MEDIA_TYPES, push_blob, push_manifest, two_layer_image};
use support::KRAKEN;

const REPO: &str = "library/app";

/// Runs `kraken gc` on the cluster and returns its JSON report; asserts it succeeded.
async fn gc(cluster: &ProcessCluster, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "gc".to_owned(),
        "--build-index".to_owned(),
        cluster.build_index.addr.to_string(),
        "--origin".to_owned(),
        cluster.origins[0].addr.to_string(),
        "--replicas".to_owned(),
        "1".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(KRAKEN)
            .args(&args)
            .output()
            .expect("kraken gc runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "kraken gc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report on stdout")
}

/// Whether `report` swept `digest` from an origin's disk.
fn swept_from_store(report: &serde_json::Value, digest: &Digest) -> bool {
    report["origins"][0]["report"]["swept"]
        .as_array()
        .expect("the origin swept")
        .iter()
        .any(|b| b["digest"] == digest.to_string() && b["location"] == "store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kraken_gc_reports_then_sweeps_what_no_tag_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ProcessCluster::start(Path::new(KRAKEN), dir.path(), 1, 1, 1).unwrap();
    kraken_backends::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let registry = format!("http://{}", cluster.proxy.addr);
    let image = two_layer_image(7, [3000, 5000], &OCI_MEDIA_TYPES);
    push_blob(&http, &registry, REPO, &image.config).await;
    for layer in &image.layers {
        push_blob(&http, &registry, REPO, layer).await;
    }
    push_manifest(
        &http,
        &registry,
        REPO,
        "v1",
        OCI_MEDIA_TYPES.manifest,
        &image.manifest,
    )
    .await;
    let junk = push_blob(&http, &registry, "library/junk", b"nothing refers to this").await;

    // A dry run (grace 0: everything is old enough) reports the junk once its write-back
    // is done and its pin released, and deletes nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = gc(&cluster, &["--grace", "0s", "--dry-run"]).await;
        if swept_from_store(&report, &junk) {
            break report;
        }
        assert!(Instant::now() < deadline, "never reported: {report:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["tags"], 1);
    assert_eq!(
        report["marked"], 4,
        "the manifest, its config and two layers"
    );
    assert_eq!(report["swept_blobs"], 1);
    let blob_url = format!("{registry}/v2/library/junk/blobs/{junk}");
    assert_eq!(http.head(&blob_url).send().await.unwrap().status(), 200);

    let report = gc(&cluster, &["--grace", "0s"]).await;
    assert_eq!(report["dry_run"], false);
    assert!(swept_from_store(&report, &junk), "{report:#}");
    assert_eq!(report["swept_bytes"], 22);
    assert_eq!(report["backend_swept_blobs"], 1, "{report:#}");
    // Gone from the origin and from the backend: the proxy finds it nowhere.
    assert_eq!(http.head(&blob_url).send().await.unwrap().status(), 404);
    // The tagged image is whole.
    let pulled = http
        .get(format!("{registry}/v2/{REPO}/manifests/v1"))
        .header("accept", OCI_MEDIA_TYPES.manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    for layer in &image.layers {
        let digest = Digest::sha256_of(layer);
        let url = format!("{registry}/v2/{REPO}/blobs/{digest}");
        assert_eq!(http.head(&url).send().await.unwrap().status(), 200);
    }
}
