//! The build-index's settings, as loaded from a TOML file by `kraken build-index --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kraken_backends::BackendsConfig;
use kraken_core::ByteSize;
use kraken_p2p::http_server::HttpLimits;
use kraken_p2p::metrics::MetricsConfig;
use kraken_p2p::tls::{ClientTlsConfig, ServerTlsConfig};
use serde::{Deserialize, Serialize};

use crate::address::check_host_port;
use crate::durable::WriteBackConfig;
use crate::error::{Error, Result};
use crate::origin::ClusterConfig;

/// Settings of a [`BuildIndex`](super::BuildIndex).
///
/// ```toml
/// listen = "10.0.0.1:15004"
/// data_dir = "/var/lib/kraken/build-index"
/// neighbours = ["10.0.0.2:15004", "10.0.0.3:15004"]
///
/// [origins]
/// members = { dns = "origins.cluster-a:15002" }
///
/// [[remotes]]
/// address = "build-index.cluster-b:15004"
/// repositories = ["library/.*"]
///
/// [[backends.routes]]
/// namespace = ".*"
/// backend = { type = "s3", bucket = "kraken-tags" }
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildIndexConfig {
    /// Address the tag API listens on. Required.
    pub listen: SocketAddr,
    /// This build-index's name as its neighbours list it (`host:port`); also written into
    /// each tag version it makes. Default: `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory of the tag store and the durable queues. Required.
    pub data_dir: PathBuf,
    /// The other build-indexes of this cluster (`host:port`). Each gets every tag written
    /// here, and each is asked for its version of a tag on every read. This build-index's own
    /// name may be listed (it is skipped), so all members can share one list. Default: none.
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// The origin cluster whose blobs the tags refer to: dependency checks, and the source
    /// of blobs replicated to remote clusters. Default: no members (every dependency check
    /// then fails).
    #[serde(default)]
    pub origins: ClusterConfig,
    /// Build-indexes of other clusters that receive tags (and their blobs) of matching
    /// repositories when a tag is put with `?replicate=true`. Default: none.
    #[serde(default)]
    pub remotes: Vec<RemoteConfig>,
    /// Where tags are kept durably, routed by the tag's full name (`repo:tag`); the backend
    /// name of a tag is its full name. Default: no routes (tags are kept only on the
    /// build-indexes' disks).
    #[serde(default)]
    pub backends: BackendsConfig,
    /// Retries of writing tags to the backend.
    #[serde(default)]
    pub write_back: WriteBackConfig,
    /// Retries of replicating tags to remote clusters. Default: as `write_back`, but
    /// starting at 5s and backing off to 5m.
    #[serde(default = "default_replication")]
    pub replication: WriteBackConfig,
    /// Bounds on requests and on the work one request causes.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Timeouts, header bounds and connection limits of the HTTP listener (see
    /// [`HttpLimits`]).
    #[serde(default)]
    pub http: HttpLimits,
    /// TLS on the API, and which requests need a client certificate (see `docs/tls.md`).
    /// Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// TLS toward origins, neighbours and remote build-indexes. Default: plain HTTP.
    #[serde(default)]
    pub client_tls: Option<ClientTlsConfig>,
    /// A separate listener for `/metrics` (every listener of the role answers it anyway;
    /// see `docs/metrics.md`). Default: none.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl BuildIndexConfig {
    /// A config with defaults for everything but the listen address and data directory.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            neighbours: Vec::new(),
            origins: ClusterConfig::default(),
            remotes: Vec::new(),
            backends: BackendsConfig::default(),
            write_back: WriteBackConfig::default(),
            replication: default_replication(),
            limits: LimitsConfig::default(),
            http: HttpLimits::default(),
            tls: None,
            client_tls: None,
            metrics: MetricsConfig::default(),
        }
    }

    /// The name this build-index goes by.
    pub fn self_name(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks the values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        self.http.validate().map_err(Error::Config)?;
        self.origins.validate()?;
        if let Some(advertise) = &self.advertise {
            check_host_port("advertise", advertise)?;
        }
        for neighbour in &self.neighbours {
            check_host_port("neighbours", neighbour)?;
        }
        for remote in &self.remotes {
            check_host_port("remotes.address", &remote.address)?;
            for pattern in &remote.repositories {
                regex_lite::Regex::new(pattern).map_err(|e| {
                    Error::Config(format!("remotes: repository pattern {pattern:?}: {e}"))
                })?;
            }
        }
        if self.limits.max_page == 0 {
            return Err(Error::Config("limits.max_page must be at least 1".into()));
        }
        Ok(())
    }
}

fn default_replication() -> WriteBackConfig {
    WriteBackConfig {
        initial_backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(300),
        ..WriteBackConfig::default()
    }
}

/// A build-index of another cluster and the repositories replicated to it.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The remote build-index (`host:port`). Required.
    pub address: String,
    /// Regular expressions; a tag whose repository matches one of them in full is
    /// replicated. Required.
    pub repositories: Vec<String>,
}

impl RemoteConfig {
    /// Replicates repositories matching `patterns` to the build-index at `address`.
    pub fn new(address: impl Into<String>, patterns: &[&str]) -> Self {
        Self {
            address: address.into(),
            repositories: patterns.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// Bounds on what one request may ask or cause.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest read in a dependency check (the distribution spec suggests
    /// registries accept at least 4MiB). Alias: `max_manifest` (until the next release).
    /// Default: 4MiB.
    #[serde(alias = "max_manifest")]
    pub max_manifest_size: ByteSize,
    /// Most manifests one dependency check reads (an index, its children, theirs).
    /// Default: 256.
    pub max_manifests: usize,
    /// Largest blob copied to a remote cluster. Alias: `max_blob` (until the next release).
    /// Default: 64GiB.
    #[serde(alias = "max_blob")]
    pub max_blob_size: ByteSize,
    /// Most names in one page of a listing; a larger `limit` is cut to this. Default: 1000.
    pub max_page: usize,
    /// Time allowed to each neighbour for one request (a read's version check, a write's
    /// copy). Default: 2s.
    #[serde(with = "humantime_serde")]
    pub neighbour_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_manifest_size: ByteSize(4 << 20),
            max_manifests: 256,
            max_blob_size: ByteSize(64 << 30),
            max_page: 1000,
            neighbour_timeout: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::MembersConfig;

    #[test]
    fn the_documented_example_loads_with_defaults_and_unknown_keys_are_refused() {
        let example = r#"
            listen = "10.0.0.1:15004"
            data_dir = "/var/lib/kraken/build-index"
            neighbours = ["10.0.0.2:15004", "10.0.0.3:15004"]

            [origins]
            members = { dns = "origins.cluster-a:15002" }

            [[remotes]]
            address = "build-index.cluster-b:15004"
            repositories = ["library/.*"]

            [[backends.routes]]
            namespace = ".*"
            backend = { type = "s3", bucket = "kraken-tags" }
        "#;
        let config: BuildIndexConfig = toml::from_str(example).unwrap();
        config.validate().unwrap();
        assert_eq!(config.self_name(), "10.0.0.1:15004");
        assert_eq!(config.neighbours.len(), 2);
        assert!(
            matches!(config.origins.members, MembersConfig::Dns(ref n) if n == "origins.cluster-a:15002")
        );
        assert_eq!(config.remotes[0].repositories, ["library/.*"]);
        assert_eq!(config.limits.max_manifest_size, ByteSize(4 << 20));
        assert_eq!(config.replication.max_backoff, Duration::from_secs(300));
        assert_eq!(config.write_back.max_backoff, Duration::from_secs(60));
        assert!(toml::from_str::<BuildIndexConfig>(&format!("neighbors = []\n{example}")).is_err());
        let bad_regex =
            format!("{example}\n[[remotes]]\naddress = \"x:1\"\nrepositories = [\"(\"]\n");
        let config: BuildIndexConfig = toml::from_str(&bad_regex).unwrap();
        assert!(config.validate().is_err());
    }
}
