//! `kraken bench transfer`: one seeder to one fetcher, uncapped, against `openssl dgst
//! -sha256` of the same file.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use kraken_core::ByteSize;
use serde::Serialize;

use super::process::{
    Process, fetch_command, run_fetch, settle_disk, spawn_seeder, spawn_tracker, write_random_file,
};

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

#[derive(Debug, Serialize)]
struct TransferReport {
    size: u64,
    openssl_seconds: f64,
    openssl_mb_s: f64,
    /// The seeder sends with `sendfile` (the default).
    send_file: TransferResult,
    /// The seeder reads and writes every piece (`--no-send-file`), for comparison.
    copying: TransferResult,
    /// Peer TLS on both ends (`--peer-tls-*`, certificates made with `openssl`); pieces are
    /// copied, as TLS needs.
    tls: TransferResult,
    fetcher_peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TransferResult {
    /// Inside the fetch: from its start to the blob verified in its store (best round).
    fetch_seconds: f64,
    fetch_mb_s: f64,
    /// openssl's time over `fetch_seconds`.
    ratio: f64,
    /// What a user waits for: from the process's start to its exit with the blob at
    /// `--out` (best round).
    wall_seconds: f64,
    wall_mb_s: f64,
    /// openssl's time over `wall_seconds`: the goal is 0.7.
    wall_ratio: f64,
    /// Bytes the fetch process wrote to storage (Linux `write_bytes`), in its best round.
    write_bytes: Option<u64>,
}

/// One seeder of its own blob, and the best fetch time seen from it.
struct TransferSeeder {
    mode: &'static str,
    /// Extra flags of the fetch (peer TLS).
    fetch_args: Vec<String>,
    _process: Process,
    digest: String,
    best: f64,
    best_wall: f64,
    write_bytes: Option<u64>,
}

pub(super) fn run(args: TransferArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_tracker, tracker_url) = spawn_tracker(dir.path())?;
    let piece_length = args.piece_length.map(|l| l.bytes().to_string());
    // Two seeders of two blobs of the same size (different bytes, so different digests),
    // so that a fetch meets only the seeder it measures.
    let mut seeders = Vec::new();
    let pki = dir.path().join("pki");
    let (seeder_tls, fetcher_tls) = (
        peer_tls_args(&pki, "seeder")?,
        peer_tls_args(&pki, "fetcher")?,
    );
    let modes = [
        ("send-file", vec![], vec![]),
        ("copying", vec!["--no-send-file".to_owned()], vec![]),
        ("tls", seeder_tls, fetcher_tls),
    ];
    for (seed, (name, extra, fetch_args)) in (0..).zip(modes) {
        let file = dir.path().join(format!("{name}.blob"));
        write_random_file(&file, args.size.bytes(), seed)?;
        let (process, digest) = spawn_seeder(
            dir.path(),
            &file,
            &tracker_url,
            None,
            piece_length.as_deref(),
            &extra,
            &format!("seeder-{name}"),
        )?;
        seeders.push(TransferSeeder {
            mode: name,
            fetch_args,
            _process: process,
            digest,
            best: f64::MAX,
            best_wall: f64::MAX,
            write_bytes: None,
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

            let out = dir.path().join(format!("out-{}", seeder.mode));
            let fetch = run_fetch(fetch_command(
                &seeder.digest,
                &tracker_url,
                "127.0.0.10",
                &out,
                &seeder.fetch_args,
            )?)?;
            let seconds = fetch.report["download_seconds"]
                .as_f64()
                .context("download_seconds")?;
            eprintln!(
                "round {round}: {} {seconds:.2} s inside, {:.2} s wall",
                seeder.mode, fetch.wall_seconds
            );
            seeder.best = seeder.best.min(seconds);
            if fetch.wall_seconds < seeder.best_wall {
                seeder.best_wall = fetch.wall_seconds;
                seeder.write_bytes = fetch.report["write_bytes"].as_u64();
            }
            peak_rss = peak_rss.max(fetch.report["peak_rss_bytes"].as_u64());
            std::fs::remove_file(&out)?;
        }
    }
    let mb = args.size.bytes() as f64 / 1e6;
    let result = |seeder: &TransferSeeder| TransferResult {
        fetch_seconds: seeder.best,
        fetch_mb_s: mb / seeder.best,
        ratio: openssl_seconds / seeder.best,
        wall_seconds: seeder.best_wall,
        wall_mb_s: mb / seeder.best_wall,
        wall_ratio: openssl_seconds / seeder.best_wall,
        write_bytes: seeder.write_bytes,
    };
    let report = TransferReport {
        size: args.size.bytes(),
        openssl_seconds,
        openssl_mb_s: mb / openssl_seconds,
        send_file: result(&seeders[0]),
        copying: result(&seeders[1]),
        tls: result(&seeders[2]),
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
            ("kraken fetch (peer TLS)", &report.tls),
        ] {
            println!(
                "{what:<31} {:>8.1} MB/s   ratio {:.2}   wall (start to exit) {:>8.1} MB/s   ratio {:.2}",
                result.fetch_mb_s, result.ratio, result.wall_mb_s, result.wall_ratio
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

/// Makes (once) a CA and a peer certificate for `name` under `dir` with `openssl`, and
/// returns the `kraken seed`/`fetch` flags that use them, TLS required.
fn peer_tls_args(dir: &std::path::Path, name: &str) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("openssl must be installed")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    if !dir.join("ca.pem").exists() {
        let (key, pem) = (path("ca.key"), path("ca.pem"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            "/CN=bench-ca",
            "-days",
            "1",
        ]);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign",
        ]);
        openssl(&args)?;
    }
    let (key, csr, pem, ext) = (
        path(&format!("{name}.key")),
        path(&format!("{name}.csr")),
        path(&format!("{name}.pem")),
        path("leaf.ext"),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:kraken-peer\n",
    )?;
    let mut args = vec!["req", "-new"];
    args.extend(ec);
    let subject = format!("/CN={name}");
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    openssl(&args)?;
    let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &pem,
    ])?;
    Ok(vec![
        "--peer-tls-cert".into(),
        pem,
        "--peer-tls-key".into(),
        key,
        "--peer-tls-ca".into(),
        ca,
        "--peer-tls-require".into(),
    ])
}
