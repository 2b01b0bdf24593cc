//! `kraken metainfo` run as a real process.

use std::process::{Command, Output};

fn kraken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kraken"))
        .args(args)
        .output()
        .expect("run kraken")
}

fn sample_file(len: usize) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    std::fs::write(file.path(), data).unwrap();
    file
}

#[test]
fn prints_json_with_the_requested_piece_length() {
    let file = sample_file(10_000);
    let out = kraken(&[
        "metainfo",
        file.path().to_str().unwrap(),
        "--piece-length",
        "4KiB",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = std::fs::read(file.path()).unwrap();
    let meta = kraken_core::MetaInfo::from_bytes(&data, 4096).unwrap();
    assert_eq!(report["digest"], meta.digest().to_string());
    assert_eq!(report["size"], 10_000);
    assert_eq!(report["piece_length"], 4096);
    assert_eq!(report["piece_count"], 3);
    assert_eq!(report["info_hash"], meta.info_hash().to_string());
}

#[test]
fn prints_a_table_with_the_default_policy() {
    let file = sample_file(0);
    let out = kraken(&["metainfo", file.path().to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(
        "digest        sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ));
    assert!(text.contains("piece length  262144 (256KiB)"), "{text}");
    assert!(text.contains("pieces        0"), "{text}");
}

#[test]
fn rejects_bad_sizes_and_missing_files() {
    let file = sample_file(10);
    let path = file.path().to_str().unwrap();
    let out = kraken(&["metainfo", path, "--piece-length", "4XB"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
    let out = kraken(&["metainfo", path, "--piece-length", "1GiB"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("piece length"));
    let out = kraken(&["metainfo", "/nonexistent/file"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"));
}
