//! `kraken bench layers`: an image of many layers — a directory of L files seeded as one
//! collection by `kraken seed DIR` — pulled by N `kraken fetch DIGEST --out DIR` processes,
//! every node capped each way. Reports each fetcher's wall time (process start to the whole
//! tree written to `--out`) against the fluid bound T* of the whole image, and the most
//! sockets any process held, which the node-wide connection cap bounds however many
//! torrents are active.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kraken_core::ByteSize;
use serde::Serialize;

use super::Completion;
use super::process::{
    Process, fetch_command, settle_disk, spawn_seeder, spawn_tracker, write_random_file,
};
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
    let rate = args.rate.0.bytes() as f64;
    let s = f64::from(args.layers) * args.size.bytes() as f64;
    let n = f64::from(args.fetchers);
    let t_star = (s / rate).max(n * s / (rate + n * rate));

    let rate_arg = args.rate.0.bytes().to_string();
    let (_tracker, tracker) = spawn_tracker(dir.path())?;
    let (seeder, digest) = spawn_seeder(
        dir.path(),
        &image,
        &tracker,
        Some(&rate_arg),
        None,
        &[],
        "seeder",
    )?;
    settle_disk()?;
    let t0 = Instant::now();
    let (lines_tx, lines) = mpsc::channel();
    let mut fetchers = Vec::new();
    for i in 0..args.fetchers {
        let ip = format!("127.0.0.{}", 10 + i);
        let mut child = fetch_command(
            &digest,
            &tracker,
            &ip,
            &dir.path().join(format!("out{i}")),
            &[],
        )?
        .args(["--seed-after", "--rate", &rate_arg])
        .stdout(Stdio::piped())
        .spawn()?;
        let started = t0.elapsed().as_secs_f64();
        let stdout = child.stdout.take().expect("piped");
        let tx = lines_tx.clone();
        // One reader per fetcher: they finish in any order.
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send((started, line));
        });
        fetchers.push(Process(child));
    }
    drop(lines_tx);
    let mut seconds = Vec::new();
    let mut max_fetcher_sockets = 0;
    let mut max_seeder_sockets = 0;
    let deadline = Instant::now() + Duration::from_secs_f64(t_star * 10.0 + 60.0);
    while seconds.len() < fetchers.len() {
        for fetcher in &fetchers {
            max_fetcher_sockets = max_fetcher_sockets.max(sockets(fetcher.0.id()));
        }
        max_seeder_sockets = max_seeder_sockets.max(sockets(seeder.0.id()));
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok((started, line)) => {
                let report: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("a fetcher failed (printed {line:?})"))?;
                let wall = report["seconds"].as_f64().context("seconds")?;
                seconds.push(started + wall);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                anyhow::ensure!(Instant::now() < deadline, "the fetchers did not finish");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("a fetcher died"),
        }
    }
    seconds.sort_by(f64::total_cmp);
    let report = LayersReport {
        layers: args.layers,
        layer_size: args.size.bytes(),
        fetchers: args.fetchers,
        rate: args.rate.0.bytes(),
        t_star,
        wall: Completion::new(seconds.clone(), t_star),
        seconds,
        max_fetcher_sockets,
        max_seeder_sockets,
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

/// Sockets process `pid` holds open (0 once it is gone).
fn sockets(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}
