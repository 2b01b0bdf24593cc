//! An origin whose store holds many blobs starts without touching each one: it opens no file
//! per blob and announces nothing until a blob is wanted — then announces and publishes
//! just that blob, and serves it over P2P. Runs `kraken bench origin-scale` (real `kraken
//! origin`, `kraken tracker` and `kraken fetch` processes) on 2,000 small blobs and checks
//! the counts it reports, not its times.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::KRAKEN;

const BLOBS: u64 = 2000;
const WANTED: u64 = 10;

#[test]
fn an_origin_with_many_blobs_opens_and_announces_only_what_is_wanted() {
    let mut child = Command::new(KRAKEN)
        .args(["bench", "origin-scale", "--json", "--window", "1s"])
        .args([
            "--blobs",
            &BLOBS.to_string(),
            "--wanted",
            &WANTED.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kraken bench origin-scale did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "kraken bench origin-scale failed: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let count = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing: {report}"))
    };
    // Seeding every held blob at start-up opened one file per blob and published and
    // announced each one.
    assert!(
        count("open_files_max") < BLOBS / 10,
        "the origin held a file per blob open: {report}"
    );
    assert_eq!(
        count("startup_announces"),
        0,
        "the origin announced blobs nobody asked for: {report}"
    );
    assert_eq!(
        count("startup_publishes"),
        0,
        "the origin published the metainfo of blobs nobody asked for: {report}"
    );
    // The wanted ones are published, each once, and announced.
    assert_eq!(count("wanted_publishes"), WANTED, "{report}");
    assert!(
        report["wanted_announces_per_minute"].as_f64().unwrap() > 0.0,
        "the wanted blobs were not announced: {report}"
    );
}
