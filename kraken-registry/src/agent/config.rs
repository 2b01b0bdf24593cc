//! The agent's settings, as loaded from a TOML file by `kraken agent --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kraken_core::ByteSize;
use kraken_p2p::http_server::HttpLimits;
use kraken_p2p::metrics::MetricsConfig;
use kraken_p2p::swarm::SwarmConfig;
use kraken_p2p::tls::{ClientTlsConfig, PeerTlsConfig, ServerTlsConfig};
use serde::{Deserialize, Serialize};

use super::runtime::ContainerRuntimeConfig;

use super::cidr::Cidr;
use crate::address::{check_host_port, check_url};
pub use crate::cleanup::CleanupConfig;
use crate::error::{Error, Result};
use crate::small_blobs::SmallBlobConfig;

/// Settings of an [`Agent`](super::Agent).
///
/// ```toml
/// listen = "0.0.0.0:16000"
/// peer_listen = "0.0.0.0:16001"
/// peer_advertise = "10.0.0.7:16001"
/// data_dir = "/var/cache/kraken/agent"
/// trackers = ["http://tracker-1:15003", "http://tracker-2:15003"]
/// build_index = ["build-index-1:15004", "build-index-2:15004"]
/// allowed_cidrs = ["127.0.0.0/8", "::1/128", "172.17.0.1/32", "10.0.0.0/8"]
///
/// [p2p]
/// ingress_rate = "200MiB"
/// egress_rate = "100MiB"
///
/// [cleanup]
/// high_watermark = "50GiB"
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the registry port: the OCI pull API (`/v2/…`) and the agent's own
    /// endpoints (`/health`, `/readiness`, `/tags/…`, `/namespace/…`, `/blobs/…`,
    /// `/preload/…`). Required.
    pub listen: SocketAddr,
    /// Address the P2P peer listener binds. Default: `listen`'s IP, any port.
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// Address announced to the tracker, where other peers reach this agent; port 0 means
    /// the peer listener's port. Default: the peer listener's address; `kraken agent` fills
    /// in `--peer-ip` (`KRAKEN_PEER_IP`) or, for a wildcard peer listener, the address of the
    /// interface of the default route.
    #[serde(default)]
    pub peer_advertise: Option<SocketAddr>,
    /// Directory of the blob cache (`blobs/`) and of the handler's scratch space. Required.
    pub data_dir: PathBuf,
    /// Trackers (`http://host:port`): each blob meets at the first in its rendezvous order
    /// that answers. Required, at least one.
    pub trackers: Vec<String>,
    /// Build-indexes of the cluster (`host:port`), tried in order. Required, at least one.
    pub build_index: Vec<String>,
    /// Clients allowed on the registry port, as CIDRs (`10.0.0.0/8`, `::1/128`, or a bare
    /// address for one host). Replaces the default, so list loopback if it is wanted.
    /// `/health` and `/readiness` answer everyone. Default: `127.0.0.0/8` and `::1/128`.
    #[serde(default = "defaults::allowed_cidrs")]
    pub allowed_cidrs: Vec<Cidr>,
    /// Serve a containerd mirror request (`?ns=<registry>`) from repository
    /// `<registry>/<name>` instead of `<name>`, for clusters that push mirrored images under
    /// their upstream registry's name. The `ns` value must then be a valid repository
    /// component (a host name without a port). Default: false (`ns` is ignored).
    #[serde(default)]
    pub ns_as_prefix: bool,
    /// The P2P node: rates and scheduler limits.
    #[serde(default)]
    pub p2p: P2pConfig,
    /// Removing blobs from the local cache.
    #[serde(default)]
    pub cleanup: CleanupConfig,
    /// Bounds on what one request may ask or cause.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Timeouts, header bounds and connection limits of the HTTP listener (see
    /// [`HttpLimits`]). The agent's clients are the container runtimes of its own host, all
    /// from one address, so it has no per-client limit unless one is set
    /// (`max_connections_per_client = 0`); the rest are the defaults.
    #[serde(default = "defaults::http")]
    pub http: HttpLimits,
    /// TLS on the registry port. Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// TLS toward trackers and build-indexes (pinned CA, this agent's client certificate).
    /// Default: plain HTTP.
    #[serde(default)]
    pub client_tls: Option<ClientTlsConfig>,
    /// A separate listener for `/metrics` (every listener of the role answers it anyway;
    /// see `docs/metrics.md`). Default: none.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The host's container runtimes, for `GET /preload/tags/{repo:tag}?runtime=…`
    /// (Go Kraken's `container_runtime`). Default: Docker and containerd at their usual
    /// sockets.
    #[serde(default)]
    pub container_runtime: ContainerRuntimeConfig,
    /// The in-memory cache of small blobs (manifests, image configs), filled only with
    /// bytes that hash to their digest (see [`SmallBlobConfig`]).
    #[serde(default)]
    pub cache: SmallBlobConfig,
}

impl AgentConfig {
    /// A config with defaults for everything but the listen address, data directory,
    /// trackers and build-indexes.
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        trackers: Vec<String>,
        build_index: Vec<String>,
    ) -> Self {
        Self {
            listen,
            peer_listen: None,
            peer_advertise: None,
            data_dir: data_dir.into(),
            trackers,
            build_index,
            allowed_cidrs: defaults::allowed_cidrs(),
            ns_as_prefix: false,
            p2p: P2pConfig::default(),
            cleanup: CleanupConfig::default(),
            limits: LimitsConfig::default(),
            http: defaults::http(),
            tls: None,
            client_tls: None,
            metrics: MetricsConfig::default(),
            container_runtime: ContainerRuntimeConfig::default(),
            cache: SmallBlobConfig::default(),
        }
    }

    /// Checks the values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        self.http.validate().map_err(Error::Config)?;
        if self.trackers.is_empty() {
            return Err(Error::Config(
                "trackers: at least one tracker is needed".into(),
            ));
        }
        if self.build_index.is_empty() {
            return Err(Error::Config(
                "build_index: at least one build-index is needed".into(),
            ));
        }
        for tracker in &self.trackers {
            check_url("trackers", tracker)?;
        }
        for address in &self.build_index {
            check_host_port("build_index", address)?;
        }
        if self.cleanup.upload_ttl.is_some() {
            return Err(Error::Config(
                "cleanup.upload_ttl: an agent takes no uploads".into(),
            ));
        }
        if self.limits.preload_concurrency == 0 {
            return Err(Error::Config(
                "limits.preload_concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The agent's P2P node.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Most bytes per second sent to all peers together. Default: unlimited.
    pub egress_rate: Option<ByteSize>,
    /// Most bytes per second received from all peers together. Default: unlimited.
    pub ingress_rate: Option<ByteSize>,
    /// Time allowed to open a connection to a peer. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// How long a download, and a `HEAD` whose blob an origin is still fetching from its
    /// backend, wait for the blob's metainfo. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub metainfo_timeout: Duration,
    /// A download that verifies no piece for this long asks the tracker for the origins'
    /// metainfo again and starts over with it if it differs (see
    /// `kraken_p2p::node::NodeConfig::metainfo_recheck_after`). Default: 10s.
    #[serde(with = "humantime_serde")]
    pub metainfo_recheck_after: Duration,
    /// Largest blob downloaded: a longer metainfo is refused before anything is allocated.
    /// Default: 64GiB.
    pub max_blob_size: ByteSize,
    /// The scheduler's settings (connections per torrent, pipelining, timeouts, caps).
    pub swarm: SwarmConfig,
    /// A write to a peer that makes no progress for this long closes the link. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// TLS on peer links (`[p2p.tls]`: `cert`, `key`, `ca`, `require`; see `docs/tls.md`).
    /// Default: none (plain TCP).
    pub tls: Option<PeerTlsConfig>,
    /// Bytes of recently served chunks of cached blobs kept in memory, so that clients
    /// pulling the same blob at about the same time share one read of each chunk (see
    /// `kraken_p2p::node::NodeConfig::read_cache_size`). 0 turns it off. Default: 64MiB.
    pub read_cache_size: ByteSize,
    /// Send pieces to peers with `sendfile`, straight from the page cache; `false` reads
    /// and writes them (for file systems whose page cache does not reflect the file, as
    /// nginx's `sendfile off`). Default: true.
    pub send_file: bool,
    /// Drop a download's durable bytes from the page cache as it goes, all but the newest
    /// 16 MiB (see `kraken_p2p::node::NodeConfig::drop_behind`): the container runtime keeps
    /// its own copy of every layer, so the agent's would only double it, and a large pull
    /// holds a bounded share of the host's memory (and of the agent's cgroup). Later `GET`s
    /// of the blob and peers' requests for older pieces read the disk. Default: true.
    pub drop_behind: bool,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            egress_rate: None,
            ingress_rate: None,
            dial_timeout: Duration::from_secs(5),
            metainfo_timeout: Duration::from_secs(60),
            metainfo_recheck_after: Duration::from_secs(10),
            max_blob_size: ByteSize(64 << 30),
            swarm: SwarmConfig::default(),
            write_stall_timeout: Duration::from_secs(30),
            tls: None,
            read_cache_size: ByteSize(64 << 20),
            send_file: true,
            drop_behind: true,
        }
    }
}

/// Bounds on what one request may ask or cause.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest served or walked; a larger one fails (`500`). At most 4MiB, the
    /// parser's own bound. Alias: `max_manifest` (until the next release). Default: 4MiB.
    #[serde(alias = "max_manifest")]
    pub max_manifest_size: ByteSize,
    /// Most manifests one preload reads (an index, its children). Default: 256.
    pub preload_max_manifests: usize,
    /// Blobs one preload downloads at once. Default: 4.
    pub preload_concurrency: usize,
    /// Time allowed to each health check of `/readiness`. Default: 3s.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_manifest_size: ByteSize(crate::oci::manifest::MAX_MANIFEST_SIZE as u64),
            preload_max_manifests: 256,
            preload_concurrency: 4,
            probe_timeout: Duration::from_secs(3),
        }
    }
}

mod defaults {
    use super::{Cidr, HttpLimits};

    pub(super) fn http() -> HttpLimits {
        let mut limits = HttpLimits::default();
        limits.max_connections_per_client = 0;
        limits
    }

    pub(super) fn allowed_cidrs() -> Vec<Cidr> {
        vec![Cidr::LOOPBACK_V4, Cidr::LOOPBACK_V6]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads_with_defaults_and_unknown_keys_are_refused() {
        let example = r#"
            listen = "0.0.0.0:16000"
            peer_listen = "0.0.0.0:16001"
            peer_advertise = "10.0.0.7:16001"
            data_dir = "/var/cache/kraken/agent"
            trackers = ["http://tracker-1:15003", "http://tracker-2:15003"]
            build_index = ["build-index-1:15004", "build-index-2:15004"]
            allowed_cidrs = ["127.0.0.0/8", "::1/128", "172.17.0.1/32", "10.0.0.0/8"]

            [p2p]
            ingress_rate = "200MiB"
            egress_rate = "100MiB"

            [cleanup]
            high_watermark = "50GiB"
        "#;
        let config: AgentConfig = toml::from_str(example).unwrap();
        config.validate().unwrap();
        assert_eq!(config.allowed_cidrs.len(), 4);
        assert_eq!(config.p2p.ingress_rate, Some(ByteSize(200 << 20)));
        assert_eq!(config.p2p.metainfo_timeout, Duration::from_secs(60));
        assert_eq!(config.cleanup.high_watermark, Some(ByteSize(50 << 30)));
        assert_eq!(config.limits.preload_concurrency, 4);
        assert_eq!(
            config.http.max_connections_per_client, 0,
            "the host's own runtimes"
        );
        assert_eq!(config.http.max_connections, 4096);
        assert!(!config.ns_as_prefix);

        let minimal: AgentConfig = toml::from_str(
            "listen = \"127.0.0.1:16000\"\ndata_dir = \"d\"\ntrackers = [\"http://t:1\"]\nbuild_index = [\"b:1\"]",
        )
        .unwrap();
        assert_eq!(
            minimal.allowed_cidrs,
            [Cidr::LOOPBACK_V4, Cidr::LOOPBACK_V6]
        );
        assert!(toml::from_str::<AgentConfig>(&format!("bogus = 1\n{example}")).is_err());
        assert!(
            toml::from_str::<AgentConfig>(&example.replace("10.0.0.0/8", "10.0.0.0/33")).is_err()
        );
        let mut none = minimal.clone();
        none.trackers.clear();
        assert!(none.validate().is_err());
        // One `[cleanup]` table for the origin and the agent; the agent takes no uploads.
        let mut uploads = minimal.clone();
        uploads.cleanup.upload_ttl = Some(Duration::from_secs(60));
        assert!(uploads.validate().is_err());
        let old: AgentConfig =
            toml::from_str(&format!("{example}\n[limits]\nmax_manifest = \"1MiB\"\n")).unwrap();
        assert_eq!(old.limits.max_manifest_size, ByteSize(1 << 20));
    }

    /// Every `p2p.` key that docs/agent.md documents is one the agent reads (the table once
    /// listed `p2p.send_file`, which the agent refused as an unknown field).
    #[test]
    fn every_documented_p2p_key_is_read() {
        let doc = include_str!("../../../docs/agent.md");
        let keys: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter(|line| line.starts_with("| `p2p."))
            .flat_map(|line| {
                // The key cell's names; the description's code spans come after.
                let cells = line.split('`').skip(1).step_by(2);
                cells.take_while(|cell| cell.starts_with("p2p."))
            })
            .filter_map(|key| key.strip_prefix("p2p."))
            .filter(|key| !key.contains('.'))
            .collect();
        assert!(keys.len() >= 8, "the p2p rows of docs/agent.md: {keys:?}");
        for key in keys {
            // A value of the wrong type is fine: only an unknown field fails the test.
            let toml = format!(
                "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\ntrackers = [\"http://t:1\"]\nbuild_index = [\"b:1\"]\n[p2p]\n{key} = 0\n"
            );
            if let Err(e) = toml::from_str::<AgentConfig>(&toml) {
                assert!(
                    !e.to_string().contains("unknown field"),
                    "docs/agent.md documents p2p.{key}: {e}"
                );
            }
        }
    }
}
