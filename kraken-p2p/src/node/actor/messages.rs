//! What the actor receives: commands from [`Node`](crate::node::Node) handles and events
//! from the connection, I/O and blocking tasks it spawned.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kraken_core::{Blob, BlobStore, Digest, InfoHash, MetaInfo};
use tokio::sync::{oneshot, watch};

use super::prepare::Prepared;
use crate::error::Result;
use crate::node::Progress;
use crate::node::stream::PartialSource;
use crate::node::transport::BoxStream;
use crate::swarm::{ConnClosed, ConnId, FinishError, PieceWriteError, TorrentStats};
use crate::tracker::api::AnnounceResponse;
use crate::wire::Message;

/// Where a download's blob (or its failure) is sent.
pub(crate) type Waiter = oneshot::Sender<Result<Blob>>;

/// What a [`Node`](crate::node::Node) handle asks of the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Download a blob (or hand over the cached one) and keep `progress` up to date.
    Download {
        digest: Digest,
        namespace: String,
        /// Where the caller wants the blob ([`Node::download_to`](crate::Node::download_to)):
        /// a new download is then written there when that is another file system than the
        /// store's ([`BlobStore::begin_download_to`]).
        dest: Option<PathBuf>,
        reply: Waiter,
        progress: watch::Sender<Progress>,
    },
    /// Open a blob for reading while it may still be downloading.
    OpenPartial {
        digest: Digest,
        reply: oneshot::Sender<Result<PartialSource>>,
    },
    /// Import a file into `store`, publish its metainfo and seed it.
    SeedFile {
        path: PathBuf,
        store: BlobStore,
        reply: oneshot::Sender<Result<MetaInfo>>,
    },
    /// Publish the metainfo of a blob already in the store and seed it; `pin` keeps it in
    /// the swarm even when idle, otherwise it leaves after `seeder_idle_timeout` without
    /// connections (and asking again restarts that clock).
    SeedStored {
        digest: Digest,
        namespace: String,
        pin: bool,
        reply: oneshot::Sender<Result<MetaInfo>>,
    },
    /// Stop seeding a blob that is not pinned and has no connection: what an embedder that
    /// keeps only recently wanted blobs in the swarm calls for those it no longer wants.
    Retire { digest: Digest },
    /// Stop seeding a blob (a download in progress is left alone).
    Unseed { digest: Digest },
    /// The swarm's counters of a blob's torrent.
    Stats {
        digest: Digest,
        reply: oneshot::Sender<Option<TorrentStats>>,
    },
    /// The node's eviction pass removed a blob from the store: stop serving it unless it
    /// is seeded on purpose (`Node::seed`, `seed_file`, `seed_dir`), which keeps its file
    /// open and goes on.
    Evicted { digest: Digest },
    /// Stop a download in progress, failing its waiters with `Error::Cancelled`.
    Cancel { digest: Digest },
    /// A `Fetch` of the blob was dropped: cancel its download if nobody waits for it any
    /// more (every waiter and progress receiver gone).
    Release { digest: Digest },
    /// Answer at once, showing that the actor is running (a health probe).
    Ping { reply: oneshot::Sender<()> },
    /// The swarm's blacklist now, with the digest of each torrent the node knows.
    Blacklist {
        reply: oneshot::Sender<Vec<(crate::swarm::BlacklistEntry, Option<Digest>)>>,
    },
}

/// What connection and I/O tasks report to the actor.
pub(crate) enum ActorEvent {
    /// The listener accepted a connection.
    Incoming { stream: BoxStream, addr: SocketAddr },
    /// A dial from [`Action::Dial`](crate::swarm::Action::Dial) connected or failed.
    Dialed {
        conn: ConnId,
        addr: SocketAddr,
        result: std::io::Result<BoxStream>,
    },
    /// A connection's reader decoded a message.
    Message { conn: ConnId, message: Message },
    /// A connection's writer sent a piece payload of `bytes` bytes.
    PieceSent { conn: ConnId, bytes: u64 },
    /// A connection ended.
    Closed { conn: ConnId, how: ConnClosed },
    /// A received piece was verified and written to the download, or was not.
    PieceWritten {
        conn: ConnId,
        info_hash: InfoHash,
        index: kraken_core::PieceIndex,
        result: Result<(), PieceWriteError>,
    },
    /// A background write-back of a download's pieces ended.
    WrittenBack { info_hash: InfoHash },
    /// A download's whole blob was checked against its digest and committed, or was not.
    Finished {
        info_hash: InfoHash,
        result: std::result::Result<Blob, FinishError>,
    },
    /// The tracker answered an announce, or could not be reached.
    Announced {
        info_hash: InfoHash,
        result: Result<AnnounceResponse>,
    },
    /// The store was searched for the blob an inbound handshake asks for.
    Resolved {
        conn: ConnId,
        found: Option<(Arc<MetaInfo>, Blob)>,
    },
    /// A download was prepared: the blob was cached, or its metainfo fetched and the
    /// download opened.
    DownloadReady {
        digest: Digest,
        namespace: String,
        result: Result<Prepared>,
    },
    /// The tracker answered a stalled download's request for the origins' metainfo.
    Rechecked {
        info_hash: InfoHash,
        result: Result<Option<MetaInfo>>,
    },
    /// A blob to seed was opened and its metainfo published, or this failed; `reply` is
    /// the waiting [`Command::SeedFile`] or [`Command::SeedStored`].
    Seeded {
        result: Result<(MetaInfo, Blob)>,
        namespace: String,
        pin: bool,
        reply: oneshot::Sender<Result<MetaInfo>>,
    },
}
