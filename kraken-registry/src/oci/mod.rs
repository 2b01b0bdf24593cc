//! The OCI distribution API v1.1 (`/v2/…`): a reusable front-end over a storage trait.
//!
//! [`OciHandler`] speaks the protocol — every endpoint of the spec, its statuses, headers and
//! error codes (`docs/registry-api.md`) — and asks a [`RegistryStorage`] for content. The
//! storage decides what the role allows: [`LocalRegistry`] is a complete read-write registry
//! on a local directory; the proxy (push) and the agent (pull) implement the trait over the
//! origin cluster, the build-index and P2P. [`OciServer`] serves a handler on a TCP listener.
//!
//! - [`name`]: repository names, tags, references and digests, validated on parsing.
//! - [`manifest`]: the manifest parser (Docker schema 2, OCI image manifest and index,
//!   artifacts), usable on its own to walk dependencies.
//! - [`ApiError`] and [`ErrorCode`]: the spec's error body and codes.
//!
//! What the handler guarantees whatever the storage: names, tags and digests are validated
//! before the storage sees them; every body is read through a length limit; an uploaded
//! blob's sha256 is verified before [`RegistryStorage::blob_put`] is called, so a mismatch
//! stores nothing; a manifest is parsed and its blobs and child manifests checked to exist
//! before [`RegistryStorage::manifest_put`].
//!
//! ```no_run
//! # async fn example() -> kraken_registry::Result<()> {
//! use std::sync::Arc;
//! use kraken_registry::oci::{LocalRegistry, OciConfig, OciHandler, OciServer};
//!
//! let storage = Arc::new(LocalRegistry::open("/var/lib/registry")?);
//! let handler = OciHandler::new(storage, OciConfig::new("/var/lib/registry/uploads"))?;
//! let server = OciServer::bind("127.0.0.1:5000".parse().unwrap(), handler).await?;
//! // `skopeo copy … docker://127.0.0.1:5000/repo:tag` now works; then:
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod handler;
mod local;
pub mod manifest;
pub mod name;
pub(crate) mod query;
mod request;
mod response;
pub(crate) mod router;
mod server;
mod storage;
mod stream_put;
mod uploads;

pub use self::config::OciConfig;
pub use self::error::{ApiError, ErrorCode};
pub use self::handler::{OciHandler, ResponseBody};
pub use self::local::LocalRegistry;
pub use self::manifest::{Descriptor, Manifest, ManifestError, ManifestKind};
pub use self::name::{Reference, RepoName, Tag};
pub(crate) use self::router::route_name;
pub use self::server::OciServer;
pub use self::storage::{
    ByteStream, Operation, Page, RegistryStorage, StorageError, StorageResult, StoredManifest,
};
