//! `kraken bench layers`: an image of many layers — a directory of L files seeded as one
//! collection by `kraken seed DIR` — pulled by N `kraken fetch DIGEST --out DIR` processes,
//! every node capped each way. Reports each fetcher's wall time (process start to the whole
//! tree written to `--out`) against the fluid bound T* of the whole image, and the most
//! sockets any process held, which the node-wide connection cap bounds however many
//! torrents are active.

use kraken_core::ByteSize;
use serde::Serialize;

use super::Completion;
use super::process::write_random_file;
use super::{dir_swarm, fluid_bound};
use crate::rate::Rate;

#[derive(Debug, clap::Args)]
pub(crate) struct LayersArgs {
    /// Layers (files) in the image.
    #[arg(long, default_value_t = 50)]
    layers: u32,
    /// Size of each layer.
    #[arg(long, default_value = "20MiB")]
    size: ByteSize,
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
struct LayersReport {
    layers: u32,
    layer_size: u64,
    fetchers: u8,
    rate: u64,
    /// The fluid bound for the whole image (DESIGN.md §8, d = u = U = rate).
    t_star: f64,
    /// Fetchers' wall times (process start to the tree in place), sorted, in seconds.
    seconds: Vec<f64>,
    /// The same as percentiles, and against T*.
    wall: Completion,
    /// The most sockets one fetcher held open at any sample (every 200 ms).
    max_fetcher_sockets: usize,
    /// The most the seeder held.
    max_seeder_sockets: usize,
}

pub(crate) fn run(args: LayersArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=200).contains(&args.fetchers) && args.layers >= 1,
        "1 to 200 fetchers, at least one layer"
    );
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("image");
    std::fs::create_dir(&image)?;
    for i in 0..args.layers {
        write_random_file(
            &image.join(format!("layer{i:03}")),
            args.size.bytes(),
            u64::from(i),
        )?;
    }
    let size = u64::from(args.layers) * args.size.bytes();
    let t_star = fluid_bound(
        size as f64,
        args.rate.0.bytes() as f64,
        u32::from(args.fetchers),
    );
    let run = dir_swarm::run(
        dir.path(),
        &image,
        args.fetchers,
        args.rate.0.bytes(),
        t_star,
    )?;
    let mut seconds: Vec<f64> = run.fetches.iter().map(|(wall, _)| *wall).collect();
    seconds.sort_by(f64::total_cmp);
    let report = LayersReport {
        layers: args.layers,
        layer_size: args.size.bytes(),
        fetchers: args.fetchers,
        rate: args.rate.0.bytes(),
        t_star,
        wall: Completion::new(seconds.clone(), t_star),
        seconds,
        max_fetcher_sockets: run.max_fetcher_sockets,
        max_seeder_sockets: run.max_seeder_sockets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "1 seeder -> {} fetchers, {} layers of {}, {}/s per node each way; T* = {:.2}s",
            report.fetchers, report.layers, args.size, args.rate.0, t_star
        );
        println!(
            "wall p50 {:.2} T*, p99 {:.2} T*; most sockets: fetcher {}, seeder {}",
            report.wall.p50_t_star,
            report.wall.p99_t_star,
            report.max_fetcher_sockets,
            report.max_seeder_sockets
        );
    }
    Ok(())
}
