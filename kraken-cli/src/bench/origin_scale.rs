//! `kraken bench origin-scale`: a `kraken origin` process whose store already holds many
//! small blobs — how long until it serves one, how many files it holds open, and how many
//! announces and metainfo publishes its tracker (a `kraken tracker` process asking the
//! origin for metainfo) sees, at start-up and while a few blobs are wanted.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kraken_core::{BlobStore, ByteSize, Digest, PieceLengthPolicy};
use kraken_registry::origin::{MembersConfig, OriginConfig};
use serde::Serialize;

use super::process::{Process, fetch_command, free_port, kraken_command, wait_for_port};

#[derive(Debug, clap::Args)]
pub(crate) struct OriginScaleArgs {
    /// Blobs in the origin's store before it starts.
    #[arg(long, default_value_t = 100_000)]
    blobs: u32,
    /// Size of each blob.
    #[arg(long, default_value = "4KiB")]
    size: ByteSize,
    /// Blobs then asked for through the tracker (its metainfo `GET`, which asks the origin),
    /// the first of them also fetched over P2P by a `kraken fetch` process.
    #[arg(long, default_value_t = 100)]
    wanted: u32,
    /// How long the tracker's announces are counted after start-up and again after the
    /// wanted blobs were asked for.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct OriginScaleReport {
    blobs: u32,
    blob_size: u64,
    /// Writing the blobs into the store (`BlobStore::import_batch`), before the origin runs.
    create_seconds: f64,
    /// From spawning `kraken origin` to the first blob's `200` on its HTTP API.
    first_served_seconds: f64,
    /// Files the origin process held open (`/proc/PID/fd`) one window after start-up.
    open_files_idle: usize,
    /// The most it held open at any sample (every 250 ms) during the run.
    open_files_max: usize,
    /// Announces the tracker answered in the first window after the origin started,
    /// before anything was asked for.
    startup_announces: u64,
    /// Metainfo publishes the tracker took in that window.
    startup_publishes: u64,
    /// Announces per minute in the window after the wanted blobs were asked for (the
    /// fetcher's own included).
    wanted_announces_per_minute: f64,
    /// Metainfo publishes in that window.
    wanted_publishes: u64,
    /// `kraken fetch` of the first wanted blob over P2P, process start to exit.
    p2p_fetch_seconds: f64,
}

const NAMESPACE: &str = "bench/scale";

pub(crate) fn run(args: OriginScaleArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let report = measure(&args, dir.path())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "origin holding {} blobs of {}: created in {:.1} s",
            report.blobs, args.size, report.create_seconds
        );
        println!(
            "first blob served {:.2} s after spawn; open files {} idle, {} at most",
            report.first_served_seconds, report.open_files_idle, report.open_files_max
        );
        println!(
            "tracker: {} announces and {} publishes in the {} after start-up; {:.0} announces/min and {} publishes after {} blobs were wanted",
            report.startup_announces,
            report.startup_publishes,
            humantime::format_duration(args.window),
            report.wanted_announces_per_minute,
            report.wanted_publishes,
            args.wanted
        );
        println!(
            "P2P fetch of a wanted blob: {:.2} s",
            report.p2p_fetch_seconds
        );
    }
    Ok(())
}

fn measure(args: &OriginScaleArgs, dir: &Path) -> anyhow::Result<OriginScaleReport> {
    anyhow::ensure!(args.wanted <= args.blobs, "--wanted exceeds --blobs");
    let data = dir.join("origin");
    let started = Instant::now();
    let digests = fill_store(&data.join("store"), args.blobs, args.size.bytes())?;
    let create_seconds = started.elapsed().as_secs_f64();

    let origin_addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    let token = dir.join("publish-token");
    std::fs::write(&token, "kraken-bench-publish-token")?;
    let tracker_addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    let tracker_config = dir.join("tracker.toml");
    std::fs::write(
        &tracker_config,
        format!(
            "listen = \"{tracker_addr}\"\npublish_token_file = {}\n[origins]\nmembers = {{ static = [\"{origin_addr}\"] }}\n",
            toml::Value::String(token.display().to_string())
        ),
    )?;
    let _tracker = Process(
        kraken_command()?
            .args(["tracker", "--config"])
            .arg(&tracker_config)
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&tracker_addr)?;
    let tracker = format!("http://{tracker_addr}");

    let mut config = OriginConfig::new(origin_addr.parse()?, &data);
    config.cluster.members = MembersConfig::Static(vec![origin_addr.clone()]);
    config.trackers = vec![tracker.clone()];
    config.tracker_publish_token_file = Some(token);
    config.peer_listen = Some(format!("127.0.0.1:{}", free_port("127.0.0.1")?).parse()?);
    let origin_config = dir.join("origin.toml");
    std::fs::write(&origin_config, toml::to_string(&config)?)?;

    let runtime = crate::process::runtime()?;
    kraken_backends::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let counters = || runtime.block_on(tracker_counters(&http, &tracker));
    let (announces_before, publishes_before) = counters()?;

    let spawned = Instant::now();
    let origin = Process(
        kraken_command()?
            .args(["origin", "--config"])
            .arg(&origin_config)
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = origin.0.id();
    let mut open_files_max = 0;
    let first = blob_url(&origin_addr, &digests[0]);
    let first_served_seconds = loop {
        open_files_max = open_files_max.max(open_files(pid)?);
        let ok = runtime
            .block_on(async { http.get(&first).send().await })
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break spawned.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            spawned.elapsed() < Duration::from_secs(300),
            "the origin served nothing within 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    };

    open_files_max = open_files_max.max(sample_open_files(pid, args.window)?);
    let open_files_idle = open_files(pid)?;
    let (announces_started, publishes_started) = counters()?;

    // Wanted: the tracker is asked for each blob's metainfo and asks the origin in turn.
    let wanted = &digests[..args.wanted as usize];
    runtime.block_on(async {
        for digest in wanted {
            let url = format!(
                "{tracker}/namespace/{}/blobs/{digest}/metainfo",
                NAMESPACE.replace('/', "%2F")
            );
            let status = http.get(&url).send().await?.status();
            anyhow::ensure!(status.is_success(), "{url}: {status}");
        }
        Ok(())
    })?;
    let mut p2p_fetch_seconds = f64::NAN;
    if let Some(digest) = wanted.first() {
        let fetch_started = Instant::now();
        let status = fetch_command(
            &digest.to_string(),
            &tracker,
            "127.0.0.3",
            &dir.join("fetched"),
            &["--namespace".into(), NAMESPACE.into()],
        )?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
        p2p_fetch_seconds = fetch_started.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "kraken fetch of a wanted blob failed");
        let fetched = std::fs::read(dir.join("fetched"))?;
        anyhow::ensure!(
            Digest::sha256_of(&fetched) == *digest,
            "kraken fetch wrote other bytes"
        );
    }
    let window_started = Instant::now();
    open_files_max = open_files_max.max(sample_open_files(pid, args.window)?);
    let (announces_end, publishes_end) = counters()?;
    let minutes = window_started.elapsed().as_secs_f64() / 60.0;
    drop(origin);
    Ok(OriginScaleReport {
        blobs: args.blobs,
        blob_size: args.size.bytes(),
        create_seconds,
        first_served_seconds,
        open_files_idle,
        open_files_max,
        startup_announces: announces_started - announces_before,
        startup_publishes: publishes_started - publishes_before,
        wanted_announces_per_minute: (announces_end - announces_started) as f64 / minutes,
        wanted_publishes: publishes_end - publishes_started,
        p2p_fetch_seconds,
    })
}

/// Writes `count` distinct blobs of `size` bytes into the store at `root`, in batches (two
/// file-system syncs each, not several per blob).
fn fill_store(root: &Path, count: u32, size: u64) -> anyhow::Result<Vec<Digest>> {
    let store = BlobStore::open(root)?;
    let piece_length = PieceLengthPolicy::default().piece_length_for(size);
    let mut digests = Vec::with_capacity(count as usize);
    let mut next = 0u32;
    while next < count {
        let end = count.min(next.saturating_add(10_000));
        let blobs = (next..end).map(|i| std::io::Cursor::new(blob_bytes(i, size)));
        let metas = store.import_batch(blobs, piece_length)?;
        digests.extend(metas.iter().map(|m| *m.digest()));
        next = end;
    }
    Ok(digests)
}

/// `size` bytes unique to blob `i` (its index first, then a xorshift stream).
fn blob_bytes(i: u32, size: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size as usize);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(i);
    bytes.extend_from_slice(&i.to_le_bytes());
    while (bytes.len() as u64) < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size as usize);
    bytes
}

fn blob_url(origin: &str, digest: &Digest) -> String {
    format!(
        "http://{origin}/namespace/{}/blobs/{digest}",
        NAMESPACE.replace('/', "%2F")
    )
}

/// Files process `pid` holds open.
fn open_files(pid: u32) -> anyhow::Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .count())
}

/// The most files `pid` held open at samples 250 ms apart over `window`.
fn sample_open_files(pid: u32, window: Duration) -> anyhow::Result<usize> {
    let end = Instant::now() + window;
    let mut most = open_files(pid)?;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250).min(window));
        most = most.max(open_files(pid)?);
    }
    Ok(most)
}

/// The tracker's counts of announces answered and metainfo published, from `/metrics`.
async fn tracker_counters(http: &reqwest::Client, tracker: &str) -> anyhow::Result<(u64, u64)> {
    let text = http
        .get(format!("{tracker}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .with_context(|| format!("{name} missing from the tracker's /metrics"))?;
        let number = line.rsplit(' ').next().unwrap_or_default();
        Ok(number.parse::<f64>()? as u64)
    };
    Ok((
        value("kraken_tracker_announces_total")?,
        value("kraken_tracker_metainfo_published_total")?,
    ))
}
