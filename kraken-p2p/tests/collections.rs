//! Directories between real nodes over real TCP: `seed_dir`, `fetch_dir`, seeding in place
//! and `download_to` (onto the store's file system and onto another).

mod support;

use std::future::IntoFuture;
use std::time::Duration;

use kraken_core::collection::Collection;
use kraken_core::{BlobStatus, Digest};
use kraken_testkit::{assert_same_tree, store_data_bytes, write_model_tree};
use support::{init_tracing, node, publisher, tracker};

/// Bound on each whole transfer: a hang fails the test instead of blocking it forever.
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_directory_reaches_three_fetchers_byte_for_byte() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model_tree(&model, 3 << 20);
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder_store = dir.path().join("seeder");
    let seeder = publisher(2, &seeder_store, tracker.local_addr(), None).await;
    let digest = seeder.seed_dir(&model).await.unwrap();

    // The seeder's store holds the collection and nothing of the files themselves.
    let listing = std::fs::read(seeder.store().open_blob(&digest).unwrap().path()).unwrap();
    let collection = Collection::decode(&listing).unwrap();
    let paths: Vec<&str> = collection
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "config.json",
            "empty.txt",
            "generation_config.json",
            "latest.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "scripts/run.sh",
            "tokenizer/tokenizer.json",
        ]
    );
    assert_eq!(store_data_bytes(&seeder_store), listing.len() as u64);

    let mut fetchers = Vec::new();
    for i in 0..3u8 {
        fetchers.push(
            node(
                10 + i,
                &dir.path().join(format!("f{i}")),
                tracker.local_addr(),
                None,
            )
            .await,
        );
    }
    let fetches = fetchers.iter().enumerate().map(|(i, fetcher)| {
        let fetch = fetcher.fetch_dir(&digest, &dir.path().join(format!("out{i}")));
        let progress = fetch.progress();
        async move {
            let collection = fetch.into_future().await?;
            Ok::<_, kraken_p2p::Error>((collection, progress.borrow().clone()))
        }
    });
    let results = tokio::time::timeout(LIMIT, futures::future::try_join_all(fetches))
        .await
        .expect("fetches finish in time")
        .expect("fetches succeed");
    for (i, (fetched, progress)) in results.into_iter().enumerate() {
        assert_eq!(fetched, collection);
        let out = dir.path().join(format!("out{i}"));
        assert_same_tree(&model, &out);
        // The final progress accounts for every byte and every file.
        assert!(progress.done && progress.listed);
        assert_eq!(progress.total_bytes, collection.total_size());
        assert_eq!(progress.done_bytes, progress.total_bytes);
        assert_eq!(progress.files_done, collection.entries().len());
        assert!(
            progress
                .files
                .iter()
                .all(|f| f.done && f.done_bytes == f.size)
        );
        // Each file was moved out of the store: it holds only the collection.
        let store = dir.path().join(format!("f{i}"));
        assert_eq!(
            store_data_bytes(&store),
            listing.len() as u64,
            "fetcher {i}"
        );
    }
    // A fetcher seeds from the destination: a fourth node fetches with the seeder gone.
    seeder.shutdown().await;
    let late = node(20, &dir.path().join("late"), tracker.local_addr(), None).await;
    let out = dir.path().join("late-out");
    tokio::time::timeout(LIMIT, late.fetch_dir(&digest, &out).into_future())
        .await
        .expect("in time")
        .unwrap();
    assert_same_tree(&model, &out);
    for node in fetchers.iter().chain([&late]) {
        node.shutdown().await;
    }
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_to_leaves_the_blob_at_the_callers_path_and_a_changed_seed_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    let file = dir.path().join("weights.bin");
    kraken_testkit::write_pseudo_random_file(&file, (1 << 20) + 17, 9);
    let content = std::fs::read(&file).unwrap();
    let meta = seeder.seed_file_in_place(&file).await.unwrap();
    assert_eq!(store_data_bytes(&dir.path().join("seeder")), 0);

    let fetcher = node(10, &dir.path().join("fetcher"), tracker.local_addr(), None).await;
    let out = dir.path().join("out.bin");
    let blob = tokio::time::timeout(LIMIT, fetcher.download_to(meta.digest(), &out))
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(blob.path(), out);
    assert_eq!(std::fs::read(&out).unwrap(), content);
    assert_eq!(store_data_bytes(&dir.path().join("fetcher")), 0);
    // The fetched file is deleted: the next download fetches the blob again.
    std::fs::remove_file(&out).unwrap();
    let again = dir.path().join("again.bin");
    tokio::time::timeout(LIMIT, fetcher.download_to(meta.digest(), &again))
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), content);

    // The seeded file changes: the seeder's store refuses it and forgets it. (Pieces the
    // running torrent still reads from the changed file fail the receivers' hash checks.)
    std::fs::write(&file, b"retrained").unwrap();
    let err = seeder.store().open_blob(meta.digest()).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was recorded"),
        "{err}"
    );
    assert_eq!(seeder.store().status(meta.digest()), BlobStatus::Absent);
    // Seeding it again hashes what is there now.
    let again = seeder.seed_file_in_place(&file).await.unwrap();
    assert_eq!(again.digest(), &Digest::sha256_of(b"retrained"));
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

/// What [`watching`] saw while a transfer ran.
#[derive(Debug, Default)]
struct Seen {
    /// Most bytes of `data` files in the store at once.
    store_bytes: u64,
    /// Whether a `.NAME.kraken-partial-…` file stood in the watched directory.
    partial: bool,
}

/// Runs `transfer` (bounded by [`LIMIT`]) while watching, every millisecond, the bytes the
/// store at `store` holds and the names in `out`.
async fn watching<T>(
    store: &std::path::Path,
    out: &std::path::Path,
    transfer: impl std::future::Future<Output = T>,
) -> (T, Seen) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (store, out, stop) = (store.to_owned(), out.to_owned(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut seen = Seen::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.store_bytes = seen.store_bytes.max(store_data_bytes(&store));
                seen.partial |= partial_files(&out) > 0;
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    let result = tokio::time::timeout(LIMIT, transfer)
        .await
        .expect("in time");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (result, watcher.await.unwrap())
}

/// `.NAME.kraken-partial-…` files in `dir`.
fn partial_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".kraken-partial-"))
                .count()
        })
        .unwrap_or(0)
}

/// A seeder sending at a capped rate, so a transfer lasts long enough to be watched or
/// cancelled; a fetcher whose store is under `/tmp`; and a directory on another file system
/// for the fetcher's destinations.
struct CrossFs {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
    tracker: kraken_p2p::tracker::TrackerServer,
    seeder: kraken_p2p::node::Node,
    fetcher: kraken_p2p::node::Node,
}

impl CrossFs {
    /// `None` (the test skipped) without a second file system; see
    /// [`kraken_testkit::other_file_system_dir`].
    async fn start(seeder_rate: u64) -> Option<Self> {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let out = kraken_testkit::other_file_system_dir(dir.path())?;
        let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
        let seeder_dir = dir.path().join("seeder");
        let seeder = publisher(2, &seeder_dir, tracker.local_addr(), Some(seeder_rate)).await;
        let fetcher = node(10, &dir.path().join("fetcher"), tracker.local_addr(), None).await;
        Some(Self {
            dir,
            out,
            tracker,
            seeder,
            fetcher,
        })
    }

    fn fetcher_store(&self) -> std::path::PathBuf {
        self.dir.path().join("fetcher")
    }

    /// Seeds in place a pseudo-random file of `len` bytes; returns its metainfo and bytes.
    async fn seed_file(&self, len: usize, seed: u64) -> (kraken_core::MetaInfo, Vec<u8>) {
        let file = self.dir.path().join("weights.bin");
        kraken_testkit::write_pseudo_random_file(&file, len, seed);
        let meta = self.seeder.seed_file_in_place(&file).await.unwrap();
        (meta, std::fs::read(&file).unwrap())
    }

    async fn shutdown(self) {
        self.fetcher.shutdown().await;
        self.seeder.shutdown().await;
        self.tracker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_to_another_file_system_writes_the_blob_once_beside_the_destination() {
    // 4 MiB/s: the 2 MiB download takes about half a second, long enough to watch.
    let Some(cross) = CrossFs::start(4 << 20).await else {
        return;
    };
    let (meta, content) = cross.seed_file((2 << 20) + 17, 5).await;
    let out = cross.out.path().join("weights.bin");
    let (blob, seen) = watching(
        &cross.fetcher_store(),
        cross.out.path(),
        cross.fetcher.download_to(meta.digest(), &out),
    )
    .await;
    let blob = blob.unwrap();
    // The store never held the blob's bytes: they went once, beside the destination.
    assert_eq!(
        seen.store_bytes, 0,
        "the fetcher's store held a copy: the blob was written twice"
    );
    assert!(seen.partial, "no partial file beside the destination");
    assert_eq!(blob.path(), std::fs::canonicalize(&out).unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), content);
    assert_eq!(partial_files(cross.out.path()), 0);
    assert_eq!(
        cross.fetcher.store().status(meta.digest()),
        BlobStatus::Cached {
            length: content.len() as u64
        }
    );
    // The fetcher seeds it from there: another node fetches it with the seeder gone.
    cross.seeder.shutdown().await;
    let late = node(
        11,
        &cross.dir.path().join("late"),
        cross.tracker.local_addr(),
        None,
    )
    .await;
    let again = tokio::time::timeout(LIMIT, late.download(meta.digest()).into_future())
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(std::fs::read(again.path()).unwrap(), content);
    late.shutdown().await;
    cross.fetcher.shutdown().await;
    cross.tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_dir_onto_another_file_system_writes_each_file_once() {
    let Some(cross) = CrossFs::start(4 << 20).await else {
        return;
    };
    let model = cross.dir.path().join("model");
    write_model_tree(&model, 2 << 20);
    let digest = cross.seeder.seed_dir(&model).await.unwrap();
    let listing = cross.seeder.store().open_blob(&digest).unwrap().len();
    let out = cross.out.path().join("model");
    let (fetched, seen) = watching(
        &cross.fetcher_store(),
        &out,
        cross.fetcher.fetch_dir(&digest, &out).into_future(),
    )
    .await;
    fetched.unwrap();
    assert_same_tree(&model, &out);
    // The store held the collection, never the files.
    assert_eq!(seen.store_bytes, listing, "files were written twice");
    cross.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_download_to_another_file_system_leaves_no_partial_file() {
    // 256 KiB/s for 4 MiB: the download is cancelled midway.
    let Some(cross) = CrossFs::start(256 << 10).await else {
        return;
    };
    let (meta, _) = cross.seed_file(4 << 20, 6).await;
    let out = cross.out.path().join("weights.bin");
    let appeared = async {
        while partial_files(cross.out.path()) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        result = cross.fetcher.download_to(meta.digest(), &out) => panic!("finished too soon: {result:?}"),
        () = appeared => {}
    }
    // The download_to future is gone: the download is cancelled and its partial file goes.
    tokio::time::timeout(LIMIT, async {
        while partial_files(cross.out.path()) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the partial file is removed");
    assert!(!out.exists());
    assert_eq!(
        cross.fetcher.store().status(meta.digest()),
        BlobStatus::Absent
    );
    cross.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_collections_and_destinations_are_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    let seeder = publisher(2, &dir.path().join("seeder"), tracker.local_addr(), None).await;
    let fetcher = node(10, &dir.path().join("fetcher"), tracker.local_addr(), None).await;

    // A collection naming a path outside the destination, published as any blob.
    let payload = seeder
        .seed_file(&write(dir.path(), "payload", b"owned"))
        .await
        .unwrap();
    let hostile = format!(
        r#"{{"format":"kraken.collection","version":1,"entries":[{{"path":"../escaped","size":5,"mode":"0644","digest":"{}"}}]}}"#,
        payload.digest()
    );
    let hostile = seeder
        .seed_file(&write(dir.path(), "hostile", hostile.as_bytes()))
        .await
        .unwrap();
    let dest = dir.path().join("dest");
    let err = tokio::time::timeout(
        LIMIT,
        fetcher.fetch_dir(hostile.digest(), &dest).into_future(),
    )
    .await
    .expect("in time")
    .unwrap_err();
    assert!(err.to_string().contains("unsafe path"), "{err}");
    assert!(!dir.path().join("escaped").exists());

    // A blob that is not a collection at all.
    let err = tokio::time::timeout(
        LIMIT,
        fetcher.fetch_dir(payload.digest(), &dest).into_future(),
    )
    .await
    .expect("in time")
    .unwrap_err();
    assert!(err.to_string().contains("not a collection"), "{err}");

    // A symbolic link out of the tree is refused when seeding...
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink(dir.path().join("payload"), tree.join("link")).unwrap();
    let err = seeder.seed_dir(&tree).await.unwrap_err();
    assert!(
        err.to_string().contains("symbolic link out of the tree"),
        "{err}"
    );

    // ...and a link in the destination is not followed when fetching.
    std::fs::remove_file(tree.join("link")).unwrap();
    std::fs::create_dir(tree.join("sub")).unwrap();
    write(&tree.join("sub"), "file", b"inside");
    let good = seeder.seed_dir(&tree).await.unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    let err = tokio::time::timeout(LIMIT, fetcher.fetch_dir(&good, &dest).into_future())
        .await
        .expect("in time")
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Dropping a directory fetch stops it: its blob downloads are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_dir_fetch_cancels_its_downloads() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model_tree(&model, 8 << 20);
    let tracker = tracker("127.0.0.1:0".parse().unwrap()).await;
    // A slow seeder: the fetch is surely dropped half-way.
    let seeder = publisher(
        2,
        &dir.path().join("seeder"),
        tracker.local_addr(),
        Some(2_000_000),
    )
    .await;
    let digest = seeder.seed_dir(&model).await.unwrap();
    let fetcher = node(10, &dir.path().join("fetcher"), tracker.local_addr(), None).await;
    let fetch = fetcher.fetch_dir(&digest, &dir.path().join("out"));
    let shard =
        Digest::sha256_of(&std::fs::read(model.join("model-00001-of-00002.safetensors")).unwrap());
    // Wait (bounded) until the big shard is being downloaded, with some of it verified.
    tokio::time::timeout(LIMIT, async {
        while fetcher
            .torrent_stats(&shard)
            .await
            .is_none_or(|stats| stats.have == 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the big shard is downloading in time");
    drop(fetch);
    tokio::time::timeout(LIMIT, async {
        while fetcher.torrent_stats(&shard).await.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the shard's download is cancelled");
    assert!(
        !dir.path()
            .join("out/model-00001-of-00002.safetensors")
            .exists()
    );
    fetcher.shutdown().await;
    seeder.shutdown().await;
    tracker.shutdown().await;
}
