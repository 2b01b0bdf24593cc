//! `kraken bench tracker-restart`: a cold pull through an agent just before and just after the
//! tracker is restarted (SIGKILL, then `kraken tracker --config` again), on a `kraken
//! devcluster --processes` cluster (one origin, one tracker, two agents), with the tracker's
//! peers in its memory and, when `redis-server` is installed, in Redis. Each round pushes two
//! fresh layers, pulls the first, restarts the tracker and pulls the second; the goal
//! (issue 18) is an "after" pull at most 2 s slower than the "before" one.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};
use kraken_core::ByteSize;
use serde::Serialize;

use super::process::{
    Process, curl_seconds, digest_of, free_port, kraken_command, wait_for_port, which,
    write_random_file,
};
use super::registry::push_blob;

#[derive(Debug, clap::Args)]
pub(crate) struct TrackerRestartArgs {
    /// Size of each layer pulled.
    #[arg(long, default_value = "20MiB")]
    size: ByteSize,
    /// Restarts measured per store; the report gives the median and the worst.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Measure only the in-memory peer store (no `redis-server`).
    #[arg(long)]
    no_redis: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const REPO: &str = "bench/restart";

/// The pulls of one peer store.
#[derive(Debug, Serialize)]
struct StoreReport {
    /// `memory` or `redis`.
    store: &'static str,
    /// Cold pulls before each restart, seconds.
    before_seconds: Vec<f64>,
    /// Cold pulls right after each restart, seconds.
    after_seconds: Vec<f64>,
    /// Median of `after - before`, seconds.
    median_slowdown_seconds: f64,
    /// Worst `after - before`, seconds.
    worst_slowdown_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    layer_bytes: u64,
    stores: Vec<StoreReport>,
}

pub(crate) fn run(args: TrackerRestartArgs) -> anyhow::Result<()> {
    which("curl").context("curl must be installed")?;
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let dir = tempfile::tempdir()?;
    let mut report = Report {
        layer_bytes: args.size.bytes(),
        stores: Vec::new(),
    };
    report.stores.push(measure(dir.path(), &args, None)?);
    if !args.no_redis {
        match which("redis-server") {
            Some(program) => {
                let port = free_port("127.0.0.1")?;
                let _redis = Process(
                    Command::new(program)
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no"])
                        .stdout(Stdio::null())
                        .spawn()
                        .context("starting redis-server")?,
                );
                wait_for_port(&format!("127.0.0.1:{port}"))?;
                let url = format!("redis://127.0.0.1:{port}");
                report.stores.push(measure(dir.path(), &args, Some(&url))?);
            }
            None => eprintln!(
                "redis-server not found (apt-get install redis-server): measuring the in-memory store only"
            ),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "cold pull of a {} layer through an agent, before and right after a tracker restart",
            args.size
        );
        for store in &report.stores {
            let list = |values: &[f64]| {
                values
                    .iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "{:<6}  before {} s  after {} s  slower by: median {:.2} s, worst {:.2} s",
                store.store,
                list(&store.before_seconds),
                list(&store.after_seconds),
                store.median_slowdown_seconds,
                store.worst_slowdown_seconds
            );
        }
    }
    Ok(())
}

/// Runs the rounds on a fresh cluster whose tracker keeps peers in `redis` (else memory).
fn measure(
    dir: &Path,
    args: &TrackerRestartArgs,
    redis: Option<&str>,
) -> anyhow::Result<StoreReport> {
    let store = if redis.is_some() { "redis" } else { "memory" };
    let data = dir.join(format!("cluster-{store}"));
    let mut command = kraken_command()?;
    command
        .args(["devcluster", "--processes", "--json", "--agents", "2"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = redis {
        command.args(["--redis", url]);
    }
    let mut child = command.spawn().context("starting kraken devcluster")?;
    let stdout = child.stdout.take().context("devcluster stdout")?;
    let _cluster = Process(child);
    let mut line = String::new();
    let mut lines = std::io::BufReader::new(stdout);
    while !line.starts_with('{') {
        line.clear();
        ensure!(
            lines.read_line(&mut line)? > 0,
            "the devcluster stopped before it printed its addresses"
        );
    }
    let cluster: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("devcluster printed {line:?}"))?;
    let proxy = cluster["proxy"]["addr"]
        .as_str()
        .context("proxy")?
        .to_owned();
    let agent = cluster["agents"][0]["addr"]
        .as_str()
        .context("agent")?
        .to_owned();
    let tracker = cluster["trackers"][0]["addr"]
        .as_str()
        .context("tracker")?
        .to_owned();
    let mut tracker_pid = cluster["trackers"][0]["pid"].as_u64().context("pid")?;
    // The tracker as restarted by this benchmark (killed on drop).
    let mut restarted: Option<Process> = None;

    let mut before = Vec::new();
    let mut after = Vec::new();
    for round in 0..args.rounds {
        let mut layers = Vec::new();
        for which in 0..2u64 {
            let path = dir.join(format!("layer-{store}-{round}-{which}"));
            write_random_file(&path, args.size.bytes(), u64::from(round) * 2 + which + 1)?;
            let digest = digest_of(&path)?;
            push_blob(&proxy, REPO, &path, &digest)?;
            std::fs::remove_file(&path)?;
            layers.push(digest);
        }
        let url = |digest: &kraken_core::Digest| format!("http://{agent}/v2/{REPO}/blobs/{digest}");
        before.push(curl_seconds(&url(&layers[0]), args.size.bytes())?);

        // SIGKILL, as a crash would; then the same command the devcluster ran.
        match restarted.take() {
            Some(process) => drop(process),
            None => kill(tracker_pid)?,
        }
        let mut command = kraken_command()?;
        let config = data.join("tracker-0.toml");
        command
            .args(["tracker", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process(command.spawn().context("restarting the tracker")?);
        tracker_pid = u64::from(process.0.id());
        restarted = Some(process);
        wait_for_port(&tracker)?;
        after.push(curl_seconds(&url(&layers[1]), args.size.bytes())?);
    }
    let mut slowdowns: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    slowdowns.sort_by(f64::total_cmp);
    Ok(StoreReport {
        store,
        median_slowdown_seconds: slowdowns[slowdowns.len() / 2],
        worst_slowdown_seconds: *slowdowns.last().context("no rounds")?,
        before_seconds: before,
        after_seconds: after,
    })
}

/// SIGKILLs `pid` and waits (bounded) until it is gone (the devcluster reaps it).
fn kill(pid: u64) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).context("pid")?;
    let pid = rustix::process::Pid::from_raw(raw).context("pid 0")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .context("killing the tracker")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{raw}")).exists() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the tracker outlived SIGKILL"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
