//! Origins on loopback against a real S3 server (moto, behind a counting proxy): uploads,
//! reads, ranges, replication and self-healing, single-flight fetch-on-miss, and write-back
//! through a backend outage and a restart.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kraken_backends::UploadBody;
use kraken_core::{BlobStatus, Digest};
use kraken_registry::origin::{CommitKind, Origin, OriginClient};
use kraken_testkit::{free_addr, pseudo_random_bytes};
use reqwest::StatusCode;
use support::{S3, eventually, origin_config, single_origin, single_origin_with};

const NS: &str = "library/ubuntu";

fn blob_url(origin: SocketAddr, digest: &Digest) -> String {
    format!("http://{origin}/namespace/library%2Fubuntu/blobs/{digest}")
}

async fn start_cluster(s3: &S3, dirs: &[tempfile::TempDir], replicas: usize) -> Vec<Origin> {
    let addrs: Vec<SocketAddr> = (1..=dirs.len())
        .map(|i| free_addr(&format!("127.0.0.{i}")))
        .collect();
    let mut origins = Vec::new();
    for (addr, dir) in addrs.iter().zip(dirs) {
        let mut config = origin_config(*addr, &addrs, dir.path());
        config.cluster.replicas = replicas;
        config.backends = s3.backends();
        origins.push(Origin::spawn(config).await.unwrap());
    }
    origins
}

fn holds(origin: &Origin, digest: &Digest) -> bool {
    matches!(origin.store().status(digest), BlobStatus::Cached { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_replicate_are_served_anywhere_and_heal_after_an_origin_dies() {
    let Some(s3) = S3::start().await else { return };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut origins = start_cluster(&s3, &dirs, 2).await;
    let client = OriginClient::new().unwrap();
    let http = reqwest::Client::new();

    // 3 MiB: more than one upload chunk would be at a smaller chunk size; ranges cross pieces.
    let data = pseudo_random_bytes(3 << 20, 7);
    let digest = Digest::sha256_of(&data);
    // Upload through the blob's first owner, so that the non-owner starts without a copy.
    let owners = origins[0].ring().owners(&digest);
    assert_eq!(owners.len(), 2);
    let position = |name: &str| origins.iter().position(|o| o.name() == name).unwrap();
    let (first, second) = (position(&owners[0]), position(&owners[1]));
    let third = 3 - first - second;
    let entry = origins[first].local_addr().to_string();
    client
        .upload_bytes(
            &entry,
            NS,
            &digest,
            data.clone().into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    assert_eq!(client.locations(&entry, &digest).await.unwrap(), owners);
    // The entry origin pushes a copy to the other owner.
    eventually(
        Duration::from_secs(10),
        "both owners hold the blob",
        || async { holds(&origins[first], &digest) && holds(&origins[second], &digest) },
    )
    .await;
    assert!(!holds(&origins[third], &digest));

    // Read through another origin, whole and ranged.
    let other = origins[second].local_addr();
    let whole = http.get(blob_url(other, &digest)).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap(), data);
    for (range, expected) in [
        ("bytes=0-0", &data[..1]),
        ("bytes=1048570-1048580", &data[1048570..=1048580]),
        ("bytes=-5", &data[data.len() - 5..]),
        ("bytes=3145000-", &data[3145000..]),
    ] {
        let part = http
            .get(blob_url(other, &digest))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(part.bytes().await.unwrap(), expected, "{range}");
    }
    let past_end = http
        .get(blob_url(other, &digest))
        .header("range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(past_end.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let head = http.head(blob_url(other, &digest)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        data.len().to_string()
    );

    // Written back to S3.
    let direct = s3.direct();
    eventually(Duration::from_secs(20), "the blob is in S3", || async {
        direct.stat(NS, &digest.to_string()).await.is_ok()
    })
    .await;

    // Kill the first owner: the third origin becomes an owner and gets a copy from the
    // second (repair on membership change), restoring two replicas; both serve the blob.
    let third_name = origins[third].name().to_owned();
    let dead = origins.remove(first);
    dead.shutdown().await;
    eventually(
        Duration::from_secs(20),
        "two live replicas again",
        || async {
            origins.iter().all(|o| holds(o, &digest))
                && origins
                    .iter()
                    .all(|o| o.ring().owners(&digest).contains(&third_name))
        },
    )
    .await;
    for origin in &origins {
        let response = http
            .get(blob_url(origin.local_addr(), &digest))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap(), data);
    }
    for origin in origins {
        origin.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_unknown_blobs_are_refused() {
    let Some(s3) = S3::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (origin, config) = single_origin(&s3, dir.path()).await;
    let addr = config.listen;
    let client = OriginClient::new().unwrap();
    let http = reqwest::Client::new();
    let entry = origin.local_addr().to_string();

    // Content that does not hash to the digest in the path: 400 with the digest it has
    // (which the client reports as a mismatch), nothing stored.
    let claimed = Digest::sha256_of(b"what the client said");
    let error = client
        .upload_bytes(
            &entry,
            NS,
            &claimed,
            "something else".into(),
            CommitKind::Primary,
        )
        .await
        .unwrap_err();
    match error {
        kraken_registry::Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, Digest::sha256_of(b"something else"));
        }
        other => panic!("not a digest mismatch: {other}"),
    }
    assert_eq!(origin.store().status(&claimed), BlobStatus::Absent);
    assert!(origin.store().cached().is_empty());
    assert_eq!(origin.pending_write_backs(), 0);

    // Unknown blob (not here, not in S3): 404 for GET and HEAD.
    let unknown = Digest::sha256_of(b"never uploaded");
    let get = http.get(blob_url(addr, &unknown)).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    let head = http.head(blob_url(addr, &unknown)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);

    // Malformed requests: bad digest, unknown upload, bad Content-Range, oversized chunk.
    let bad = http
        .get(format!("http://{addr}/namespace/x/blobs/sha256:zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let uploads = format!("{}/uploads", blob_url(addr, &unknown));
    let unknown_upload = http
        .patch(format!("{uploads}/{}", "0".repeat(32)))
        .header("content-range", "0-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_upload.status(), StatusCode::NOT_FOUND);
    let started = http.post(&uploads).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::OK);
    let id = started.headers()["location"].to_str().unwrap().to_owned();
    for (range, body, status) in [
        ("nonsense", "x", StatusCode::BAD_REQUEST),
        ("5-2", "x", StatusCode::BAD_REQUEST),
        ("0-4", "too long for the range", StatusCode::BAD_REQUEST),
        ("0-999999999", "x", StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let response = http
            .patch(format!("{uploads}/{id}"))
            .header("content-range", range)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{range}");
    }
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_read_the_backend_once() {
    let Some(s3) = S3::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (origin, config) = single_origin(&s3, dir.path()).await;
    let addr = config.listen;

    // The blob exists only in S3, put there directly (not through the proxy).
    let data = pseudo_random_bytes(4 << 20, 11);
    let digest = Digest::sha256_of(&data);
    s3.direct()
        .upload(
            NS,
            &digest.to_string(),
            UploadBody::from_bytes(data.clone()),
        )
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let gets = (0..100).map(|_| {
        let http = http.clone();
        let url = blob_url(addr, &digest);
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.bytes().await.unwrap())
        }
    });
    let results = futures::future::join_all(gets).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
        assert!(body[..] == data[..], "a reader got wrong bytes");
    }
    // Counted at the S3 server's front door: one stat and one read of the object.
    let hex = digest.hex();
    assert_eq!(s3.proxy.count("GET", &hex), 1, "object reads");
    assert_eq!(s3.proxy.count("HEAD", &hex), 1, "object stats");

    // Metainfo of another S3-only blob: 202 while the origin fetches, then 200.
    let second = pseudo_random_bytes(1 << 20, 12);
    let second_digest = Digest::sha256_of(&second);
    s3.direct()
        .upload(
            NS,
            &second_digest.to_string(),
            UploadBody::from_bytes(second),
        )
        .await
        .unwrap();
    let metainfo_url = format!("{}/metainfo", blob_url(addr, &second_digest));
    let first = http.get(&metainfo_url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    eventually(Duration::from_secs(10), "metainfo becomes 200", || async {
        http.get(&metainfo_url).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
    let meta = kraken_core::MetaInfo::decode(
        &http
            .get(&metainfo_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta.digest(), &second_digest);
    // And a blob S3 lacks: 202 for the first ask (the fetch starts), then 404.
    let missing = format!("{}/metainfo", blob_url(addr, &Digest::sha256_of(b"nope")));
    eventually(
        Duration::from_secs(10),
        "missing metainfo is 404",
        || async { http.get(&missing).send().await.unwrap().status() == StatusCode::NOT_FOUND },
    )
    .await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_during_a_backend_outage_are_written_back_after_it_even_across_a_restart() {
    let Some(s3) = S3::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    s3.proxy.set_down(true);
    let (origin, config) = single_origin(&s3, dir.path()).await;
    let addr = config.listen;
    let client = OriginClient::new().unwrap();
    let blobs: Vec<Vec<u8>> = (0..3)
        .map(|i| pseudo_random_bytes(256 << 10, 100 + i))
        .collect();
    let digests: Vec<Digest> = blobs.iter().map(|b| Digest::sha256_of(b)).collect();
    for (data, digest) in blobs.iter().zip(&digests) {
        // Acknowledged although the backend is down.
        client
            .upload_bytes(
                &addr.to_string(),
                NS,
                digest,
                data.clone().into(),
                CommitKind::Primary,
            )
            .await
            .unwrap();
        assert!(origin.store().is_pinned(digest));
    }
    assert_eq!(origin.pending_write_backs(), 3);
    // Write-back is being attempted (and failing) meanwhile.
    let hex = digests[0].hex();
    eventually(Duration::from_secs(10), "write-back retried", || async {
        s3.proxy.count("HEAD", &hex) >= 2
    })
    .await;
    origin.shutdown().await;

    // Restart on the same data directory; then the backend comes back.
    let origin = Origin::spawn(config).await.unwrap();
    assert_eq!(origin.pending_write_backs(), 3);
    s3.proxy.set_down(false);
    let direct = s3.direct();
    eventually(
        Duration::from_secs(30),
        "every blob written back",
        || async { origin.pending_write_backs() == 0 },
    )
    .await;
    for (data, digest) in blobs.iter().zip(&digests) {
        let stored = direct
            .download(NS, &digest.to_string(), None)
            .await
            .unwrap();
        let stored = kraken_backends::collect_bytes(stored, 1 << 20)
            .await
            .unwrap();
        assert!(stored[..] == data[..]);
        assert!(
            !origin.store().is_pinned(digest),
            "unpinned after write-back"
        );
    }
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_evicts_idle_blobs_but_never_one_awaiting_write_back() {
    let Some(s3) = S3::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    s3.proxy.set_down(true);
    let (origin, config) = single_origin_with(&s3, dir.path(), |config| {
        config.cleanup.interval = Duration::from_millis(100);
        config.cleanup.idle_ttl = Some(Duration::from_millis(300));
    })
    .await;
    let data = pseudo_random_bytes(100_000, 21);
    let digest = Digest::sha256_of(&data);
    OriginClient::new()
        .unwrap()
        .upload_bytes(
            &config.listen.to_string(),
            NS,
            &digest,
            data.into(),
            CommitKind::Primary,
        )
        .await
        .unwrap();
    // Idle for many cleanup passes, but its write-back is pending: it stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(holds(&origin, &digest), "evicted before write-back");
    // Once written back it is unpinned, and the next passes evict it.
    s3.proxy.set_down(false);
    eventually(
        Duration::from_secs(30),
        "evicted after write-back",
        || async { !holds(&origin, &digest) },
    )
    .await;
    assert!(s3.direct().stat(NS, &digest.to_string()).await.is_ok());
    origin.shutdown().await;
}
