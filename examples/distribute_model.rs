//! Distribute a model snapshot (weight shards, an index, a config and a tokenizer, laid out
//! like a Hugging Face snapshot) from one node to several, through the `kraken-p2p`
//! collection API.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p kraken-examples --example distribute_model
//! ```
//!
//! Everything runs in this process on loopback: a tracker used in-process (no listener),
//! one publishing node on 127.0.0.2 and three fetching nodes on 127.0.0.10-12. The
//! publisher seeds the directory **in place** with `seed_dir` — nothing is copied into its
//! store — and gets one digest naming the whole tree. Each fetcher lays the tree out with
//! `fetch_dir`: files arrive several at a time, mostly from the other fetchers, each
//! verified piece by piece and as a whole, and are written once, straight to their place.
//! The program checks every copy byte for byte and exits non-zero if one differs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kraken_core::BlobStore;
use kraken_p2p::node::{Node, NodeConfig};
use kraken_p2p::tracker::{Tracker, TrackerConfig, TrackerService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let snapshot = work.path().join("snapshot");
    make_snapshot(&snapshot)?;

    // One tracker for every node of this process, called directly.
    let mut tracker_config = TrackerConfig::default();
    tracker_config.announce_interval = Duration::from_millis(500);
    let tracker: Arc<dyn Tracker> = Arc::new(TrackerService::new(tracker_config));

    // Publish: one digest names the whole tree.
    let publisher = start_node(2, &work.path().join("publisher"), &tracker).await?;
    let digest = publisher.seed_dir(&snapshot).await?;
    println!("published {} as {digest}", snapshot.display());

    // Fetch: three nodes pull the whole snapshot at once, mostly from each other.
    let mut fetchers = Vec::new();
    for i in 0..3 {
        fetchers.push(start_node(10 + i, &work.path().join(format!("node{i}")), &tracker).await?);
    }
    let jobs = fetchers.iter().enumerate().map(|(n, node)| {
        let out = work.path().join(format!("restored{n}"));
        let fetch = node.fetch_dir(&digest, &out);
        let mut progress = fetch.progress();
        let reporter = tokio::spawn(async move {
            let mut last_quarter = 0;
            while progress.changed().await.is_ok() {
                let p = progress.borrow_and_update().clone();
                if p.total_bytes == 0 {
                    continue;
                }
                // Print at every quarter of the bytes.
                let quarter = p.done_bytes * 4 / p.total_bytes;
                if quarter > last_quarter || p.done {
                    last_quarter = quarter;
                    println!(
                        "node{n}: {}/{} files, {}/{} bytes",
                        p.files_done,
                        p.files.len(),
                        p.done_bytes,
                        p.total_bytes
                    );
                }
            }
        });
        async move {
            let collection = fetch
                .await
                .with_context(|| format!("node{n} fetching the snapshot"))?;
            reporter.abort();
            println!(
                "node{n}: {} files restored in {}",
                collection.entries().len(),
                out.display()
            );
            anyhow::Ok(out)
        }
    });
    let restored = futures::future::try_join_all(jobs).await?;

    for dir in &restored {
        compare_trees(&snapshot, dir)?;
    }
    println!("all {} nodes hold an identical snapshot", restored.len());

    for node in fetchers.iter().chain([&publisher]) {
        node.shutdown().await;
    }
    Ok(())
}

async fn start_node(host: u8, store: &Path, tracker: &Arc<dyn Tracker>) -> anyhow::Result<Node> {
    let mut config = NodeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, host], 0));
    config.swarm.announce_interval = Duration::from_millis(500);
    Ok(Node::builder(config)
        .store(BlobStore::open(store)?)
        .tracker(Arc::clone(tracker))
        .spawn()
        .await?)
}

/// Fails unless every file under `original` is in `copy` with the same bytes.
fn compare_trees(original: &Path, copy: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(original)? {
        let path = entry?.path();
        let name = path.file_name().context("a file name")?;
        if path.is_dir() {
            compare_trees(&path, &copy.join(name))?;
        } else {
            let same = std::fs::read(&path)? == std::fs::read(copy.join(name))?;
            anyhow::ensure!(same, "{} differs in {}", path.display(), copy.display());
        }
    }
    Ok(())
}

/// Writes a small model snapshot: three weight shards, an index, a config and a tokenizer.
fn make_snapshot(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("tokenizer"))?;
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
    let tokenizer = serde_json::json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}});
    std::fs::write(
        dir.join("tokenizer/tokenizer.json"),
        serde_json::to_vec_pretty(&tokenizer)?,
    )?;
    Ok(())
}
