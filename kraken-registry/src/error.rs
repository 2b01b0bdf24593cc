//! The crate's error type.

use kraken_core::Digest;

/// What can go wrong in the cluster services.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local blob store failed (disk full, permissions, a corrupt entry).
    #[error("blob store")]
    Store(#[from] kraken_core::Error),
    /// A remote backend failed; [`kraken_backends::Error::is_transient`] tells whether a retry
    /// may help.
    #[error("backend")]
    Backend(#[from] kraken_backends::Error),
    /// The P2P node or tracker failed.
    #[error("p2p")]
    P2p(#[from] kraken_p2p::Error),
    /// A file of the service's own (the write-back queue, an upload) could not be used.
    #[error("I/O")]
    Io(#[from] std::io::Error),
    /// Uploaded bytes do not hash to the digest they were uploaded as; nothing was stored.
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestMismatch {
        /// The digest in the request.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// The blob is neither here nor in the backend.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// Another origin refused a repair's replica of a blob it deleted lately (see
    /// [`ClusterConfig::tombstone_ttl`](crate::origin::ClusterConfig::tombstone_ttl)).
    #[error("origin {origin} deleted blob {digest} lately")]
    Deleted {
        /// The origin's address.
        origin: String,
        /// The blob.
        digest: Digest,
    },
    /// Another origin answered with an error or could not be reached.
    #[error("origin {origin}: {reason}")]
    Origin {
        /// The origin's address.
        origin: String,
        /// What happened.
        reason: String,
    },
    /// A TLS certificate, key or CA file could not be read or used.
    #[error("TLS")]
    Tls(#[from] kraken_p2p::tls::TlsError),
    /// A tag name is not `repository:tag` as the OCI distribution spec defines them.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The name as given (cut at 300 characters).
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tag is not in the build-index.
    #[error("tag {0} not found")]
    TagNotFound(String),
    /// A manifest refers to a blob (layer, config or child manifest) that the origin cluster
    /// does not have; push the blob first. Nothing was stored.
    #[error("missing dependency {0}: not in the origin cluster")]
    MissingDependency(Digest),
    /// A manifest could not be read; the message says why.
    #[error("invalid manifest {digest}: {reason}")]
    InvalidManifest {
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// A build-index answered with an error or could not be reached.
    #[error("build-index {address}: {reason}")]
    BuildIndex {
        /// The build-index's address.
        address: String,
        /// What happened.
        reason: String,
    },
    /// A listener could not be bound (the address is in use, or not this host's).
    #[error("binding the {what} listener on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The P2P node could not start on its peer listener.
    #[error("starting the P2P node on {addr}")]
    Node {
        /// The peer listener's address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: kraken_p2p::Error,
    },
    /// The data directory cannot be created or written.
    #[error("data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid; the message says which and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The service is at its limit of the work named (e.g. `limits.max_backend_fetches`);
    /// answered `503` with `Retry-After`, and worth retrying after that delay.
    #[error("busy: too many {0} at once; retry later")]
    Busy(&'static str),
    /// The service is shutting down.
    #[error("shutting down")]
    Shutdown,
    /// A bug: an internal invariant did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the blob or tag is missing, as opposed to a failure.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound(_) | Self::TagNotFound(_) => true,
            Self::Store(kraken_core::Error::NotFound(_)) => true,
            Self::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }
}

pub(crate) use kraken_core::error_chain;
