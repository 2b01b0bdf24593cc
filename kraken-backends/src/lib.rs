//! Durable remote storage for blobs.
#![warn(missing_docs)]

mod backend;
mod client;
mod cloud;
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

#[doc(hidden)]
pub mod testing;

pub use crate::backend::{
    Backend, BlobInfo, ByteRange, ByteStream, ListOptions, ListPage, UploadBody, collect_bytes,
};
pub use crate::client::{HttpClientConfig, install_crypto_provider};
pub use crate::cloud::{CloudBackend, MultipartConfig};
pub use crate::cloud_config::{AzureConfig, GcsConfig, S3Config};
pub use crate::config::{BackendConfig, BackendsConfig, RouteConfig};
pub use crate::error::{Error, Result};
pub use crate::fs::{FsBackend, FsConfig};
pub use crate::http::{HttpBackend, HttpConfig};
pub use crate::layout::NameLayout;
pub use crate::metrics::{BackendMetrics, MetricsBackend, Operation, OperationStats};
pub use crate::registry::{RegistryBackend, RegistryConfig};
pub use crate::retry::{RetryBackend, RetryConfig};
pub use crate::router::Router;
pub use crate::throttle::{ThrottleBackend, ThrottleConfig, TokenBucket};
pub use crate::webhdfs::{WebHdfsBackend, WebHdfsConfig};
