//! Distribute a model snapshot (a directory of weight shards and a config, laid out like a
//! Hugging Face snapshot) from one node to several, through the `kraken-p2p` library API.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p kraken-examples --example distribute_model
//! ```
//!
//! Everything runs in this process on loopback: a tracker, one publishing node on
//! 127.0.0.2 and three fetching nodes on 127.0.0.10-12. The publisher seeds every file plus
//! a manifest (itself a blob) naming each file's path and digest; a fetcher downloads the
//! manifest, then every file it lists, and lays the snapshot out again under its own
//! directory. Each file is verified piece by piece and as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kraken_core::{BlobStore, Digest};
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{
    PublishToken, TrackerClient, TrackerConfig, TrackerServer, TrackerService,
};
use serde::{Deserialize, Serialize};

/// The manifest: which file of the snapshot is which blob.
#[derive(Debug, Deserialize, Serialize)]
struct Manifest {
    files: Vec<ManifestEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
struct ManifestEntry {
    path: String,
    digest: Digest,
    size: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let snapshot = work.path().join("snapshot");
    make_snapshot(&snapshot)?;

    let mut tracker_config = TrackerConfig::default();
    tracker_config.announce_interval = std::time::Duration::from_millis(500);
    // Only the publisher may publish metainfo: it holds the tracker's token.
    let token = PublishToken::new("distribute-model-example").expect("a usable token");
    tracker_config.publish_token = Some(token.clone());
    let tracker = TrackerServer::bind(
        "127.0.0.1:0".parse()?,
        Arc::new(TrackerService::new(tracker_config)),
    )
    .await?;
    let tracker_url = format!("http://{}", tracker.local_addr());

    // Publish: seed every file, then a manifest that names them.
    let publisher =
        start_node(2, &work.path().join("publisher"), &tracker_url, Some(token)).await?;
    let mut manifest = Manifest { files: Vec::new() };
    for entry in std::fs::read_dir(&snapshot)? {
        let path = entry?.path();
        let meta = publisher.seed_file(&path).await?;
        manifest.files.push(ManifestEntry {
            path: path.file_name().unwrap().to_string_lossy().into_owned(),
            digest: *meta.digest(),
            size: meta.length(),
        });
    }
    manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest_path = work.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    let manifest_digest = *publisher.seed_file(&manifest_path).await?.digest();
    println!(
        "published {} files; manifest {manifest_digest}",
        manifest.files.len()
    );

    // Fetch: three nodes pull the whole snapshot at once, mostly from each other.
    let mut fetchers = Vec::new();
    for i in 0..3 {
        fetchers.push(
            start_node(
                10 + i,
                &work.path().join(format!("node{i}")),
                &tracker_url,
                None,
            )
            .await?,
        );
    }
    let jobs = fetchers.iter().enumerate().map(|(i, node)| {
        let out = work.path().join(format!("restored{i}"));
        fetch_snapshot(i, node.clone(), manifest_digest, out)
    });
    let restored = futures::future::try_join_all(jobs).await?;

    for dir in &restored {
        for file in &manifest.files {
            let original = std::fs::read(snapshot.join(&file.path))?;
            let copy = std::fs::read(dir.join(&file.path))?;
            anyhow::ensure!(original == copy, "{} differs", file.path);
        }
    }
    println!("all {} nodes hold an identical snapshot", restored.len());

    for node in fetchers.iter().chain([&publisher]) {
        node.shutdown().await;
    }
    tracker.shutdown().await;
    Ok(())
}

/// Downloads the manifest, then every file it lists, printing progress.
async fn fetch_snapshot(
    n: usize,
    node: Node,
    manifest: Digest,
    out: PathBuf,
) -> anyhow::Result<PathBuf> {
    let manifest_blob = node.download(&manifest).await?;
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(manifest_blob.path())?)?;
    std::fs::create_dir_all(&out)?;
    for file in &manifest.files {
        let download = node.download(&file.digest);
        let mut progress = download.progress();
        let name = file.path.clone();
        let reporter = tokio::spawn(async move {
            let mut last = 0;
            while progress.changed().await.is_ok() {
                let p = *progress.borrow_and_update();
                // Print at every quarter.
                if p.total > 0 && p.have * 4 / p.total > last {
                    last = p.have * 4 / p.total;
                    println!("node{n}: {name} {}/{} pieces", p.have, p.total);
                }
            }
        });
        let blob = download
            .await
            .with_context(|| format!("fetching {}", file.path))?;
        reporter.abort();
        anyhow::ensure!(blob.len() == file.size, "{} has the wrong size", file.path);
        std::fs::copy(blob.path(), out.join(&file.path))?;
    }
    println!("node{n}: snapshot restored in {}", out.display());
    Ok(out)
}

async fn start_node(
    host: u8,
    store: &Path,
    tracker: &str,
    token: Option<PublishToken>,
) -> anyhow::Result<Node> {
    let mut config = NodeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.swarm.announce_interval = std::time::Duration::from_millis(500);
    let mut client = TrackerClient::new(tracker)?;
    if let Some(token) = token {
        client = client.with_publish_token(token);
    }
    Ok(Node::builder(config)
        .store(BlobStore::open(store)?)
        .tracker(Arc::new(client))
        .spawn()
        .await?)
}

/// Writes a small model snapshot: three weight shards, an index and a config.
fn make_snapshot(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut state = 0x1234_5678_9abc_def1_u64;
    for shard in 1..=3 {
        let mut weights = vec![0u8; 6 << 20];
        for chunk in weights.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(
            dir.join(format!("model-0000{shard}-of-00003.safetensors")),
            weights,
        )?;
    }
    let index = serde_json::json!({
        "metadata": {"total_size": 3 * (6 << 20)},
        "weight_map": {
            "layers.0.weight": "model-00001-of-00003.safetensors",
            "layers.1.weight": "model-00002-of-00003.safetensors",
            "lm_head.weight": "model-00003-of-00003.safetensors",
        }
    });
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    let config = serde_json::json!({
        "architectures": ["ToyForCausalLM"],
        "hidden_size": 512,
        "num_hidden_layers": 2,
        "vocab_size": 32000,
        "torch_dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
