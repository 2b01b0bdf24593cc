//! `kraken model push` through the devcluster's proxy and `kraken model pull` from each
//! agent (layers over P2P) recreate a model directory byte for byte, as a ModelPack
//! artifact.

mod support;

use std::process::Command;

use support::{DevCluster, KRAKEN};

#[test]
fn model_push_through_the_proxy_and_pull_from_every_agent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    kraken_testkit::write_model_tree(&model, 2 << 20);
    let cluster = DevCluster::start();
    let pushed = Command::new(KRAKEN)
        .args(["model", "push", model.to_str().unwrap()])
        .arg(format!("{}/models/llama:v1", cluster.proxy))
        .arg("--plain-http")
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let digest = String::from_utf8(pushed.stdout).unwrap();
    assert!(digest.trim().starts_with("sha256:"), "{digest:?}");

    let tree = kraken_testkit::read_tree(&model);
    for (i, agent) in cluster.agents.iter().enumerate() {
        let out = dir.path().join(format!("pulled{i}"));
        let pulled = Command::new(KRAKEN)
            .args(["model", "pull", &format!("{agent}/models/llama:v1")])
            .arg(&out)
            .arg("--plain-http")
            .output()
            .unwrap();
        assert!(
            pulled.status.success(),
            "{}",
            String::from_utf8_lossy(&pulled.stderr)
        );
        // ModelPack records no file modes: compare the bytes of every file.
        let got = kraken_testkit::read_tree(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            tree.keys().collect::<Vec<_>>()
        );
        for (path, (bytes, _)) in &tree {
            assert!(&got[path].0 == bytes, "{path} differs from agent {i}");
        }
    }

    // The manifest is a ModelPack artifact with each file's path annotated.
    kraken_backends::install_crypto_provider();
    let url = format!("http://{}/v2/models/llama/manifests/v1", cluster.agents[0]);
    let manifest = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .get(&url)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let paths: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.cncf.model.filepath"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(paths.contains(&"tokenizer/tokenizer.json"), "{paths:?}");
    let shard = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.cncf.model.filepath"] == "model-00001-of-00002.safetensors")
        .unwrap();
    assert_eq!(
        shard["mediaType"],
        "application/vnd.cncf.model.weight.v1.raw"
    );

    // A model that is not there fails clearly, writing nothing.
    let refused = Command::new(KRAKEN)
        .args([
            "model",
            "pull",
            &format!("{}/models/nothing:v1", cluster.agents[0]),
        ])
        .arg(dir.path().join("none"))
        .arg("--plain-http")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!dir.path().join("none").exists());
}
