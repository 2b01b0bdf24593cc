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

/// `kraken bench registry` against CNCF Distribution: each push-and-pull round is reported
/// (the image's layer, then fresh layers), per agent, with the median of the rounds.
#[test]
fn bench_registry_reports_every_round_and_the_medians() {
    if kraken_testkit::require_package("docker-registry", "docker-registry").is_none() {
        return;
    }
    let output = kraken_testkit::run(
        Command::new(KRAKEN)
            .args(["bench", "registry", "--size", "8MiB", "--rounds", "1"])
            .args(["--concurrency", "2", "--pull-rounds", "3", "--json"]),
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let ratios = |value: &serde_json::Value| -> Vec<f64> {
        let all: Vec<f64> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(all.iter().all(|&x| x > 0.0), "{report}");
        all
    };
    let middle = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[1]
    };
    let pushes = ratios(&report["round_push_layer_openssl_ratios"]);
    assert_eq!(pushes.len(), 3, "{report}");
    assert_eq!(pushes[0], report["push_layer_openssl_ratio"], "{report}");
    assert_eq!(
        middle(pushes),
        report["median_push_layer_openssl_ratio"],
        "{report}"
    );
    let agents = report["round_pull_layer_openssl_ratios"]
        .as_array()
        .unwrap();
    assert_eq!(agents.len(), 2, "{report}");
    for (i, agent) in agents.iter().enumerate() {
        let pulls = ratios(agent);
        assert_eq!(pulls.len(), 3, "{report}");
        assert_eq!(pulls[0], report["pull_layer_openssl_ratios"][i], "{report}");
        assert_eq!(
            middle(pulls),
            report["median_pull_layer_openssl_ratios"][i],
            "{report}"
        );
    }
}
