//! `kraken origin` and `kraken tracker --config` as real processes with moto's S3: a fetch
//! of a blob that exists only in S3 (fetcher → tracker → origin → S3), and write-back that
//! survives the origin being killed (SIGKILL) while the backend is unreachable.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kraken_backends::{BackendConfig, BackendsConfig, RetryConfig, RouteConfig, UploadBody};
use kraken_core::Digest;
use kraken_registry::origin::{CommitKind, MembersConfig, OriginClient, OriginConfig};
use kraken_testkit::{MotoServer, pseudo_random_bytes};
use kraken_testkit::{ProcessGuard, free_addr, wait_for_port};
use support::KRAKEN;

const BUCKET: &str = "kraken-cli-test";
const NS: &str = "library/app";

/// A single-origin cluster config whose backend is S3 at `endpoint`.
fn origin_config(
    moto: &MotoServer,
    endpoint: &str,
    dir: &Path,
    tracker: Option<&str>,
) -> OriginConfig {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_addr("127.0.0.1").port())
        .parse()
        .unwrap();
    let mut config = OriginConfig::new(listen, dir.join("origin"));
    config.peer_listen = Some(
        format!("127.0.0.2:{}", free_addr("127.0.0.2").port())
            .parse()
            .unwrap(),
    );
    config.tracker = tracker.map(str::to_owned);
    // The origin holds the tracker's publish token (the tracker's config names the file).
    let token = dir.join("publish-token");
    std::fs::write(&token, "kraken-origin-test-token").unwrap();
    config.tracker_publish_token_file = Some(token);
    config.cluster.members = MembersConfig::Static(vec![listen.to_string()]);
    config.write_back.initial_backoff = Duration::from_millis(200);
    config.write_back.max_backoff = Duration::from_secs(1);
    let mut route = RouteConfig::new(".*", BackendConfig::S3(moto.s3_config(endpoint, "blobs")));
    let mut retry = RetryConfig::default();
    retry.max_attempts = 1;
    route.retry = retry;
    config.backends = BackendsConfig::new(vec![route]);
    config
}

/// Writes `config` as TOML (the format `--config` reads) and starts `kraken origin`.
fn start_origin(config: &OriginConfig, dir: &Path) -> ProcessGuard {
    let path = dir.join("origin.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let child = Command::new(KRAKEN)
        .args(["origin", "--config", path.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&config.listen.to_string());
    ProcessGuard::adopt(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_obtains_a_blob_that_exists_only_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = MotoServer::start(BUCKET, &dir.path().join("moto.log")).await else {
        return;
    };
    let data = pseudo_random_bytes((5 << 20) + 123, 1);
    let digest = Digest::sha256_of(&data);
    let s3 = BackendConfig::S3(moto.s3_config(moto.endpoint(), "blobs"))
        .build()
        .unwrap();
    s3.upload(
        NS,
        &digest.to_string(),
        UploadBody::from_bytes(data.clone()),
    )
    .await
    .unwrap();

    let tracker_addr = format!("127.0.0.1:{}", free_addr("127.0.0.1").port());
    let tracker_url = format!("http://{tracker_addr}");
    let config = origin_config(&moto, moto.endpoint(), dir.path(), Some(&tracker_url));
    let tracker_config = dir.path().join("tracker.toml");
    std::fs::write(
        &tracker_config,
        format!(
            "listen = \"{tracker_addr}\"\nannounce_interval = \"500ms\"\npublish_token_file = {:?}\n\n[origins]\nmembers = {{ static = [\"{}\"] }}\n",
            dir.path().join("publish-token"),
            config.listen
        ),
    )
    .unwrap();
    let _tracker = ProcessGuard::adopt(
        Command::new(KRAKEN)
            .args(["tracker", "--config", tracker_config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(&tracker_addr);
    let _origin = start_origin(&config, dir.path());

    let out = dir.path().join("fetched");
    let listen = format!("127.0.0.3:{}", free_addr("127.0.0.3").port());
    let status = tokio::task::spawn_blocking({
        let (digest, out, store) = (digest.to_string(), out.clone(), dir.path().join("fetcher"));
        move || {
            Command::new(KRAKEN)
                .args([
                    "fetch",
                    &digest,
                    "--tracker",
                    &tracker_url,
                    "--listen",
                    &listen,
                ])
                .args(["--namespace", NS])
                .args(["--out", out.to_str().unwrap(), "--quiet"])
                .args([
                    "--store",
                    store.to_str().unwrap(),
                    "--metainfo-timeout",
                    "30s",
                ])
                .args(["--announce-interval", "500ms"])
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "kraken fetch failed: {status}");
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_uploads_reach_s3_after_the_origin_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = MotoServer::start(BUCKET, &dir.path().join("moto.log")).await else {
        return;
    };
    // First life: the backend endpoint refuses connections (nothing listens there).
    let unreachable = format!("http://127.0.0.1:{}", free_addr("127.0.0.1").port());
    let mut config = origin_config(&moto, &unreachable, dir.path(), None);
    let mut origin = start_origin(&config, dir.path());
    let client = OriginClient::new().unwrap();
    let blobs: Vec<Vec<u8>> = (0..3)
        .map(|i| pseudo_random_bytes(300_000, 10 + i))
        .collect();
    for data in &blobs {
        client
            .upload_bytes(
                &config.listen.to_string(),
                NS,
                &Digest::sha256_of(data),
                data.clone().into(),
                CommitKind::Primary,
            )
            .await
            .unwrap();
    }
    // A crash right after the acknowledgements: no shutdown, no flush.
    let child = origin.child().expect("running");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(origin);

    // Second life, same data directory, the backend reachable.
    config.backends = origin_config(&moto, moto.endpoint(), dir.path(), None).backends;
    let _origin = start_origin(&config, dir.path());
    let s3 = BackendConfig::S3(moto.s3_config(moto.endpoint(), "blobs"))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for data in &blobs {
        let name = Digest::sha256_of(data).to_string();
        while s3.stat(NS, &name).await.is_err() {
            assert!(Instant::now() < deadline, "{name} never reached S3");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stored = s3.download(NS, &name, None).await.unwrap();
        let stored = kraken_backends::collect_bytes(stored, 1 << 20)
            .await
            .unwrap();
        assert!(stored[..] == data[..], "S3 holds other bytes for {name}");
    }
}
