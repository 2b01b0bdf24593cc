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

/// Interoperability with an independent ModelPack tool, both ways: olot (PyPI) builds an
/// artifact of tar layers in an OCI layout, skopeo pushes it through the proxy and `kraken
/// model pull` lays it out from an agent; `kraken model push` writes one that skopeo copies
/// from an agent into a layout, where olot's own schemas and media types accept it.
#[test]
fn olot_and_kraken_read_each_others_modelpack_artifacts() {
    let (Some(olot), true) = (
        kraken_testkit::require_program("olot", "pip install olot==1.2.1"),
        kraken_testkit::require_packages(&[("skopeo", "skopeo"), ("python3", "python3")]),
    ) else {
        return;
    };
    let glue = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/modelpack_olot.py");
    let run = |command: &mut Command| {
        kraken_testkit::run(command).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    kraken_testkit::write_pseudo_random_file(
        &model.join("model-00001-of-00002.safetensors"),
        3 << 20,
        1,
    );
    kraken_testkit::write_pseudo_random_file(
        &model.join("model-00002-of-00002.safetensors"),
        1 << 20,
        2,
    );
    std::fs::write(model.join("config.json"), br#"{"hidden_size":64}"#).unwrap();
    std::fs::write(
        model.join("tokenizer/tokenizer.json"),
        br#"{"vocab":{"a":0}}"#,
    )
    .unwrap();
    let readme = dir.path().join("README.md");
    std::fs::write(&readme, b"# A model card\n").unwrap();
    let cluster = DevCluster::start();
    let skopeo = kraken_testkit::Skopeo::new();

    // olot → skopeo → proxy → agent → `kraken model pull`.
    let layout = dir.path().join("olot-layout");
    run(Command::new("python3").args([glue, "base"]).arg(&layout));
    let mut olot_command = Command::new(olot);
    olot_command
        .args(["--add-modelpack", "--root-dir"])
        .arg(&model)
        .arg("--modelcard")
        .arg(&readme)
        .arg(&layout);
    for file in kraken_testkit::read_tree(&model).keys() {
        olot_command.arg(model.join(file));
    }
    run(&mut olot_command);
    run(Command::new("python3")
        .args([glue, "select"])
        .arg(&layout)
        .arg("model"));
    skopeo
        .copy(
            &format!("oci:{}:model", layout.display()),
            &format!("docker://{}/models/olot:v1", cluster.proxy),
            false,
        )
        .unwrap();
    let pulled = dir.path().join("pulled");
    run(Command::new(KRAKEN)
        .args([
            "model",
            "pull",
            &format!("{}/models/olot:v1", cluster.agents[0]),
        ])
        .arg(&pulled)
        .arg("--plain-http"));
    // olot writes every file under `models/` in its tar layers, the model card beside them.
    let mut expected = kraken_testkit::read_tree(&model)
        .into_iter()
        .map(|(path, (bytes, _))| (format!("models/{path}"), bytes))
        .collect::<std::collections::BTreeMap<_, _>>();
    expected.insert("models/README.md".into(), std::fs::read(&readme).unwrap());
    let got = kraken_testkit::read_tree(&pulled)
        .into_iter()
        .map(|(path, (bytes, _))| (path, bytes))
        .collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &expected {
        assert!(&got[path] == bytes, "{path} differs after the pull");
    }

    // `kraken model push` → proxy → agent → skopeo → olot's schemas.
    std::fs::copy(&readme, model.join("README.md")).unwrap();
    run(Command::new(KRAKEN)
        .args(["model", "push"])
        .arg(&model)
        .arg(format!("{}/models/kraken:v1", cluster.proxy))
        .arg("--plain-http"));
    let copied = dir.path().join("kraken-layout");
    skopeo
        .copy(
            &format!("docker://{}/models/kraken:v1", cluster.agents[1]),
            &format!("oci:{}:kraken", copied.display()),
            false,
        )
        .unwrap();
    run(Command::new("python3")
        .args([glue, "check"])
        .arg(&copied)
        .arg("kraken")
        .arg(&model));
}
