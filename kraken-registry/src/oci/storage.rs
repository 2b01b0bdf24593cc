//! The storage behind the `/v2/` handler: one object-safe trait, [`RegistryStorage`].
//!
//! The handler does the protocol — routing, validation, upload sessions, digest
//! verification, manifest parsing and the checks on references — and asks the storage only
//! for content. (One exception: a whole-blob push streamed to a storage that takes streams is
//! verified by that storage, see [`RegistryStorage::blob_put_stream`].) Each role implements the trait over its own stores:
//!
//! | role | blobs | manifests and tags |
//! |---|---|---|
//! | [`LocalRegistry`](super::LocalRegistry) | local disk | local disk |
//! | proxy (push) | origin cluster | build-index |
//! | agent (pull) | P2P | build-index, read-only |
//!
//! **Capabilities.** Writes (`blob_put`, `blob_mount`, `blob_delete`, `manifest_put`,
//! `manifest_delete`) and listings (`tags`, `catalog`, `referrers`) have default
//! implementations that answer [`StorageError::Unsupported`], so a read-only implementation
//! writes only the reads (the agent does: a pull cache offers no pushes). An implementation that refuses an operation by policy rather than
//! for want of code answers [`StorageError::Denied`]. [`RegistryStorage::allows`] lets the
//! handler refuse a push before it reads any bytes; override it together with the writes.
//!
//! **Errors.** A missing thing is one of the `*Unknown` variants — never a failure — so the
//! handler answers `404` with the right code; [`StorageError::Failed`] is for everything that
//! went wrong (a disk, an origin, a timeout) and becomes a `500`.

use std::fmt;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use kraken_core::Digest;

use super::error::{ApiError, ErrorCode};
use super::manifest::{Descriptor, Manifest};
use super::name::{Reference, RepoName, Tag};

/// Blob bytes as a stream of chunks. Implementations keep memory bounded (a few chunks in
/// flight), whatever the blob's size.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static>>;

/// What a storage can be asked to do; named by [`StorageError::Unsupported`] and
/// [`StorageError::Denied`], and asked about with [`RegistryStorage::allows`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Operation {
    /// Reading blobs: `blob_stat`, `blob_read`.
    ReadBlob,
    /// Storing uploaded blobs: `blob_put` (every upload ends with it).
    PushBlob,
    /// Cross-repository mounts: `blob_mount`.
    MountBlob,
    /// `blob_delete`.
    DeleteBlob,
    /// Reading manifests: `manifest_get`.
    ReadManifest,
    /// `manifest_put`.
    PushManifest,
    /// `manifest_delete`.
    DeleteManifest,
    /// `tags`.
    ListTags,
    /// `catalog`.
    Catalog,
    /// `referrers`.
    Referrers,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReadBlob => "reading blobs",
            Self::PushBlob => "pushing blobs",
            Self::MountBlob => "mounting blobs",
            Self::DeleteBlob => "deleting blobs",
            Self::ReadManifest => "reading manifests",
            Self::PushManifest => "pushing manifests",
            Self::DeleteManifest => "deleting manifests",
            Self::ListTags => "listing tags",
            Self::Catalog => "listing repositories",
            Self::Referrers => "listing referrers",
        })
    }
}

/// Why a storage operation did not happen.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The blob is not in the repository: `BLOB_UNKNOWN`.
    #[error("blob {0} is unknown to the repository")]
    BlobUnknown(Digest),
    /// No manifest has that tag or digest in the repository: `MANIFEST_UNKNOWN`.
    #[error("manifest {0} is unknown to the repository")]
    ManifestUnknown(String),
    /// The repository does not exist: `NAME_UNKNOWN`.
    #[error("repository {0} is unknown")]
    NameUnknown(RepoName),
    /// This storage does not implement the operation: `UNSUPPORTED` (405).
    #[error("{0} is not supported by this registry")]
    Unsupported(Operation),
    /// A policy forbids the operation: `DENIED` (403). A storage that never offers the
    /// operation answers [`Unsupported`](Self::Unsupported) instead.
    #[error("{0} is denied by this registry")]
    Denied(Operation),
    /// The bytes of a push do not hash to the digest they were pushed as; nothing was
    /// stored: `DIGEST_INVALID` (400). Answered by a storage that verifies pushes itself
    /// ([`RegistryStorage::blob_put_stream`]).
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestInvalid {
        /// The digest the client pushed the bytes as.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// Too much work in progress; the client should retry later: `TOOMANYREQUESTS` (429).
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The operation failed (I/O, a remote service, a timeout): `500`.
    #[error("storage failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Wraps any error as a failure.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(error.into())
    }

    /// Whether the error says something is missing, as opposed to a refusal or a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::BlobUnknown(_) | Self::ManifestUnknown(_) | Self::NameUnknown(_)
        )
    }
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> Self {
        Self::Failed(Box::new(error))
    }
}

impl From<crate::Error> for StorageError {
    fn from(error: crate::Error) -> Self {
        Self::Failed(Box::new(error))
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        if let StorageError::DigestInvalid { expected, actual } = &error {
            return Self::digest_invalid(expected, actual);
        }
        let message = crate::error::error_chain(&error);
        let code = match &error {
            StorageError::BlobUnknown(_) => ErrorCode::BlobUnknown,
            StorageError::ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            StorageError::NameUnknown(_) => ErrorCode::NameUnknown,
            StorageError::Unsupported(_) => ErrorCode::Unsupported,
            StorageError::Denied(_) => ErrorCode::Denied,
            StorageError::DigestInvalid { .. } => ErrorCode::DigestInvalid,
            StorageError::TooManyRequests(_) => ErrorCode::TooManyRequests,
            StorageError::Failed(_) => {
                tracing::warn!(error = %message, "registry storage failed");
                ErrorCode::Unknown
            }
        };
        Self::new(code, message)
    }
}

/// A `Result` of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;

/// A manifest as stored: its bytes, media type and digest.
#[non_exhaustive]
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct StoredManifest {
    /// The bytes exactly as pushed.
    pub bytes: Bytes,
    /// The media type it was pushed with (its `Content-Type` on reads).
    pub media_type: String,
    /// The sha256 of `bytes`.
    pub digest: Digest,
}

impl StoredManifest {
    /// A stored manifest.
    pub fn new(bytes: Bytes, media_type: impl Into<String>, digest: Digest) -> Self {
        Self {
            bytes,
            media_type: media_type.into(),
            digest,
        }
    }
}

/// One page of a sorted listing: at most `limit` entries that sort after `last`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Page<'a> {
    /// Entries sort strictly after this one (the `last` query parameter).
    pub last: Option<&'a str>,
    /// At most this many entries.
    pub limit: usize,
}

/// The content behind a `/v2/` API: blobs, manifests, tags, referrers.
///
/// Object-safe, for `Arc<dyn RegistryStorage>`. Every argument has been validated by the
/// handler (names, tags and digests parse; a blob's digest has been verified, except in
/// [`blob_put_stream`](Self::blob_put_stream), which verifies it itself).
///
/// **Capabilities.** Writes, deletes and listings have default implementations that answer
/// [`StorageError::Unsupported`] (405 `UNSUPPORTED`), so a read-only implementation writes
/// only [`blob_stat`](Self::blob_stat), [`blob_read`](Self::blob_read) and
/// [`manifest_get`](Self::manifest_get). Refusing by policy is [`StorageError::Denied`]
/// (403 `DENIED`); override [`allows`](Self::allows) too, so that the handler refuses a push
/// before it reads any bytes.
///
/// **Errors.** A missing thing is one of the `*Unknown` variants — never a failure — so the
/// handler answers 404 with the right code; [`StorageError::Failed`] is for everything that
/// went wrong (a disk, an origin, a timeout) and becomes a 500.
#[async_trait::async_trait]
pub trait RegistryStorage: fmt::Debug + Send + Sync + 'static {
    /// Whether `operation` may be attempted at all, so that the handler can refuse a push
    /// before it reads the body. Default: everything is allowed (the operation itself may
    /// still answer `Unsupported`).
    fn allows(&self, operation: Operation) -> StorageResult<()> {
        let _ = operation;
        Ok(())
    }

    /// The size of blob `digest` in `repo`, or [`StorageError::BlobUnknown`].
    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> StorageResult<u64>;

    /// The bytes `range` (start inclusive, end exclusive, within the size that
    /// [`blob_stat`](Self::blob_stat) gave) of blob `digest`, or all of it when `None`.
    async fn blob_read(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<ByteStream>;

    /// Stores a blob from `file`, `size` bytes whose sha256 the handler has verified to be
    /// `digest`, and links it into `repo`. The storage may move (rename) the file; the caller
    /// removes it afterwards if it is still there. Storing a blob that exists succeeds.
    async fn blob_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        file: &Path,
        size: u64,
    ) -> StorageResult<()> {
        let _ = (repo, digest, file, size);
        Err(StorageError::Unsupported(Operation::PushBlob))
    }

    /// Whether [`blob_put_stream`](Self::blob_put_stream) is offered. Default: no.
    fn streams_blob_puts(&self) -> bool {
        false
    }

    /// Stores a blob of `size` bytes from `chunks` as they arrive from the client (a push
    /// whose whole body and length come in one request), and links it into `repo`: a
    /// storage that only passes the bytes on (the proxy) need not write them anywhere.
    ///
    /// The handler counts the bytes but does not hash them, so that a host that passes a
    /// push on hashes it no more than once (the origin that stores it hashes it anyway). The
    /// storage must check that the bytes hash to `digest` before it stores or acknowledges
    /// anything, and answer [`StorageError::DigestInvalid`] when they do not. A stream that
    /// ends early or in an error (a body cut short or too long) must leave nothing stored.
    /// Offered when [`streams_blob_puts`](Self::streams_blob_puts) says so.
    async fn blob_put_stream(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        chunks: ByteStream,
    ) -> StorageResult<()> {
        let _ = (repo, digest, size, chunks);
        Err(StorageError::Unsupported(Operation::PushBlob))
    }

    /// Makes blob `digest` of repository `from` (of any repository when `None`) available in
    /// `repo` without an upload, and returns its size. [`StorageError::BlobUnknown`] when the
    /// source lacks it: the handler then starts an ordinary upload.
    async fn blob_mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> StorageResult<u64> {
        let _ = (repo, digest, from);
        Err(StorageError::Unsupported(Operation::MountBlob))
    }

    /// Removes blob `digest` from `repo`.
    async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        let _ = (repo, digest);
        Err(StorageError::Unsupported(Operation::DeleteBlob))
    }

    /// The manifest `reference` names in `repo`, or [`StorageError::ManifestUnknown`].
    async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<StoredManifest>;

    /// Stores a manifest (its `bytes`, already parsed and checked as `manifest`: its blobs
    /// and child manifests exist) under its digest in `repo`, points `tags` at it, and
    /// records it as a referrer of its subject, if it has one.
    async fn manifest_put(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        bytes: Bytes,
        tags: &[Tag],
    ) -> StorageResult<()> {
        let _ = (repo, manifest, bytes, tags);
        Err(StorageError::Unsupported(Operation::PushManifest))
    }

    /// Deletes a tag (the manifest stays), or a manifest by digest (with the tags that point
    /// at it, and its entry in its subject's referrers).
    async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> StorageResult<()> {
        let _ = (repo, reference);
        Err(StorageError::Unsupported(Operation::DeleteManifest))
    }

    /// The tags of `repo` in lexical order, one [`Page`]; [`StorageError::NameUnknown`] for a
    /// repository that does not exist.
    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> StorageResult<Vec<Tag>> {
        let _ = (repo, page);
        Err(StorageError::Unsupported(Operation::ListTags))
    }

    /// The repositories in lexical order, one [`Page`].
    async fn catalog(&self, page: Page<'_>) -> StorageResult<Vec<RepoName>> {
        let _ = page;
        Err(StorageError::Unsupported(Operation::Catalog))
    }

    /// The descriptors ([`Manifest::descriptor`]) of the manifests in `repo` whose subject is
    /// `subject`; empty when there are none or the subject does not exist.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Descriptor>> {
        let _ = (repo, subject);
        Err(StorageError::Unsupported(Operation::Referrers))
    }
}
