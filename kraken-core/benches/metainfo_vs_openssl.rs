//! Metainfo generation against `openssl dgst -sha256`, on the same file in the same run.
//!
//! ```text
//! cargo bench -p kraken-core --bench metainfo_vs_openssl
//! KRAKEN_BENCH_SIZE=4GiB KRAKEN_BENCH_ROUNDS=5 cargo bench -p kraken-core --bench metainfo_vs_openssl
//! ```
//!
//! Generating a metainfo is one SHA-256 pass over the blob (the piece hashes are the hash's
//! chaining values at piece boundaries), so it is compared with one `openssl` SHA-256 pass,
//! the fastest single verified read of the file on this machine. The file is read once before timing so both read it from
//! the page cache. Each side runs `KRAKEN_BENCH_ROUNDS` times (default 3) and keeps its best.
//! Under `cargo test --benches` (no `--bench` argument) it runs once on a small file.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kraken_core::{ByteSize, MetaInfo, PieceLengthPolicy};

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let size = match std::env::var("KRAKEN_BENCH_SIZE") {
        Ok(s) => s.parse::<ByteSize>().expect("KRAKEN_BENCH_SIZE").bytes(),
        Err(_) if benchmarking => 1 << 30,
        Err(_) => 8 << 20,
    };
    let rounds: usize = std::env::var("KRAKEN_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("KRAKEN_BENCH_ROUNDS"))
        .unwrap_or(if benchmarking { 3 } else { 1 });

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().join("blob");
    write_pseudo_random_file(&path, size);
    warm_page_cache(&path);

    let policy = PieceLengthPolicy::default();
    let mut openssl_best = Duration::MAX;
    let mut ours_best = Duration::MAX;
    for _ in 0..rounds {
        let (elapsed, openssl_hex) = time(|| openssl_sha256(&path));
        openssl_best = openssl_best.min(elapsed);

        let (elapsed, meta) = time(|| MetaInfo::from_file(&path, &policy).expect("metainfo"));
        ours_best = ours_best.min(elapsed);
        assert_eq!(meta.digest().hex(), openssl_hex, "digests disagree");
    }

    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "file: {} ({size} bytes), piece length {}, best of {rounds}",
        ByteSize(size),
        ByteSize(policy.piece_length_for(size)),
    );
    println!(
        "openssl dgst -sha256           {:>8.1} MB/s",
        rate(openssl_best)
    );
    println!(
        "MetaInfo::from_file            {:>8.1} MB/s   ratio {:.2}",
        rate(ours_best),
        rate(ours_best) / rate(openssl_best)
    );
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

fn openssl_sha256(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(path)
        .output()
        .expect("openssl must be installed (Debian package `openssl`)");
    assert!(out.status.success(), "openssl failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split_whitespace().next().expect("hex").to_owned()
}

/// Incompressible content (xorshift), so nothing below us can shortcut it.
fn write_pseudo_random_file(path: &Path, size: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create"));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut written = 0;
    let mut block = [0u8; 8192];
    while written < size {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = block.len().min((size - written) as usize);
        out.write_all(&block[..n]).expect("write");
        written += n as u64;
    }
    out.flush().expect("flush");
}

fn warm_page_cache(path: &Path) {
    let mut file = File::open(path).expect("open");
    let mut buf = vec![0; 1 << 20];
    while file.read(&mut buf).expect("read") > 0 {}
}
