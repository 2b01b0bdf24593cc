//! The crate's error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};
use crate::metainfo::MetaInfoError;

/// Everything that can go wrong in `kraken-core`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string is not a valid digest.
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    /// Bytes are not a valid metainfo encoding.
    #[error("invalid metainfo: {0}")]
    MetaInfo(#[from] MetaInfoError),
    /// A string is not an info hash (64 lowercase hex characters).
    #[error("invalid info hash: expected 64 lowercase hex characters")]
    InvalidInfoHash,
    /// A string is not a peer id (40 lowercase hex characters).
    #[error("invalid peer id: expected 40 lowercase hex characters")]
    InvalidPeerId,
    /// An encoded bitfield has the wrong number of bytes for its piece count.
    #[error("bitfield of {bits} bits needs {expected} bytes, got {found}")]
    BitfieldLength {
        /// Bits the field must hold.
        bits: u32,
        /// Bytes that encode that many bits.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// An encoded bitfield has bits set past its last piece.
    #[error("bitfield has padding bits set past its last piece")]
    BitfieldPadding,
    /// A piece index is not below the piece count.
    #[error("piece index {index} out of range (blob has {count} pieces)")]
    PieceIndexOutOfRange {
        /// The index asked for.
        index: u32,
        /// Pieces the blob has.
        count: u32,
    },
    /// A piece's bytes are not its declared length.
    #[error("piece {index} must be {expected} bytes, got {found}")]
    PieceLengthMismatch {
        /// The piece.
        index: u32,
        /// Its length per the metainfo.
        expected: u64,
        /// Bytes given.
        found: u64,
    },
    /// A piece's bytes do not hash to the metainfo's piece hash: the sender is faulty or
    /// malicious. Nothing was written.
    #[error("piece {index} does not match its hash")]
    PieceHashMismatch {
        /// The piece.
        index: u32,
    },
    /// A read asked for bytes of a piece that has not been verified and written yet.
    #[error("piece {index} is not available yet")]
    PieceMissing {
        /// The first missing piece of the range.
        index: u32,
    },
    /// The whole blob does not hash to its digest, although every piece matched its hash: the
    /// metainfo itself was wrong. The download was discarded.
    #[error("blob content hashes to {actual}, expected {expected}")]
    DigestMismatch {
        /// The digest the blob was supposed to have.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The blob is already complete in the store; there is nothing to download.
    #[error("blob {0} is already complete")]
    AlreadyComplete(Digest),
    /// A download cannot finish before every piece is present.
    #[error("blob {digest} still misses {missing} pieces")]
    Incomplete {
        /// The blob.
        digest: Digest,
        /// Pieces not yet written.
        missing: u32,
    },
    /// A download of the blob is in progress under a different metainfo (another piece
    /// length); finish or drop it first.
    #[error("blob {0} is being downloaded with a different metainfo")]
    MetaInfoConflict(Digest),
    /// The blob is pinned and cannot be deleted; unpin it first.
    #[error("blob {0} is pinned")]
    Pinned(Digest),
    /// A piece-length table is invalid.
    #[error("invalid piece length policy: {0}")]
    InvalidPieceLengthPolicy(&'static str),
    /// A hash ring member is invalid.
    #[error("invalid ring member {name:?}: {reason}")]
    InvalidRingMember {
        /// The member's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a caller-supplied stream failed.
    #[error("reading the blob stream failed: {0}")]
    Read(#[source] io::Error),
    /// A collection (or a path in one) is invalid.
    #[error("invalid collection: {0}")]
    Collection(#[from] crate::collection::CollectionError),
    /// A file seeded in place changed since it was recorded (its size or modification time
    /// differs): the store refuses to serve it and forgets it.
    #[error("file {} seeded in place as {digest} changed since it was recorded", path.display())]
    ReferenceChanged {
        /// The blob.
        digest: Digest,
        /// The file.
        path: PathBuf,
    },
    /// An internal invariant was violated: a bug. Please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line (`outer: cause: root cause`), for logs and response
/// bodies: many errors' own messages ("client error (Connect)") hide the part that matters.
/// A cause whose text the line already ends with (this crate's errors include their
/// cause in their own text) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
