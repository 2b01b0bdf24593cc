//! Prometheus metrics as an operator scrapes them: a real push into `kraken devcluster` and a
//! real pull out of an agent, then `/metrics` from every listener of every role, parsed
//! strictly; the Grafana dashboard under `deploy/` queries only metrics that are exported;
//! and `[metrics] listen` adds a separate listener to a role started from its config file.

mod support;

use std::collections::BTreeSet;

use kraken_core::Digest;
use kraken_testkit::oci::{OCI_MEDIA_TYPES, push_blob, push_manifest, two_layer_image};
use kraken_testkit::{Exposition, ProcessGuard};

/// A `kraken devcluster` process on free ports, and where each role listens.
struct Cluster {
    _process: ProcessGuard,
    _dir: tempfile::TempDir,
    /// (role, `host:port`) of every HTTP listener.
    listeners: Vec<(&'static str, String)>,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (process, addrs) = support::start_devcluster(2, dir.path());
        let addr = |key: &str| addrs[key].as_str().unwrap().to_owned();
        let mut listeners = vec![
            ("proxy", addr("proxy")),
            ("origin", addr("origin")),
            ("tracker", addr("tracker")),
            ("build-index", addr("build_index")),
        ];
        for agent in addrs["agents"].as_array().unwrap() {
            listeners.push(("agent", agent.as_str().unwrap().to_owned()));
        }
        Self {
            _process: process,
            _dir: dir,
            listeners,
        }
    }

    fn addr(&self, role: &str) -> &str {
        &self.listeners.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

/// Every metric name (`kraken_…`) a dashboard's JSON mentions.
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::String(text) => {
                let mut rest = text.as_str();
                while let Some(start) = rest.find("kraken_") {
                    let name: String = rest[start..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    rest = &rest[start + name.len()..];
                    names.insert(name);
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_metrics_after_a_push_and_a_pull() {
    kraken_backends::install_crypto_provider();
    let cluster = Cluster::start();
    let http = reqwest::Client::new();

    // Push an image to the proxy, as docker would.
    let image = two_layer_image(7, [300_000, 200_000], &OCI_MEDIA_TYPES);
    let proxy = format!("http://{}", cluster.addr("proxy"));
    let mut pushed_bytes = image.config.len() as u64;
    push_blob(&http, &proxy, "demo/app", &image.config).await;
    for layer in &image.layers {
        push_blob(&http, &proxy, "demo/app", layer).await;
        pushed_bytes += layer.len() as u64;
    }
    push_manifest(
        &http,
        &proxy,
        "demo/app",
        "v1",
        OCI_MEDIA_TYPES.manifest,
        &image.manifest,
    )
    .await;

    // Pull it from the first agent: the manifest by tag, then every blob, each verified.
    let agent = format!("http://{}", cluster.listeners[4].1);
    let manifest = http
        .get(format!("{agent}/v2/demo/app/manifests/v1"))
        .header("accept", OCI_MEDIA_TYPES.manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200, "pull the manifest");
    assert_eq!(
        manifest.bytes().await.unwrap().as_ref(),
        &image.manifest[..]
    );
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let pulled = http
            .get(format!("{agent}/v2/demo/app/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(pulled.status(), 200, "pull {digest}");
        let bytes = pulled.bytes().await.unwrap();
        assert_eq!(Digest::sha256_of(&bytes), digest, "pulled bytes");
    }

    // Read a pushed blob from the origin (on disk: a hit) and one nobody pushed (a miss,
    // fetched from the backend, which lacks it).
    let origin = format!("http://{}", cluster.addr("origin"));
    let config_digest = Digest::sha256_of(&image.config);
    let hit = http
        .get(format!(
            "{origin}/namespace/demo%2Fapp/blobs/{config_digest}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(hit.status(), 200, "the origin serves a pushed blob");
    let missing = Digest::sha256_of(b"never pushed");
    let miss = http
        .get(format!("{origin}/namespace/demo%2Fapp/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert!(
        [202, 404].contains(&miss.status().as_u16()),
        "a miss: {}",
        miss.status()
    );
    // The fetch ends in the background; wait for its count (bounded).
    let mut fetched = false;
    for _ in 0..100 {
        let origin_m = Exposition::scrape(&http, cluster.addr("origin")).await;
        if origin_m.sum("kraken_origin_fetches_total", &[("outcome", "not_found")]) >= 1.0 {
            fetched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(fetched, "the origin never counted the failed fetch");
    // An agent streams a blob as its pieces arrive, so a client can hold the last byte a
    // moment before the download is finished (cached, its duration observed): wait for the
    // agent to finish its three downloads (bounded) before reading its metrics.
    let agent_addr = cluster.listeners[4].1.clone();
    let mut finished = false;
    for _ in 0..100 {
        let agent_m = Exposition::scrape(&http, &agent_addr).await;
        if agent_m.sum("kraken_p2p_download_duration_seconds_count", &[]) >= 3.0
            && agent_m.sum("kraken_store_blobs", &[("state", "cached")]) >= 4.0
        {
            finished = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(finished, "the agent never finished its downloads");

    let mut exported = Vec::new();
    for (role, addr) in &cluster.listeners {
        let metrics = Exposition::scrape(&http, addr).await;
        assert!(
            metrics.has("kraken_http_requests_total"),
            "{role} at {addr} exports no kraken_http_requests_total"
        );

        // Route names, never raw paths: no label value holds a digest or a slash.
        for sample in metrics.matching("kraken_http_requests_total", &[]) {
            let route = &sample.labels["route"];
            assert!(
                !route.contains('/') && !route.contains("sha256"),
                "{role}: route label {route:?}"
            );
        }
        exported.push((*role, addr.clone(), metrics));
    }
    // A scrape is counted too, once answered.
    for (role, addr) in &cluster.listeners {
        let again = Exposition::scrape(&http, addr).await;
        let scrapes = [("role", *role), ("route", "metrics"), ("status", "200")];
        assert!(
            again.sum("kraken_http_requests_total", &scrapes) >= 1.0,
            "{role} at {addr} did not count the first scrape"
        );
    }
    let of = |i: usize| &exported[i].2;
    let (proxy_m, origin_m, tracker_m, agent_m) = (of(0), of(1), of(2), of(4));

    // The proxy counted the pushes by route.
    assert!(
        proxy_m.sum(
            "kraken_http_requests_total",
            &[("route", "upload_start"), ("status", "202")]
        ) >= 3.0
    );
    assert!(
        proxy_m.sum(
            "kraken_http_requests_total",
            &[("route", "manifest_put"), ("status", "201")]
        ) >= 1.0
    );
    // The agent received the blobs over P2P (from the origin: the only seeder) and
    // served them, and timed its pulls' first bytes.
    let received = agent_m.sum("kraken_p2p_received_bytes_total", &[]);
    assert!(received > 0.0, "the agent received nothing over P2P");
    assert!(
        agent_m.sum("kraken_p2p_received_bytes_total", &[("remote", "origin")]) > 0.0,
        "the agent's bytes came from an origin"
    );
    assert!(agent_m.sum("kraken_p2p_pieces_verified_total", &[]) >= 3.0);
    assert!(
        agent_m.sum(
            "kraken_http_requests_total",
            &[("route", "blob_get"), ("status", "200")]
        ) >= 3.0
    );
    assert!(agent_m.sum("kraken_agent_pull_first_byte_seconds_count", &[]) >= 3.0);
    assert!(agent_m.sum("kraken_p2p_download_duration_seconds_count", &[]) >= 3.0);
    assert!(
        agent_m.sum("kraken_store_blobs", &[("state", "cached")]) >= 4.0,
        "the agent caches what it pulled"
    );
    // The origin holds what was pushed, seeded it, and counted its blob reads.
    assert!(
        origin_m.sum("kraken_store_blobs", &[("state", "cached")]) >= 4.0,
        "the origin holds the config, the layers and the manifest"
    );
    assert!(origin_m.sum("kraken_store_bytes", &[("state", "cached")]) >= pushed_bytes as f64);
    assert!(origin_m.sum("kraken_p2p_sent_bytes_total", &[("remote", "peer")]) > 0.0);
    assert!(origin_m.sum("kraken_origin_cache_requests_total", &[("result", "hit")]) >= 1.0);
    assert!(origin_m.sum("kraken_origin_cache_requests_total", &[("result", "miss")]) >= 1.0);
    assert!(
        origin_m.sum(
            "kraken_http_requests_total",
            &[("role", "origin"), ("route", "blob_get"), ("status", "200")]
        ) >= 1.0
    );
    assert!(origin_m.has("kraken_origin_writeback_queue_tasks"));
    assert!(origin_m.has("kraken_backend_operations_total"));
    // The tracker answered the agents' and the origin's announces.
    assert!(tracker_m.sum("kraken_tracker_announces_total", &[]) >= 1.0);
    assert!(tracker_m.sum("kraken_tracker_torrents", &[]) >= 1.0);

    // Every metric the dashboard queries is exported by some role.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/kraken.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 10, "the dashboard queries {queried:?}");
    for name in &queried {
        assert!(
            exported.iter().any(|(_, _, m)| m.exports(name)),
            "the dashboard queries {name}, which no role exports"
        );
    }
    // And docs/metrics.md describes every family any role exports.
    let docs = include_str!("../../docs/metrics.md");
    for (role, _, m) in &exported {
        for family in m.types.keys() {
            assert!(
                docs.contains(&format!("`{family}`")),
                "{role} exports {family}, which docs/metrics.md does not describe"
            );
        }
    }
}

/// `[metrics] listen` serves `/metrics` on a listener of its own, beside the role's.
#[test]
fn a_role_serves_metrics_on_its_separate_listener() {
    let dir = tempfile::tempdir().unwrap();
    let listen = kraken_testkit::free_addr("127.0.0.1");
    let metrics = kraken_testkit::free_addr("127.0.0.1");
    let config = format!("listen = \"{listen}\"\n\n[metrics]\nlisten = \"{metrics}\"\n");
    let _tracker = support::start_role("tracker", &config, dir.path(), &listen.to_string());
    kraken_testkit::wait_for_port(&metrics.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        kraken_backends::install_crypto_provider();
        let http = reqwest::Client::new();
        let health = http
            .get(format!("http://{listen}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let separate = Exposition::scrape(&http, &metrics.to_string()).await;
        assert!(
            separate.sum(
                "kraken_http_requests_total",
                &[("role", "tracker"), ("route", "health")]
            ) >= 1.0,
            "the separate listener serves the tracker's registry"
        );
        let other = http
            .get(format!("http://{metrics}/announce/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            other.status(),
            404,
            "the metrics listener serves only metrics"
        );
        // The role's own listener serves the same registry.
        let own = Exposition::scrape(&http, &listen.to_string()).await;
        assert!(own.has("kraken_tracker_announces_total"));
    });
}
