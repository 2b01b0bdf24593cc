//! Configuration of every backend and of the routing between them, as loaded from a TOML or
//! YAML file.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
#[cfg(feature = "cloud")]
use crate::cloud_config::{AzureConfig, GcsConfig, S3Config};
use crate::error::Result;
use crate::fs::{FsBackend, FsConfig};
use crate::http::{HttpBackend, HttpConfig};
use crate::registry::{RegistryBackend, RegistryConfig};
use crate::retry::RetryConfig;
use crate::throttle::ThrottleConfig;
use crate::webhdfs::{WebHdfsBackend, WebHdfsConfig};

/// One backend, chosen by its `type` field.
///
/// ```toml
/// type = "s3"          # or fs, http, gcs, azure, webhdfs, registry
/// bucket = "kraken"    # then the fields of that type's config
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// [`FsConfig`].
    Fs(FsConfig),
    /// [`HttpConfig`].
    Http(HttpConfig),
    /// [`S3Config`] (feature `cloud`).
    #[cfg(feature = "cloud")]
    S3(S3Config),
    /// [`GcsConfig`] (feature `cloud`).
    #[cfg(feature = "cloud")]
    Gcs(GcsConfig),
    /// [`AzureConfig`] (feature `cloud`).
    #[cfg(feature = "cloud")]
    Azure(AzureConfig),
    /// [`WebHdfsConfig`].
    Webhdfs(WebHdfsConfig),
    /// [`RegistryConfig`].
    Registry(RegistryConfig),
}

impl BackendConfig {
    /// Builds the backend, without decorators. Sends no request.
    pub fn build(&self) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            Self::Fs(config) => Arc::new(FsBackend::new(config.clone())?),
            Self::Http(config) => Arc::new(HttpBackend::new(config.clone())?),
            #[cfg(feature = "cloud")]
            Self::S3(config) => Arc::new(config.build()?),
            #[cfg(feature = "cloud")]
            Self::Gcs(config) => Arc::new(config.build()?),
            #[cfg(feature = "cloud")]
            Self::Azure(config) => Arc::new(config.build()?),
            Self::Webhdfs(config) => Arc::new(WebHdfsBackend::new(config.clone())?),
            Self::Registry(config) => Arc::new(RegistryBackend::new(config.clone())?),
        })
    }
}

/// Which backend serves which namespaces, and how it is wrapped.
///
/// ```toml
/// [[routes]]
/// namespace = "library/.*"
/// backend = { type = "registry", address = "https://registry.example.com" }
///
/// [[routes]]
/// namespace = ".*"
/// backend = { type = "s3", bucket = "kraken" }
/// retry = { max_attempts = 5 }
/// throttle = { ingress_per_second = "1GiB" }
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Regular expression a namespace must match as a whole (it is anchored at both ends).
    /// Routes are tried in order; the first match wins. Required.
    pub namespace: String,
    /// The backend. Required.
    pub backend: BackendConfig,
    /// Retries of transient failures. Default: see [`RetryConfig`] (4 attempts); set
    /// `max_attempts = 1` to disable.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Bandwidth limits. Default: unlimited.
    #[serde(default)]
    pub throttle: ThrottleConfig,
}

impl RouteConfig {
    /// A route with default retries and no throttle.
    pub fn new(namespace: impl Into<String>, backend: BackendConfig) -> Self {
        Self {
            namespace: namespace.into(),
            backend,
            retry: RetryConfig::default(),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// Every route, in order; what [`Router::from_config`](crate::Router::from_config) builds.
#[non_exhaustive]
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    /// Routes, first match wins. Default: none (every namespace is unrouted).
    pub routes: Vec<RouteConfig>,
}

impl BackendsConfig {
    /// These routes.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Self { routes }
    }
}
