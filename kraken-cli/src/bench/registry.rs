//! `kraken bench registry`: the registry front-ends end to end, against CNCF Distribution
//! (`docker-registry`, filesystem storage) in the same invocation, every request made by
//! `curl` on loopback:
//!
//! 1. push an image with one large layer to the devcluster's proxy, and to Distribution;
//! 2. pull it through each agent in turn, each cold (the blobs travel over P2P: the first
//!    agent's from the origin, the second's from the origin and the first agent), and from
//!    Distribution;
//! 3. `GET` of the now cached layer from an agent against Distribution, best of `--rounds`;
//! 4. `--concurrency` simultaneous pulls of the layer from one agent against as many from
//!    Distribution;
//! 5. `--pull-rounds` − 1 more rounds of steps 1 and 2 with fresh random layers of the same
//!    size (the layer alone, by digest): one cold pull is one sample of a figure that
//!    varies from run to run, so the report gives every round's and their median.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use kraken_core::{ByteSize, Digest};
use serde::Serialize;

use super::process::{
    PageCache, Process, curl_seconds, digest_of, kraken_command, settle_disk, start_distribution,
    which,
};

#[derive(Debug, clap::Args)]
pub(crate) struct RegistryBenchArgs {
    /// Size of the image's one layer.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Rounds of the cached `GET`; each server keeps its best.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Simultaneous pulls of the layer from one agent (and from Distribution).
    #[arg(long, default_value_t = 50)]
    concurrency: u32,
    /// Rounds of push and cold pull: the image's layer, then fresh random layers of the
    /// same size, each pushed to the proxy and to Distribution and pulled cold through each
    /// agent in turn, after the other phases.
    #[arg(long, default_value_t = 3)]
    pull_rounds: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    page_cache: PageCache,
}

#[derive(Debug, Default, Serialize)]
struct RegistryBenchReport {
    layer_bytes: u64,
    /// `openssl dgst -sha256` of the layer file (best of 2), the same run's reference.
    openssl_seconds: f64,
    /// The layer's upload (`PUT` with the whole body) alone, request start to last byte.
    push_layer_proxy_seconds: f64,
    push_layer_registry_seconds: f64,
    /// openssl's time over the proxy's layer upload (goal ≥ 0.4).
    push_layer_openssl_ratio: f64,
    /// Distribution's whole push over the proxy's (goal ≥ 2).
    push_ratio: f64,
    /// The cold layer `GET` alone through each agent (one agent at a time), request start
    /// to last byte, and openssl's time over each (goal ≥ 0.5).
    pull_layer_agent_seconds: Vec<f64>,
    pull_layer_openssl_ratios: Vec<f64>,
    /// Each round's cached-`GET` ratio (agent over Distribution), in order.
    cached_ratios: Vec<f64>,
    /// openssl's time over the proxy's layer `PUT` in each push-and-pull round (the
    /// image's first), and their median.
    round_push_layer_openssl_ratios: Vec<f64>,
    median_push_layer_openssl_ratio: f64,
    /// Per agent, openssl's time over its cold layer `GET` in each round, and their
    /// medians (goal ≥ 0.5 each).
    round_pull_layer_openssl_ratios: Vec<Vec<f64>>,
    median_pull_layer_openssl_ratios: Vec<f64>,
    /// Push of the image (config, layer, manifest by tag), seconds.
    push_proxy_seconds: f64,
    push_registry_seconds: f64,
    /// Pull of the image by tag (manifest, config, layer), seconds: each agent in turn.
    pull_agent_seconds: Vec<f64>,
    pull_registry_seconds: f64,
    /// Cached layer `GET`, best of the rounds, MB/s; ratio = agent over registry.
    cached_agent_mb_s: f64,
    cached_registry_mb_s: f64,
    cached_ratio: f64,
    /// `concurrency` simultaneous layer pulls: wall seconds and aggregate MB/s.
    concurrency: u32,
    concurrent_agent_seconds: f64,
    concurrent_registry_seconds: f64,
    concurrent_agent_mb_s: f64,
    concurrent_registry_mb_s: f64,
    concurrent_ratio: f64,
    /// Whether page-cache memory was recycled before the writes (not `--no-recycle`).
    recycled: bool,
}

const REPO: &str = "bench/image";
const TAG: &str = "v1";

/// The image's files and digests.
struct Image {
    layer: PathBuf,
    layer_digest: Digest,
    config: PathBuf,
    config_digest: Digest,
    manifest: PathBuf,
}

pub(crate) fn run(args: RegistryBenchArgs) -> anyhow::Result<()> {
    let Some(registry_bin) = which("docker-registry") else {
        bail!("docker-registry not found; install it with: apt-get install docker-registry");
    };
    which("curl").context("curl must be installed")?;
    let dir = tempfile::tempdir()?;
    let image = write_image(dir.path(), args.size.bytes())?;

    let (_registry, registry) =
        start_distribution(&registry_bin, &dir.path().join("registry"), dir.path())?;

    let mut cluster_command = kraken_command()?;
    cluster_command
        .args(["devcluster", "--ephemeral-ports", "--json", "--agents", "2"])
        .arg("--data-dir")
        .arg(dir.path().join("devcluster"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cluster_command
        .spawn()
        .context("starting kraken devcluster")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().context("devcluster stdout")?),
        &mut line,
    )?;
    let _cluster = Process(child);
    let addrs: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("devcluster printed {line:?}"))?;
    let proxy = addrs["proxy"].as_str().context("proxy address")?.to_owned();
    let agents: Vec<String> = addrs["agents"]
        .as_array()
        .context("agent addresses")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    ensure!(agents.len() == 2, "the devcluster has two agents");

    let mut report = RegistryBenchReport {
        layer_bytes: args.size.bytes(),
        concurrency: args.concurrency,
        recycled: args.page_cache.recycles(),
        ..RegistryBenchReport::default()
    };
    // Before each phase that writes the layer (2× for a push: the origin's copy and its
    // write-back), the same amount of page-cache memory is made warm again.
    let recycle = |bytes: u64| args.page_cache.recycle(dir.path(), bytes);
    settle_disk()?;
    report.openssl_seconds = (0..2)
        .map(|_| timed(|| openssl_digest(&image.layer)))
        .try_fold(f64::MAX, |best, t| t.map(|t| best.min(t)))?;
    settle_disk()?;
    recycle(2 * args.size.bytes())?;
    let started = Instant::now();
    report.push_layer_proxy_seconds = push(&proxy, &image)?;
    report.push_proxy_seconds = started.elapsed().as_secs_f64();
    settle_disk()?;
    recycle(2 * args.size.bytes())?;
    let started = Instant::now();
    report.push_layer_registry_seconds = push(&registry, &image)?;
    report.push_registry_seconds = started.elapsed().as_secs_f64();
    report.push_layer_openssl_ratio = report.openssl_seconds / report.push_layer_proxy_seconds;
    report.push_ratio = report.push_registry_seconds / report.push_proxy_seconds;

    for agent in &agents {
        settle_disk()?;
        recycle(args.size.bytes())?;
        let started = Instant::now();
        let layer = pull(
            agent,
            &image.layer_digest,
            &image.config_digest,
            args.size.bytes(),
        )?;
        report
            .pull_agent_seconds
            .push(started.elapsed().as_secs_f64());
        report.pull_layer_agent_seconds.push(layer);
        report
            .pull_layer_openssl_ratios
            .push(report.openssl_seconds / layer);
    }
    settle_disk()?;
    report.pull_registry_seconds = timed(|| {
        pull(
            &registry,
            &image.layer_digest,
            &image.config_digest,
            args.size.bytes(),
        )
        .map(drop)
    })?;

    let agent_url = blob_url(&agents[0], &image.layer_digest);
    let registry_url = blob_url(&registry, &image.layer_digest);
    let (mut agent_best, mut registry_best) = (f64::MAX, f64::MAX);
    for _ in 0..args.rounds.max(1) {
        settle_disk()?;
        let registry_seconds = curl_seconds(&registry_url, args.size.bytes())?;
        let agent_seconds = curl_seconds(&agent_url, args.size.bytes())?;
        report.cached_ratios.push(registry_seconds / agent_seconds);
        registry_best = registry_best.min(registry_seconds);
        agent_best = agent_best.min(agent_seconds);
    }
    let mb = args.size.bytes() as f64 / 1e6;
    report.cached_agent_mb_s = mb / agent_best;
    report.cached_registry_mb_s = mb / registry_best;
    report.cached_ratio = registry_best / agent_best;

    settle_disk()?;
    let second_agent_url = blob_url(&agents[1], &image.layer_digest);
    report.concurrent_registry_seconds =
        concurrent_gets(&registry_url, args.concurrency, args.size.bytes())?;
    report.concurrent_agent_seconds =
        concurrent_gets(&second_agent_url, args.concurrency, args.size.bytes())?;
    let total_mb = mb * f64::from(args.concurrency);
    report.concurrent_agent_mb_s = total_mb / report.concurrent_agent_seconds;
    report.concurrent_registry_mb_s = total_mb / report.concurrent_registry_seconds;
    report.concurrent_ratio = report.concurrent_registry_seconds / report.concurrent_agent_seconds;

    let cluster = Cluster {
        proxy: &proxy,
        registry: &registry,
        agents: &agents,
    };
    more_rounds(&args, dir.path(), &cluster, &mut report)?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.size);
    }
    Ok(())
}

/// The servers of a run: the devcluster's proxy and agents, and Distribution.
struct Cluster<'a> {
    proxy: &'a str,
    registry: &'a str,
    agents: &'a [String],
}

/// Rounds 2 to `--pull-rounds` of push and cold pull, each with a fresh random layer; then
/// every round's ratios (the first's already in `report`) and their medians.
fn more_rounds(
    args: &RegistryBenchArgs,
    dir: &Path,
    cluster: &Cluster<'_>,
    report: &mut RegistryBenchReport,
) -> anyhow::Result<()> {
    let size = args.size.bytes();
    report.round_push_layer_openssl_ratios = vec![report.push_layer_openssl_ratio];
    report.round_pull_layer_openssl_ratios = report
        .pull_layer_openssl_ratios
        .iter()
        .map(|&ratio| vec![ratio])
        .collect();
    let layer = dir.join("round-layer");
    for round in 1..args.pull_rounds.max(1) {
        super::process::write_random_file(&layer, size, u64::from(round))?;
        let digest = digest_of(&layer)?;
        // As in the first round: the proxy's push, then Distribution's (during which the
        // origin's write-back ends), then each agent's cold pull on recycled memory.
        settle_disk()?;
        args.page_cache.recycle(dir, 2 * size)?;
        let put = push_blob(cluster.proxy, REPO, &layer, &digest)?;
        report
            .round_push_layer_openssl_ratios
            .push(report.openssl_seconds / put);
        settle_disk()?;
        args.page_cache.recycle(dir, 2 * size)?;
        push_blob(cluster.registry, REPO, &layer, &digest)?;
        for (agent, ratios) in cluster
            .agents
            .iter()
            .zip(&mut report.round_pull_layer_openssl_ratios)
        {
            settle_disk()?;
            args.page_cache.recycle(dir, size)?;
            let seconds = curl_seconds(&blob_url(agent, &digest), size)?;
            ratios.push(report.openssl_seconds / seconds);
        }
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        super::nearest_rank(&sorted, 0.5)
    };
    report.median_push_layer_openssl_ratio = median(&report.round_push_layer_openssl_ratios);
    report.median_pull_layer_openssl_ratios = report
        .round_pull_layer_openssl_ratios
        .iter()
        .map(|ratios| median(ratios))
        .collect();
    Ok(())
}

fn print_report(r: &RegistryBenchReport, size: ByteSize) {
    println!(
        "image with one {size} layer; curl on loopback; reference: CNCF Distribution; page cache {}",
        if r.recycled {
            "recycled before each write"
        } else {
            "not recycled"
        }
    );
    println!(
        "openssl dgst -sha256 of the layer {:.2} s (the same run's reference)",
        r.openssl_seconds
    );
    println!(
        "push            proxy {:>7.2} s    docker-registry {:>7.2} s    ratio {:.2}",
        r.push_proxy_seconds, r.push_registry_seconds, r.push_ratio
    );
    println!(
        "  layer PUT     proxy {:>7.2} s    docker-registry {:>7.2} s    openssl ratio {:.2}",
        r.push_layer_proxy_seconds, r.push_layer_registry_seconds, r.push_layer_openssl_ratio
    );
    let agents: Vec<String> = r
        .pull_agent_seconds
        .iter()
        .map(|s| format!("{s:.2} s"))
        .collect();
    println!(
        "pull            agents in turn: {}    docker-registry {:.2} s",
        agents.join(", "),
        r.pull_registry_seconds
    );
    let layers: Vec<String> = r
        .pull_layer_agent_seconds
        .iter()
        .zip(&r.pull_layer_openssl_ratios)
        .map(|(s, ratio)| format!("{s:.2} s (openssl ratio {ratio:.2})"))
        .collect();
    println!(
        "  layer GET     cold, agents in turn: {}",
        layers.join(", ")
    );
    let rounds: Vec<String> = r.cached_ratios.iter().map(|x| format!("{x:.2}")).collect();
    println!(
        "cached GET      agent {:>7.0} MB/s  docker-registry {:>7.0} MB/s  ratio {:.2} (best of each; rounds {})",
        r.cached_agent_mb_s,
        r.cached_registry_mb_s,
        r.cached_ratio,
        rounds.join(", ")
    );
    println!(
        "{} at once   agent {:>7.2} s ({:.0} MB/s)  docker-registry {:>7.2} s ({:.0} MB/s)  ratio {:.2}",
        r.concurrency,
        r.concurrent_agent_seconds,
        r.concurrent_agent_mb_s,
        r.concurrent_registry_seconds,
        r.concurrent_registry_mb_s,
        r.concurrent_ratio
    );
    let list = |ratios: &[f64]| {
        let all: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
        all.join(", ")
    };
    println!(
        "rounds ({} layers) × openssl: layer PUT {} (median {:.2})",
        r.round_push_layer_openssl_ratios.len(),
        list(&r.round_push_layer_openssl_ratios),
        r.median_push_layer_openssl_ratio
    );
    for (i, (ratios, median)) in r
        .round_pull_layer_openssl_ratios
        .iter()
        .zip(&r.median_pull_layer_openssl_ratios)
        .enumerate()
    {
        println!(
            "  cold layer GET through agent {}: {} (median {median:.2})",
            i + 1,
            list(ratios)
        );
    }
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

fn blob_url(host: &str, digest: &Digest) -> String {
    format!("http://{host}/v2/{REPO}/blobs/{digest}")
}

/// A random layer of `size` bytes, a config naming it, and an OCI manifest of both.
fn write_image(dir: &Path, size: u64) -> anyhow::Result<Image> {
    let layer = dir.join("layer");
    super::process::write_random_file(&layer, size, 0)?;
    let layer_digest = digest_of(&layer)?;
    let config = dir.join("config.json");
    let config_bytes = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    std::fs::write(&config, &config_bytes)?;
    let config_digest = Digest::sha256_of(config_bytes.as_bytes());
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{size}}}]}}"#,
            config_bytes.len()
        ),
    )?;
    Ok(Image {
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
    })
}

/// Pushes the config and the layer (each `POST` then one `PUT ?digest=` with the whole
/// body, as skopeo does) and the manifest by tag; returns the layer `PUT`'s time, request
/// start to last byte.
fn push(host: &str, image: &Image) -> anyhow::Result<f64> {
    let mut layer_seconds = 0.0;
    for (file, digest) in [
        (&image.config, &image.config_digest),
        (&image.layer, &image.layer_digest),
    ] {
        // The layer goes last: its time is the one kept.
        layer_seconds = push_blob(host, REPO, file, digest)?;
    }
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", path_str(&image.manifest)?),
        &format!("http://{host}/v2/{REPO}/manifests/{TAG}"),
    ])?;
    Ok(layer_seconds)
}

/// `openssl dgst -sha256 file`, the reference every ratio is against.
fn openssl_digest(file: &Path) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(file)
        .output()
        .context("openssl must be installed")?;
    ensure!(out.status.success(), "openssl failed");
    Ok(())
}

/// Pushes `file` as blob `digest` of `repo`: `POST`, then one `PUT ?digest=` with the whole
/// body, as skopeo does; returns the `PUT`'s time, request start to last byte.
pub(super) fn push_blob(
    host: &str,
    repo: &str,
    file: &Path,
    digest: &Digest,
) -> anyhow::Result<f64> {
    let location = start_upload(host, repo)?;
    let separator = if location.contains('?') { '&' } else { '?' };
    let timing = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        path_str(file)?,
        "-o",
        "/dev/null",
        "-w",
        "%{time_total}",
        &format!("{location}{separator}digest={digest}"),
    ])?;
    Ok(timing.trim().parse()?)
}

/// `POST /v2/<repo>/blobs/uploads/`; the absolute upload URL.
fn start_upload(host: &str, repo: &str) -> anyhow::Result<String> {
    let headers = curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{host}/v2/{repo}/blobs/uploads/"),
    ])?;
    let location = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .context("the upload answer has no Location")?;
    Ok(if location.starts_with('/') {
        format!("http://{host}{location}")
    } else {
        location
    })
}

/// Pulls by tag: the manifest, then the config and the layer (into /dev/null, size
/// checked); returns the layer `GET`'s time, request start to last byte.
fn pull(host: &str, layer: &Digest, config: &Digest, size: u64) -> anyhow::Result<f64> {
    let manifest = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{host}/v2/{REPO}/manifests/{TAG}"),
    ])?;
    ensure!(
        manifest.contains(&layer.to_string()),
        "{host} served another manifest: {manifest}"
    );
    curl(&["-o", "/dev/null", &blob_url(host, config)])?;
    curl_seconds(&blob_url(host, layer), size)
}

/// Wall seconds for `n` simultaneous `curl` GETs of `url`, each checked for `size` bytes.
fn concurrent_gets(url: &str, n: u32, size: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let children: Vec<_> = (0..n.max(1))
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}"])
                .arg(url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .context("running curl")?;
    for child in children {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        ensure!(got == size, "curl {url}: got {got} bytes of {size}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `curl -sS --fail` with `args`; its stdout.
fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a non-UTF-8 temporary path")
}
