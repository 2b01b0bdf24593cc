//! `kraken bench swarm`: one seeder and N capped fetchers as separate processes, against the
//! fluid bound T* and optionally an aria2c + opentracker swarm of the same shape.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use kraken_core::{ByteSize, PieceLengthPolicy};
use serde::Serialize;

use super::Completion;
use super::process::{
    Process, fetch_command, free_port, settle_disk, spawn_seeder, spawn_tracker, wait_for_port,
    which, write_random_file,
};
use crate::rate::Rate;

#[derive(Debug, clap::Args)]
pub(crate) struct SwarmArgs {
    /// Number of fetchers.
    #[arg(long, default_value_t = 8)]
    fetchers: u8,
    /// Blob size.
    #[arg(long, default_value = "256MiB")]
    size: ByteSize,
    /// Cap per node, each direction.
    #[arg(long, default_value = "20MiB")]
    rate: Rate,
    /// Piece length; default: the standard table's choice for the blob size.
    #[arg(long)]
    piece_length: Option<ByteSize>,
    /// Most connections per blob on every node (default: the scheduler's).
    #[arg(long)]
    max_conns: Option<usize>,
    /// Also run the same swarm with aria2c and opentracker (Debian packages `aria2`,
    /// `opentracker`, `mktorrent`).
    #[arg(long)]
    aria2: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SwarmReport {
    fetchers: u8,
    size: u64,
    rate: u64,
    t_star: f64,
    /// Inside each fetch: from the fetchers' start to its blob verified in its store.
    kraken: Completion,
    /// What a user waits for: from the fetchers' start to each process's exit with the
    /// blob at `--out`.
    kraken_wall: Completion,
    aria2: Option<Completion>,
}

pub(super) fn run(args: SwarmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.fetchers >= 1 && args.fetchers <= 200,
        "1 to 200 fetchers"
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob");
    write_random_file(&file, args.size.bytes(), 0)?;
    let t_star = super::fluid_bound(
        args.size.bytes() as f64,
        args.rate.0.bytes() as f64,
        u32::from(args.fetchers),
    );

    let (inside, wall) = kraken_swarm(dir.path(), &file, &args)?;
    let kraken = Completion::new(inside, t_star);
    let kraken_wall = Completion::new(wall, t_star);
    let aria2 = if args.aria2 {
        Some(Completion::new(
            aria2_swarm(dir.path(), &file, &args)?,
            t_star,
        ))
    } else {
        None
    };
    let report = SwarmReport {
        fetchers: args.fetchers,
        size: args.size.bytes(),
        rate: args.rate.0.bytes(),
        t_star,
        kraken,
        kraken_wall,
        aria2,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "1 seeder -> {} fetchers, {} blob, {}/s per node each way; T* = {:.2}s",
            report.fetchers, args.size, args.rate.0, t_star
        );
        let line = |name: &str, c: &Completion| {
            println!(
                "{name:<40} p50 {:>6.2}s ({:.2} T*)   p99 {:>6.2}s ({:.2} T*)   max {:>6.2}s",
                c.p50, c.p50_t_star, c.p99, c.p99_t_star, c.max
            );
        };
        line("kraken (inside: to the blob verified)", &report.kraken);
        line("kraken (wall: process start to exit)", &report.kraken_wall);
        if let Some(aria2) = &report.aria2 {
            line("aria2c (to its download-complete hook)", aria2);
            println!(
                "kraken wall p99 is {:.2}x faster than aria2c's",
                aria2.p99 / report.kraken_wall.p99
            );
        }
    }
    Ok(())
}

/// Runs the Kraken swarm, every process with its shipped defaults (the seeder and the
/// tracker too): each fetcher's completion inside (its start plus its `download_seconds`)
/// and its wall time (the fetchers' start to its process's exit), in seconds.
fn kraken_swarm(dir: &Path, file: &Path, args: &SwarmArgs) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let rate = args.rate.0.bytes().to_string();
    let (_tracker, tracker_url) = spawn_tracker(dir)?;
    let piece_length = args.piece_length.map(|l| l.bytes().to_string());
    let max_conns: Vec<String> = args
        .max_conns
        .map(|m| vec!["--max-conns".to_owned(), m.to_string()])
        .unwrap_or_default();
    let (_seeder, digest) = spawn_seeder(
        dir,
        file,
        &tracker_url,
        Some(&rate),
        piece_length.as_deref(),
        &max_conns,
        "seeder",
    )?;
    settle_disk()?;
    let t0 = Instant::now();
    let mut fetchers = Vec::new();
    for i in 0..args.fetchers {
        let ip = format!("127.0.0.{}", 10 + i);
        let mut command = fetch_command(
            &digest,
            &tracker_url,
            &ip,
            &dir.join(format!("out{i}")),
            &[],
        )?;
        command.args(["--rate", &rate]).args(&max_conns);
        let started = t0.elapsed().as_secs_f64();
        let child = Process(command.stdout(Stdio::piped()).spawn()?);
        // One waiter per process, so that each exit is stamped when it happens.
        fetchers.push(std::thread::spawn(move || -> anyhow::Result<(f64, f64)> {
            let mut process = child;
            let mut line = String::new();
            let stdout = process.0.stdout.take().expect("piped");
            BufReader::new(stdout).read_line(&mut line)?;
            let status = process.0.wait()?;
            let exited = t0.elapsed().as_secs_f64();
            anyhow::ensure!(status.success(), "a fetcher failed: {status}");
            let report: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("a fetcher failed (printed {line:?})"))?;
            let seconds = report["download_seconds"]
                .as_f64()
                .context("download_seconds")?;
            Ok((started + seconds, exited))
        }));
    }
    let (mut inside, mut wall) = (Vec::new(), Vec::new());
    for fetcher in fetchers {
        let (done, exited) = fetcher
            .join()
            .map_err(|_| anyhow::anyhow!("a fetcher's waiter panicked"))??;
        inside.push(done);
        wall.push(exited);
    }
    Ok((inside, wall))
}

/// The same swarm with aria2c peers and opentracker; completion stamped by aria2c's
/// download-complete hook.
fn aria2_swarm(dir: &Path, file: &Path, args: &SwarmArgs) -> anyhow::Result<Vec<f64>> {
    for tool in ["aria2c", "opentracker", "mktorrent"] {
        if which(tool).is_none() {
            bail!(
                "{tool} not found: run scripts/install-bench-deps (Debian packages aria2, opentracker, mktorrent)"
            );
        }
    }
    let piece_length = args.piece_length.map_or_else(
        || PieceLengthPolicy::default().piece_length_for(args.size.bytes()),
        ByteSize::bytes,
    );
    let port = free_port("127.0.0.1")?;
    let torrent = dir.join("blob.torrent");
    let status = Command::new("mktorrent")
        .args(["-l", &piece_length.trailing_zeros().to_string()])
        .args(["-a", &format!("http://127.0.0.1:{port}/announce")])
        .arg("-o")
        .arg(&torrent)
        .arg(file)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "mktorrent failed");
    let show = Command::new("aria2c").arg("-S").arg(&torrent).output()?;
    let info_hash = String::from_utf8_lossy(&show.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Info Hash: ").map(str::to_owned))
        .context("aria2c -S printed no info hash")?;
    let chroot = dir.join("opentracker");
    std::fs::create_dir_all(&chroot)?;
    std::fs::write(chroot.join("whitelist.txt"), format!("{info_hash}\n"))?;
    let _tracker = Process(
        Command::new("opentracker")
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-P",
                &port.to_string(),
            ])
            .arg("-d")
            .arg(&chroot)
            .args(["-w", "/whitelist.txt"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&format!("127.0.0.1:{port}"))?;
    let hook = dir.join("stamp.sh");
    std::fs::write(&hook, "#!/bin/sh\ndate +%s.%N > \"$3.done\"\n")?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let rate = args.rate.0.bytes().to_string();
    let aria2 = |ip: &str, dir: &Path| -> anyhow::Result<Command> {
        let mut c = Command::new("aria2c");
        c.args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
        ])
        .args([
            "--seed-ratio=0.0",
            "--bt-tracker-interval=5",
            "--summary-interval=0",
        ])
        .args([
            "--console-log-level=error",
            "--file-allocation=none",
            "--check-certificate=false",
        ])
        .arg(format!("--interface={ip}"))
        .arg(format!("--listen-port={}", free_port(ip)?))
        .arg(format!("--max-overall-upload-limit={rate}"))
        .arg(format!("--max-overall-download-limit={rate}"))
        .arg(format!("--dir={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        Ok(c)
    };
    let seed_dir = file.parent().expect("file in a dir");
    let _seeder = Process(
        aria2("127.0.0.2", seed_dir)?
            .arg("-V")
            .arg(&torrent)
            .spawn()?,
    );
    // Give the seeder its hash check and first announce.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = now_unix();
    let mut leechers = Vec::new();
    let mut done_files = Vec::new();
    for i in 0..args.fetchers {
        let leech_dir = dir.join(format!("aria2-{i}"));
        std::fs::create_dir_all(&leech_dir)?;
        done_files.push(leech_dir.join("blob.done"));
        leechers.push(Process(
            aria2(&format!("127.0.0.{}", 10 + i), &leech_dir)?
                .arg(format!("--on-bt-download-complete={}", hook.display()))
                .arg(&torrent)
                .spawn()?,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if done_files.iter().all(|f| f.exists()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the aria2c swarm did not finish in 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    done_files
        .iter()
        .map(|f| {
            let stamp: f64 = std::fs::read_to_string(f)?.trim().parse()?;
            Ok(stamp - t0)
        })
        .collect()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
