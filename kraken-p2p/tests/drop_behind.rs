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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_dropping_behind_leaves_a_bounded_share_in_the_page_cache() {
    init_tracing();
    let Some(fincore) = kraken_testkit::require_package("fincore", "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    // 160 MiB: two background write-backs (every 64 MiB) happen during the download.
    let len = 160 * MIB;
    let file = random_file(dir.path(), len as usize, 5);
    let meta = seeder.seed_file(&file).await.unwrap();

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
        let blob = tokio::time::timeout(LIMIT, fetcher.download(meta.digest()).into_future())
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(blob.len(), len);
        cached.push((fetcher, blob.path().to_path_buf()));
    }

    // Write-backs run in the background: wait for them, within the bound. The second drops
    // what was durable when it began (the pieces before the first missing one: measured
    // 91 MiB, as pieces arrive out of order) but the newest 16 MiB.
    let started = Instant::now();
    let dropped = loop {
        let now = resident(&fincore, &cached[1].1);
        if now <= len - 32 * MIB || started.elapsed() > LIMIT {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dropped <= len - 32 * MIB,
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
