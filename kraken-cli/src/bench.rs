//! `kraken bench`: swarms of real processes on loopback, measured against references run in
//! the same invocation (the fluid lower bound, an aria2c swarm, `openssl dgst -sha256`).

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use kraken_core::{ByteSize, PieceLengthPolicy};
use serde::Serialize;

use crate::rate::Rate;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// One seeder and N fetchers as separate processes, every node capped: completion
    /// times against the fluid bound T*, and optionally against an aria2c swarm.
    Swarm(SwarmArgs),
    /// One seeder to one fetcher, uncapped: throughput against `openssl dgst -sha256` on the
    /// same file, and the fetcher's peak memory.
    Transfer(TransferArgs),
    /// `GET` of a blob cached by a `kraken origin` against CNCF Distribution
    /// (`docker-registry`) serving the same blob from its filesystem.
    Origin(crate::bench_origin::OriginBenchArgs),
    /// The registry end to end through `kraken devcluster` — push to the proxy, pull through
    /// two agents, cached and 50 concurrent pulls from an agent — against CNCF Distribution.
    Registry(crate::bench_registry::RegistryBenchArgs),
}

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

#[derive(Debug, clap::Args)]
pub(crate) struct TransferArgs {
    /// Blob size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Rounds; each side keeps its best.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Piece length; default: the standard table's choice for the blob size.
    #[arg(long)]
    piece_length: Option<ByteSize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Kills the process when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Serialize)]
struct SwarmReport {
    fetchers: u8,
    size: u64,
    rate: u64,
    t_star: f64,
    kraken: Completion,
    aria2: Option<Completion>,
}

#[derive(Debug, Serialize)]
struct Completion {
    p50: f64,
    p99: f64,
    max: f64,
    p50_t_star: f64,
    p99_t_star: f64,
}

impl Completion {
    fn new(mut seconds: Vec<f64>, t_star: f64) -> Self {
        seconds.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            seconds[((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len()) - 1]
        };
        let (p50, p99) = (rank(0.5), rank(0.99));
        Self {
            p50,
            p99,
            max: *seconds.last().expect("at least one fetcher"),
            p50_t_star: p50 / t_star,
            p99_t_star: p99 / t_star,
        }
    }
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Swarm(args) => swarm(args),
        BenchCommand::Transfer(args) => transfer(args),
        BenchCommand::Origin(args) => crate::bench_origin::run(args),
        BenchCommand::Registry(args) => crate::bench_registry::run(args),
    }
}

fn swarm(args: SwarmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.fetchers >= 1 && args.fetchers <= 200,
        "1 to 200 fetchers"
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob");
    write_random_file(&file, args.size.bytes(), 0)?;
    let (s, rate, n) = (
        args.size.bytes() as f64,
        args.rate.0.bytes() as f64,
        f64::from(args.fetchers),
    );
    // DESIGN.md §8 with d = u = U = rate.
    let t_star = (s / rate).max(n * s / (rate + n * rate));

    let kraken = Completion::new(kraken_swarm(dir.path(), &file, &args)?, t_star);
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
                "{name:<8} p50 {:>6.2}s ({:.2} T*)   p99 {:>6.2}s ({:.2} T*)   max {:>6.2}s",
                c.p50, c.p50_t_star, c.p99, c.p99_t_star, c.max
            );
        };
        line("kraken", &report.kraken);
        if let Some(aria2) = &report.aria2 {
            line("aria2c", aria2);
            println!(
                "kraken p99 is {:.2}x faster than aria2c's",
                aria2.p99 / report.kraken.p99
            );
        }
    }
    Ok(())
}

/// Runs the Kraken swarm and returns each fetcher's completion time in seconds.
fn kraken_swarm(dir: &Path, file: &Path, args: &SwarmArgs) -> anyhow::Result<Vec<f64>> {
    let rate = args.rate.0.bytes().to_string();
    let (_tracker, tracker_url) = spawn_tracker()?;
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
        let store = dir.join(format!("fetcher{i}"));
        let mut child = fetch_command(
            &digest,
            &tracker_url,
            &ip,
            &store,
            &dir.join(format!("out{i}")),
        )?
        .args(["--seed-after", "--rate", &rate, "--announce-interval", "1s"])
        .args(&max_conns)
        .stdout(Stdio::piped())
        .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        fetchers.push((
            Process(child),
            BufReader::new(stdout),
            t0.elapsed().as_secs_f64(),
        ));
    }
    let mut times = Vec::new();
    for (_process, stdout, started) in &mut fetchers {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let report: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("a fetcher failed (printed {line:?})"))?;
        let seconds = report["download_seconds"]
            .as_f64()
            .context("download_seconds")?;
        times.push(*started + seconds);
    }
    Ok(times)
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

#[derive(Debug, Serialize)]
struct TransferReport {
    size: u64,
    openssl_seconds: f64,
    openssl_mb_s: f64,
    /// The seeder sends with `sendfile` (the default).
    send_file: TransferResult,
    /// The seeder reads and writes every piece (`--no-send-file`), for comparison.
    copying: TransferResult,
    fetcher_peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TransferResult {
    fetch_seconds: f64,
    fetch_mb_s: f64,
    /// openssl's time over the fetch's: the goal is 0.7.
    ratio: f64,
}

/// One seeder of its own blob, and the best fetch time seen from it.
struct TransferSeeder {
    mode: &'static str,
    _process: Process,
    digest: String,
    best: f64,
}

fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_tracker, tracker_url) = spawn_tracker()?;
    let piece_length = args.piece_length.map(|l| l.bytes().to_string());
    // Two seeders of two blobs of the same size (different bytes, so different digests),
    // so that a fetch meets only the seeder it measures.
    let mut seeders = Vec::new();
    let modes = [
        ("send-file", &[][..]),
        ("copying", &["--no-send-file".to_owned()][..]),
    ];
    for (seed, (name, extra)) in (0..).zip(modes) {
        let file = dir.path().join(format!("{name}.blob"));
        write_random_file(&file, args.size.bytes(), seed)?;
        let (process, digest) = spawn_seeder(
            dir.path(),
            &file,
            &tracker_url,
            None,
            piece_length.as_deref(),
            extra,
            &format!("seeder-{name}"),
        )?;
        seeders.push(TransferSeeder {
            mode: name,
            _process: process,
            digest,
            best: f64::MAX,
        });
    }
    let reference = dir.path().join("send-file.blob");
    let mut openssl_seconds = f64::MAX;
    let mut peak_rss = None;
    for round in 0..args.rounds.max(1) {
        for seeder in &mut seeders {
            // Let the kernel write back the last fetch first: write-back running during the
            // timed part swings results by 2x on this kind of machine.
            settle_disk()?;
            let start = Instant::now();
            let openssl = Command::new("openssl")
                .args(["dgst", "-sha256"])
                .arg(&reference)
                .output()
                .context("openssl must be installed")?;
            openssl_seconds = openssl_seconds.min(start.elapsed().as_secs_f64());
            anyhow::ensure!(openssl.status.success(), "openssl failed");

            let store = dir.path().join(format!("fetcher{round}"));
            let out = fetch_command(
                &seeder.digest,
                &tracker_url,
                "127.0.0.10",
                &store,
                &dir.path().join("out"),
            )?
            .output()?;
            anyhow::ensure!(
                out.status.success(),
                "fetch failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let seconds = report["download_seconds"]
                .as_f64()
                .context("download_seconds")?;
            eprintln!("round {round}: {} {seconds:.2} s", seeder.mode);
            seeder.best = seeder.best.min(seconds);
            peak_rss = peak_rss.max(report["peak_rss_bytes"].as_u64());
            std::fs::remove_dir_all(&store)?;
        }
    }
    let mb = args.size.bytes() as f64 / 1e6;
    let result = |seconds: f64| TransferResult {
        fetch_seconds: seconds,
        fetch_mb_s: mb / seconds,
        ratio: openssl_seconds / seconds,
    };
    let report = TransferReport {
        size: args.size.bytes(),
        openssl_seconds,
        openssl_mb_s: mb / openssl_seconds,
        send_file: result(seeders[0].best),
        copying: result(seeders[1].best),
        fetcher_peak_rss_bytes: peak_rss,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} blob, one seeder -> one fetcher, uncapped, loopback, best of {}",
            args.size, args.rounds
        );
        println!(
            "openssl dgst -sha256            {:>8.1} MB/s",
            report.openssl_mb_s
        );
        for (what, result) in [
            ("kraken fetch (sendfile)", &report.send_file),
            ("kraken fetch (copying seeder)", &report.copying),
        ] {
            println!(
                "{what:<31} {:>8.1} MB/s   ratio {:.2}",
                result.fetch_mb_s, result.ratio
            );
        }
        if let Some(rss) = report.fetcher_peak_rss_bytes {
            println!(
                "fetcher peak RSS                {} (highest of the rounds)",
                ByteSize(rss)
            );
        }
    }
    Ok(())
}

pub(crate) fn settle_disk() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    Ok(())
}

pub(crate) fn kraken_command() -> anyhow::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env("RUST_LOG", "error");
    Ok(command)
}

/// `kraken fetch` of `digest` from a node on `ip`, quiet, with a JSON report on stdout.
fn fetch_command(
    digest: &str,
    tracker: &str,
    ip: &str,
    store: &Path,
    out: &Path,
) -> anyhow::Result<Command> {
    let mut command = kraken_command()?;
    command
        .args(["fetch", digest, "--tracker", tracker, "--quiet", "--json"])
        .args(["--listen", &format!("{ip}:{}", free_port(ip)?)])
        .arg("--store")
        .arg(store)
        .arg("--out")
        .arg(out);
    Ok(command)
}

fn spawn_tracker() -> anyhow::Result<(Process, String)> {
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    let tracker = Process(
        kraken_command()?
            .args(["tracker", "--listen", &addr, "--announce-interval", "1s"])
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&addr)?;
    Ok((tracker, format!("http://{addr}")))
}

fn spawn_seeder(
    dir: &Path,
    file: &Path,
    tracker: &str,
    rate: Option<&str>,
    piece_length: Option<&str>,
    extra_args: &[String],
    store: &str,
) -> anyhow::Result<(Process, String)> {
    let listen = format!("127.0.0.2:{}", free_port("127.0.0.2")?);
    let mut command = kraken_command()?;
    command
        .arg("seed")
        .arg(file)
        .args([
            "--tracker",
            tracker,
            "--listen",
            &listen,
            "--announce-interval",
            "1s",
        ])
        .arg("--store")
        .arg(dir.join(store))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(rate) = rate {
        command.args(["--rate", rate]);
    }
    if let Some(length) = piece_length {
        command.args(["--piece-length", length]);
    }
    command.args(extra_args);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let process = Process(child);
    let mut digest = String::new();
    BufReader::new(stdout).read_line(&mut digest)?;
    anyhow::ensure!(digest.starts_with("sha256:"), "the seeder failed to start");
    Ok((process, digest.trim().to_owned()))
}

pub(crate) fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

pub(crate) fn wait_for_port(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Incompressible content, written in one pass.
/// A file of `size` pseudo-random bytes; the same `seed` makes the same bytes.
pub(crate) fn write_random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    let mut block = [0u8; 8192];
    let mut written = 0;
    while written < size {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = block.len().min((size - written) as usize);
        out.write_all(&block[..n])?;
        written += n as u64;
    }
    out.flush()?;
    Ok(())
}
