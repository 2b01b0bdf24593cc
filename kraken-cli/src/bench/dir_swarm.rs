//! The swarm `bench layers` and `bench model` time: one `kraken seed DIR` and N `kraken fetch
//! COLLECTION --out DIR --seed-after` processes on distinct loopback addresses, every node
//! capped, shipped defaults otherwise. Fetchers keep seeding once their tree is in place, as
//! the agents of a cluster and an embedder's long-lived nodes do.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::process::{Process, fetch_command, settle_disk, spawn_seeder, spawn_tracker};

/// What a run gave.
pub(super) struct DirSwarm {
    /// Each fetcher's wall time — from the fetchers' start to its tree in place — and its JSON
    /// report, in the order they finished.
    pub(super) fetches: Vec<(f64, serde_json::Value)>,
    /// The most sockets one fetcher held open at any sample (every 200 ms).
    pub(super) max_fetcher_sockets: usize,
    /// The most the seeder held.
    pub(super) max_seeder_sockets: usize,
}

/// Seeds `tree` and fetches it with `fetchers` processes at `rate` bytes per second each
/// way, into `dir/out{i}`; fails if one fails or they take more than ten times `t_star`
/// (plus a minute).
pub(super) fn run(
    dir: &Path,
    tree: &Path,
    fetchers: u8,
    rate: u64,
    t_star: f64,
) -> anyhow::Result<DirSwarm> {
    let rate_arg = rate.to_string();
    let (_tracker, tracker) = spawn_tracker(dir)?;
    let (seeder, digest) = spawn_seeder(dir, tree, &tracker, Some(&rate_arg), None, &[], "seeder")?;
    settle_disk()?;
    let t0 = Instant::now();
    let (lines_tx, lines) = mpsc::channel();
    let mut processes = Vec::new();
    for i in 0..fetchers {
        let ip = format!("127.0.0.{}", 10 + i);
        let mut child = fetch_command(&digest, &tracker, &ip, &dir.join(format!("out{i}")), &[])?
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
        processes.push(Process(child));
    }
    drop(lines_tx);
    let mut run = DirSwarm {
        fetches: Vec::new(),
        max_fetcher_sockets: 0,
        max_seeder_sockets: 0,
    };
    let deadline = Instant::now() + Duration::from_secs_f64(t_star * 10.0 + 60.0);
    while run.fetches.len() < processes.len() {
        for process in &processes {
            run.max_fetcher_sockets = run.max_fetcher_sockets.max(sockets(process.0.id()));
        }
        run.max_seeder_sockets = run.max_seeder_sockets.max(sockets(seeder.0.id()));
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok((started, line)) => {
                let report: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("a fetcher failed (printed {line:?})"))?;
                let wall = started + report["seconds"].as_f64().context("seconds")?;
                run.fetches.push((wall, report));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                anyhow::ensure!(Instant::now() < deadline, "the fetchers did not finish");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("a fetcher died"),
        }
    }
    Ok(run)
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
