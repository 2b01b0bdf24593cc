//! The origin's settings, as loaded from a TOML file by `kraken origin --config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kraken_backends::BackendsConfig;
use kraken_core::ByteSize;
use kraken_p2p::http_server::HttpLimits;
use kraken_p2p::metrics::MetricsConfig;
use kraken_p2p::tls::{ClientTlsConfig, PeerTlsConfig, ServerTlsConfig};
use serde::{Deserialize, Serialize};

use super::integrity::ScrubConfig;
use crate::address::{check_host_port, check_url};
use crate::cleanup::CleanupConfig;
use crate::durable::WriteBackConfig;
use crate::error::{Error, Result};
use crate::small_blobs::SmallBlobConfig;

/// Settings of an [`Origin`](super::Origin).
///
/// ```toml
/// listen = "10.0.0.1:15002"
/// peer_listen = "10.0.0.1:16001"
/// data_dir = "/var/lib/kraken/origin"
/// tracker = "http://tracker:15003"
///
/// [cluster]
/// members = { static = ["10.0.0.1:15002", "10.0.0.2:15002", "10.0.0.3:15002"] }
/// replicas = 3
///
/// [[backends.routes]]
/// namespace = ".*"
/// backend = { type = "s3", bucket = "kraken" }
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Address the blob API listens on. Required.
    pub listen: SocketAddr,
    /// This origin's name in the ring, as the other members list it (`host:port`).
    /// Default: `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Address of the P2P peer listener that seeds blobs. Default: `listen`'s IP, any port.
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// TLS on the peer port (`[peer_tls]`: `cert`, `key`, `ca`, `require`; see
    /// `docs/tls.md`): agents then reach this origin over TLS and cannot pass themselves
    /// off as it. Default: none (plain TCP).
    #[serde(default)]
    pub peer_tls: Option<PeerTlsConfig>,
    /// Directory of the blob store, the write-back queue and uploads in progress. Required.
    pub data_dir: PathBuf,
    /// The trackers to announce blobs to (`http://host:port`): each torrent goes to the one
    /// its info hash picks by rendezvous hashing, and to the next when that one is down, as
    /// agents do. Alias: `tracker`, which also takes a single URL. Default: none (no P2P
    /// seeding).
    #[serde(default, alias = "tracker", deserialize_with = "one_or_many")]
    pub trackers: Vec<String>,
    /// A file holding the trackers' publish token (`publish_token_file` in their
    /// config), presented on every request to a tracker so this origin may publish
    /// metainfo and announce as an origin. Not needed when `client_tls` carries an origin
    /// certificate the tracker checks. Default: none.
    #[serde(default)]
    pub tracker_publish_token_file: Option<PathBuf>,
    /// The same token given directly, for embedders (never read from or written to a
    /// config file). Default: none.
    #[serde(skip)]
    pub tracker_publish_token: Option<kraken_p2p::tracker::PublishToken>,
    /// Most blobs kept in the P2P swarm because they were recently wanted (the tracker
    /// asked for their metainfo, or they were uploaded, fetched or repaired): each is an
    /// open file and an announce to the tracker every minute. Beyond it, the least recently
    /// wanted leaves the swarm once no peer is connected for it. Other held blobs are not
    /// announced, but are still served to any peer that asks (the tracker lists a blob's
    /// owning origins itself), so start-up and the tracker's load do not grow with the
    /// store. Default: 256 (with the node's 512 connections, under 1,000 open files).
    #[serde(default = "default_max_announced_blobs")]
    pub max_announced_blobs: usize,
    /// The origin ring: members, replicas, health checks.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Remote storage, routed by namespace. Default: no routes (blobs are kept only here).
    #[serde(default)]
    pub backends: BackendsConfig,
    /// Writing committed blobs to the backend.
    #[serde(default)]
    pub write_back: WriteBackConfig,
    /// Disk cleanup.
    #[serde(default)]
    pub cleanup: CleanupConfig,
    /// Re-hashing cached blobs in the background to find corrupt copies.
    #[serde(default)]
    pub scrub: ScrubConfig,
    /// Limits of the HTTP API.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Timeouts, header bounds and connection limits of the HTTP listener (see
    /// [`HttpLimits`]).
    #[serde(default)]
    pub http: HttpLimits,
    /// TLS on the blob API, and which requests need a client certificate. Default: plain
    /// HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// TLS toward the other origins and the tracker (pinned CA, this origin's client
    /// certificate). With it, origins are reached over `https`. Default: plain HTTP.
    #[serde(default)]
    pub client_tls: Option<ClientTlsConfig>,
    /// A separate listener for `/metrics` (every listener of the role answers it anyway;
    /// see `docs/metrics.md`). Default: none.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The in-memory cache of small blobs (manifests, image configs), filled only with
    /// bytes that hash to their digest (see [`SmallBlobConfig`]).
    #[serde(default)]
    pub cache: SmallBlobConfig,
}

fn default_max_announced_blobs() -> usize {
    256
}

impl OriginConfig {
    /// A config with defaults for everything but the listen address and data directory.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            advertise: None,
            peer_listen: None,
            peer_tls: None,
            data_dir: data_dir.into(),
            trackers: Vec::new(),
            tracker_publish_token_file: None,
            tracker_publish_token: None,
            max_announced_blobs: default_max_announced_blobs(),
            cluster: ClusterConfig::default(),
            backends: BackendsConfig::default(),
            write_back: WriteBackConfig::default(),
            cleanup: CleanupConfig::default(),
            scrub: ScrubConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpLimits::default(),
            tls: None,
            client_tls: None,
            metrics: MetricsConfig::default(),
            cache: SmallBlobConfig::default(),
        }
    }

    /// The name this origin has in the ring.
    pub fn self_name(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// How long an upload may sit untouched before it is deleted: `limits.upload_ttl`, or
    /// the deprecated `cleanup.upload_ttl` where a config still sets it there.
    pub fn upload_ttl(&self) -> Duration {
        self.cleanup.upload_ttl.unwrap_or(self.limits.upload_ttl)
    }

    /// Checks the values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        self.http.validate().map_err(Error::Config)?;
        self.cluster.validate()?;
        if let Some(advertise) = &self.advertise {
            check_host_port("advertise", advertise)?;
        }
        for tracker in &self.trackers {
            check_url("trackers", tracker)?;
        }
        if self.cleanup.upload_ttl.is_some()
            && self.limits.upload_ttl != LimitsConfig::default().upload_ttl
        {
            return Err(Error::Config(
                "cleanup.upload_ttl is the deprecated name of limits.upload_ttl: set only limits.upload_ttl".into(),
            ));
        }
        Ok(())
    }
}

/// Who the members of a ring are: a fixed list, or a DNS name re-resolved periodically.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MembersConfig {
    /// `host:port` of every member.
    Static(Vec<String>),
    /// `name:port`: every A/AAAA record of `name`, with `port`, is a member.
    Dns(String),
}

impl Default for MembersConfig {
    fn default() -> Self {
        Self::Static(Vec::new())
    }
}

/// `trackers = "URL"` (the single `tracker` of older configs) or `trackers = ["URL", …]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

/// A ring of origins, as an origin or a tracker sees it.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The members. Default: an empty static list (an origin then rings only itself).
    pub members: MembersConfig,
    /// Origins that hold each blob, capped at the number of healthy members. Default: 3.
    pub replicas: usize,
    /// How often members are health-checked and DNS is re-resolved. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Time allowed for one health check. Default: 3s.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Consecutive failed checks after which a member is left out of the ring. Default: 3.
    pub fails: u32,
    /// Consecutive passed checks after which a left-out member is back. Default: 2.
    pub passes: u32,
    /// How often every held blob is checked against its owners and re-replicated where
    /// missing (also run whenever membership changes). Default: 5m.
    #[serde(with = "humantime_serde")]
    pub repair_interval: Duration,
    /// Replicas pushed by another origin write the blob back to the backend this long after
    /// receiving it (skipped if the backend has it by then): a safety net should the
    /// primary die before its own write-back. Default: 30m.
    #[serde(with = "humantime_serde")]
    pub replica_write_back_delay: Duration,
    /// After this origin deletes a blob (a registry delete's purge, a garbage collection's
    /// sweep), how long it refuses replicas of it from other origins, so that their repair
    /// passes cannot bring back a blob being deleted cluster-wide; a client's push of it is
    /// accepted at any time. It must outlast a garbage collection's run over every origin.
    /// `0s` turns it off. Default: 1h.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            members: MembersConfig::default(),
            replicas: 3,
            refresh_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(3),
            fails: 3,
            passes: 2,
            repair_interval: Duration::from_secs(300),
            replica_write_back_delay: Duration::from_secs(1800),
            tombstone_ttl: Duration::from_secs(3600),
        }
    }
}

impl ClusterConfig {
    /// Checks the values that have no sensible meaning.
    pub fn validate(&self) -> Result<()> {
        if self.replicas == 0 {
            return Err(Error::Config("cluster.replicas must be at least 1".into()));
        }
        if self.fails == 0 || self.passes == 0 {
            return Err(Error::Config(
                "cluster.fails and cluster.passes must be at least 1".into(),
            ));
        }
        if self.refresh_interval.is_zero() || self.repair_interval.is_zero() {
            return Err(Error::Config(
                "cluster intervals must be longer than zero".into(),
            ));
        }
        match &self.members {
            MembersConfig::Static(members) => {
                for member in members {
                    check_host_port("members", member)?;
                }
            }
            MembersConfig::Dns(name) => check_host_port("members.dns", name)?,
        }
        Ok(())
    }
}

/// Bounds on what one request may ask or cause.
#[non_exhaustive]
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest body of one upload `PATCH`; larger chunks get `413`. Alias: `max_chunk` (until
    /// the next release). Default: 64MiB.
    #[serde(alias = "max_chunk")]
    pub max_chunk_size: ByteSize,
    /// Largest blob accepted by an upload or fetched from a backend. Alias: `max_blob` (until
    /// the next release). Default: 64GiB.
    #[serde(alias = "max_blob")]
    pub max_blob_size: ByteSize,
    /// Uploads neither committed nor touched for this long are deleted. Default: 1h.
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// Upload `PATCH` bodies written at once; more get `503` with `Retry-After`. Each holds
    /// at most 1 MiB in memory while it is written. Default: 16.
    pub max_concurrent_chunks: usize,
    /// Fetches from the backend running at once (blobs asked for but not on disk; concurrent
    /// asks for one blob share one fetch). A miss beyond it is answered `503` with
    /// `Retry-After: 1`, which agents, trackers and proxies wait out and retry, so a cold
    /// start of many blobs cannot exhaust the backend's connections or the origin's disk
    /// bandwidth. Go Kraken: 10,000 workers. Default: 64.
    pub max_backend_fetches: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_chunk_size: ByteSize(64 << 20),
            max_blob_size: ByteSize(64 << 30),
            upload_ttl: Duration::from_secs(3600),
            max_concurrent_chunks: 16,
            max_backend_fetches: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads_with_defaults_and_unknown_keys_are_refused() {
        let example = r#"
            listen = "10.0.0.1:15002"
            peer_listen = "10.0.0.1:16001"
            data_dir = "/var/lib/kraken/origin"
            tracker = "http://tracker:15003"

            [cluster]
            members = { static = ["10.0.0.1:15002", "10.0.0.2:15002", "10.0.0.3:15002"] }
            replicas = 2
            refresh_interval = "5s"

            [write_back]
            max_backoff = "5m"

            [cleanup]
            high_watermark = "500GiB"

            [scrub]
            interval = "12h"

            [[backends.routes]]
            namespace = ".*"
            backend = { type = "s3", bucket = "kraken" }
        "#;
        let config: OriginConfig = toml::from_str(example).unwrap();
        assert_eq!(config.self_name(), "10.0.0.1:15002");
        assert_eq!(
            config.trackers,
            ["http://tracker:15003"],
            "`tracker` is an alias"
        );
        let two: OriginConfig = toml::from_str(&example.replace(
            r#"tracker = "http://tracker:15003""#,
            r#"trackers = ["http://t1:15003", "http://t2:15003"]"#,
        ))
        .unwrap();
        assert_eq!(two.trackers, ["http://t1:15003", "http://t2:15003"]);
        assert_eq!(config.cluster.replicas, 2);
        assert_eq!(config.cluster.refresh_interval, Duration::from_secs(5));
        assert_eq!(config.scrub.interval, Duration::from_secs(12 * 3600));
        assert!(config.scrub.enabled);
        assert_eq!(config.cluster.fails, 3);
        assert_eq!(config.write_back.max_backoff, Duration::from_secs(300));
        assert_eq!(config.write_back.concurrency, 4);
        assert_eq!(config.cleanup.high_watermark, Some(ByteSize(500 << 30)));
        assert_eq!(config.backends.routes.len(), 1);
        assert!(matches!(config.cluster.members, MembersConfig::Static(ref m) if m.len() == 3));

        let dns: ClusterConfig = toml::from_str(r#"members = { dns = "origins:15002" }"#).unwrap();
        assert!(matches!(dns.members, MembersConfig::Dns(ref name) if name == "origins:15002"));
        let typo = toml::from_str::<OriginConfig>(&format!("replica = 3\n{example}"));
        assert!(typo.is_err());
        let zero = ClusterConfig {
            replicas: 0,
            ..ClusterConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    /// The limits' keys follow one scheme across roles (`max_*_size` for bytes); the
    /// names they replaced, and `cleanup.upload_ttl`, still load until the next release.
    #[test]
    fn renamed_keys_load_under_their_old_names() {
        let old: OriginConfig = toml::from_str(
            r#"
            listen = "10.0.0.1:15002"
            data_dir = "d"
            [cleanup]
            upload_ttl = "5m"
            [limits]
            max_chunk = "1MiB"
            max_blob = "2GiB"
            "#,
        )
        .unwrap();
        old.validate().unwrap();
        assert_eq!(old.limits.max_chunk_size, ByteSize(1 << 20));
        assert_eq!(old.limits.max_blob_size, ByteSize(2 << 30));
        assert_eq!(old.upload_ttl(), Duration::from_secs(300));

        let new: OriginConfig = toml::from_str(
            "listen = \"10.0.0.1:15002\"\ndata_dir = \"d\"\n[limits]\nupload_ttl = \"2m\"\n",
        )
        .unwrap();
        new.validate().unwrap();
        assert_eq!(new.upload_ttl(), Duration::from_secs(120));
        assert_eq!(new.limits.max_blob_size, ByteSize(64 << 30));

        let mut both = new;
        both.cleanup.upload_ttl = Some(Duration::from_secs(60));
        assert!(both.validate().is_err(), "both names set");
    }
}
