//! Durable remote storage for blobs: one async trait, several stores, decorators, routing.
//!
//! Origins keep every blob they seed in a remote store, so that a blob survives the loss of
//! every host that cached it. This crate is that store's client side:
//!
//! - [`Backend`]: the async trait every store implements — [`stat`](Backend::stat), ranged
//!   and streaming [`download`](Backend::download), streaming [`upload`](Backend::upload)
//!   of blobs of any size (an [`UploadBody`] of known or unknown length), paginated
//!   [`list`](Backend::list) and [`delete`](Backend::delete). Errors tell a missing blob
//!   ([`Error::NotFound`]) from a failure, and transient failures
//!   ([`Error::is_transient`]) from final ones.
//! - Stores: [`FsBackend`] (local or mounted filesystem), [`HttpBackend`] (GET/HEAD/PUT/DELETE,
//!   e.g. nginx with WebDAV), [`CloudBackend`] through `object_store` for S3 and
//!   S3-compatible servers ([`S3Config`]), GCS ([`GcsConfig`]) and Azure ([`AzureConfig`]),
//!   [`WebHdfsBackend`] for HDFS, and the read-only [`RegistryBackend`] for any OCI registry.
//! - [`NameLayout`]: how a name becomes a path — as is, or CNCF Distribution's
//!   `docker/registry/v2/blobs/sha256/ab/abcd…/data`, to read a bucket a registry wrote.
//! - Decorators, each a [`Backend`] wrapping another: [`RetryBackend`] (exponential backoff
//!   with jitter, transient failures only, uploads only when the body replays),
//!   [`ThrottleBackend`] (token buckets that hold for blobs of any size) and
//!   [`MetricsBackend`] (counts and durations per operation, plus `tracing` events).
//! - [`Router`]: namespaces to backends by an ordered list of regular expressions, built with
//!   its decorators from a [`BackendsConfig`] that serde loads from TOML or YAML.
//!
//! `docs/backends.md` at the root of the workspace describes each backend's configuration
//! and what it was tested against.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use kraken_backends::{
//!     Backend, BackendConfig, BackendsConfig, ByteRange, FsConfig, RouteConfig, Router,
//!     UploadBody, collect_bytes,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kraken_backends::Result<()> {
//! let dir = tempfile::tempdir()?;
//! // Every namespace to one filesystem backend, with the default retries.
//! let config = BackendsConfig::new(vec![RouteConfig::new(
//!     ".*",
//!     BackendConfig::Fs(FsConfig::new(dir.path())),
//! )]);
//! let backends = Router::from_config(&config)?;
//!
//! backends
//!     .upload("library/ubuntu", "blobs/hello", UploadBody::from_bytes("hello, kraken"))
//!     .await?;
//! assert_eq!(backends.stat("library/ubuntu", "blobs/hello").await?.size, 13);
//!
//! // Downloads stream; ask for a range to read part of a blob.
//! let range = ByteRange::new(7, 6);
//! let stream = backends.download("library/ubuntu", "blobs/hello", range).await?;
//! assert_eq!(collect_bytes(stream, 1024).await?, "kraken");
//!
//! let missing = backends.stat("library/ubuntu", "blobs/absent").await;
//! assert!(missing.unwrap_err().is_not_found());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod backend;
mod client;
#[cfg(feature = "cloud")]
mod cloud;
#[cfg(feature = "cloud")]
mod cloud_client;
#[cfg(feature = "cloud")]
mod cloud_config;
mod config;
mod error;
mod fs;
mod http;
mod layout;
mod listing;
mod metrics;
mod registry;
mod retry;
mod router;
mod throttle;
mod webhdfs;

pub use crate::backend::{
    Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, READINESS_NAME, UploadBody,
    collect_bytes,
};
pub use crate::client::{HttpClientConfig, install_crypto_provider};
#[cfg(feature = "cloud")]
pub use crate::cloud::{CloudBackend, MultipartConfig};
#[cfg(feature = "cloud")]
pub use crate::cloud_config::{AzureConfig, GcsConfig, S3Config};
pub use crate::config::{BackendConfig, BackendsConfig, RouteConfig};
pub use crate::error::{Error, Result};
pub use crate::fs::{FsBackend, FsConfig};
pub use crate::http::{HttpBackend, HttpConfig};
pub use crate::layout::NameLayout;
pub use crate::listing::paginate;
pub use crate::metrics::{BackendMetrics, MetricsBackend, Operation, OperationStats};
pub use crate::registry::{RegistryBackend, RegistryConfig};
pub use crate::retry::{RetryBackend, RetryConfig};
pub use crate::router::Router;
pub use crate::throttle::{ThrottleBackend, ThrottleConfig, TokenBucket};
pub use crate::webhdfs::{WebHdfsBackend, WebHdfsConfig};
