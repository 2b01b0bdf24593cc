//! `kraken bench transfer`: one seeder to one fetcher, uncapped, against `openssl dgst
//! -sha256` of the same file.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use kraken_core::ByteSize;
use serde::Serialize;

use super::process::{
    Process, fetch_command, settle_disk, spawn_seeder, spawn_tracker, write_random_file,
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

pub(super) fn run(args: TransferArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_tracker, tracker_url) = spawn_tracker(dir.path())?;
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
