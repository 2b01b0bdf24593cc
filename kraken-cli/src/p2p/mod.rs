//! `kraken seed` and `kraken fetch` (`kraken tracker` is in `tracker.rs`).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kraken_core::collection::{self, Collection};
use kraken_core::{BlobStore, ByteSize, Digest, PieceLengthPolicy};
use kraken_p2p::node::{Node, NodeConfig, Progress};
use kraken_p2p::tls::{ClientTlsConfig, PeerTlsConfig};
use kraken_p2p::tracker::{PublishToken, Tracker, TrackerClient, TrackerPool};
use serde::Serialize;
use tokio::sync::watch;

use crate::exit::Interrupted;
use crate::logging::say;
use crate::process::{Signals, peak_rss_bytes, wait_for_signal, write_bytes};
use crate::rate::Rate;

mod store;

use self::store::DefaultStore;

#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    /// The tracker's URL; several, comma-separated, share the load (each torrent goes to
    /// one of them by rendezvous hashing, and to the next when that one is down).
    #[arg(long)]
    tracker: String,
    /// Address of this node's peer listener (distinct 127.0.0.x addresses make distinct
    /// hosts on one machine).
    #[arg(long)]
    listen: SocketAddr,
    /// Cap on bytes per second in each direction, across all peers (`20MB`, `50MiB/s`).
    #[arg(long)]
    rate: Option<Rate>,
    /// Blob store directory. Default: for `kraken fetch`, `.NAME.kraken/` beside `--out`
    /// (on its file system, so the blob is renamed into place), kept after a failure or
    /// Ctrl-C for the next fetch to resume and removed after success; for `kraken seed`, one
    /// per listen address under the temporary directory, holding only metainfo (files are
    /// seeded in place), where every start evicts what was idle for over an hour and partial
    /// downloads idle for over a day (see docs/embedding.md).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Announce interval until the tracker says otherwise (e.g. `3s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    announce_interval: Option<Duration>,
    /// Most connections per blob (default: the scheduler's, 10).
    #[arg(long)]
    max_conns: Option<usize>,
    /// Send pieces by reading and writing them instead of with `sendfile` (for file systems
    /// whose page cache does not reflect the file, and for comparison).
    #[arg(long)]
    no_send_file: bool,
    /// CA certificate (PEM) an `https://` tracker's certificate must chain to.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a tracker that asks for one; needs `--tls-key`.
    #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// Key of `--tls-cert` (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A file holding the tracker's publish token, needed to seed (publish metainfo)
    /// unless the client certificate is an origin's.
    #[arg(long, value_name = "FILE")]
    publish_token_file: Option<PathBuf>,
    /// This node's peer certificate (PEM, signed by `--peer-tls-ca`): peer links use TLS and
    /// the node's peer id is the one the certificate binds (see docs/tls.md).
    #[arg(long, value_name = "PEM", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    peer_tls_cert: Option<PathBuf>,
    /// Key of `--peer-tls-cert` (PEM).
    #[arg(long, value_name = "PEM", requires = "peer_tls_cert")]
    peer_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM) peers' certificates must chain to.
    #[arg(long, value_name = "PEM", requires = "peer_tls_cert")]
    peer_tls_ca: Option<PathBuf>,
    /// Refuse plain (non-TLS) inbound peer connections.
    #[arg(long, requires = "peer_tls_cert")]
    peer_tls_require: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SeedArgs {
    /// The file or directory to seed, in place (nothing is copied; it must not change while
    /// it is seeded). A directory is seeded as a collection: the digest printed names the
    /// whole tree, for `kraken fetch DIGEST --out DIR`.
    file: PathBuf,
    /// Piece length (`1MiB`); default: chosen from the file's size by the standard table.
    #[arg(long, value_name = "SIZE")]
    piece_length: Option<ByteSize>,
    #[command(flatten)]
    peer: PeerArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// The blob's digest (`sha256:<hex>`), or a collection's (from `kraken seed DIR`).
    digest: Digest,
    /// Where to put the verified blob (moved there from the store, written once), or, for a
    /// collection, the directory to lay its tree out in.
    #[arg(long)]
    out: PathBuf,
    /// The blob's namespace (repository), which origins use to pick its backend.
    #[arg(long, default_value = "")]
    namespace: String,
    /// Print a JSON summary (bytes received by sender, time taken) on stdout.
    #[arg(long)]
    json: bool,
    /// Print no progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// After the blob is written to `--out` (and the summary printed), keep seeding it until
    /// interrupted.
    #[arg(long)]
    seed_after: bool,
    /// How long to wait for someone to publish the blob's metainfo (e.g. `60s`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    metainfo_timeout: Duration,
    #[command(flatten)]
    peer: PeerArgs,
}

#[derive(Debug, Serialize)]
struct FetchReport {
    digest: String,
    bytes: u64,
    /// From process start to the blob verified in the store.
    download_seconds: f64,
    /// From process start to the blob written to `--out`.
    seconds: f64,
    /// Bytes of verified pieces received in this run, by sender peer id.
    received_from: BTreeMap<String, u64>,
    received_total: u64,
    /// The process's peak resident memory (Linux `VmHWM`), if known.
    peak_rss_bytes: Option<u64>,
    /// Bytes the process caused to be written to storage (Linux `write_bytes` of
    /// `/proc/self/io`), if known: about the blob's length when it is written once.
    write_bytes: Option<u64>,
}

/// The store of `--store`, or, without it, a default store this process holds (`fetch_out`:
/// the `--out` of a fetch).
fn open_store(
    args: &PeerArgs,
    fetch_out: Option<&Path>,
) -> anyhow::Result<(BlobStore, Option<DefaultStore>)> {
    if let Some(dir) = &args.store {
        let store = BlobStore::open(dir)
            .with_context(|| format!("opening the blob store at {}", dir.display()))?;
        return Ok((store, None));
    }
    let held = match fetch_out {
        Some(out) => DefaultStore::for_fetch(out, args.listen)?,
        None => DefaultStore::for_address(args.listen)?,
    };
    Ok((held.store().clone(), Some(held)))
}

/// Starts a node from the common flags; `configure` adjusts the rest of its configuration.
async fn start_node(
    args: &PeerArgs,
    store: BlobStore,
    configure: impl FnOnce(&mut NodeConfig),
) -> anyhow::Result<Node> {
    let tls = args
        .tls_ca
        .as_ref()
        .map(|ca| {
            let mut config = ClientTlsConfig::new(ca);
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                config = config.with_identity(cert, key);
            }
            config.load()
        })
        .transpose()?;
    let token = args
        .publish_token_file
        .as_deref()
        .map(PublishToken::from_file)
        .transpose()
        .context("reading --publish-token-file")?;
    let client = |url: &str| -> anyhow::Result<Arc<dyn Tracker>> {
        let mut client = TrackerClient::connect(url, tls.as_ref()).context("tracker URL")?;
        if let Some(token) = &token {
            client = client.with_publish_token(token.clone());
        }
        Ok(Arc::new(client))
    };
    let urls: Vec<&str> = args.tracker.split(',').map(str::trim).collect();
    let tracker: Arc<dyn Tracker> = match urls.as_slice() {
        [url] => client(url)?,
        _ => {
            let trackers = urls
                .iter()
                .map(|url| Ok((url.to_string(), client(url)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Arc::new(TrackerPool::from_trackers(trackers).context("tracker URLs")?)
        }
    };
    let mut config = NodeConfig::default();
    config.listen = args.listen;
    let rate: Option<ByteSize> = args.rate.map(|r| r.0);
    config.egress_rate = rate;
    config.ingress_rate = rate;
    if let Some(interval) = args.announce_interval {
        config.swarm.announce_interval = interval;
    }
    if let Some(max) = args.max_conns {
        config.swarm.max_conns_per_torrent = max;
    }
    config.send_file = !args.no_send_file;
    if let (Some(cert), Some(key), Some(ca)) =
        (&args.peer_tls_cert, &args.peer_tls_key, &args.peer_tls_ca)
    {
        config.tls = Some(PeerTlsConfig::new(cert, key, ca).require(args.peer_tls_require));
    }
    configure(&mut config);
    Node::builder(config)
        .store(store)
        .tracker(tracker)
        .spawn()
        .await
        .with_context(|| format!("starting a node on {}", args.listen))
}

pub(crate) async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let policy = args
        .piece_length
        .map(|length| PieceLengthPolicy::fixed(length.bytes()))
        .transpose()
        .context("piece length")?;
    // The default store is held until the process exits.
    let (store, _default_store) = open_store(&args.peer, None)?;
    let node = start_node(&args.peer, store, |config| {
        if let Some(policy) = policy {
            config.piece_lengths = policy;
        }
        // A seed process is the blob's source of last resort, as an origin is: it announces
        // as one and spreads its uploads so every piece leaves it once before any twice.
        config.swarm.origin = true;
    })
    .await?;
    if args.file.is_dir() {
        let digest = node
            .seed_dir(&args.file)
            .await
            .with_context(|| format!("seeding {}", args.file.display()))?;
        println!("{digest}");
        say(&format!(
            "seeding directory {} as collection {digest} from {}",
            args.file.display(),
            node.advertise_addr()
        ));
    } else {
        let meta = node
            .seed_file_in_place(&args.file)
            .await
            .with_context(|| format!("seeding {}", args.file.display()))?;
        println!("{}", meta.digest());
        say(&format!(
            "seeding {} ({} bytes, {} pieces) from {}",
            args.file.display(),
            meta.length(),
            meta.piece_count(),
            node.advertise_addr()
        ));
    }
    wait_for_signal().await?;
    node.shutdown().await;
    Ok(())
}

/// How long an interrupted fetch waits for its node to stop.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut signals = Signals::install()?;
    let (store, mut default_store) = open_store(&args.peer, Some(args.out.as_path()))?;
    let node = start_node(&args.peer, store, |config| {
        config.metainfo_timeout = args.metainfo_timeout;
        // A collection's files are fetched in the namespace of the collection.
        config.namespace = args.namespace.clone();
    })
    .await?;
    let download = node.download_in(&args.namespace, &args.digest);
    // A bar only for a person watching: a file or a pipe gets the summary line alone.
    let reporter = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        tokio::spawn(show_progress(
            node.clone(),
            args.digest,
            download.progress(),
        ))
    });
    let result = tokio::select! {
        result = download.into_future() => result,
        () = signals.recv() => {
            if let Some(reporter) = reporter {
                reporter.abort();
                crate::logging::set_progress_bar(None);
            }
            // Bounded: a node still waiting for metainfo finishes that wait before it stops,
            // and Ctrl-C must not wait for it. Nothing is lost: the store resumes.
            let _ = tokio::time::timeout(INTERRUPT_GRACE, node.shutdown()).await;
            return Err(Interrupted.into());
        }
    };
    if let Some(reporter) = reporter {
        reporter.abort();
        let _ = reporter.await;
        crate::logging::set_progress_bar(None);
    }
    let blob = match result {
        Ok(blob) => blob,
        Err(e) => {
            node.shutdown().await;
            return Err(e).with_context(|| format!("fetching {}", args.digest));
        }
    };
    let listing = match read_collection(&blob).await {
        Ok(listing) => listing,
        Err(e) => {
            node.shutdown().await;
            return Err(e);
        }
    };
    let (bytes, digests) = match &listing {
        Some(listing) => {
            let fetched = fetch_tree(&node, &args, args.quiet).await;
            if let Err(e) = fetched {
                node.shutdown().await;
                return Err(e);
            }
            let mut digests: Vec<Digest> = listing.entries().iter().map(|e| e.digest).collect();
            digests.push(args.digest);
            (listing.total_size(), digests)
        }
        None => (blob.len(), vec![args.digest]),
    };
    let download_seconds = start.elapsed().as_secs_f64();
    let mut received_from: BTreeMap<String, u64> = BTreeMap::new();
    for digest in &digests {
        let stats = node.torrent_stats(digest).await.unwrap_or_default();
        for (peer, bytes) in stats.received_from {
            *received_from.entry(peer.to_string()).or_default() += bytes;
        }
    }
    if listing.is_none() {
        let (store, digest, out) = (node.store().clone(), args.digest, args.out.clone());
        tokio::task::spawn_blocking(move || put_out(&store, &digest, &out))
            .await?
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    if !args.seed_after {
        node.shutdown().await;
        if let Some(default_store) = default_store.take() {
            default_store.finish(&digests)?;
        }
    }
    let report = FetchReport {
        digest: args.digest.to_string(),
        bytes,
        download_seconds,
        seconds: start.elapsed().as_secs_f64(),
        received_total: received_from.values().sum(),
        received_from,
        peak_rss_bytes: peak_rss_bytes(),
        write_bytes: write_bytes(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !args.quiet {
        say(&format!(
            "fetched {} ({} bytes) to {} in {:.2}s, {:.1} MiB/s from {} peer(s)",
            report.digest,
            report.bytes,
            args.out.display(),
            report.seconds,
            mib_per_second(report.received_total, report.download_seconds),
            report.received_from.len(),
        ));
    }
    if args.seed_after {
        use std::io::Write as _;
        std::io::stdout().flush()?;
        signals.recv().await;
        node.shutdown().await;
        if let Some(default_store) = default_store {
            default_store.finish(&digests)?;
        }
    }
    Ok(())
}

/// MiB per second, 0 for no time.
fn mib_per_second(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / f64::from(1 << 20)
    } else {
        0.0
    }
}

/// Draws a progress bar on stderr (bytes, rate, ETA, connected peers) until aborted.
async fn show_progress(node: Node, digest: Digest, mut progress: watch::Receiver<Progress>) {
    let style = indicatif::ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("a valid template");
    let bar = indicatif::ProgressBar::new(0).with_style(style);
    bar.set_message("waiting for metainfo");
    crate::logging::set_progress_bar(Some(bar.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let p = *progress.borrow_and_update();
        if p.total > 0 {
            bar.set_length(p.length);
            // Pieces are of equal length but the last: close enough for a bar.
            let piece = p.length.div_ceil(u64::from(p.total));
            bar.set_position((u64::from(p.have) * piece).min(p.length));
            let peers = node.torrent_stats(&digest).await.map_or(0, |s| s.conns);
            bar.set_message(format!("{peers} peer(s)"));
        }
        if p.done {
            break;
        }
    }
    crate::logging::set_progress_bar(None);
}

/// The collection `blob` holds, if it is one (a blob that merely starts like one but does
/// not decode is an error: a corrupt or hostile listing is not written out as a file).
async fn read_collection(blob: &kraken_core::Blob) -> anyhow::Result<Option<Collection>> {
    if blob.len() > collection::MAX_COLLECTION_LEN as u64 {
        return Ok(None);
    }
    let blob = blob.clone();
    tokio::task::spawn_blocking(move || {
        let mut bytes = vec![0; blob.len() as usize];
        blob.read_exact_at(0, &mut bytes)?;
        if !Collection::looks_like(&bytes) {
            return Ok(None);
        }
        Ok(Some(
            Collection::decode(&bytes).context("reading the collection")?,
        ))
    })
    .await?
}

/// Fetches the tree of the collection `args.digest` into `args.out`, printing progress
/// once a second to a person watching (a file or a pipe gets the summary line alone).
async fn fetch_tree(node: &Node, args: &FetchArgs, quiet: bool) -> anyhow::Result<()> {
    let fetch = node.fetch_dir(&args.digest, &args.out);
    let mut progress = fetch.progress();
    let watched = !quiet && std::io::stderr().is_terminal();
    let reporter = tokio::spawn(async move {
        let mut last = Instant::now();
        while progress.changed().await.is_ok() {
            let p = progress.borrow_and_update().clone();
            if watched && (last.elapsed() >= Duration::from_secs(1) || p.done) && p.listed {
                say(&format!(
                    "{}/{} files, {}/{} bytes",
                    p.files_done,
                    p.files.len(),
                    p.done_bytes,
                    p.total_bytes
                ));
                last = Instant::now();
            }
        }
    });
    let result = fetch.await;
    reporter.abort();
    result.with_context(|| format!("fetching {} into {}", args.digest, args.out.display()))?;
    Ok(())
}

/// Puts a verified blob at `out`. A regular file (or a new path) gets the blob moved there
/// from the store through a temporary name and a rename (copied only across file systems),
/// so `out` is either absent or complete and the bytes are written once; anything else
/// (`/dev/null`, a FIFO, a device) is written in place — renaming over it would replace the
/// device with a file.
fn put_out(store: &BlobStore, digest: &Digest, out: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(out) {
        Ok(meta) if !meta.is_file() => {
            let blob = store.open_blob(digest)?;
            copy_into(blob.path(), out)?;
        }
        _ => store.export(digest, out)?,
    }
    Ok(())
}

/// Writes the file at `from` into the existing special file `out`.
fn copy_into(from: &Path, out: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(from)?;
    let mut target = std::fs::OpenOptions::new().write(true).open(out)?;
    std::io::copy(&mut source, &mut target).map(drop)
}

#[cfg(test)]
mod put_out_tests {
    use super::put_out;

    #[test]
    fn replaces_regular_files_and_writes_into_special_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = kraken_core::BlobStore::open(dir.path().join("store")).unwrap();
        let meta = store.import(&b"verified"[..], 1 << 20, None).unwrap();
        // A character device stays a device.
        put_out(&store, meta.digest(), std::path::Path::new("/dev/null")).unwrap();
        let dev = std::fs::metadata("/dev/null").unwrap();
        assert!(!dev.is_file(), "/dev/null was replaced by a regular file");
        let out = dir.path().join("out");
        std::fs::write(&out, b"old contents, longer").unwrap();
        put_out(&store, meta.digest(), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"verified");
    }
}
