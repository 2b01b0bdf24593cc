//! `kraken bench model`: a model directory (N weight shards, a config and a tokenizer) seeded
//! in place by one `kraken seed DIR` and fetched by M `kraken fetch DIGEST --out DIR`
//! processes, every node capped: each fetcher's wall time (process start to the whole tree
//! at `--out`) against the fluid bound T*, its peak memory, and the bytes it wrote to disk
//! against the model's size (one write per byte is the goal: no copy through a store).

use anyhow::Context as _;
use kraken_core::ByteSize;
use serde::Serialize;

use super::process::write_random_file;
use super::{dir_swarm, fluid_bound};
use crate::rate::Rate;

#[derive(Debug, clap::Args)]
pub(crate) struct ModelBenchArgs {
    /// Number of weight shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Size of each shard.
    #[arg(long, default_value = "1GiB")]
    shard_size: ByteSize,
    /// Number of fetchers.
    #[arg(long, default_value_t = 16)]
    fetchers: u8,
    /// Cap per node, each direction.
    #[arg(long, default_value = "20MiB")]
    rate: Rate,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ModelReport {
    shards: u32,
    model_bytes: u64,
    fetchers: u8,
    rate: u64,
    t_star: f64,
    /// Process start to the tree in place, per fetcher (seconds), sorted.
    wall_seconds: Vec<f64>,
    max_wall_t_star: f64,
    max_peak_rss_bytes: u64,
    /// Bytes written to storage by each fetcher (its report's `write_bytes`, Linux
    /// `/proc/self/io`, by the time the tree is in place), sorted.
    written_bytes: Vec<u64>,
    max_written_per_model_byte: f64,
}

pub(super) fn run(args: ModelBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=200).contains(&args.fetchers) && args.shards >= 1,
        "1 to 200 fetchers and at least one shard"
    );
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("tokenizer"))?;
    for i in 0..args.shards {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, args.shards);
        write_random_file(&model.join(name), args.shard_size.bytes(), u64::from(i))?;
    }
    std::fs::write(model.join("config.json"), br#"{"hidden_size":4096}"#)?;
    write_random_file(&model.join("tokenizer/tokenizer.json"), 2 << 20, 99)?;
    let model_bytes = crate::bench::tree_size(&model)?;
    let rate = args.rate.0.bytes();
    let t_star = fluid_bound(model_bytes as f64, rate as f64, u32::from(args.fetchers));

    let run = dir_swarm::run(dir.path(), &model, args.fetchers, rate, t_star)?;
    let (mut wall_seconds, mut written_bytes, mut max_rss) = (Vec::new(), Vec::new(), 0u64);
    for (wall, report) in &run.fetches {
        wall_seconds.push(*wall);
        max_rss = max_rss.max(report["peak_rss_bytes"].as_u64().unwrap_or(0));
        written_bytes.push(report["write_bytes"].as_u64().context("write_bytes")?);
    }
    for i in 0..args.fetchers {
        let out = dir.path().join(format!("out{i}"));
        anyhow::ensure!(
            crate::bench::tree_size(&out)? == model_bytes,
            "fetcher {i} laid out a tree of another size"
        );
    }
    wall_seconds.sort_by(f64::total_cmp);
    written_bytes.sort_unstable();
    let report = ModelReport {
        shards: args.shards,
        model_bytes,
        fetchers: args.fetchers,
        rate,
        t_star,
        max_wall_t_star: wall_seconds.last().copied().unwrap_or_default() / t_star,
        wall_seconds,
        max_peak_rss_bytes: max_rss,
        max_written_per_model_byte: written_bytes.last().copied().unwrap_or_default() as f64
            / model_bytes as f64,
        written_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!(
            "model of {} shards, {:.0} MiB, 1 seeder -> {} fetchers, {}/s per node each way; T* = {:.1}s",
            report.shards,
            mib(model_bytes),
            report.fetchers,
            args.rate.0,
            t_star
        );
        println!(
            "slowest fetcher: {:.1}s wall ({:.2} T*); fastest {:.1}s",
            report.wall_seconds.last().copied().unwrap_or_default(),
            report.max_wall_t_star,
            report.wall_seconds.first().copied().unwrap_or_default()
        );
        println!(
            "peak RSS of any fetcher: {:.1} MiB; most bytes written by one fetcher: {:.1} MiB ({:.3} x the model)",
            mib(report.max_peak_rss_bytes),
            mib(report.written_bytes.last().copied().unwrap_or_default()),
            report.max_written_per_model_byte
        );
    }
    Ok(())
}
