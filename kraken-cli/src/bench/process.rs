//! The child processes the benchmarks run and time: `kraken` roles, the reference programs
//! (CNCF Distribution, curl, openssl), and the files they move.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kraken_core::{Digest, Hasher};

/// Kills the process when dropped.
pub(super) struct Process(pub(super) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn settle_disk() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    Ok(())
}

/// Whether a benchmark recycles page-cache memory before the phases that write (the
/// default), see [`PageCache::recycle`].
#[derive(Debug, clap::Args)]
pub(super) struct PageCache {
    /// Do not recycle page-cache memory before each phase that writes: on a virtual machine
    /// that returns free memory to its host, the writes then also time the host backing
    /// each page again.
    #[arg(long)]
    no_recycle: bool,
}

impl PageCache {
    /// Whether [`recycle`](Self::recycle) does anything.
    pub(super) fn recycles(&self) -> bool {
        !self.no_recycle
    }

    /// Before a phase that writes `bytes`, unless `--no-recycle`: writes as many bytes of
    /// zeros to a scratch file in `dir` and deletes it, so that the page cache the phase
    /// writes lands on memory this machine has just used.
    ///
    /// This machine is a virtual machine that reports free memory back to its host
    /// (`page_reporting`), and the host backs a guest page again only when it is next
    /// touched: writing 1 GiB into memory handed back this way took 2.9–3.0 s here, against
    /// 0.34 s into memory freed a moment before (`dd` of the same file, docs/benchmarks.md).
    /// A host whose memory has been in use — every server an agent or an origin runs on —
    /// pays the second price; without this, which price a phase paid depended on what the
    /// phases before it happened to free.
    pub(super) fn recycle(&self, dir: &Path, bytes: u64) -> anyhow::Result<()> {
        if self.no_recycle {
            return Ok(());
        }
        let path = dir.join("page-cache-scratch");
        let mut file = std::fs::File::create(&path).context("creating the scratch file")?;
        let zeros = vec![0; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            file.write_all(&zeros[..n as usize])
                .context("writing the scratch file")?;
            left -= n;
        }
        drop(file);
        std::fs::remove_file(&path).context("removing the scratch file")?;
        Ok(())
    }
}

pub(super) fn kraken_command() -> anyhow::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env("RUST_LOG", "error");
    Ok(command)
}

/// `kraken fetch` of `digest` from a node on `ip` into `out`, quiet, with a JSON report on
/// stdout; otherwise as a user runs it (the default store, beside `out`; the default
/// announce interval; no seeding after the download).
pub(super) fn fetch_command(
    digest: &str,
    tracker: &str,
    ip: &str,
    out: &Path,
    extra_args: &[String],
) -> anyhow::Result<Command> {
    let mut command = kraken_command()?;
    command
        .args(["fetch", digest, "--tracker", tracker, "--quiet", "--json"])
        .args(extra_args)
        .args(["--listen", &format!("{ip}:{}", free_port(ip)?)])
        .arg("--out")
        .arg(out);
    Ok(command)
}

/// What one timed `kraken fetch` process reported, and how long it ran.
pub(super) struct TimedFetch {
    /// From the process's start to its exit with the blob at `--out`: what a user waits for.
    pub(super) wall_seconds: f64,
    /// Its own JSON report (`download_seconds`: from its start to the blob verified).
    pub(super) report: serde_json::Value,
}

/// Runs `command` (a [`fetch_command`]) to its exit, timing it; fails if it fails.
pub(super) fn run_fetch(mut command: Command) -> anyhow::Result<TimedFetch> {
    let started = Instant::now();
    let out = command.stderr(Stdio::piped()).output()?;
    let wall_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("a fetch printed {:?}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(TimedFetch {
        wall_seconds,
        report,
    })
}

/// The publish token file a benchmark's tracker and seeders share, under `dir`.
fn token_file(dir: &Path) -> std::path::PathBuf {
    dir.join("publish-token")
}

/// A tracker on loopback whose publish token (written under `dir`) the seeders hold.
pub(super) fn spawn_tracker(dir: &Path) -> anyhow::Result<(Process, String)> {
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    std::fs::write(token_file(dir), "kraken-bench-publish-token")?;
    let tracker = Process(
        kraken_command()?
            .args(["tracker", "--listen", &addr])
            .arg("--publish-token-file")
            .arg(token_file(dir))
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&addr)?;
    Ok((tracker, format!("http://{addr}")))
}

pub(super) fn spawn_seeder(
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
        .args(["--tracker", tracker, "--listen", &listen])
        .arg("--store")
        .arg(dir.join(store))
        .arg("--publish-token-file")
        .arg(token_file(dir))
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

pub(super) fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

pub(super) fn wait_for_port(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// A file of `size` pseudo-random bytes; the same `seed` makes the same bytes.
pub(super) fn write_random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
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

/// Starts CNCF Distribution on a free loopback port with filesystem storage under `root`
/// (its config written into `dir`); returns it and its `host:port` once it listens.
pub(super) fn start_distribution(
    binary: &Path,
    root: &Path,
    dir: &Path,
) -> anyhow::Result<(Process, String)> {
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nhealth:\n  storagedriver:\n    enabled: false\n",
            root.display()
        ),
    )?;
    let process = Process(
        Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry")?,
    );
    wait_for_port(&addr)?;
    Ok((process, addr))
}

/// Seconds `curl` takes to `GET` `url` into /dev/null, checking the byte count.
pub(super) fn curl_seconds(url: &str, expected: u64) -> anyhow::Result<f64> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
        ])
        .arg(url)
        .output()
        .context("running curl")?;
    anyhow::ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (size, seconds) = text.trim().split_once(' ').context("curl output")?;
    anyhow::ensure!(
        size.parse::<u64>()? == expected,
        "curl {url}: got {size} bytes"
    );
    Ok(seconds.parse()?)
}

pub(super) fn digest_of(path: &Path) -> anyhow::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}
