//! `kraken tracker`: its config file, its flags and the command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kraken_core::ByteSize;
use kraken_p2p::http_server::{HttpLimits, ServeConfig};
use kraken_p2p::metrics::{Metrics, MetricsConfig};
use kraken_p2p::tls::{ClientTlsConfig, ServerTlsConfig};
use kraken_p2p::tracker::{
    PeerStoreConfig, PeerStoreLimits, PublishToken, RedisPeerStore, TrackerConfig, TrackerServer,
    TrackerService,
};
use kraken_registry::origin::{ClusterConfig, OriginClient, OriginMetaInfoSource};
use serde::Serialize;

use crate::config::{Role, Sources};
use crate::logging::say;
use crate::process::wait_for_signal;

/// `kraken tracker --config FILE`:
///
/// ```toml
/// listen = "127.0.0.1:15003"
/// announce_interval = "3s"
///
/// [origins]    # optional: ask these origins for metainfo nobody published
/// members = { static = ["127.0.0.1:15002"] }
/// replicas = 3
///
/// [tls]        # optional: serve HTTPS (see kraken_p2p::tls)
/// cert = "tracker.pem"
/// key = "tracker.key"
///
/// [client_tls] # optional: reach the origins over HTTPS
/// ca = "ca.pem"
///
/// [http]       # optional: timeouts, connection limits, access log (kraken_p2p::http_server::HttpLimits)
/// max_connections = 4096
///
/// [metrics]    # optional: a separate listener for /metrics (kraken_p2p::metrics::MetricsConfig)
/// listen = "127.0.0.1:9090"
///
/// [peer_store] # optional: peers in a Redis server shared by every tracker (kraken_p2p::tracker::PeerStoreConfig)
/// redis = "redis://127.0.0.1:6379"
/// ```
#[non_exhaustive]
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackerFileConfig {
    /// Address to serve HTTP on. Default: `127.0.0.1:15003`.
    #[serde(default = "default_tracker_listen")]
    listen: SocketAddr,
    /// Interval announcers are told to keep. Default: 3s.
    #[serde(default = "default_announce_interval", with = "humantime_serde")]
    announce_interval: Duration,
    /// The origin ring to ask for metainfo (see `kraken_registry::origin::ClusterConfig`).
    /// Default: none (only published metainfo is served).
    #[serde(default)]
    origins: Option<ClusterConfig>,
    /// TLS on the tracker's listener. Default: plain HTTP.
    #[serde(default)]
    tls: Option<ServerTlsConfig>,
    /// TLS toward the origins. Default: plain HTTP.
    #[serde(default)]
    client_tls: Option<ClientTlsConfig>,
    /// Timeouts, header bounds and connection limits of the listener.
    #[serde(default)]
    http: HttpLimits,
    /// Most bytes of published metainfo kept (oldest dropped first). Default: 256MiB.
    #[serde(default)]
    max_metainfo_bytes: Option<ByteSize>,
    /// A separate metrics listener (`/metrics` is on the tracker's listener regardless).
    #[serde(default)]
    metrics: MetricsConfig,
    /// A file holding the publish token: a client presenting it (`Authorization: Bearer`)
    /// may publish metainfo and announce as an origin. Default: none (only origin
    /// certificates may).
    #[serde(default)]
    publish_token_file: Option<PathBuf>,
    /// Let anyone publish metainfo (a trusted network without TLS or a token). Default:
    /// false.
    #[serde(default)]
    allow_anonymous_publish: bool,
    /// Record announcers at the address they declare instead of the connection's source
    /// address (peers behind NAT). Default: false.
    #[serde(default)]
    trust_declared_addresses: bool,
    /// Caps on announced peers (`max_torrents`, `max_peers`, `max_peers_per_torrent`,
    /// `max_entries_per_announcer`). Default: 100000, 1000000, 50000, 10000.
    #[serde(default)]
    peers: PeerStoreLimits,
    /// Where peers are kept: this tracker's memory, or a Redis server every tracker shares
    /// (`redis`, `timeout`, `retry_interval`, `key_prefix`). Default: memory.
    #[serde(default)]
    peer_store: PeerStoreConfig,
}

impl TrackerFileConfig {
    /// Every key at its default (`kraken config defaults tracker`).
    pub(crate) fn defaults() -> Self {
        Self {
            listen: default_tracker_listen(),
            announce_interval: default_announce_interval(),
            origins: None,
            tls: None,
            client_tls: None,
            http: HttpLimits::default(),
            max_metainfo_bytes: None,
            metrics: MetricsConfig::default(),
            publish_token_file: None,
            allow_anonymous_publish: false,
            trust_declared_addresses: false,
            peers: PeerStoreLimits::default(),
            peer_store: PeerStoreConfig::default(),
        }
    }

    /// Checks the values that have no sensible meaning, and reads the TLS files.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.http.validate().map_err(anyhow::Error::msg)?;
        self.peer_store.validate().map_err(anyhow::Error::msg)?;
        if let Some(origins) = &self.origins {
            origins.validate()?;
        }
        if let Some(tls) = &self.tls {
            tls.load().context("tls")?;
        }
        if let Some(tls) = &self.client_tls {
            tls.load().context("client_tls")?;
        }
        Ok(())
    }
}

fn default_tracker_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15003))
}

fn default_announce_interval() -> Duration {
    Duration::from_secs(3)
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrackerArgs {
    /// Address to serve HTTP on. Default: 127.0.0.1:15003.
    #[arg(long, conflicts_with = "config")]
    listen: Option<SocketAddr>,
    /// Interval announcers are told to keep (e.g. `3s`, `500ms`). Default: 3s.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "config")]
    announce_interval: Option<Duration>,
    /// A file holding the publish token that lets a client publish metainfo (seeders:
    /// `kraken seed --publish-token-file`).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    publish_token_file: Option<PathBuf>,
    /// Let anyone publish metainfo, as on a trusted network.
    #[arg(long, conflicts_with = "config")]
    allow_anonymous_publish: bool,
    /// Listen address, announce interval, the origins to ask for metainfo, TLS, limits (see
    /// docs/origin.md). `--config` replaces the flags above.
    #[command(flatten)]
    sources: Sources,
}

impl TrackerArgs {
    /// The settings of `sources` alone, without the flags (`kraken config check tracker`).
    pub(crate) fn from_sources(sources: Sources) -> Self {
        Self {
            listen: None,
            announce_interval: None,
            publish_token_file: None,
            allow_anonymous_publish: false,
            sources,
        }
    }

    /// Loads and checks the settings: the flags, or the config file, then secrets and the
    /// environment.
    pub(crate) fn check(&self) -> anyhow::Result<TrackerFileConfig> {
        let mut base = toml::Table::new();
        if let Some(listen) = self.listen {
            base.insert("listen".into(), listen.to_string().into());
        }
        if let Some(interval) = self.announce_interval {
            let text = humantime::format_duration(interval).to_string();
            base.insert("announce_interval".into(), text.into());
        }
        if let Some(path) = &self.publish_token_file {
            let path = path
                .to_str()
                .context("the publish token file's path is not UTF-8")?;
            base.insert("publish_token_file".into(), path.into());
        }
        if self.allow_anonymous_publish {
            base.insert("allow_anonymous_publish".into(), true.into());
        }
        let defaults = TrackerFileConfig::defaults();
        let file: TrackerFileConfig = crate::config::load_from(
            Role::Tracker,
            &self.sources,
            &defaults,
            base,
            std::env::vars_os(),
        )?;
        file.validate()?;
        Ok(file)
    }
}

pub(crate) async fn tracker(args: TrackerArgs) -> anyhow::Result<()> {
    let file = args.check()?;
    let tls = file.tls.as_ref().map(|tls| tls.load()).transpose()?;
    let client_tls = file.client_tls.as_ref().map(|tls| tls.load()).transpose()?;
    let mut config = TrackerConfig::default();
    config.announce_interval = file.announce_interval;
    if let Some(bytes) = file.max_metainfo_bytes {
        config.max_metainfo_bytes = bytes;
    }
    config.publish_token = file
        .publish_token_file
        .as_deref()
        .map(PublishToken::from_file)
        .transpose()
        .context("reading the publish token file")?;
    config.allow_anonymous_publish = file.allow_anonymous_publish;
    config.trust_declared_addresses = file.trust_declared_addresses;
    config.peers = file.peers;
    let metrics = Metrics::new();
    let mut service = match &file.peer_store.redis {
        None => TrackerService::new(config),
        Some(_) => {
            let store = RedisPeerStore::new(&file.peer_store, config.peer_ttl, config.peers)
                .context("peer_store")?;
            say(&format!(
                "tracker keeps its peers in redis at {}",
                store.server()
            ));
            TrackerService::with_peer_store(config, Arc::new(store))
        }
    }
    .with_metrics(&metrics);
    if let Some(origins) = file.origins {
        let client = OriginClient::with_tls(client_tls.as_ref())?;
        let source = OriginMetaInfoSource::start_with(origins, client)
            .await
            .context("resolving the origins")?;
        service = service.with_metainfo_source(Arc::new(source));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let serve = ServeConfig::new("tracker").tls(tls).limits(file.http);
    let server = TrackerServer::bind_with(file.listen, Arc::new(service), serve)
        .await
        .with_context(|| format!("binding the tracker's listener on {}", file.listen))?;
    say(&format!(
        "tracker listening on {scheme}://{}",
        server.local_addr()
    ));
    let metrics_server =
        kraken_p2p::metrics::spawn_listener(&file.metrics, "tracker", &metrics).await?;
    wait_for_signal().await?;
    server.shutdown().await;
    if let Some(metrics_server) = metrics_server {
        metrics_server.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod duration_tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        tracker: TrackerArgs,
    }

    /// Durations on the command line use the grammar of the config files (humantime), so
    /// `--announce-interval` reads as `announce_interval` does in a tracker's TOML.
    #[test]
    fn command_line_durations_use_the_config_files_grammar() {
        let parse = |value: &str| {
            Cli::try_parse_from(["kraken", "--announce-interval", value])
                .map(|cli| cli.tracker.announce_interval.expect("given"))
        };
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        // A bare number has no unit in either grammar.
        assert!(parse("7").is_err());
        assert!(parse("x").is_err());
        let file: TrackerFileConfig = toml::from_str("announce_interval = \"1m 30s\"").unwrap();
        assert_eq!(file.announce_interval, Duration::from_secs(90));
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn the_tracker_configuration_in_docs_origin_md_loads() {
        let doc = include_str!("../../docs/origin.md");
        let section = &doc[doc
            .find("`kraken tracker --config tracker.toml`")
            .expect("section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```").expect("its end");
        let file: TrackerFileConfig = toml::from_str(&section[start..end]).unwrap();
        assert_eq!(file.max_metainfo_bytes, Some(ByteSize(256 << 20)));
        assert_eq!(file.http.max_connections_per_client, 256);
        assert!(file.origins.is_some());
        file.http.validate().unwrap();
    }

    #[test]
    fn a_shared_peer_store_is_read_from_peer_store() {
        let file: TrackerFileConfig =
            toml::from_str("[peer_store]\nredis = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!(
            file.peer_store.redis.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        file.validate().unwrap();
        let file: TrackerFileConfig =
            toml::from_str("[peer_store]\nredis = \"127.0.0.1:6379\"").unwrap();
        assert!(file.validate().is_err());
    }
}
