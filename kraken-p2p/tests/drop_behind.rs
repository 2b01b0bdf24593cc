//! `NodeConfig::drop_behind` between real nodes over real TCP: a download's durable bytes
//! leave the page cache as it goes, and without it they stay. What the kernel holds is
//! read with util-linux's `fincore`.

mod support;

use std::future::IntoFuture;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{init_tracing, node_with, publisher, random_file, tracker};

/// Bound on each transfer and on each wait for the page cache.
const LIMIT: Duration = Duration::from_secs(60);

const MIB: u64 = 1 << 20;

/// Bytes of `path` in the page cache, as `fincore` reports them.
fn resident(fincore: &Path, path: &Path) -> u64 {
    let out = kraken_testkit::run(
        std::process::Command::new(fincore)
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path),
    )
    .unwrap()
    .stdout;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore printed {out:?}"))
}

/// A tracker, and a seeder of a random blob of `len` bytes written under `dir`.
async fn seeding(
    dir: &Path,
    len: u64,
) -> (
    kraken_p2p::tracker::TrackerServer,
    kraken_p2p::node::Node,
    kraken_core::MetaInfo,
) {
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.join("seeder"), tracker.local_addr(), None).await;
    let file = random_file(dir, len as usize, len);
    let meta = seeder.seed_file(&file).await.unwrap();
    (tracker, seeder, meta)
}

/// `node`'s download of `meta`'s blob, within [`LIMIT`]: every piece and the digest verified.
async fn download(
    node: &kraken_p2p::node::Node,
    meta: &kraken_core::MetaInfo,
) -> kraken_core::Blob {
    let blob = tokio::time::timeout(LIMIT, node.download(meta.digest()).into_future())
        .await
        .expect("in time")
        .unwrap();
    assert_eq!((blob.digest(), blob.len()), (meta.digest(), meta.length()));
    blob
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_dropping_behind_leaves_a_bounded_share_in_the_page_cache() {
    init_tracing();
    let Some(fincore) = kraken_testkit::require_package("fincore", "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 160 MiB: two background write-backs (every 64 MiB) happen during the download, each
    // dropping what it made durable when `drop_behind` is on.
    let len = 160 * MIB;
    let (tracker, seeder, meta) = seeding(dir.path(), len).await;

    // The node that keeps its pages fetches first: the other then downloads from it too,
    // and nobody reads the dropping node's file afterwards (a peer's request would bring
    // pages back).
    let mut cached = Vec::new();
    for (host, drop_behind) in [(10, false), (11, true)] {
        let fetcher = node_with(
            host,
            &dir.path().join(format!("f{host}")),
            tracker.local_addr(),
            |c| {
                c.drop_behind = drop_behind;
            },
        )
        .await;
        let blob = download(&fetcher, &meta).await;
        cached.push((fetcher, blob.path().to_path_buf()));
    }

    // Dropped as it went (every 64 MiB), and once more at the end: only the newest 16 MiB
    // stay. (The drop runs on the blocking pool; wait for it, within the bound.)
    let started = Instant::now();
    let dropped = loop {
        let now = resident(&fincore, &cached[1].1);
        if now <= 24 * MIB || started.elapsed() > LIMIT {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dropped <= 24 * MIB,
        "{} MiB of {} still cached with drop_behind",
        dropped / MIB,
        len / MIB
    );
    // Without it, the kernel keeps what was written.
    let kept = resident(&fincore, &cached[0].1);
    assert!(
        kept >= len - 4 * MIB,
        "only {} MiB cached without drop_behind",
        kept / MIB
    );

    for (fetcher, _) in cached {
        fetcher.shutdown().await;
    }
    seeder.shutdown().await;
    tracker.shutdown().await;
}

/// A seeder whose blob left the page cache (as an agent's does with `drop_behind`) still
/// serves it whole over `sendfile`-capable TCP: its pieces are read on the blocking pool
/// and written instead of being read from the disk inside `sendfile`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_serves_a_blob_that_left_the_page_cache() {
    init_tracing();
    let Some(fincore) = kraken_testkit::require_package("fincore", "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (tracker, seeder, meta) = seeding(dir.path(), 24 * MIB).await;
    let stored = seeder.store().open_blob(meta.digest()).unwrap();
    rustix::fs::fadvise(stored.file(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert!(
        resident(&fincore, stored.path()) < MIB,
        "the seeder's copy left the page cache"
    );
    let fetcher = node_with(10, &dir.path().join("f10"), tracker.local_addr(), |_| {}).await;
    download(&fetcher, &meta).await;
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

/// The store's part, without a swarm: `write_back` reports the durable prefix (up to the
/// first missing piece) and `drop_cached` takes what it is given out of the page cache.
#[test]
fn write_back_reports_the_durable_prefix_and_drop_cached_drops_it() {
    let Some(fincore) = kraken_testkit::require_package("fincore", "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = kraken_core::BlobStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 251) as u8).collect();
    let meta = kraken_core::MetaInfo::from_bytes(&data, MIB).unwrap();
    let download = store.begin_download(&meta).unwrap();
    // The data file through this process's descriptor (fincore is another process).
    let fd = std::os::fd::AsRawFd::as_raw_fd(download.verified_file(0..0).unwrap());
    let path = std::path::PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
    for index in meta.pieces().filter(|i| i.get() != 3) {
        let range = meta.piece_range(index);
        download
            .write_piece(index, &data[range.start as usize..range.end as usize])
            .unwrap();
    }
    assert_eq!(
        resident(&fincore, &path),
        7 * MIB,
        "written pieces are cached"
    );
    assert_eq!(
        download.write_back().unwrap(),
        3 * MIB,
        "durable up to piece 3"
    );
    download.drop_cached(3 * MIB);
    assert_eq!(resident(&fincore, &path), 4 * MIB, "pieces 0-2 dropped");
    // Pieces 4-7 are durable too (the write-back wrote every dirty page).
    download.drop_cached(8 * MIB);
    assert_eq!(resident(&fincore, &path), 0);
}
