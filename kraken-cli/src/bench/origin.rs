//! `kraken bench origin`: an origin's `GET` of a cached blob against CNCF Distribution
//! (`docker-registry`) serving the same blob from its filesystem, both read by `curl` on
//! loopback in the same invocation.

use std::process::Stdio;

use anyhow::{Context as _, bail};
use kraken_core::ByteSize;
use kraken_registry::origin::{CommitKind, MembersConfig, OriginClient, OriginConfig};
use serde::Serialize;

use super::process::{
    Process, curl_seconds, digest_of, free_port, kraken_command, settle_disk, start_distribution,
    wait_for_port, which, write_random_file,
};

#[derive(Debug, clap::Args)]
pub(crate) struct OriginBenchArgs {
    /// Blob size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Rounds; each server keeps its best.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct OriginBenchReport {
    size: u64,
    rounds: u32,
    registry_seconds: f64,
    origin_seconds: f64,
    registry_mb_s: f64,
    origin_mb_s: f64,
    /// Origin throughput over the registry's: ≥ 1.0 means the origin is at least as fast.
    ratio: f64,
}

const REPO: &str = "bench/blob";

pub(crate) fn run(args: OriginBenchArgs) -> anyhow::Result<()> {
    let Some(registry_bin) = which("docker-registry") else {
        bail!("docker-registry not found; install it with: apt-get install docker-registry");
    };
    which("curl").context("curl must be installed")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob");
    write_random_file(&file, args.size.bytes(), 0)?;
    let digest = digest_of(&file)?;

    // CNCF Distribution: the blob placed in its filesystem layout and linked into a
    // repository, as a push would leave it.
    let root = dir.path().join("registry");
    let hex = digest.hex();
    let blob_dir = root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}",
        &hex[..2]
    ));
    std::fs::create_dir_all(&blob_dir)?;
    std::fs::copy(&file, blob_dir.join("data"))?;
    let link = root.join(format!(
        "docker/registry/v2/repositories/{REPO}/_layers/sha256/{hex}"
    ));
    std::fs::create_dir_all(&link)?;
    std::fs::write(link.join("link"), digest.to_string())?;
    let (_registry, registry_addr) = start_distribution(&registry_bin, &root, dir.path())?;

    // The origin, with the blob uploaded (so cached) before the timed part.
    let origin_addr = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    let mut config = OriginConfig::new(origin_addr.parse()?, dir.path().join("origin"));
    config.cluster.members = MembersConfig::Static(vec![origin_addr.clone()]);
    // An origin refuses uploads it could never write back.
    let backend_root = toml::Value::String(dir.path().join("origin-backend").display().to_string());
    config.backends = toml::from_str(&format!(
        "[[routes]]\nnamespace = \".*\"\nbackend = {{ type = \"fs\", root = {backend_root} }}"
    ))?;
    let origin_config = dir.path().join("origin.toml");
    std::fs::write(&origin_config, toml::to_string(&config)?)?;
    let _origin = Process(
        kraken_command()?
            .args(["origin", "--config"])
            .arg(&origin_config)
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&origin_addr)?;
    crate::process::runtime()?.block_on(async {
        OriginClient::new()?
            .upload_file(&origin_addr, REPO, &digest, &file, CommitKind::Primary)
            .await
    })?;

    let registry_url = format!("http://{registry_addr}/v2/{REPO}/blobs/{digest}");
    let origin_url = format!(
        "http://{origin_addr}/namespace/{}/blobs/{digest}",
        REPO.replace('/', "%2F")
    );
    let mut registry_seconds = f64::MAX;
    let mut origin_seconds = f64::MAX;
    for _ in 0..args.rounds.max(1) {
        settle_disk()?;
        registry_seconds = registry_seconds.min(curl_seconds(&registry_url, args.size.bytes())?);
        origin_seconds = origin_seconds.min(curl_seconds(&origin_url, args.size.bytes())?);
    }
    let mb = args.size.bytes() as f64 / 1e6;
    let report = OriginBenchReport {
        size: args.size.bytes(),
        rounds: args.rounds,
        registry_seconds,
        origin_seconds,
        registry_mb_s: mb / registry_seconds,
        origin_mb_s: mb / origin_seconds,
        ratio: registry_seconds / origin_seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} cached blob, GET by curl on loopback, best of {}",
            args.size, args.rounds
        );
        println!(
            "docker-registry (CNCF Distribution)  {:>8.1} MB/s",
            report.registry_mb_s
        );
        println!(
            "kraken origin                        {:>8.1} MB/s   ratio {:.2}",
            report.origin_mb_s, report.ratio
        );
    }
    Ok(())
}
