//! `kraken sim` run as a real process.

use std::process::{Command, Output};

fn kraken(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kraken"))
        .args(args)
        .output()
        .expect("run kraken")
}

const SMALL: &[&str] = &[
    "sim",
    "--hosts",
    "20",
    "--origins",
    "2",
    "--blobs",
    "4MiB,6MiB",
    "--bandwidth",
    "10MB",
    "--origin-bandwidth",
    "10MB",
    "--piece-length",
    "256KiB",
    "--churn",
    "0.1",
];

fn json(args: &[&str]) -> serde_json::Value {
    let out = kraken(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_processes_with_the_same_seed_report_the_same_run() {
    let mut args = SMALL.to_vec();
    args.push("--json");
    let mut first = json(&args);
    let mut second = json(&args);
    assert_eq!(first["completed"], 18);
    assert_eq!(first["left"], 2);
    assert_eq!(first["image_bytes"], 10 << 20);
    // T* for 10 MiB to 20 hosts at 10 MB/s with 20 MB/s of origins: S/d = 1.048576 s.
    let t_star = first["t_star"].as_f64().unwrap();
    assert!((t_star - 1.048_576).abs() < 1e-9, "{t_star}");
    for field in ["wall_seconds", "peak_rss_bytes"] {
        assert!(first[field].is_number(), "{field} missing");
        first[field] = serde_json::Value::Null;
        second[field] = serde_json::Value::Null;
    }
    assert_eq!(first, second);
    args.extend(["--seed", "2"]);
    let other = json(&args);
    assert_ne!(first["completion_times"], other["completion_times"]);
}

#[test]
fn prints_a_table_and_draws_the_cdf() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("cdf.svg");
    let mut args = SMALL.to_vec();
    args.extend(["--plot", plot.to_str().unwrap()]);
    let out = kraken(&args);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    for line in [
        "T* = 1.05 s",
        "p99.9",
        "hosts: 18 completed, 2 left (churn), 0 unfinished",
        "origin egress",
        "overlay at",
        "simulation:",
    ] {
        assert!(table.contains(line), "no {line:?} in\n{table}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("T* 1.05 s"), "{svg}");
    // One step of the CDF per finished host.
    assert_eq!(svg.matches(" L").count(), 2 * 18, "{svg}");
}

#[test]
fn a_star_sends_everything_from_the_origins() {
    let mut args = SMALL.to_vec();
    args.extend(["--star", "--json"]);
    let star = json(&args);
    assert_eq!(star["bytes_from_peers"], 0);
}

#[test]
fn nonsense_is_refused_with_a_reason() {
    for (flag, value, reason) in [
        ("--churn", "1.5", "--churn is a fraction"),
        ("--heterogeneity", "2", "--heterogeneity is a fraction"),
        ("--hosts", "0", "at least one host"),
        ("--blobs", "0", "positive size"),
    ] {
        let out = kraken(&["sim", flag, value]);
        assert!(!out.status.success(), "{flag} {value} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{flag} {value}: {stderr}");
    }
}
