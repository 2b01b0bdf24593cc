//! The tokio driver: a [`Node`] runs a [`Swarm`](crate::swarm::Swarm) over real sockets.
//!
//! One actor task owns the swarm and is the only code that touches scheduling state.
//! Connection tasks only move bytes: a reader decodes frames and forwards them to the actor,
//! a writer sends what the actor queues. Piece verification, piece writes and reads, and
//! whole-blob verification run on the blocking pool against the [`BlobStore`].
//!
//! # Memory
//!
//! Memory does not grow with blob size; it grows with the piece length and the number of
//! connections. Whole pieces are held only while they are received (at most the pipeline
//! limit of requests per connection, plus one being decoded), waiting for the disk (at most
//! [`SwarmConfig::max_pending_writes`](crate::swarm::SwarmConfig::max_pending_writes) per
//! torrent) or sent (one, plus one read ahead, per connection); frames other than payloads
//! are bounded by [`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN). The resulting bound for
//! one download is about `32 MiB + piece length × (16 + 8 × connections)`. Measured
//! (`docs/benchmarks.md`): a fetcher's peak RSS is 121–124 MiB for 1, 2 and 4 GiB blobs with
//! 4 MiB pieces, and 34 MiB for a 256 MiB blob with 1 MiB pieces.

mod actor;
mod collection;
mod config;
mod conn;
mod counters;
mod halves;
mod piece_source;
mod rate;
mod read_cache;
mod stream;
mod tcp;
#[cfg(feature = "tls")]
mod tls;
mod transport;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kraken_core::{Blob, BlobStore, Digest, MetaInfo, PeerId, PieceLengthPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::collection::{DirFetch, DirProgress, FileProgress};
pub use self::config::NodeConfig;
pub use self::stream::BlobStream;
pub use self::tcp::TcpTransport;
#[cfg(feature = "tls")]
pub use self::tls::TlsTransport;
pub use self::transport::{BoxStream, Listener, PeerStream, Transport};
use crate::error::{Error, Result};
use crate::swarm::TorrentStats;
use crate::tracker::Tracker;

/// Where a download stands.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Progress {
    /// Pieces verified and written.
    pub have: u32,
    /// Pieces in all (0 until the metainfo is known).
    pub total: u32,
    /// Blob length in bytes (0 until the metainfo is known).
    pub length: u64,
    /// Bytes verified and written: exact when done, else whole pieces (off by less than
    /// one piece while the short last piece is among them).
    pub bytes: u64,
    /// Average bytes per second verified since this download started (or resumed).
    pub bytes_per_sec: u64,
    /// Peers connected for this blob.
    pub peers: usize,
    /// What the download is doing.
    pub stage: Stage,
    /// Whether the blob is complete and verified.
    pub done: bool,
    /// Times the download started over with the origins' metainfo because its own matched
    /// nobody's bytes; a reader of the earlier download then fails with
    /// [`Error::MetaInfoReplaced`] and reads again.
    pub restarts: u32,
}

/// What a download is doing.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum Stage {
    /// Looking in the store, and asking the tracker for the metainfo.
    #[default]
    Metainfo,
    /// Fetching pieces from peers.
    Downloading,
    /// Complete and verified (found in the store, or downloaded).
    Done,
}

/// Builds a [`Node`].
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct NodeBuilder {
    config: NodeConfig,
    store: Option<BlobStore>,
    tracker: Option<Arc<dyn Tracker>>,
    transport: Option<Arc<dyn Transport>>,
    peer_id: Option<PeerId>,
    root_span: Option<tracing::Span>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::NodeMetrics>,
}

impl NodeBuilder {
    /// Counts transfers, pieces, torrents, connections and downloads into `metrics` (see
    /// `docs/metrics.md`). Default: counts nothing.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: crate::metrics::NodeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The blob store to download into and seed from (required).
    pub fn store(mut self, store: BlobStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The tracker (required), e.g. a [`TrackerClient`](crate::tracker::TrackerClient).
    pub fn tracker(mut self, tracker: Arc<dyn Tracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// The transport. Default: [`TcpTransport`] leaving from the listen address's IP.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The node's peer id. Default: random.
    pub fn peer_id(mut self, peer_id: PeerId) -> Self {
        self.peer_id = Some(peer_id);
        self
    }

    /// The span the node's logs nest under. Default: the current span.
    pub fn root_span(mut self, span: tracing::Span) -> Self {
        self.root_span = Some(span);
        self
    }

    /// Binds the listener and starts the node.
    pub async fn spawn(self) -> Result<Node> {
        let store = self
            .store
            .ok_or(Error::Config("a node needs a blob store"))?;
        let tracker = self
            .tracker
            .ok_or(Error::Config("a node needs a tracker"))?;
        let config = self.config;
        let transport = match self.transport {
            Some(transport) => transport,
            None => default_transport(&config)?,
        };
        let listener = transport.bind(config.listen).await?;
        let cancel_on_drop = config.cancel_on_drop;
        let read_cache = read_cache::ReadCache::new(config.read_cache_size.bytes()).map(Arc::new);
        let evict_interval = config.evict_interval;
        let local_addr = listener.local_addr()?;
        // Port 0 in `advertise` stands for the listener's port, so that an address found at
        // start-up (the default route's) can be combined with a port bound only now.
        let advertise = match config.advertise {
            Some(addr) if addr.port() == 0 => SocketAddr::new(addr.ip(), local_addr.port()),
            Some(addr) => addr,
            None => local_addr,
        };
        if advertise.ip().is_unspecified() {
            return Err(Error::Config(
                "listening on a wildcard address needs an `advertise` address",
            ));
        }
        // The tracker records an announcer at the address its connection comes from: a node
        // that advertises the address it listens on sends from it, as the transport dials
        // from it. (One advertising another address, behind NAT say, leaves the choice to
        // the system, and its tracker trusts declared addresses or knows it as an origin.)
        let tracker = if local_addr.ip().is_unspecified() || advertise.ip() != local_addr.ip() {
            tracker
        } else {
            tracker.bound_to(local_addr.ip())?.unwrap_or(tracker)
        };
        // A transport that proves who the node is (TLS) decides its peer id.
        let peer_id = match (transport.local_peer_id(), self.peer_id) {
            (Some(bound), Some(asked)) if bound != asked => {
                return Err(Error::Config(
                    "the peer id differs from the one the transport's certificate binds",
                ));
            }
            (Some(bound), _) => bound,
            (None, asked) => asked.unwrap_or_else(|| PeerId::random(&mut rand::rng())),
        };
        let span = tracing::info_span!(
            parent: self.root_span.unwrap_or_else(tracing::Span::current),
            "node",
            peer = %peer_id.fmt_short(),
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let piece_lengths = config.piece_lengths.clone();
        let namespace = config.namespace.clone();
        actor::spawn(actor::ActorParts {
            config,
            store: store.clone(),
            tracker,
            transport,
            listener,
            peer_id,
            advertise,
            commands: command_rx,
            #[cfg(feature = "metrics")]
            counters: counters::Counters::new(self.metrics),
            #[cfg(not(feature = "metrics"))]
            counters: counters::Counters::default(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            span,
        });
        if let Some(every) = evict_interval {
            tasks.spawn(evict_periodically(
                store.clone(),
                every,
                commands.clone(),
                shutdown.clone(),
            ));
        }
        Ok(Node {
            inner: Arc::new(NodeInner {
                commands,
                local_addr,
                advertise,
                peer_id,
                store,
                piece_lengths,
                namespace,
                cancel_on_drop,
                read_cache,
                shutdown,
                tasks,
            }),
        })
    }
}

/// TCP leaving from the listen address's IP, under TLS if the config says so.
fn default_transport(config: &NodeConfig) -> Result<Arc<dyn Transport>> {
    let ip = config.listen.ip();
    let tcp = if ip.is_unspecified() {
        TcpTransport::new()
    } else {
        TcpTransport::with_source_ip(ip)
    };
    let tcp = tcp.send_file(config.send_file);
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        return Ok(Arc::new(TlsTransport::new(
            tcp,
            tls.load()?,
            config.swarm.handshake_timeout,
        )));
    }
    Ok(Arc::new(tcp))
}

/// A P2P node: a cheap, cloneable handle to the actor that runs it.
///
/// ```no_run
/// # async fn example(digest: kraken_core::Digest) -> kraken_p2p::Result<()> {
/// use std::sync::Arc;
/// use kraken_core::BlobStore;
/// use kraken_p2p::node::{Node, NodeConfig};
/// use kraken_p2p::tracker::TrackerClient;
///
/// let node = Node::builder(NodeConfig::default())
///     .store(BlobStore::open("/var/cache/kraken")?)
///     .tracker(Arc::new(TrackerClient::new("http://tracker:15003")?))
///     .spawn()
///     .await?;
/// let blob = node.download(&digest).await?; // verified, in the local store
/// println!("{} bytes at {}", blob.len(), blob.path().display());
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<NodeInner>,
}

#[derive(Debug)]
struct NodeInner {
    commands: mpsc::UnboundedSender<actor::Command>,
    local_addr: SocketAddr,
    advertise: SocketAddr,
    peer_id: PeerId,
    store: BlobStore,
    piece_lengths: PieceLengthPolicy,
    /// The default namespace (what `download("")` means), for seeding in place.
    namespace: String,
    cancel_on_drop: bool,
    /// Chunks of complete blobs that streams read lately (`read_cache_size`).
    read_cache: Option<Arc<read_cache::ReadCache>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for NodeInner {
    /// The last handle is gone: stop the node (its tasks finish on their own; nobody is left
    /// to wait for them).
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tasks.close();
    }
}

/// Runs the store's eviction policy every `every` until shutdown, and stops seeding what it
/// evicted (closing the files frees their space).
async fn evict_periodically(
    store: BlobStore,
    every: Duration,
    commands: mpsc::UnboundedSender<actor::Command>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let store = store.clone();
        let evicted =
            tokio::task::spawn_blocking(move || store.evict(std::time::SystemTime::now())).await;
        match evicted {
            Ok(Ok(report)) if !report.idle.is_empty() || !report.watermark.is_empty() => {
                for digest in report.idle.iter().chain(&report.watermark) {
                    let _ = commands.send(actor::Command::Evicted { digest: *digest });
                }
                tracing::info!(
                    blobs = report.idle.len() + report.watermark.len(),
                    bytes = report.freed_bytes,
                    "evicted blobs"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "eviction pass failed"),
            Err(_) => tracing::warn!("eviction task failed"),
        }
    }
}

impl Node {
    /// A builder with `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            store: None,
            tracker: None,
            transport: None,
            peer_id: None,
            root_span: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Downloads a blob in the node's default namespace (or finds it in the store). Await
    /// the returned [`Fetch`] for the verified blob, or watch its progress first.
    pub fn download(&self, digest: &Digest) -> Fetch {
        self.download_in("", digest)
    }

    /// Downloads a blob of `namespace` (empty: the node's default).
    pub fn download_in(&self, namespace: &str, digest: &Digest) -> Fetch {
        self.fetch(namespace, digest, None)
    }

    /// Starts or joins the download of a blob; a new download is written to `dest` when that
    /// is on another file system than the store ([`Node::download_to`]).
    fn fetch(&self, namespace: &str, digest: &Digest, dest: Option<PathBuf>) -> Fetch {
        let (reply, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let sent = self.inner.commands.send(actor::Command::Download {
            digest: *digest,
            namespace: namespace.to_owned(),
            dest,
            reply,
            progress: progress_tx,
        });
        Fetch {
            result: sent.ok().map(|()| result),
            progress,
            release: self
                .inner
                .cancel_on_drop
                .then(|| (*digest, self.inner.commands.clone())),
        }
    }

    /// Cancels the download of a blob: its waiters fail with [`Error::Cancelled`], its
    /// connections close, and the pieces verified so far stay in the store for a later
    /// download to resume. Does nothing to a complete blob or an unknown one.
    pub fn cancel(&self, digest: &Digest) {
        let _ = self.send(actor::Command::Cancel { digest: *digest });
    }

    /// Streams a blob's bytes in order as its pieces arrive, starting the download if needed:
    /// a client gets the first bytes long before the last piece lands.
    pub async fn read(&self, digest: &Digest) -> Result<BlobStream> {
        self.read_in("", digest, None).await
    }

    /// Streams bytes `range` of a blob of `namespace` (empty: the node's default), or the
    /// whole blob when `None`, as its pieces arrive: the download (started if needed) fetches
    /// every piece, but the stream waits only for the pieces the range covers. A range that
    /// reaches past the blob's end is cut at the end. Fails as the download does when the
    /// blob's metainfo cannot be found ([`Error::MetaInfoNotFound`] after
    /// [`NodeConfig::metainfo_timeout`]).
    pub async fn read_in(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        self.open_stream(namespace, digest, range, false).await
    }

    /// [`read_in`](Self::read_in) for a sink that only hands the bytes to the kernel, as an
    /// HTTP server writing them to a plain TCP socket does: the chunks of a blob complete in
    /// the store are then memory maps of its file ([`kraken_core::Blob::map_range`]), which
    /// the kernel copies once, straight from the page cache, instead of being read into a
    /// buffer first (a cached 1 GiB `GET` from an agent took about 15% less time). A blob
    /// still downloading streams as with `read_in`.
    ///
    /// # Safety
    ///
    /// Only the kernel may read the stream's bytes (a `write` or `writev` of them), never
    /// code in user space — encrypting them for TLS, parsing them, copying them: see
    /// [`kraken_core::Blob::map_range`]. Use [`read_in`](Self::read_in) there.
    #[allow(
        unsafe_code,
        reason = "the caller's promise is what makes maps safe to hand out"
    )]
    pub async unsafe fn read_mapped_in(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        self.open_stream(namespace, digest, range, true).await
    }

    /// The stream of [`read_in`](Self::read_in) and [`read_mapped_in`](Self::read_mapped_in).
    async fn open_stream(
        &self,
        namespace: &str,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
        mapped: bool,
    ) -> Result<BlobStream> {
        let fetch = self.download_in(namespace, digest);
        let mut progress = fetch.progress();
        // Wait for the metainfo (or the end, for blobs already here or failures).
        loop {
            let now = *progress.borrow_and_update();
            if now.total > 0 || now.done {
                break;
            }
            if progress.changed().await.is_err() {
                // The download ended before it started: its result says how.
                fetch.await?;
                break;
            }
        }
        let (reply, source) = oneshot::channel();
        self.send(actor::Command::OpenPartial {
            digest: *digest,
            reply,
        })?;
        let source = source.await.map_err(|_| Error::Shutdown)??;
        Ok(BlobStream::new(
            source,
            progress,
            range,
            self.inner.read_cache.clone(),
            mapped,
        ))
    }

    /// Checks that the node's actor is running and answering commands: what a health probe
    /// asks. Fails with [`Error::Shutdown`] once the node has stopped.
    pub async fn ping(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(actor::Command::Ping { reply })?;
        answer.await.map_err(|_| Error::Shutdown)
    }

    /// Imports a file into the store, publishes its metainfo and seeds it until shutdown.
    pub async fn seed_file(&self, path: &Path) -> Result<MetaInfo> {
        let store = self.inner.store.clone();
        let path = path.to_owned();
        let (reply, result) = oneshot::channel();
        self.send(actor::Command::SeedFile { path, store, reply })?;
        result.await.map_err(|_| Error::Shutdown)?
    }

    /// Seeds a blob already cached in the node's store until shutdown (or
    /// [`unseed`](Self::unseed)): publishes its metainfo under `namespace` and announces it.
    /// Seeding a blob already seeded does nothing more. Fails if the blob is not cached.
    pub async fn seed(&self, namespace: &str, digest: &Digest) -> Result<MetaInfo> {
        self.seed_stored(namespace, digest, true).await
    }

    /// Seeds a blob already cached in the node's store while it is wanted: publishes its
    /// metainfo under `namespace` and announces it, as [`seed`](Self::seed), but without
    /// pinning it — it leaves the swarm (closing its file, ending its announces) once it has
    /// had no connection for [`SwarmConfig::seeder_idle_timeout`](crate::swarm::SwarmConfig),
    /// or at [`retire`](Self::retire). Offering it again restarts that clock. An origin
    /// holding many blobs offers those asked for, so its open files and its announces
    /// follow demand, not the size of its store. Fails if the blob is not cached.
    pub async fn offer(&self, namespace: &str, digest: &Digest) -> Result<MetaInfo> {
        self.seed_stored(namespace, digest, false).await
    }

    async fn seed_stored(&self, namespace: &str, digest: &Digest, pin: bool) -> Result<MetaInfo> {
        let (reply, result) = oneshot::channel();
        self.send(actor::Command::SeedStored {
            digest: *digest,
            namespace: namespace.to_owned(),
            pin,
            reply,
        })?;
        result.await.map_err(|_| Error::Shutdown)?
    }

    /// Stops seeding a blob that is neither pinned ([`seed`](Self::seed)) nor connected to
    /// any peer; one in use stays until it is idle. Does nothing to downloads. An inbound
    /// handshake for the blob brings it back.
    pub fn retire(&self, digest: &Digest) {
        let _ = self.send(actor::Command::Retire { digest: *digest });
    }

    /// Stops seeding a blob and closes its connections and its file (so that deleting it
    /// from the store frees its space). Does nothing if the blob is not in the swarm.
    pub fn unseed(&self, digest: &Digest) {
        let _ = self.send(actor::Command::Unseed { digest: *digest });
    }

    /// The peers this node keeps out of a torrent now (the swarm's blacklist, per address,
    /// peer id and torrent), each with the time left and the torrent's digest when the node
    /// still has the torrent: what the agent's `GET /x/blacklist` lists.
    pub async fn blacklist(&self) -> Result<Vec<(crate::swarm::BlacklistEntry, Option<Digest>)>> {
        let (reply, answer) = oneshot::channel();
        self.send(actor::Command::Blacklist { reply })?;
        answer.await.map_err(|_| Error::Shutdown)
    }

    /// Counters of a blob's torrent, if it is in the swarm.
    pub async fn torrent_stats(&self, digest: &Digest) -> Option<TorrentStats> {
        let (reply, result) = oneshot::channel();
        self.send(actor::Command::Stats {
            digest: *digest,
            reply,
        })
        .ok()?;
        result.await.ok().flatten()
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address announced to the tracker.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The node's blob store.
    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    /// Stops the node: closes connections, fails downloads in progress with
    /// [`Error::Shutdown`], waits for every task (and every disk job) to finish.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn send(&self, command: actor::Command) -> Result<()> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| Error::Shutdown)
    }
}

/// A download in progress: await it for the verified blob.
#[derive(Debug)]
#[must_use = "a download is cancelled for this caller if the Fetch is dropped"]
pub struct Fetch {
    result: Option<oneshot::Receiver<Result<Blob>>>,
    progress: watch::Receiver<Progress>,
    /// With [`NodeConfig::cancel_on_drop`]: the blob and where to say this Fetch is gone.
    release: Option<(Digest, mpsc::UnboundedSender<actor::Command>)>,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        // Let go of this Fetch's own receivers before the actor looks at who still waits.
        drop(self.result.take());
        self.progress = watch::channel(Progress::default()).1;
        if let Some((digest, commands)) = self.release.take() {
            let _ = commands.send(actor::Command::Release { digest });
        }
    }
}

impl Fetch {
    /// Progress updates: the receiver sees every change (latest value wins).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

impl IntoFuture for Fetch {
    type Output = Result<Blob>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Blob>> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move {
            // Dropped before it resolves, this future drops `result` and then `self`, whose
            // `Drop` releases the download.
            let result = self.result.take();
            match result {
                Some(result) => result.await.map_err(|_| Error::Shutdown)?,
                None => Err(Error::Shutdown),
            }
        })
    }
}
