//! `kraken bench` commands run end to end at small sizes: they must complete and report what
//! they claim to measure.

mod support;

use std::process::Command;

use support::KRAKEN;

/// `kraken bench model`: every fetcher lays out the whole tree, and writes each byte of the
/// model once (a download copied through a store would write about twice the model).
#[test]
fn bench_model_reports_wall_time_memory_and_bytes_written() {
    let output = kraken_testkit::run(
        Command::new(KRAKEN)
            .args(["bench", "model", "--shards", "2", "--shard-size", "8MiB"])
            .args(["--fetchers", "3", "--rate", "64MiB", "--json"]),
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let model = report["model_bytes"].as_u64().unwrap();
    assert!(model > 16 << 20, "{report}");
    let walls = report["wall_seconds"].as_array().unwrap();
    assert_eq!(walls.len(), 3);
    assert!(walls.iter().all(|w| w.as_f64().unwrap() > 0.0), "{report}");
    assert!(
        report["max_peak_rss_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    for written in report["written_bytes"].as_array().unwrap() {
        let written = written.as_u64().unwrap();
        assert!(
            written >= model && (written as f64) < 1.5 * model as f64,
            "a fetcher wrote {written} bytes for a model of {model}"
        );
    }
}
