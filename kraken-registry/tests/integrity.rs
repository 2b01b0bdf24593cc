//! A corrupt copy on one origin of a cluster with two replicas (filesystem backends, a
//! build-index and a proxy on loopback): reads through the proxy are the right bytes or an
//! aborted transfer, never `200` with wrong bytes; the origin finds its bad copy (from the
//! proxy's report, or by its scrub), stops serving it and repairs it from the replica.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kraken_backends::{BackendConfig, BackendsConfig, FsConfig, RouteConfig};
use kraken_core::{BlobStatus, Digest};
use kraken_registry::build_index::{BuildIndex, BuildIndexConfig};
use kraken_registry::origin::{CommitKind, MembersConfig, Origin, OriginClient, OriginConfig};
use kraken_registry::proxy::{BuildIndexTarget, Proxy, ProxyConfig};
use kraken_testkit::backend::FaultyBackend;
use kraken_testkit::{free_addr, pseudo_random_bytes};
use reqwest::StatusCode;
use support::oci::Registry;
use support::{eventually, origin_config};

const REPO: &str = "library/app";
/// Big enough to reach the proxy's client in many chunks: the corrupt byte is found after
/// the first bytes have gone out.
const LARGE: usize = 8 << 20;
/// One chunk: the whole blob is verified before any byte goes out.
const SMALL: usize = 2000;

/// Two origins with replicas 2 (every blob on both), a build-index and a proxy.
struct Cluster {
    origins: Vec<Origin>,
    build_index: BuildIndex,
    proxy: Proxy,
    client: Registry,
}

impl Cluster {
    async fn start(configure: impl Fn(&mut OriginConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> = (1..=2)
            .map(|i| free_addr(&format!("127.0.0.{i}")))
            .collect();
        let mut origins = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let mut config = origin_config(*addr, &addrs, &dir.path().join(format!("o{i}")));
            config.cluster.replicas = 2;
            let backend = dir.path().join("backend");
            config.backends = BackendsConfig::new(vec![RouteConfig::new(
                ".*",
                BackendConfig::Fs(FsConfig::new(backend)),
            )]);
            configure(&mut config);
            origins.push(Origin::spawn(config).await.unwrap());
        }
        let members =
            MembersConfig::Static(addrs.iter().map(ToString::to_string).collect::<Vec<_>>());
        let mut bi = BuildIndexConfig::new(free_addr("127.0.0.1"), dir.path().join("bi"));
        bi.origins.members = members.clone();
        let build_index = BuildIndex::spawn(bi).await.unwrap();
        let mut config = ProxyConfig::new(free_addr("127.0.0.1"), dir.path().join("proxy"));
        config.origins.members = members;
        config.origins.refresh_interval = Duration::from_millis(200);
        config.build_index = BuildIndexTarget::new([build_index.local_addr().to_string()]);
        let proxy = Proxy::builder(config).spawn().await.unwrap();
        let client = Registry::remote(format!("http://{}", proxy.local_addr()), dir);
        Self {
            origins,
            build_index,
            proxy,
            client,
        }
    }

    /// Pushes `data` through the proxy and waits until both origins hold it.
    async fn push(&self, data: &[u8]) -> Digest {
        eventually(
            Duration::from_secs(10),
            "both origins are healthy",
            || async { self.origins.iter().all(|o| o.ring().healthy().len() == 2) },
        )
        .await;
        let digest = self.client.push_blob(REPO, data).await;
        eventually(
            Duration::from_secs(10),
            "both origins hold the blob",
            || async { self.origins.iter().all(|o| holds(o, &digest)) },
        )
        .await;
        digest
    }

    /// The origin the proxy reads `digest` from first (its first owner on the ring).
    fn first_owner(&self, digest: &Digest) -> &Origin {
        let owner = self.origins[0].ring().owners(digest)[0].clone();
        self.origins
            .iter()
            .find(|o| o.name() == owner)
            .expect("the owner is one of the origins")
    }

    /// `GET /v2/…/blobs/<digest>` through the proxy: the status and the body, or `None`
    /// when the transfer was cut.
    async fn get(&self, digest: &Digest) -> (StatusCode, Option<Vec<u8>>) {
        let response = self
            .client
            .request(reqwest::Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.bytes().await.ok().map(|b| b.to_vec()))
    }

    async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.build_index.shutdown().await;
        for origin in self.origins {
            origin.shutdown().await;
        }
    }
}

fn holds(origin: &Origin, digest: &Digest) -> bool {
    matches!(origin.store().status(digest), BlobStatus::Cached { .. })
}

/// The file of `origin`'s cached copy of `digest`, under its data dir's store.
fn blob_file(origin: &Origin, digest: &Digest) -> PathBuf {
    origin.store().open_blob(digest).unwrap().path().to_owned()
}

/// Flips one byte in the middle of `origin`'s copy of `digest`.
fn corrupt(origin: &Origin, digest: &Digest) {
    let path = blob_file(origin, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

/// Whether `origin` holds a copy of `digest` that hashes to it.
fn holds_good_copy(origin: &Origin, digest: &Digest) -> bool {
    holds(origin, digest)
        && origin
            .store()
            .open_blob(digest)
            .ok()
            .and_then(|blob| std::fs::read(blob.path()).ok())
            .is_some_and(|bytes| Digest::sha256_of(&bytes) == *digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_is_never_served_as_success_and_is_repaired_after_a_report() {
    let cluster = Cluster::start(|_| {}).await;
    let data = pseudo_random_bytes(LARGE, 7);
    let digest = cluster.push(&data).await;
    let bad = cluster.first_owner(&digest);
    corrupt(bad, &digest);
    assert!(!holds_good_copy(bad, &digest));

    for attempt in 0..5 {
        match cluster.get(&digest).await {
            (StatusCode::OK, Some(body)) => assert!(
                body == data,
                "GET {attempt}: 200 with {} wrong bytes",
                body.len()
            ),
            (StatusCode::OK, None) => {} // cut short: the client knows it failed
            (status, _) => panic!("GET {attempt}: {status}"),
        }
    }
    // Only a report repairs it here (the scrub runs once a day): a read hit the bad copy.
    eventually(
        Duration::from_secs(20),
        "the reported copy is repaired",
        || async { holds_good_copy(bad, &digest) },
    )
    .await;
    for attempt in 0..5 {
        let (status, body) = cluster.get(&digest).await;
        assert_eq!(status, StatusCode::OK, "GET {attempt} after the repair");
        assert!(
            body.as_deref() == Some(&data[..]),
            "GET {attempt} after the repair"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_small_blob_is_read_from_the_replica() {
    let cluster = Cluster::start(|_| {}).await;
    let data = pseudo_random_bytes(SMALL, 8);
    let digest = cluster.push(&data).await;
    corrupt(cluster.first_owner(&digest), &digest);
    // Nothing goes out before the only chunk verifies: every read falls over to the replica.
    for attempt in 0..5 {
        let (status, body) = cluster.get(&digest).await;
        assert_eq!(status, StatusCode::OK, "GET {attempt}");
        assert!(
            body.as_deref() == Some(&data[..]),
            "GET {attempt}: wrong bytes"
        );
    }
    cluster.shutdown().await;
}

/// The origins' in-memory cache of small blobs: a small blob read once is kept (its copy on
/// disk hashed first), and read again from memory — right although every copy on disk is
/// corrupt by then; the hit counter says so. A copy corrupt before its first read is never
/// kept (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_blob_read_once_is_served_from_memory_after_its_copies_rot() {
    let cluster = Cluster::start(|_| {}).await;
    let data = pseudo_random_bytes(SMALL, 9);
    let digest = cluster.push(&data).await;
    let (status, body) = cluster.get(&digest).await;
    assert_eq!((status, body.as_deref()), (StatusCode::OK, Some(&data[..])));
    for origin in &cluster.origins {
        corrupt(origin, &digest);
    }
    let http = reqwest::Client::new();
    let owner = cluster.first_owner(&digest).local_addr().to_string();
    let hits = |scraped: &kraken_testkit::Exposition| {
        scraped.sum("kraken_small_blob_lookups_total", &[("result", "hit")])
    };
    let before = hits(&kraken_testkit::Exposition::scrape(&http, &owner).await);
    for attempt in 0..3 {
        let (status, body) = cluster.get(&digest).await;
        assert_eq!(status, StatusCode::OK, "GET {attempt}");
        assert!(
            body.as_deref() == Some(&data[..]),
            "GET {attempt}: wrong bytes"
        );
    }
    let after = hits(&kraken_testkit::Exposition::scrape(&http, &owner).await);
    assert_eq!(after - before, 3.0, "three reads from memory");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_and_repairs_a_corrupt_copy_nobody_reads() {
    let cluster = Cluster::start(|config| {
        config.scrub.interval = Duration::from_millis(300);
        // The scrub's repair alone: a repair pass (periodic, or on a member leaving when a
        // health check times out on a loaded machine) would push the quarantined copy back as
        // a replica, pinned for its own write-back.
        config.cluster.repair_interval = Duration::from_secs(3600);
        config.cluster.fails = 1000;
    })
    .await;
    let data = pseudo_random_bytes(LARGE, 9);
    let digest = cluster.push(&data).await;
    // The uploaded copy is written back at once; the replica's write-back waits (it stays
    // pinned), and its repair must keep it so.
    eventually(
        Duration::from_secs(10),
        "the upload is written back",
        || async {
            cluster
                .origins
                .iter()
                .map(Origin::pending_write_backs)
                .sum::<usize>()
                == 1
        },
    )
    .await;
    // One copy at a time, so that the other is there to repair it from.
    for origin in &cluster.origins {
        let pinned = origin.store().is_pinned(&digest);
        corrupt(origin, &digest);
        eventually(
            Duration::from_secs(20),
            "the scrub repairs the copy",
            || async { holds_good_copy(origin, &digest) },
        )
        .await;
        assert_eq!(origin.store().is_pinned(&digest), pinned);
    }
    assert_eq!(
        cluster
            .origins
            .iter()
            .map(Origin::pending_write_backs)
            .sum::<usize>(),
        1
    );
    let (status, body) = cluster.get(&digest).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_deref() == Some(&data[..]));
    cluster.shutdown().await;
}

/// A copy that rots on disk while it waits for write-back never reaches the backend: the
/// write-back hashes what it uploads and fails the upload before it completes, reports the
/// copy to the integrity check, and keeps the task (the acknowledged blob is not dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_rots_before_its_write_back_never_reaches_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr("127.0.0.1");
    let mut config = origin_config(addr, &[addr], dir.path());
    config.cluster.replicas = 1;
    // The backend is down while the blob is committed, then comes back.
    let backend = Arc::new(FaultyBackend::failing_first(u32::MAX));
    let origin = Origin::builder(config)
        .backend(Arc::clone(&backend) as _)
        .spawn()
        .await
        .unwrap();
    let client = OriginClient::new().unwrap();
    let data = pseudo_random_bytes(LARGE, 9);
    let digest = Digest::sha256_of(&data);
    client
        .upload_bytes(
            &addr.to_string(),
            REPO,
            &digest,
            data.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    corrupt(&origin, &digest);
    backend.fail_next(0);

    // Several write-back attempts (backoff 200 ms to 1 s) meet the backend up.
    let calls = backend.calls();
    eventually(
        Duration::from_secs(10),
        "the write-back tried the working backend",
        || async { backend.calls() > calls + 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        backend.uploaded(&digest.to_string()),
        None,
        "the backend must never store bytes that do not hash to their name"
    );
    assert!(
        !holds_good_copy(&origin, &digest),
        "no replica and no backend copy: nothing can repair it"
    );
    origin.shutdown().await;
}
