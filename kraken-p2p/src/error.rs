//! The crate's error type.

use kraken_core::Digest;

use crate::swarm::FailReason;
use crate::wire::WireError;

/// Everything that can go wrong in `kraken-p2p`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local store or the data model refused something.
    #[error("storage")]
    Core(#[from] kraken_core::Error),
    /// A peer broke the wire protocol.
    #[error("peer protocol")]
    Wire(#[from] WireError),
    /// The tracker answered with an error status.
    #[error("tracker answered {status}: {message}")]
    Tracker {
        /// The HTTP status.
        status: u16,
        /// The body of the answer, shortened.
        message: String,
    },
    /// The tracker could not be reached or its answer could not be read.
    #[error("tracker request to {url} failed: {reason}")]
    TrackerUnreachable {
        /// The tracker's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The tracker has no metainfo for the blob (nobody published it).
    #[error("no metainfo for {0}: no seeder or origin has published it")]
    MetaInfoNotFound(Digest),
    /// A download failed.
    #[error("download of {digest} failed: {reason:?}")]
    DownloadFailed {
        /// The blob.
        digest: Digest,
        /// Why.
        reason: FailReason,
    },
    /// A socket operation failed.
    #[error("network I/O")]
    Io(#[from] std::io::Error),
    /// The node is shutting down or has shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A tracker's [`MetaInfoSource`](crate::tracker::MetaInfoSource) could not be asked
    /// (every origin unreachable, say); the message says why.
    #[error("metainfo source: {0}")]
    MetaInfoSource(String),
    /// A blob's metainfo claims more bytes than the node's `max_blob_size`.
    #[error("metainfo of {digest} claims {length} bytes, more than max_blob_size ({max})")]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// The length claimed.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// The download a reader was reading started over with the origins' metainfo (its own
    /// matched nobody's bytes); reading again reads the new download.
    #[error("the download of {0} started over with the origins' metainfo; read it again")]
    MetaInfoReplaced(Digest),
    /// A tracker's peer store refused an announce: one of its caps is reached.
    #[error("peer store full: {0}")]
    PeerStoreFull(#[from] crate::tracker::CapReached),
    /// An internal invariant was violated: a bug. Please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
