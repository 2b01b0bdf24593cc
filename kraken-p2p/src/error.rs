//! The crate's error type.

use kraken_core::Digest;

use crate::swarm::FailReason;
use crate::wire::WireError;

/// Everything that can go wrong in `kraken-p2p`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local store or the data model refused something.
    #[error("storage: {0}")]
    Core(#[from] kraken_core::Error),
    /// A peer broke the wire protocol.
    #[error("peer protocol: {0}")]
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
    #[error("network I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The download was cancelled ([`Node::cancel`](crate::node::Node::cancel), or its last
    /// waiter went away). Verified pieces stay in the store for a later download to resume.
    #[error("download of {0} cancelled")]
    Cancelled(Digest),
    /// The node is shutting down or has shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// A TLS file could not be read or used.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
    /// A shared peer store (Redis) could not be asked; the message says why. The tracker
    /// then answers from its own memory.
    #[error("redis: {0}")]
    Redis(String),
    /// An internal invariant was violated: a bug. Please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The failure of an operation several callers waited for, which cannot be copied (a
    /// storage or socket error): each caller gets it, shared.
    #[error(transparent)]
    Shared(std::sync::Arc<Self>),
}

impl Error {
    /// The error for each of `n` callers that waited for one operation: the same variant
    /// for each where it can be copied, else the original shared ([`Error::Shared`]).
    #[cfg(feature = "runtime-tokio")]
    pub(crate) fn for_waiters(self, n: usize) -> Vec<Self> {
        if n <= 1 {
            // One waiter gets the error itself, whatever it is.
            return vec![self];
        }
        let copy = |e: &Self| -> Option<Self> {
            Some(match e {
                Self::Tracker { status, message } => Self::Tracker {
                    status: *status,
                    message: message.clone(),
                },
                Self::TrackerUnreachable { url, reason } => Self::TrackerUnreachable {
                    url: url.clone(),
                    reason: reason.clone(),
                },
                Self::MetaInfoNotFound(digest) => Self::MetaInfoNotFound(*digest),
                Self::DownloadFailed { digest, reason } => Self::DownloadFailed {
                    digest: *digest,
                    reason: *reason,
                },
                Self::BlobTooLarge {
                    digest,
                    length,
                    max,
                } => Self::BlobTooLarge {
                    digest: *digest,
                    length: *length,
                    max: *max,
                },
                Self::Shutdown => Self::Shutdown,
                Self::Config(message) => Self::Config(message),
                Self::MetaInfoSource(message) => Self::MetaInfoSource(message.clone()),
                Self::Internal(message) => Self::Internal(message),
                Self::Shared(shared) => Self::Shared(std::sync::Arc::clone(shared)),
                _ => return None,
            })
        };
        if copy(&self).is_some() {
            let mut errors: Vec<Self> = (1..n).filter_map(|_| copy(&self)).collect();
            errors.push(self);
            return errors;
        }
        let shared = std::sync::Arc::new(self);
        (0..n)
            .map(|_| Self::Shared(std::sync::Arc::clone(&shared)))
            .collect()
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An error's own text says what failed, and a chain of causes prints each once.
    #[test]
    fn texts_carry_their_detail_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let core = kraken_core::Error::Io {
            path: "/models/a".into(),
            source: io,
        };
        let error = Error::from(core);
        assert_eq!(
            error.to_string(),
            "storage: I/O error on /models/a: no such file"
        );
        assert_eq!(kraken_core::error_chain(&error), error.to_string());
        let net = Error::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        assert_eq!(net.to_string(), "network I/O: reset by peer");
    }
}
